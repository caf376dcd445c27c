"""The greedy survival loop for one chain.

Definition (kept exactly; see README "Greedy survival"): at each step every remaining reasoning
token is a candidate; the step deletes the one whose deletion leaves the highest objective
(equivalently the lowest cost = objective before − objective after); ties go to the lowest
original position. ``keep_ratio`` R stops after ``N − floor(N·R)`` deletions.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..encoding import EncodedChain
from .scoring import Scorer, check_finite


def n_deletions(n_tokens: int, keep_ratio: float) -> int:
    """Steps a run to ``keep_ratio`` takes: ``N − floor(N·R)``."""
    return n_tokens - math.floor(n_tokens * keep_ratio)


@dataclass
class ChainTrace:
    """Everything greedy pruning learned about one chain.

    Attributes
    ----------
    order : list of int
        Original reasoning positions in deletion order (step s deletes ``order[s-1]``).
    objectives : list of float
        Objective at step 0 (unpruned) and after each step.
    step_costs : list of np.ndarray
        For step s (1-based, index s-1): cost of deleting each token alive before the step,
        in the order of ``step_positions[s-1]``.
    step_positions : list of np.ndarray
        Alive original positions at each step.
    static_logprobs : np.ndarray or None
        ``log p`` of each reasoning token in the unpruned chain (surprisal baseline).
    tokens_processed : int
        Decoder token rows run, as the scorers report them per step (benchmarks).
    seconds : float
    scored_steps : list of int or None
        1-based steps whose candidates were scored, one per entry of ``step_costs``; None means
        every step (the exact engine). Approximate runs score only the first step of each round.
    token_rows : int
        Decoder token rows the scorer's model embedded for this chain (``Scorer.token_rows``).
    deletion_costs : list of float or None
        Cost of each step's deletion measured on that step's sequence, for engines that measure it
        without scoring every candidate (lazy re-scoring); None: read it from ``step_costs``.
    """

    order: list[int] = field(default_factory=list)
    objectives: list[float] = field(default_factory=list)
    step_costs: list[np.ndarray] = field(default_factory=list)
    step_positions: list[np.ndarray] = field(default_factory=list)
    static_logprobs: np.ndarray | None = None
    tokens_processed: int = 0
    seconds: float = 0.0
    scored_steps: list[int] | None = None
    token_rows: int = 0
    deletion_costs: list[float] | None = None

    @property
    def n_steps(self) -> int:
        return len(self.order)


def greedy_prune(
    scorer: Scorer,
    encoded: EncodedChain,
    n_steps: int,
    *,
    start: ChainTrace | None = None,
    on_step: Callable[[ChainTrace], None] | None = None,
    approx=None,
) -> ChainTrace:
    """Run greedy deletion on one chain until ``n_steps`` tokens are gone.

    Parameters
    ----------
    scorer : Scorer
        Computes the objective of the current chain and of every single deletion.
    encoded : EncodedChain
    n_steps : int
        Total deletions wanted (``n_deletions(N, keep_ratio)``).
    start : ChainTrace, optional
        A trace to continue (from a checkpoint or a run to a higher keep ratio).
    on_step : callable, optional
        Called after each step with the trace so far (checkpoints, progress).
    approx : str, ApproxSpec, AutoSpec or None
        An approximation (see :mod:`cotsurvival.pruning.approx`); None is the exact definition.
    """
    trace = start if start is not None else ChainTrace()
    if approx is not None:
        from .approx import AutoSpec, LazySpec, approx_prune, parse_approx, rounds_scorer
        from .lazy import lazy_prune

        spec = parse_approx(approx)
        if isinstance(spec, AutoSpec):
            spec = spec.for_length(len(encoded.reasoning_ids))
        if spec is not None and not (spec.is_exact and trace.scored_steps is None):
            rounds = rounds_scorer(scorer, spec)
            try:
                if isinstance(spec, LazySpec):
                    return lazy_prune(rounds, encoded, n_steps, spec, trace, on_step)
                return approx_prune(rounds, encoded, n_steps, spec, trace, on_step)
            finally:
                rounds.reset()
    deleted = set(trace.order)
    alive = [i for i in range(len(encoded.reasoning_ids)) if i not in deleted]
    began = time.perf_counter()
    while trace.n_steps < n_steps:
        kept = [encoded.reasoning_ids[i] for i in alive]
        rows_before = scorer.token_rows
        scores = scorer.score(encoded.prefix_ids, kept, encoded.answer_ids)
        trace.token_rows += scorer.token_rows - rows_before
        check_finite(encoded, trace.n_steps + 1, scores.objective, scores.candidate_objectives)
        if not trace.objectives:
            trace.objectives.append(scores.objective)
        if trace.static_logprobs is None and not trace.order:
            trace.static_logprobs = scores.next_logprobs.copy()
        costs = scores.objective - scores.candidate_objectives
        # argmax of the objective returns the first maximum: ties go to the lowest position.
        winner = int(np.argmax(scores.candidate_objectives))
        trace.step_costs.append(costs.astype(np.float32))
        trace.step_positions.append(np.asarray(alive, dtype=np.int32))
        trace.order.append(alive[winner])
        trace.objectives.append(float(scores.candidate_objectives[winner]))
        trace.tokens_processed += scores.tokens_processed
        if trace.scored_steps is not None:
            trace.scored_steps.append(trace.n_steps)
        del alive[winner]
        if on_step is not None:
            on_step(trace)
    scorer.reset()
    trace.seconds += time.perf_counter() - began
    return trace
