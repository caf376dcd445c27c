"""The greedy survival loop for one chain.

Definition (kept exactly; see README "Greedy survival"): at each step every remaining reasoning
token is a candidate; the step deletes the one whose deletion leaves the highest objective
(equivalently the lowest cost = objective before − objective after); ties go to the lowest
original position. ``keep_ratio`` R stops after ``N − floor(N·R)`` deletions.

Replicate paths (``prune --replicates K``): replicate 0 is that greedy path; replicate r ≥ 1 adds
Gumbel noise of scale T nats to each step's costs and deletes the token with the lowest perturbed
cost, which samples the deletion from ``softmin(cost / T)`` (the Gumbel-max trick). Identical
adjacent tokens give one sequence, so they share one noise draw and ties still go to the lowest
position. T = 0 is the greedy path. Between two candidates whose costs differ by g nats, the more
expensive one is taken with probability ``1 / (1 + exp(g / T))``: 27% at g = T, 0.7% at g = 5T.
"""
from __future__ import annotations

import hashlib
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
    replicate : int
        0 for the greedy path, r ≥ 1 for the r-th perturbed replicate (:class:`Perturbation`).
    reused_steps : int
        Steps whose costs were taken from the unperturbed path instead of scored, because this
        path's deleted set was the same as that path's there (costs depend only on that set).
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
    replicate: int = 0
    reused_steps: int = 0

    @property
    def n_steps(self) -> int:
        return len(self.order)


#: The perturbation ``prune --replicates`` applies (the only one so far), by name.
PERTURBATIONS = {"gumbel": "Gumbel noise of scale T nats on each step's costs: samples each deletion from softmin(cost/T)"}
#: Default T (nats): about float16's median rounding error of a cost (0.024-0.073 nats, BENCHMARKS.md
#: "Precision"), so replicates differ by as much as a change of dtype would make them differ.
DEFAULT_PERTURBATION_SCALE = 0.05


def chain_key(chain_id: str) -> int:
    """A stable 63-bit integer of a chain id: the same chain draws the same noise in any run."""
    return int.from_bytes(hashlib.sha256(str(chain_id).encode("utf-8")).digest()[:8], "big") >> 1


def gumbel_noise(seed: int, chain_id: str, replicate: int, step: int, kept_ids) -> np.ndarray:
    """Standard Gumbel noise of one step: one draw per alive token, in alive (position) order.

    Drawn from ``numpy.random.default_rng([seed, replicate, step, chain_key(chain_id)]).gumbel(size=n)``,
    so it depends on nothing but these four numbers (a resumed or Ray-run replicate draws the same).
    A token identical to the alive token before it gives the same sequence when deleted, so it
    takes that token's draw.
    """
    n = len(kept_ids)
    noise = np.random.default_rng([int(seed), int(replicate), int(step), chain_key(chain_id)]).gumbel(size=n)
    ids = np.asarray(kept_ids)
    for k in range(1, n):
        if ids[k] == ids[k - 1]:
            noise[k] = noise[k - 1]
    return noise


@dataclass(frozen=True)
class Perturbation:
    """How replicate ``replicate`` of a chain perturbs each step's costs (see the module docstring).

    Attributes
    ----------
    scale : float
        T in nats; 0 is the greedy path.
    seed : int
        The run's seed.
    replicate : int
        r ≥ 1 (replicate 0 is the unperturbed path and takes no Perturbation).
    kind : str
        ``"gumbel"`` (:data:`PERTURBATIONS`).
    """

    scale: float
    seed: int
    replicate: int
    kind: str = "gumbel"

    def choose(self, costs: np.ndarray, chain_id: str, step: int, kept_ids) -> int:
        """Index (in alive order) of the deletion at 1-based ``step``: ``argmin(cost − T·G)``, first on ties.

        Only for T > 0; at T = 0 the engine keeps the greedy rule itself (argmax of the float64
        objectives), so a T = 0 replicate is the greedy path exactly."""
        noise = gumbel_noise(self.seed, chain_id, self.replicate, step, kept_ids)
        return int(np.argmin(np.asarray(costs, dtype=np.float64) - self.scale * noise))


def greedy_prune(
    scorer: Scorer,
    encoded: EncodedChain,
    n_steps: int,
    *,
    start: ChainTrace | None = None,
    on_step: Callable[[ChainTrace], None] | None = None,
    approx=None,
    perturbation: Perturbation | None = None,
    reuse: ChainTrace | None = None,
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
    perturbation : Perturbation, optional
        Prune a perturbed replicate path instead of the greedy one. Each step's deletion is chosen
        from the float32 costs that ``traces.parquet`` stores, so a replicate's order can be
        recomputed from its traces and the seeds alone.
    reuse : ChainTrace, optional
        The same chain's greedy path (replicate 0). While this path's set of deleted tokens equals
        that path's at the same step, its costs are taken from there instead of scored (costs
        depend only on that set); ``trace.reused_steps`` counts those steps.
    """
    trace = start if start is not None else ChainTrace()
    if perturbation is not None:
        if approx is not None:
            raise ValueError("perturbed replicates need the exact engine (approx=None)")
        trace.replicate = perturbation.replicate
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
    same_set = _SameSet(reuse, trace.order) if reuse is not None and perturbation is not None else None
    while trace.n_steps < n_steps:
        kept = [encoded.reasoning_ids[i] for i in alive]
        if same_set is not None and same_set.reusable(trace.n_steps):
            _step_from(reuse, trace, alive, kept, perturbation, encoded.chain.id)
        else:
            _scored_step(scorer, encoded, trace, alive, kept, perturbation)
        if same_set is not None:
            same_set.add(trace.order[-1], trace.n_steps)
        if on_step is not None:
            on_step(trace)
    scorer.reset()
    trace.seconds += time.perf_counter() - began
    return trace


class _SameSet:
    """Whether a replicate's deleted set equals the greedy path's after the same number of steps.

    Kept as the two set differences, updated once per step, so the test is O(1): paths that part
    and later delete the same tokens in another order are recognised as rejoined."""

    def __init__(self, reference: ChainTrace, order: list[int]) -> None:
        self.reference = reference
        self.only_here: set[int] = set()
        self.only_there: set[int] = set()
        for step, position in enumerate(order, 1):
            self.add(position, step)

    def add(self, position: int, steps_done: int) -> None:
        there = self.reference.order[steps_done - 1] if steps_done <= self.reference.n_steps else None
        for mine, other, value in ((self.only_here, self.only_there, position), (self.only_there, self.only_here, there)):
            if value is None:
                continue
            if value in other:
                other.discard(value)
            else:
                mine.add(value)

    def reusable(self, steps_done: int) -> bool:
        """The next step's costs are in the reference (it scored that step and the sets are equal)."""
        reference = self.reference
        return (not self.only_here and not self.only_there and reference.scored_steps is None
                and steps_done < len(reference.step_costs))


def _step_from(reference: ChainTrace, trace: ChainTrace, alive: list[int], kept, perturbation, chain_id) -> None:
    """One perturbed step on the costs the greedy path measured on the same sequence."""
    s = trace.n_steps
    costs, positions = reference.step_costs[s], reference.step_positions[s]
    if not trace.objectives:
        trace.objectives.append(reference.objectives[0])
    if trace.static_logprobs is None and not trace.order:
        trace.static_logprobs = reference.static_logprobs
    objective = reference.objectives[s]  # the same sequence, so the same objective
    if perturbation.scale == 0:  # the greedy choice, as the greedy path made it
        winner = int(np.searchsorted(positions, reference.order[s]))
    else:
        winner = perturbation.choose(costs, chain_id, s + 1, kept)
    trace.step_costs.append(costs)
    trace.step_positions.append(positions)
    trace.order.append(alive[winner])
    if alive[winner] == reference.order[s]:  # the same deletion: the very sequence the greedy path measured
        trace.objectives.append(float(reference.objectives[s + 1]))
    else:  # float32 cost as stored; the objective of a sequence the greedy path never reached
        trace.objectives.append(float(objective - np.float64(costs[winner])))
    trace.reused_steps += 1
    del alive[winner]


def _scored_step(scorer: Scorer, encoded: EncodedChain, trace: ChainTrace, alive: list[int], kept,
                 perturbation: Perturbation | None = None) -> None:
    """One scored step: the greedy deletion, or with ``perturbation`` the one :meth:`Perturbation.choose` samples."""
    rows_before = scorer.token_rows
    scores = scorer.score(encoded.prefix_ids, kept, encoded.answer_ids)
    trace.token_rows += scorer.token_rows - rows_before
    check_finite(encoded, trace.n_steps + 1, scores.objective, scores.candidate_objectives)
    if not trace.objectives:
        trace.objectives.append(scores.objective)
    if trace.static_logprobs is None and not trace.order:
        trace.static_logprobs = scores.next_logprobs.copy()
    costs = (scores.objective - scores.candidate_objectives).astype(np.float32)
    if perturbation is None or perturbation.scale == 0:
        # The greedy rule: argmax of the float64 objectives returns the first maximum, so ties go to
        # the lowest position.
        winner = int(np.argmax(scores.candidate_objectives))
    else:
        winner = perturbation.choose(costs, encoded.chain.id, trace.n_steps + 1, kept)
    trace.step_costs.append(costs)
    trace.step_positions.append(np.asarray(alive, dtype=np.int32))
    trace.order.append(alive[winner])
    trace.objectives.append(float(scores.candidate_objectives[winner]))
    trace.tokens_processed += scores.tokens_processed
    if trace.scored_steps is not None:
        trace.scored_steps.append(trace.n_steps)
    del alive[winner]
