"""Cross-step reuse: each candidate keeps its own computation from one step to the next.

After step t deletes token ``w``, the next sequence ``S' = S − w`` is exactly candidate ``w``'s
sequence, so its keys/values need no new pass. A candidate ``k < w`` at step t+1 is
``S − {k, w}``: identical to its own step-t sequence ``S − k`` up to just before ``w``, so it
reruns only from there (one token earlier, so the prediction across the new gap is fresh). A
candidate at or after ``w`` runs its suffix on the shared cache of ``S'``, as in plain prefix
reuse. Every number is still a full forward pass over a real candidate sequence — only the
rows already computed for exactly the same tokens at exactly the same positions are reused — so
the result is the greedy order of the definition, not an approximation.

Memory: each candidate keeps the keys/values of its suffix (≈ n²/2 token rows per chain).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .forward import FamilyForward, PrefixCache
from .registry import SCORING_METHODS
from .scoring import Scorer, StepScores, duplicate_of_previous, plan_batches, target_weights


@dataclass
class _Candidate:
    keys: list[torch.Tensor]  # per layer (1, kv, len, hd): the candidate sequence from its deletion point on
    values: list[torch.Tensor]
    logprobs: np.ndarray  # weighted log p of targets at sequence indices p, p+1, ...

    def shifted(self) -> "_Candidate":
        """The same sequence seen from one index later: the twin of an identical next token."""
        return _Candidate([k[:, :, 1:] for k in self.keys], [v[:, :, 1:] for v in self.values], self.logprobs)


@dataclass
class _State:
    prefix: list[int]
    answer: list[int]
    kept: list[int]
    cache: PrefixCache  # keys/values of the whole current sequence
    logprobs: np.ndarray  # weighted log p of the current sequence's targets from index p
    candidates: list[_Candidate]


@SCORING_METHODS.register("crossstep")
class CrossStepScorer(Scorer):
    """Prefix reuse plus reuse of each candidate's computation across steps (stateful per chain)."""

    def __init__(self, model, objective: str = "joint", max_batch_tokens: int = 4096) -> None:
        super().__init__(model, objective, max_batch_tokens)
        self.forward = FamilyForward(model)
        self._state: _State | None = None

    @torch.inference_mode()
    def score(self, prefix, kept, answer) -> StepScores:
        # The state is replaced only when a step completes, so an out-of-memory retry (with a
        # halved batch budget) recomputes the step from the same state.
        return self._run_with_oom_retry(self._score_once, prefix, kept, answer)

    def _score_once(self, prefix, kept, answer) -> StepScores:
        winner = _deleted_index(self._state, prefix, kept, answer)
        if winner is None:
            return self._first_step(prefix, kept, answer)
        return self._next_step(self._state, winner)

    # ------------------------------------------------------------------ steps
    def _first_step(self, prefix, kept, answer) -> StepScores:
        p = len(prefix)
        sequence = prefix + kept + answer
        weights = target_weights(len(kept), len(answer), self.objective)
        ids = torch.tensor([sequence], device=self.device)
        hidden, cache = self.forward.run(ids, torch.arange(len(sequence), device=self.device)[None], keep_cache=True)
        logprobs = self._weighted_logprobs(hidden[0, p - 1: -1], ids[0, p:], weights)
        next_lp = self.forward.log_probs(hidden[0, p - 1: p - 1 + len(kept)], ids[0, p: p + len(kept)])
        state = _State(list(prefix), list(answer), list(kept), cache, logprobs, [])
        candidates, processed = self._new_candidates(state, range(len(kept)))
        state.candidates = candidates
        self._state = state
        return self._scores(state, next_lp.double().cpu().numpy(), len(sequence) + processed)

    def _next_step(self, old: _State, w: int) -> StepScores:
        p = len(old.prefix)
        chosen = old.candidates[w]
        keys = [torch.cat([k[:, :, : p + w], c], dim=2) for k, c in zip(old.cache.keys, chosen.keys)]
        values = [torch.cat([v[:, :, : p + w], c], dim=2) for v, c in zip(old.cache.values, chosen.values)]
        kept = old.kept[:w] + old.kept[w + 1:]
        state = _State(old.prefix, old.answer, kept, PrefixCache(keys, values), chosen.logprobs, [])
        reused, processed_old = self._carried_candidates(old, state, w)
        fresh, processed_new = self._new_candidates(state, range(w, len(kept)))
        state.candidates = reused + fresh
        # Deleting either of two identical adjacent tokens gives one sequence: one score, so ties
        # go to the lower position exactly, as in the definition.
        for k in np.nonzero(duplicate_of_previous(kept))[0]:
            state.candidates[k] = state.candidates[k - 1].shifted()
        self._state = state
        # log p of each kept token in the current sequence is only needed at step 1 (surprisal).
        return self._scores(state, np.full(len(kept), np.nan), processed_old + processed_new)

    def _scores(self, state: _State, next_lp: np.ndarray, processed: int) -> StepScores:
        objectives = np.array([c.logprobs.sum() for c in state.candidates])
        return StepScores(float(state.logprobs.sum()), objectives, next_lp, processed)

    # ------------------------------------------------------------- candidates
    def _new_candidates(self, state: _State, indices) -> tuple[list[_Candidate], int]:
        """Candidates whose deletion point lies at or after the last reuse point: run on the shared cache."""
        p, n, a = len(state.prefix), len(state.kept), len(state.answer)
        sequence = torch.tensor(state.prefix + state.kept + state.answer, device=self.device)
        duplicate = duplicate_of_previous(state.kept)
        jobs = [k for k in indices if not (duplicate[k] and k - 1 in indices)]
        results: dict[int, _Candidate] = {}
        processed = 0
        # Each job k: queries S[p+k-1], S[p+k+1:], attending to the first p+k-1 cached keys.
        for batch in self._batches(jobs, lambda k: n + a - k):
            processed += self._run_new(state, sequence, batch, results)
        return _fill(results, indices), processed

    def _run_new(self, state, sequence, batch, results) -> int:
        p, n, a = len(state.prefix), len(state.kept), len(state.answer)
        lengths = [n + a - k for k in batch]
        width = max(lengths)
        ids, positions, valid = self._empty(len(batch), width)
        for row, (k, length) in enumerate(zip(batch, lengths)):
            ids[row, 0] = sequence[p + k - 1]
            ids[row, 1:length] = sequence[p + k + 1:]
            positions[row, :length] = torch.arange(p + k - 1, p + k - 1 + length, device=self.device)
            valid[row, :length] = True
        prefix_lengths = torch.tensor([p + k - 1 for k in batch], device=self.device)
        hidden, new = self.forward.run(ids, positions, prefix=state.cache, prefix_lengths=prefix_lengths,
                                       query_valid=valid, keep_cache=True)
        weights = target_weights(n - 1, a, self.objective)  # of the candidate sequence, from index p
        tails = self._batched_logprobs(hidden, ids, [weights[k:] for k in batch])
        for row, (k, length) in enumerate(zip(batch, lengths)):
            head = state.logprobs[:k]
            tail = tails[row]
            results[k] = _Candidate([t[row: row + 1, :, 1:length] for t in new.keys],
                                    [t[row: row + 1, :, 1:length] for t in new.values],
                                    np.concatenate([head, tail]))
        return len(batch) * width

    def _carried_candidates(self, old: _State, state: _State, w: int) -> tuple[list[_Candidate], int]:
        """Candidates k < w: rerun only from just before the new gap, on their own step-t computation."""
        if w == 0:
            return [], 0
        p, n, a = len(state.prefix), len(state.kept), len(state.answer)
        m = p + w - 1  # index of the (now deleted) token w in candidate k's step-t sequence
        sequence_old = old.prefix + old.kept + old.answer
        # X = S − {k, w}; the queries are X[m-1] then X[m:]. X[m-1] is S[p+w-1], except for
        # k = w-1 where that token is k itself and X[m-1] = S[p+w-2].
        queries = [sequence_old[p + w - 1]] + sequence_old[p + w + 1:]
        width = len(queries)
        duplicate = duplicate_of_previous(state.kept[:w])
        jobs = [k for k in range(w) if not duplicate[k]]
        results: dict[int, _Candidate] = {}
        processed = 0
        for batch in self._batches(jobs, lambda k: width):
            processed += self._run_carried(old, batch, m, queries, results, n, a, w)
        return _fill(results, range(w)), processed

    def _run_carried(self, old, batch, m, queries, results, n, a, w) -> int:
        p = len(old.prefix)
        rows, width = len(batch), len(queries)
        keys = [self._gather_past(old, batch, m, layer, "keys") for layer in range(len(old.cache.keys))]
        values = [self._gather_past(old, batch, m, layer, "values") for layer in range(len(old.cache.keys))]
        ids = torch.tensor([queries] * rows, device=self.device)
        for row, k in enumerate(batch):
            if k == w - 1:
                ids[row, 0] = old.kept[w - 2] if w >= 2 else old.prefix[-1]
        positions = torch.arange(m - 1, m - 1 + width, device=self.device).expand(rows, -1)
        full = torch.full((rows,), m - 1, device=self.device)
        hidden, new = self.forward.run(ids, positions, prefix=PrefixCache(keys, values), prefix_lengths=full,
                                       keep_cache=True)
        weights = target_weights(n - 1, a, self.objective)
        kept_len = m - p  # targets at indices p .. m-1 are unchanged
        tails = self._batched_logprobs(hidden, ids, [weights[kept_len:]] * rows)
        for row, k in enumerate(batch):
            own = old.candidates[k]
            tail = tails[row]
            reuse = max(0, m - 1 - (p + k))
            drop = max(0, (p + k) - (m - 1))
            results[k] = _Candidate(
                [torch.cat([o[:, :, :reuse], t[row: row + 1, :, drop:]], dim=2) for o, t in zip(own.keys, new.keys)],
                [torch.cat([o[:, :, :reuse], t[row: row + 1, :, drop:]], dim=2) for o, t in zip(own.values, new.values)],
                np.concatenate([own.logprobs[:kept_len], tail]))
        return rows * width

    def _gather_past(self, old: _State, batch, m: int, layer: int, kind: str) -> torch.Tensor:
        """Keys or values of each candidate's step-t sequence before index m-1, ``(B, kv, m-1, hd)``.

        Row k is the shared cache up to its deletion point p+k, then its own cached suffix.
        """
        p = len(old.prefix)
        base = getattr(old.cache, kind)[layer]
        out = base.new_empty((len(batch), base.shape[1], m - 1, base.shape[3]))
        for row, k in enumerate(batch):
            split = min(p + k, m - 1)
            out[row, :, :split] = base[0, :, :split]
            if m - 1 > split:
                out[row, :, split:] = getattr(old.candidates[k], kind)[layer][0, :, : m - 1 - split]
        return out

    # ---------------------------------------------------------------- helpers
    def _batches(self, jobs, length_of):
        return plan_batches(jobs, length_of, self.max_batch_tokens)

    def reset(self) -> None:
        self._state = None

    def _empty(self, rows, width):
        ids = torch.zeros(rows, width, dtype=torch.long, device=self.device)
        positions = torch.zeros(rows, width, dtype=torch.long, device=self.device)
        valid = torch.zeros(rows, width, dtype=torch.bool, device=self.device)
        return ids, positions, valid

    def _weighted_logprobs(self, hidden, targets, weights) -> np.ndarray:
        """``w · log p(target)`` per position, the vocabulary head run only where ``w > 0``."""
        out = np.zeros(len(weights))
        needed = np.nonzero(weights > 0)[0]
        if len(needed):
            index = torch.from_numpy(needed).to(self.device)
            out[needed] = self.forward.log_probs(hidden[index], targets[index]).double().cpu().numpy() * weights[needed]
        return out

    def _batched_logprobs(self, hidden, ids, row_weights) -> list[np.ndarray]:
        """Per row r: ``w · log p`` of ``ids[r, 1:1+len(w)]`` predicted by ``hidden[r, :len(w)]``.

        One vocabulary-head call for the whole batch: per-row calls are small matmuls that waste
        most of a CPU's throughput.
        """
        rows, width = ids.shape
        weight_grid = np.zeros((rows, width - 1))
        for row, w in enumerate(row_weights):
            weight_grid[row, : len(w)] = w
        needed = weight_grid > 0
        out = np.zeros((rows, width - 1))
        if needed.any():
            mask = torch.from_numpy(needed).to(self.device)
            logp = self.forward.log_probs(hidden[:, : width - 1][mask], ids[:, 1:][mask]).double().cpu().numpy()
            out[needed] = logp * weight_grid[needed]
        return [out[row, : len(w)] for row, w in enumerate(row_weights)]


def _fill(results: dict[int, _Candidate], indices) -> list[_Candidate]:
    """Candidates in order; one left out as a duplicate takes its twin's sequence, one index later."""
    out = []
    for k in indices:
        out.append(results[k] if k in results else out[-1].shifted())
    return out


def _deleted_index(state: _State | None, prefix, kept, answer) -> int | None:
    """Index of the token deleted since the last call, or None when this is a new chain."""
    if state is None or state.prefix != list(prefix) or state.answer != list(answer):
        return None
    previous = state.kept
    if len(previous) != len(kept) + 1:
        return None
    for index in range(len(kept)):
        if previous[index] != kept[index]:
            return index if previous[index + 1:] == list(kept[index:]) else None
    return len(kept)
