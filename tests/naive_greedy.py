"""An obviously-correct greedy pruner, written independently of the engine, as the tests' oracle.

It rebuilds every candidate sequence and scores it with the plain Hugging Face forward pass
(full logits, no cache, no batching tricks).
"""
from __future__ import annotations

import torch


@torch.no_grad()
def sequence_objective(model, prefix, kept, answer, objective="joint") -> float:
    ids = torch.tensor([prefix + kept + answer])
    logprobs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    total = 0.0
    start = len(prefix) if objective == "joint" else len(prefix) + len(kept)
    for position in range(start, ids.shape[1]):
        total += float(logprobs[position - 1, ids[0, position]])
    return total


def naive_greedy(model, prefix, reasoning, answer, n_steps, objective="joint"):
    """Returns (order of original positions, per-step list of (candidate objectives), objectives)."""
    alive = list(range(len(reasoning)))
    order, all_scores = [], []
    for _ in range(n_steps):
        scores = []
        for k in range(len(alive)):
            kept = [reasoning[i] for j, i in enumerate(alive) if j != k]
            scores.append(sequence_objective(model, prefix, kept, answer, objective))
        best = max(range(len(scores)), key=lambda k: (scores[k], -k))
        all_scores.append(scores)
        order.append(alive.pop(best))
    return order, all_scores
