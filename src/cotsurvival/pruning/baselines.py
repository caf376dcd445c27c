"""Baseline orderings, stored beside the greedy one for comparison.

* ``random``: a seeded permutation per chain (seed, chain index).
* ``surprisal``: static; the most predictable tokens (highest ``log p`` in the unpruned chain)
  go first, as in the published study.
* ``loo``: static leave-one-out; ascending step-1 costs (the greedy trace's first step).
* ``attention``: static; the least attention received from the answer tokens goes first
  (mean over layers, heads and answer queries, in the unpruned chain).
* ``llmlingua2``: static; the lowest LLMLingua-2 keep probability goes first (the ordering TokenSkip
  uses; classifier, chunking and word-to-token mapping in :mod:`cotsurvival.pruning.llmlingua`).

Ties go to the lowest position in every ordering (stable sorts).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..encoding import EncodedChain
from .engine import ChainTrace
from .llmlingua import llmlingua2_order
from .registry import BASELINES
from .tables import null_if_zero


@contextmanager
def eager_attention(model):
    """Temporarily switch a model to eager attention, which can return attention weights."""
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        model.set_attn_implementation(previous)


@torch.inference_mode()
def answer_attention(model, encoded: EncodedChain) -> np.ndarray:
    """Attention each reasoning token receives from the answer tokens, ``(n,)``.

    Mean over layers and heads of the attention weights, averaged over answer queries.
    """
    p, n = len(encoded.prefix_ids), len(encoded.reasoning_ids)
    device = next(model.parameters()).device
    ids = torch.tensor([encoded.prefix_ids + encoded.reasoning_ids + encoded.answer_ids], device=device)
    with eager_attention(model):
        attentions = model(input_ids=ids, output_attentions=True).attentions  # layers × (1, H, T, T)
    stacked = torch.stack([layer[0].float() for layer in attentions])  # (layers, H, T, T)
    from_answer = stacked[:, :, p + n:, p: p + n]  # (layers, H, a, n)
    return from_answer.mean(dim=(0, 1, 2)).double().cpu().numpy()


@dataclass(frozen=True)
class BaselineInputs:
    """What a baseline ordering may read besides the greedy trace."""

    n: int
    seed: int
    chain_index: int
    attention: np.ndarray | None = None
    keep_probs: np.ndarray | None = None


@BASELINES.register("random")
def random_order(trace: ChainTrace, inputs: BaselineInputs) -> np.ndarray:
    return np.random.default_rng([inputs.seed, inputs.chain_index]).permutation(inputs.n)


@BASELINES.register("surprisal")
def surprisal_order(trace: ChainTrace, inputs: BaselineInputs) -> np.ndarray:
    return np.argsort(-trace.static_logprobs, kind="stable")


@BASELINES.register("loo")
def loo_order(trace: ChainTrace, inputs: BaselineInputs) -> np.ndarray:
    return np.argsort(trace.step_costs[0], kind="stable")


@BASELINES.register("attention")
def attention_order(trace: ChainTrace, inputs: BaselineInputs) -> np.ndarray:
    if inputs.attention is None:
        raise ValueError("the attention baseline needs answer_attention()")
    return np.argsort(inputs.attention, kind="stable")


@BASELINES.register("llmlingua2")
def llmlingua2_baseline_order(trace: ChainTrace, inputs: BaselineInputs) -> np.ndarray:
    if inputs.keep_probs is None:
        raise ValueError("the llmlingua2 baseline needs KeepClassifier.keep_probs()")
    return llmlingua2_order(inputs.keep_probs)


def baseline_orders(trace: ChainTrace, *, names, seed: int, chain_index: int,
                    attention: np.ndarray | None = None, keep_probs: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Deletion orders (original positions) of the requested baselines (E088 for an unknown name)."""
    n = len(trace.step_positions[0]) if trace.step_positions else len(trace.static_logprobs)
    inputs = BaselineInputs(n=n, seed=seed, chain_index=chain_index, attention=attention, keep_probs=keep_probs)
    return {name: BASELINES.resolve(name)(trace, inputs) for name in names}


def orders_to_frame(orders: dict[str, np.ndarray], n_tokens: int, n_steps: int, chain_index: int,
                    chain_id: str) -> pd.DataFrame:
    """Rows of ``baselines.parquet`` for one chain, truncated at the greedy run's step count."""
    frames = []
    for name, order in orders.items():
        deleted = np.full(n_tokens, -1, dtype=np.int64)
        deleted[np.asarray(order[:n_steps], dtype=np.int64)] = np.arange(1, n_steps + 1)
        frames.append(pd.DataFrame({
            "chain_index": chain_index, "chain_id": chain_id, "ordering": name, "position": np.arange(n_tokens),
            "deleted_step": null_if_zero(np.maximum(deleted, 0)),
            "n_tokens": n_tokens,
        }))
    frame = pd.concat(frames, ignore_index=True)
    frame["survival"] = frame["deleted_step"].fillna(n_steps).astype(float) / n_tokens
    frame["censored"] = frame["deleted_step"].isna()
    return frame
