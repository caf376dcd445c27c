"""Lazy re-scoring: greedy survival that re-scores only the candidates a deletion can have changed.

``prune --approx lazy:radius=R,batch=B,refresh=F,same=S,age=A`` keeps every remaining token's last
measured cost (objective now − objective without it) and, at each step:

1. re-scores the ``R`` tokens on each side of the last deletion (their own context changed most),
   with ``same=1`` every other copy of the deleted token, and the ``A`` tokens measured longest ago;
2. takes the cheapest token by current estimates; if its cost was measured at this step it is
   deleted, otherwise the ``B`` cheapest stale tokens are re-scored and the choice is made again
   (lazy evaluation, as in greedy submodular maximisation: a stale cost is trusted only as long
   as no fresh cost undercuts it);
3. re-scores every token (a *full refresh*) whenever the remaining chain has shrunk by a
   fraction ``F`` since the last one.

``lazy:window=W,refresh=F`` instead re-measures every token at every step over the ``W`` targets
after it, adding the part of its cost beyond the window as measured at the last full refresh.

The objectives the trace records, and each deletion's cost (their difference), are exact: the
sequence's own pass gives them. Only the choice can differ from the exact engine, when a stale
cost hides a token that became cheaper. ``refresh=0`` re-scores everything at every step: the exact
engine (tested).

Why hand-written: each step needs the current sequence's keys/values updated from the deleted
position only (the tokens before it are unchanged), and a subset of candidates scored with
prefix reuse on that cache; no library keeps such a cache across deletions. The suffix scoring
itself is :class:`~.scoring.PrefixReuseScorer`'s. Memory is one sequence's keys/values plus one
batch of candidate suffixes (not the n²/2 rows cross-step reuse keeps).
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from ..encoding import EncodedChain
from ..errors import CotSurvivalError
from .forward import PrefixCache
from .scoring import PrefixReuseScorer, check_finite, duplicate_of_previous, suffix_length, target_weights

# Rows of the vocabulary head computed at once when refreshing log-probabilities (bounds memory:
# rows × vocabulary floats).
_HEAD_CHUNK = 256


class IncrementalSequence:
    """The current sequence ``prefix ⊕ kept ⊕ answer``: its keys/values, final hidden states and
    target log-probabilities, updated after each deletion from the deleted position on."""

    @torch.inference_mode()
    def __init__(self, scorer: PrefixReuseScorer, prefix: list[int], kept: list[int], answer: list[int]) -> None:
        self.scorer = scorer
        self.forward = scorer.forward
        self.device = scorer.device
        self.prefix, self.kept, self.answer = list(prefix), list(kept), list(answer)
        ids = torch.tensor(self.prefix + self.kept + self.answer, device=self.device)
        positions = torch.arange(len(ids), device=self.device)[None]
        hidden, self.cache = self.forward.run(ids[None], positions, keep_cache=True)
        self.sequence = ids
        self.hidden = hidden[0]
        n, a = len(self.kept), len(self.answer)
        self.lp_next = np.zeros(n + a)  # log p(S[p+j]) in the current sequence
        self.lp_skip = np.zeros(n)  # log p(S[p+k+1]) predicted where S[p+k] was
        self._update_logprobs(0)

    @property
    def weights(self) -> np.ndarray:
        return target_weights(len(self.kept), len(self.answer), self.scorer.objective)

    @property
    def objective(self) -> float:
        return float((self.weights * self.lp_next).sum())

    @torch.inference_mode()
    def _update_logprobs(self, start: int) -> None:
        """Recompute ``lp_next[j]`` and ``lp_skip[j]`` for ``j ≥ start`` (one head pass per row)."""
        p, n, a = len(self.prefix), len(self.kept), len(self.answer)
        for lo in range(start, n + a, _HEAD_CHUNK):
            hi = min(n + a, lo + _HEAD_CHUNK)
            # Row j predicts S[p+j]; rows before the last reasoning token also give S[p+j+1] skipped to.
            rows = self.forward.log_softmax(self.hidden[p - 1 + lo: p - 1 + hi])
            next_ids = self.sequence[p + lo: p + hi]
            self.lp_next[lo:hi] = rows.gather(1, next_ids[:, None])[:, 0].double().cpu().numpy()
            skip_hi = min(hi, n)
            if lo < skip_hi:
                skip_ids = self.sequence[p + lo + 1: p + skip_hi + 1]
                self.lp_skip[lo:skip_hi] = rows[: skip_hi - lo].gather(1, skip_ids[:, None])[:, 0].double().cpu().numpy()

    @torch.inference_mode()
    def delete(self, k: int) -> None:
        """Delete kept token ``k``: rerun the sequence from that position on the unchanged cache before it."""
        p = len(self.prefix)
        start = p + k
        sequence = torch.cat([self.sequence[:start], self.sequence[start + 1:]])
        tail = sequence[start:]
        before = [key[:, :, :start] for key in self.cache.keys], [value[:, :, :start] for value in self.cache.values]
        hidden, new = self.forward.run(tail[None], torch.arange(start, len(sequence), device=self.device)[None],
                                       prefix=PrefixCache(*before), prefix_lengths=torch.tensor([start], device=self.device),
                                       keep_cache=True)
        self.cache = PrefixCache([torch.cat([b, t], dim=2) for b, t in zip(before[0], new.keys)],
                                 [torch.cat([b, t], dim=2) for b, t in zip(before[1], new.values)])
        self.hidden = torch.cat([self.hidden[:start], hidden[0]])
        self.sequence = sequence
        del self.kept[k]
        self.lp_next = np.delete(self.lp_next, k)
        self.lp_skip = np.delete(self.lp_skip, k)
        self._update_logprobs(max(0, k - 1))

    @torch.inference_mode()
    def costs(self, candidates, window: int | None = None) -> dict[int, float]:
        """Cost (objective − objective without it) of deleting each kept index in ``candidates``;
        with ``window``, only the change over the token itself, its successor and the ``window``
        targets after that (the whole cost when the window reaches the end).

        Deleting any token of a run of identical tokens gives one sequence, so each run is scored
        once, at its first token, and the cost shared: ties then go to the lowest position exactly.
        """
        p, n, a = len(self.prefix), len(self.kept), len(self.answer)
        first = _run_starts(self.kept)
        wanted = sorted({int(first[k]) for k in candidates})
        weights = self.weights
        weighted = weights * self.lp_next
        before = np.concatenate([[0.0], np.cumsum(weighted)])  # before[i] = Σ_{j<i}
        suffix, _ = self.scorer._suffix_scores(self.sequence, self.cache, p, n, a, weights, candidates=wanted,
                                               limit=window)
        by_first = {}
        for k in wanted:
            # The targets S[p+k .. p+end-1] the cost compares: the token, its successor, the suffix pass's.
            end = min(n + a, k + 2 + max(0, suffix_length(k, n, a, window)))
            by_first[k] = (before[end] - before[k]) - (weights[k + 1] * self.lp_skip[k] + suffix[k])
        return {int(k): by_first[int(first[k])] for k in candidates}

    def cost_array(self, window: int | None = None) -> np.ndarray:
        """:meth:`costs` of every kept token, in kept order."""
        costs = self.costs(range(len(self.kept)), window=window)
        return np.array([costs[k] for k in range(len(self.kept))])


def _run_starts(kept: list[int]) -> np.ndarray:
    """Index of the first token of the run of identical tokens each kept token belongs to."""
    return np.maximum.accumulate(np.where(duplicate_of_previous(kept), 0, np.arange(len(kept))))


def lazy_prune(scorer: PrefixReuseScorer, encoded: EncodedChain, n_steps: int, spec, trace,
               on_step: Callable | None = None):
    """Lazy re-scoring until ``n_steps`` deletions; ``trace`` (a :class:`~.engine.ChainTrace`) is continued.

    ``spec`` is a :class:`~.approx.LazySpec`. A resumed trace starts with a full refresh.
    """
    if spec.window is not None and scorer.objective != "joint":
        raise CotSurvivalError("E112", objective=scorer.objective)
    deleted = set(trace.order)
    alive = [i for i in range(len(encoded.reasoning_ids)) if i not in deleted]
    if trace.scored_steps is None:
        trace.scored_steps = list(range(1, trace.n_steps + 1))
    if trace.n_steps >= n_steps:
        return trace
    began = time.perf_counter()
    rows_before = scorer.token_rows
    sequence = IncrementalSequence(scorer, encoded.prefix_ids, [encoded.reasoning_ids[i] for i in alive],
                                   encoded.answer_ids)
    if not trace.objectives:
        trace.objectives.append(sequence.objective)
    if trace.deletion_costs is None:
        # A continued lazy run: its recorded objectives are exact, so each earlier deletion's
        # measured cost is the objective's drop.
        trace.deletion_costs = [float(c) for c in -np.diff(trace.objectives)]
    if trace.static_logprobs is None and not trace.order:
        trace.static_logprobs = sequence.lp_next[: len(alive)].copy()
    estimates = _Estimates(len(alive))
    far = None  # with spec.window: each cost's part beyond the window, at the last full scoring
    refreshed_at = None  # remaining tokens at the last full refresh
    last_gap = last_token = None  # kept index and token id of the last deletion
    while trace.n_steps < n_steps:
        m = len(alive)
        if refreshed_at is None or m <= refreshed_at * (1.0 - spec.refresh):
            estimates.rescore(sequence, range(m), trace.n_steps)
            refreshed_at = m
            trace.scored_steps.append(trace.n_steps + 1)
            trace.step_costs.append(estimates.costs.astype(np.float32))
            trace.step_positions.append(np.asarray(alive, dtype=np.int32))
            if spec.window is not None:
                far = estimates.costs - sequence.cost_array(window=spec.window)
        elif spec.window is not None:
            # Every cost re-measured over its local window; the far part as at the last full scoring.
            estimates.costs = sequence.cost_array(window=spec.window) + far
            estimates.fresh[:] = True
        elif last_gap is not None:
            near = set(range(max(0, last_gap - spec.radius), min(m, last_gap + spec.radius)))
            if spec.same:
                # Deleting one copy of a repeated token often makes another copy cheap (measured:
                # BENCHMARKS.md), wherever it stands.
                near |= {k for k, token in enumerate(sequence.kept) if token == last_token}
            if spec.age > 0:
                # Round-robin over the stalest costs: a token whose cost fell far from the last
                # deletion (about a fifth of new contenders, BENCHMARKS.md) waits at most m/age steps.
                stalest = [int(k) for k in np.argsort(estimates.measured, kind="stable") if k not in near]
                near |= set(stalest[: spec.age])
            estimates.rescore(sequence, near, trace.n_steps)
        while True:
            # argmin returns the first minimum: ties go to the lowest position, as in the definition.
            winner = int(np.argmin(estimates.costs))
            if estimates.fresh[winner]:
                break
            stale = np.nonzero(~estimates.fresh)[0]
            cheapest = stale[np.argsort(estimates.costs[stale], kind="stable")[: spec.batch]]
            estimates.rescore(sequence, cheapest, trace.n_steps)
        check_finite(encoded, trace.n_steps + 1, sequence.objective, estimates.costs[estimates.fresh])
        trace.order.append(alive[winner])
        last_gap, last_token = winner, sequence.kept[winner]
        before = sequence.objective
        sequence.delete(winner)
        trace.objectives.append(sequence.objective)
        trace.deletion_costs.append(before - trace.objectives[-1])  # exact: both objectives are
        del alive[winner]
        estimates.delete(winner)
        if spec.window is not None:
            far = np.delete(far, winner)
        trace.token_rows = trace.token_rows + scorer.token_rows - rows_before
        rows_before = scorer.token_rows
        if on_step is not None:
            on_step(trace)
    trace.seconds += time.perf_counter() - began
    return trace


class _Estimates:
    """Each remaining token's last measured cost, whether it was measured at this step, and when."""

    def __init__(self, m: int) -> None:
        self.costs = np.zeros(m)
        self.fresh = np.zeros(m, dtype=bool)
        self.measured = np.zeros(m, dtype=np.int64)

    def rescore(self, sequence: IncrementalSequence, indices, step: int) -> None:
        todo = sorted({int(k) for k in indices if not self.fresh[k]})
        if todo:
            for k, cost in sequence.costs(todo).items():
                self.costs[k] = cost
            self.fresh[todo] = True
            self.measured[todo] = step

    def delete(self, k: int) -> None:
        """Drop deleted token ``k``; every cost is stale for the next step."""
        self.costs = np.delete(self.costs, k)
        self.measured = np.delete(self.measured, k)
        self.fresh = np.zeros(len(self.costs), dtype=bool)
