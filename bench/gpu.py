"""GPU benchmark: one chain pruned on a random-weight model of a real 8B architecture.

Llama-3-8B shape (32 layers, hidden 4096, 32 heads / 8 KV heads, MLP 14336, vocab 128256),
bfloat16, random weights (throughput does not need trained ones). A chain of 150 prompt tokens,
200 reasoning tokens and 20 answer tokens is pruned to keep ratio 0.45 (110 greedy steps) with
the prefix-reuse engine. Prints wall time, decoder tokens processed, achieved TFLOP/s and the
fraction of the card's dense bf16 peak. Target: <= 90 s on one H100 (the study's code: ~500 s).

Also checks, on the same card, that prefix reuse and the naive recompute agree on a small
float32 model (exactness does not depend on the device).

    python bench/gpu.py [--steps-only N] [--max-batch-tokens 16384]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "4090": 165.0}


def card_peak(name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    return None


def llama3_8b(device):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                         rope_theta=500000.0, tie_word_embeddings=False)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    return model.eval()


def exactness_check(device) -> dict:
    from cotsurvival.encoding import encode_chain
    from cotsurvival.pruning.engine import greedy_prune
    from cotsurvival.pruning.scoring import NaiveScorer, PrefixReuseScorer
    from cotsurvival.testing import EXAMPLE_CHAINS, tiny_llama

    model, tokenizer = tiny_llama(dtype=torch.float32)
    model.to(device)
    encoded = encode_chain(EXAMPLE_CHAINS[0], tokenizer)
    fast = greedy_prune(PrefixReuseScorer(model), encoded, 20)
    slow = greedy_prune(NaiveScorer(model), encoded, 20)
    return {"identical_orders_20_steps": fast.order == slow.order}


def main() -> None:
    from cotsurvival.encoding import EncodedChain
    from cotsurvival.chains import Chain
    from cotsurvival.pruning.engine import greedy_prune, n_deletions
    from cotsurvival.pruning.scoring import PrefixReuseScorer

    parser = argparse.ArgumentParser()
    parser.add_argument("--max-batch-tokens", type=int, default=16384)
    parser.add_argument("--keep-ratio", type=float, default=0.45)
    parser.add_argument("--steps-only", type=int, default=None, help="stop after N steps (a quick look)")
    args = parser.parse_args()
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    result = {"card": name, **exactness_check(device)}
    model = llama3_8b(device)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 120000, (370,), generator=generator).tolist()
    encoded = EncodedChain(Chain("random", "", "", ""), ids[:150], ids[150:350], ids[350:], [(0, 0)] * 200, False)
    steps = n_deletions(200, args.keep_ratio) if args.steps_only is None else args.steps_only
    scorer = PrefixReuseScorer(model, "joint", max_batch_tokens=args.max_batch_tokens)
    greedy_prune(scorer, encoded, 1)  # warm-up: kernels, allocator
    torch.cuda.synchronize()
    began = time.perf_counter()
    trace = greedy_prune(scorer, encoded, steps)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    non_embedding = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n and "lm_head" not in n)
    flops = 2.0 * non_embedding * trace.tokens_processed
    peak = card_peak(name)
    result.update({
        "steps": steps, "seconds": round(seconds, 1), "tokens_processed": trace.tokens_processed,
        "max_batch_tokens_final": scorer.max_batch_tokens, "achieved_tflops": round(flops / seconds / 1e12, 1),
        "peak_bf16_tflops": peak, "fraction_of_peak": round(flops / seconds / 1e12 / peak, 3) if peak else None,
        "max_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 1),
    })
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
