"""Scoring one greedy step: the objective of the current chain and of every single deletion.

Notation for a step: the sequence is ``S = prefix ⊕ kept ⊕ answer`` of length ``T = p + n + a``.
Deleting kept token ``k`` gives ``Y_k = S`` without ``S[p+k]``, re-indexed contiguously (RoPE
positions shift by one after the gap, as in a newly written text). ``log p`` terms are summed
over the scored targets: kept reasoning and answer tokens (``joint``) or answer tokens
(``answer``).

Why prefix reuse is exact: in ``Y_k`` every token before position ``p+k`` has the same left
context and position as in ``S``, so its keys, values and log-probabilities are those of one
pass over ``S``. The target right after the gap, ``S[p+k+1]``, is predicted by the same hidden
state that predicted ``S[p+k]`` in ``S``: one more entry of the same softmax row. Only the
suffix ``S[p+k+1:]`` must be recomputed, attending to the first ``p+k`` cached keys of ``S``.
This turns a step's work from ``n·T`` token passes into ``T + Σ_k (n+a-k-2)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import CotSurvivalError
from .forward import FamilyForward, GenericForward, supports_prefix_reuse
from .registry import OBJECTIVES, SCORING_METHODS


@dataclass
class StepScores:
    """Scores of one greedy step.

    Attributes
    ----------
    objective : float
        Objective of the current (not yet pruned at this step) sequence.
    candidate_objectives : np.ndarray, shape (n,)
        Objective after deleting each kept token, in kept order.
    next_logprobs : np.ndarray, shape (n,)
        ``log p`` of each kept reasoning token given its left context in the current sequence.
    tokens_processed : int
        Token rows run through the decoder for this step (for benchmarks).
    """

    objective: float
    candidate_objectives: np.ndarray
    next_logprobs: np.ndarray
    tokens_processed: int


@OBJECTIVES.register("joint")
def joint_weights(n_kept: int, n_answer: int) -> np.ndarray:
    """Every target counts: the kept reasoning and the answer."""
    return np.ones(n_kept + n_answer, dtype=np.float64)


@OBJECTIVES.register("answer")
def answer_weights(n_kept: int, n_answer: int) -> np.ndarray:
    """Only the answer's targets count."""
    weights = np.ones(n_kept + n_answer, dtype=np.float64)
    weights[:n_kept] = 0.0
    return weights


def target_weights(n_kept: int, n_answer: int, objective: str) -> np.ndarray:
    """Weight of each target ``S[p+j]`` for ``j`` in ``0..n+a-1``: 1 if scored, else 0 (per objective)."""
    return OBJECTIVES.resolve(objective)(n_kept, n_answer)


def duplicate_of_previous(kept: list[int]) -> np.ndarray:
    """True where deleting kept token k gives the same sequence as deleting k-1 (same token id)."""
    ids = np.asarray(kept)
    same = np.zeros(len(ids), dtype=bool)
    same[1:] = ids[1:] == ids[:-1]
    return same


def suffix_length(k: int, n: int, a: int, limit: int | None = None) -> int:
    """Query rows of candidate k's suffix pass: every target after the gap's first, or ``limit`` of them."""
    full = n + a - k - 2
    return full if limit is None else min(full, limit)


def plan_batches(jobs, length_of, budget: int, min_tokens: int = 512, max_padding: float = 0.2):
    """Split consecutive jobs (sorted by length) into padded batches of at most ``budget`` token rows.

    A batch also closes when padding would exceed ``max_padding`` of it, once it holds
    ``min_tokens`` real tokens: below a few hundred rows a CPU runs at about half speed, above
    that padding is pure waste.
    """
    batch, width, real = [], 0, 0
    for job in jobs:
        length = length_of(job)
        new_width = max(width, length)
        padded = (len(batch) + 1) * new_width
        too_big = padded > budget
        too_padded = real >= min_tokens and 1 - (real + length) / padded > max_padding
        if batch and (too_big or too_padded):
            yield batch
            batch, new_width, real = [], length, 0
        batch.append(job)
        width, real = new_width, real + length
    if batch:
        yield batch


def _count_rows_hook(model, scorer):
    """A forward hook on the input embeddings adding ``input_ids.numel()`` to ``scorer.token_rows``.

    Holds the scorer weakly, so a scorer can be garbage-collected (its ``__del__`` removes the hook).
    Counts every pass through the model while the scorer lives; callers take differences around
    ``score`` calls to attribute rows to one scorer.
    """
    import weakref

    ref = weakref.ref(scorer)

    def hook(module, args, output):
        owner = ref()
        if owner is not None and args:
            owner.token_rows += int(args[0].numel())

    return model.get_input_embeddings().register_forward_hook(hook)


class Scorer:
    """Base class: ``score(prefix, kept, answer) -> StepScores``."""

    def __init__(self, model, objective: str = "joint", max_batch_tokens: int = 4096) -> None:
        OBJECTIVES.check(objective)
        self.model = model
        self.objective = objective
        self.max_batch_tokens = max_batch_tokens
        self.device = next(model.parameters()).device
        # Decoder token rows (padding included) this scorer's model embedded: counted where every
        # forward pass starts, so it holds for any scorer (see ``token_rows``).
        self.token_rows = 0
        self._row_counter = _count_rows_hook(model, self)

    def __del__(self) -> None:
        handle = getattr(self, "_row_counter", None)
        if handle is not None:
            handle.remove()

    def score(self, prefix: list[int], kept: list[int], answer: list[int]) -> StepScores:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget per-chain state (scorers that keep some free it here)."""

    def _run_with_oom_retry(self, work, *args):
        """Run ``work``; on CUDA out-of-memory halve the batch budget and run it again.

        ``work`` must plan its batches from ``self.max_batch_tokens`` on every call, so the
        retry really runs smaller batches.
        """
        while True:
            try:
                return work(*args)
            except torch.OutOfMemoryError:
                if self.max_batch_tokens <= 64:
                    raise
                self.max_batch_tokens //= 2
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()


@SCORING_METHODS.register("prefix")
class PrefixReuseScorer(Scorer):
    """One pass over ``S`` per step, then each candidate's suffix on the cached prefix."""

    def __init__(self, model, objective: str = "joint", max_batch_tokens: int = 4096) -> None:
        super().__init__(model, objective, max_batch_tokens)
        self.forward = FamilyForward(model)

    @torch.inference_mode()
    def score(self, prefix, kept, answer) -> StepScores:
        p, n, a = len(prefix), len(kept), len(answer)
        sequence = torch.tensor(prefix + kept + answer, device=self.device)
        total = len(sequence)
        hidden, cache = self.forward.run(sequence[None], torch.arange(total, device=self.device)[None], keep_cache=True)
        rows = self.forward.log_softmax(hidden[0, p - 1: total - 1])  # (n+a, V): predicts S[p+j]
        targets = sequence[p:]
        lp_next = rows.gather(1, targets[:, None])[:, 0].double().cpu().numpy()
        skip_targets = sequence[p + 1: p + n + 1]  # S[p+k+1], predicted where S[p+k] was
        lp_skip = rows[:n].gather(1, skip_targets[:, None])[:, 0].double().cpu().numpy()
        weights = target_weights(n, a, self.objective)
        weighted = weights * lp_next
        before = np.concatenate([[0.0], np.cumsum(weighted)])  # before[k] = Σ_{j<k}
        candidate = before[:n] + weights[1: n + 1] * lp_skip
        suffix, processed = self._suffix_scores(sequence, cache, p, n, a, weights)
        candidate = candidate + suffix
        duplicate = duplicate_of_previous(kept)
        for k in np.nonzero(duplicate)[0]:
            candidate[k] = candidate[k - 1]
        return StepScores(float(weighted.sum()), candidate, lp_next[:n], total + processed)

    def _suffix_scores(self, sequence, cache, p, n, a, weights, candidates=None,
                       limit: int | None = None) -> tuple[np.ndarray, int]:
        """Per candidate k, ``Σ w·log p`` of its suffix targets (all candidates, or only ``candidates``,
        which must hold no duplicate of its previous token); entries not scored stay 0. With
        ``limit``, only the first ``limit`` targets of each suffix (a local window)."""
        scores = np.zeros(n, dtype=np.float64)
        if candidates is None:
            duplicate = duplicate_of_previous(sequence[p: p + n].tolist())
            candidates = [k for k in range(n) if not duplicate[k]]
        # Longest suffixes last: consecutive candidates have similar lengths, so padding is small.
        todo = [k for k in sorted(candidates, reverse=True) if suffix_length(k, n, a) > 0]
        processed = 0
        while todo:
            # Plan from the current budget each time: an out-of-memory retry re-splits the batch.
            done, rows = self._run_with_oom_retry(self._plan_and_score, sequence, cache, p, n, a, weights, todo, scores,
                                                  limit)
            processed += rows
            todo = todo[done:]
        return scores, processed

    def _plan_and_score(self, sequence, cache, p, n, a, weights, todo, scores, limit=None) -> tuple[int, int]:
        """Score the next batch of ``todo``; returns (jobs done, token rows run)."""
        batch = next(plan_batches(todo, lambda k: suffix_length(k, n, a, limit), self.max_batch_tokens))
        return len(batch), self._score_batch(sequence, cache, p, n, a, weights, batch, scores, limit)

    def _score_batch(self, sequence, cache, p, n, a, weights, batch, scores, limit=None) -> int:
        lengths = [suffix_length(k, n, a, limit) for k in batch]
        width = max(lengths)
        rows = len(batch)
        ids = torch.zeros(rows, width, dtype=torch.long, device=self.device)
        positions = torch.zeros(rows, width, dtype=torch.long, device=self.device)
        valid = torch.zeros(rows, width, dtype=torch.bool, device=self.device)
        targets = torch.zeros(rows, width, dtype=torch.long, device=self.device)
        target_w = np.zeros((rows, width))
        for row, (k, length) in enumerate(zip(batch, lengths)):
            ids[row, :length] = sequence[p + k + 1: p + k + 1 + length]
            positions[row, :length] = torch.arange(p + k, p + k + length, device=self.device)
            valid[row, :length] = True
            targets[row, :length] = sequence[p + k + 2: p + k + 2 + length]
            target_w[row, :length] = weights[k + 2: k + 2 + length]
        prefix_lengths = torch.tensor([p + k for k in batch], device=self.device)
        hidden, _ = self.forward.run(ids, positions, prefix=cache, prefix_lengths=prefix_lengths, query_valid=valid)
        needed = torch.from_numpy(target_w > 0).to(self.device)
        logp = self.forward.log_probs(hidden[needed], targets[needed]).double().cpu().numpy()
        per_row = np.zeros(rows)
        np.add.at(per_row, np.nonzero(target_w > 0)[0], logp * target_w[target_w > 0])
        for row, k in enumerate(batch):
            scores[k] = per_row[row]
        return rows * width


@SCORING_METHODS.register("naive")
class NaiveScorer(Scorer):
    """Every candidate's full sequence run from scratch (the study's method, batched).

    Uses the sparse vocabulary head when the architecture allows, so it is compared like with
    like against :class:`PrefixReuseScorer`; otherwise full ``model(...)`` logits.
    """

    def __init__(self, model, objective: str = "joint", max_batch_tokens: int = 4096,
                 model_forward: bool = False) -> None:
        super().__init__(model, objective, max_batch_tokens)
        # model_forward=True: plain ``model(input_ids)`` whatever the architecture (an independent oracle).
        self.decoder = FamilyForward(model) if supports_prefix_reuse(model) and not model_forward else None
        self.generic = None if self.decoder else GenericForward(model)

    @torch.inference_mode()
    def score(self, prefix, kept, answer) -> StepScores:
        p, n, a = len(prefix), len(kept), len(answer)
        base = torch.tensor([prefix + kept + answer], device=self.device)
        base_lp = self._target_logprobs(base, p, target_weights(n, a, "joint"))[0]
        weights = target_weights(n, a, self.objective)
        objective = float((weights * base_lp).sum())
        candidates = np.zeros(n)
        processed = base.shape[1]
        duplicate = duplicate_of_previous(kept)
        todo = [k for k in range(n) if not duplicate[k]]
        w = target_weights(n - 1, a, self.objective)
        while todo:
            batch = self._run_with_oom_retry(self._naive_batch, prefix, kept, answer, todo, w, candidates)
            processed += len(batch) * (p + n - 1 + a)
            todo = todo[len(batch):]
        for k in np.nonzero(duplicate)[0]:
            candidates[k] = candidates[k - 1]
        return StepScores(objective, candidates, base_lp[:n], processed)

    def _naive_batch(self, prefix, kept, answer, todo, w, candidates) -> list[int]:
        per_batch = max(1, self.max_batch_tokens // max(1, len(prefix) + len(kept) + len(answer) - 1))
        batch = todo[:per_batch]
        rows = torch.tensor([prefix + kept[:k] + kept[k + 1:] + answer for k in batch], device=self.device)
        candidates[batch] = (self._target_logprobs(rows, len(prefix), w) * w).sum(axis=1)
        return batch

    def _target_logprobs(self, rows: torch.Tensor, p: int, weights: np.ndarray) -> np.ndarray:
        """``log p(rows[:, p+j])`` for scored j (others 0), shape ``(B, len - p)``."""
        batch, length = rows.shape
        targets = rows[:, p:]
        out = np.zeros((batch, length - p))
        needed_cols = torch.from_numpy(weights > 0).to(self.device)
        if self.decoder is not None:
            positions = torch.arange(length, device=self.device).expand(batch, -1)
            hidden, _ = self.decoder.run(rows, positions)
            hidden = hidden[:, p - 1: length - 1][:, needed_cols]
            logp = self.decoder.log_probs(hidden.reshape(-1, hidden.shape[-1]), targets[:, needed_cols].reshape(-1))
            out[:, weights > 0] = logp.reshape(batch, -1).double().cpu().numpy()
        else:
            logsm = self.generic.log_softmax_rows(rows)[:, p - 1: length - 1]
            out[:] = logsm.gather(2, targets[..., None])[..., 0].double().cpu().numpy()
            out[:, weights == 0] = 0.0
        return out


def check_finite(encoded, step: int, *values) -> None:
    """Refuse non-finite objectives or costs (E114): ``argmax`` would silently pick a NaN as the
    best deletion, and every later step would rank garbage. Happens when a model overflows in float16."""
    if not all(np.isfinite(np.asarray(v, dtype=np.float64)).all() for v in values):
        raise CotSurvivalError("E114", chain=encoded.chain.id, step=step)
