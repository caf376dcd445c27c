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


def baseline_orders(trace: ChainTrace, *, names, seed: int, chain_index: int,
                    attention: np.ndarray | None = None, keep_probs: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Deletion orders (original positions) of the requested baselines."""
    n = len(trace.step_positions[0]) if trace.step_positions else len(trace.static_logprobs)
    orders = {}
    for name in names:
        if name == "random":
            orders[name] = np.random.default_rng([seed, chain_index]).permutation(n)
        elif name == "surprisal":
            orders[name] = np.argsort(-trace.static_logprobs, kind="stable")
        elif name == "loo":
            orders[name] = np.argsort(trace.step_costs[0], kind="stable")
        elif name == "attention":
            if attention is None:
                raise ValueError("the attention baseline needs answer_attention()")
            orders[name] = np.argsort(attention, kind="stable")
        elif name == "llmlingua2":
            if keep_probs is None:
                raise ValueError("the llmlingua2 baseline needs KeepClassifier.keep_probs()")
            orders[name] = llmlingua2_order(keep_probs)
        else:
            raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    return orders


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
