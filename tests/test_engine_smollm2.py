"""Exactness on the real SmolLM2 (float32) and real GSM8K chains against the naive oracle."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cotsurvival import read_chains
from cotsurvival.encoding import encode_chain
from cotsurvival.pruning.engine import greedy_prune
from cotsurvival.pruning.scoring import PrefixReuseScorer

pytestmark = pytest.mark.integration

N_CHAINS, N_STEPS, NEAR_TIE = 3, 4, 1e-5


@torch.no_grad()
def oracle_step(model, prefix, kept, answer):
    """Objective of every single deletion, by running each full candidate sequence through the HF model."""
    totals = []
    for start in range(0, len(kept), 8):  # 8 candidates a pass keeps the full logits within ~250 MB
        rows = torch.tensor([prefix + kept[:k] + kept[k + 1:] + answer for k in range(start, min(start + 8, len(kept)))])
        logits = model(input_ids=rows).logits[:, len(prefix) - 1: -1].double()
        targets = rows[:, len(prefix):]
        picked = logits.gather(2, targets[..., None])[..., 0] - torch.logsumexp(logits, dim=-1)
        totals.extend(picked.sum(dim=1).tolist())
    return np.asarray(totals)


def test_prefix_reuse_equals_naive_on_smollm2(smollm2):
    model, tokenizer, _ = smollm2
    chains = sorted(read_chains("gsm8k"), key=lambda c: len(c.reasoning))[:N_CHAINS]
    near_ties = compared = 0
    worst = 0.0
    for chain in chains:
        encoded = encode_chain(chain, tokenizer)
        trace = greedy_prune(PrefixReuseScorer(model, "joint", 2048), encoded, N_STEPS)
        alive = list(range(len(encoded.reasoning_ids)))
        for step in range(N_STEPS):
            kept = [encoded.reasoning_ids[i] for i in alive]
            oracle = oracle_step(model, encoded.prefix_ids, kept, encoded.answer_ids)
            engine = trace.objectives[step] - trace.step_costs[step].astype(np.float64)
            worst = max(worst, float(np.abs(oracle - engine).max()))
            best, second = np.sort(oracle)[::-1][:2]
            oracle_pick = alive[int(np.argmax(oracle))]
            compared += 1
            if oracle_pick != trace.order[step]:
                seq = lambda p: tuple(encoded.reasoning_ids[i] for i in alive if i != p)  # noqa: E731
                if seq(oracle_pick) != seq(trace.order[step]):
                    assert best - second < NEAR_TIE, f"{chain.id} step {step + 1}: orders differ beyond a near-tie"
                    near_ties += 1
            alive.remove(trace.order[step])
    print(f"\nexactness on SmolLM2 float32: {compared} steps compared over {N_CHAINS} GSM8K chains, "
          f"{near_ties} admissible near-tie differences (< {NEAR_TIE} nats), max |score diff| {worst:.2e} nats")
    assert worst < 1e-3
