"""GPU benchmark: one chain pruned on a random-weight model of each supported family's 7-14B shape.

For each family (shapes below, random weights: throughput does not need trained ones), in
``--dtype`` (default bfloat16, the tensor-core rate; ``prune --dtype auto`` scores in float32,
because half precision can switch the greedy path, BENCHMARKS.md "Precision"), a chain of 150 prompt + 200 reasoning + 20 answer random tokens is pruned for ``--steps`` greedy
steps (default 20; ``--keep-ratio 0.45`` runs the whole 110 steps) with the default fast path
(cross-step reuse). Prints per family: seconds per chain (and per step), decoder token rows,
achieved TFLOP/s (2 × non-embedding parameters × token rows, attention and the vocabulary head
left out, so an underestimate) and the fraction of the card's dense bf16 peak.

Exactness on the card: for every family, a tiny float64 model of the same class (windows shorter
than the chain where the family has them) is pruned by the fast path and by naive recompute on
the same device; the orders must be identical and every candidate's objective equal to 1e-9
(2e-5 under eager attention, whose softmax transformers runs in float32).

    python bench/gpu.py                      # all families on the first CUDA device
    python bench/gpu.py --families qwen3,gemma2 --keep-ratio 0.45
    python bench/gpu.py --families qwen3 --dtype float32   # what prune's default dtype costs
    python bench/gpu.py --tiny --device cpu  # the whole script on tiny shapes (a quick CPU check)
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "GH200": 989.0, "B200": 2250.0, "A100": 312.0, "L40S": 362.0,
                    "4090": 165.0, "A6000": 155.0}

# One real shape per family (7-8B where the family has one; Gemma 2 9B, Gemma 3 12B, Phi-4 14B, SmolLM3 3B).
SHAPES = {
    "llama": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=8, vocab_size=128256, head_dim=128,
                  rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "rope_theta": 500000.0,
                                   "original_max_position_embeddings": 8192}),  # Llama-3.1-8B
    "mistral": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=8, vocab_size=32768, head_dim=128),  # Mistral-7B-v0.3
    "qwen2": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                  num_key_value_heads=4, vocab_size=152064, head_dim=128),  # Qwen2.5-7B / R1-Distill-Qwen-7B
    "qwen3": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                  num_key_value_heads=8, vocab_size=151936, head_dim=128),  # Qwen3-8B / R1-0528-Qwen3-8B
    "gemma2": dict(hidden_size=3584, intermediate_size=14336, num_hidden_layers=42, num_attention_heads=16,
                   num_key_value_heads=8, vocab_size=256000, head_dim=256, query_pre_attn_scalar=256,
                   sliding_window=4096),  # Gemma-2-9B
    "gemma3_text": dict(hidden_size=3840, intermediate_size=15360, num_hidden_layers=48, num_attention_heads=16,
                        num_key_value_heads=8, vocab_size=262208, head_dim=256, query_pre_attn_scalar=256,
                        sliding_window=1024, layer_types=None),  # Gemma-3-12B
    "phi3": dict(hidden_size=5120, intermediate_size=17920, num_hidden_layers=40, num_attention_heads=40,
                 num_key_value_heads=10, vocab_size=100352, head_dim=128),  # Phi-4 / Phi-4-reasoning
    "olmo2": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=32, vocab_size=100352, head_dim=128),  # OLMo-2-1124-7B
    "granite": dict(hidden_size=4096, intermediate_size=12800, num_hidden_layers=40, num_attention_heads=32,
                    num_key_value_heads=8, vocab_size=49155, head_dim=128),  # Granite-3.1-8B
    "smollm3": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                    num_key_value_heads=4, vocab_size=128256, head_dim=128),  # SmolLM3-3B
}
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, vocab_size=512)
# Exactness models: windows shorter than the 26-token check chain where the family has windows.
EXACT_VARIANTS = {"mistral": {"sliding_window": 6}, "qwen2": {"use_sliding_window": True, "sliding_window": 6,
                                                               "max_window_layers": 1},
                  "qwen3": {"use_sliding_window": True, "sliding_window": 6, "max_window_layers": 1},
                  "gemma2": {"sliding_window": 6}, "gemma3_text": {"sliding_window": 6}, "phi3": {"sliding_window": 6},
                  "smollm3": {"use_sliding_window": True, "sliding_window": 6, "no_rope_layers": [1, 0],
                              "layer_types": ["full_attention", "sliding_attention"]}}


def card_peak(name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    return None


def exactness(family: str, device: torch.device, steps: int = 6) -> dict:
    """Fast path vs naive (``model(input_ids)`` per candidate) on the card, tiny float64 model of the family."""
    from cotsurvival.chains import Chain
    from cotsurvival.encoding import EncodedChain
    from cotsurvival.pruning.engine import greedy_prune
    from cotsurvival.pruning.methods import make_scorer
    from cotsurvival.pruning.scoring import NaiveScorer
    from cotsurvival.testing import RecordingScorer, tiny_model

    model = tiny_model(family, dtype=torch.float64, **EXACT_VARIANTS.get(family, {})).to(device)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 400, (26,), generator=generator).tolist()
    encoded = EncodedChain(Chain("check", "", "", ""), ids[:8], ids[8:23], ids[23:], [(0, 0)] * 15, False)
    fast = RecordingScorer(make_scorer(model, "crossstep", "joint", 4096))
    slow = RecordingScorer(NaiveScorer(model, "joint", 4096, model_forward=True))  # model(input_ids) per candidate
    same = greedy_prune(fast, encoded, steps).order == greedy_prune(slow, encoded, steps).order
    worst = max(float(np.abs(a.candidate_objectives - b.candidate_objectives).max())
                for a, b in zip(fast.steps, slow.steps))
    tolerance = 2e-5 if model.config._attn_implementation == "eager" else 1e-9
    return {"identical_orders": same, "max_objective_diff": worst, "exact": same and worst <= tolerance}


def big_model(family: str, shape: dict, device: torch.device, dtype: torch.dtype):
    from cotsurvival.testing import tiny_config
    import transformers
    from cotsurvival.testing import _FAMILY_CLASSES

    shape = {k: v for k, v in shape.items() if v is not None}
    if family == "gemma3_text" and "layer_types" not in shape:
        shape["layer_types"] = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                                for i in range(shape["num_hidden_layers"])]
    if family == "gemma2":
        shape["layer_types"] = ["sliding_attention" if i % 2 == 0 else "full_attention"
                                for i in range(shape["num_hidden_layers"])]
    if family == "smollm3":
        shape["no_rope_layers"] = [int((i + 1) % 4 != 0) for i in range(shape["num_hidden_layers"])]
    config = tiny_config(family, max_position_embeddings=131072, **shape)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = getattr(transformers, _FAMILY_CLASSES[family][1])(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def main() -> int:
    from cotsurvival.chains import Chain
    from cotsurvival.encoding import EncodedChain
    from cotsurvival.pruning.engine import greedy_prune, n_deletions
    from cotsurvival.pruning.memory import estimate_chain_bytes
    from cotsurvival.pruning.methods import make_scorer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(SHAPES))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes, float32: checks the script on a CPU")
    parser.add_argument("--steps", type=int, default=20, help="greedy steps per chain")
    parser.add_argument("--keep-ratio", type=float, default=None, help="run to this keep ratio instead of --steps")
    parser.add_argument("--max-batch-tokens", type=int, default=16384)
    parser.add_argument("--method", default="crossstep")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    dtype = torch.float32 if args.tiny else getattr(torch, args.dtype)
    peak = card_peak(name) if cuda else None
    results = {"card": name, "dtype": str(dtype).replace("torch.", ""), "method": args.method, "families": []}
    print(json.dumps({"card": name, "peak_bf16_tflops": peak}), flush=True)
    prompt, reasoning, answer = (150, 200, 20) if not args.tiny else (20, 24, 4)
    generator = torch.Generator().manual_seed(0)
    for family in args.families.split(","):
        row = {"family": family, "exactness": exactness(family, device)}
        shape = {**SHAPES[family], **TINY} if args.tiny else SHAPES[family]
        if args.tiny and family in ("gemma2", "gemma3_text"):
            shape = {**shape, "sliding_window": 16}
        model = big_model(family, shape, device, dtype)
        vocab = model.config.vocab_size
        ids = torch.randint(1000 % vocab, vocab, (prompt + reasoning + answer,), generator=generator).tolist()
        encoded = EncodedChain(Chain("random", "", "", ""), ids[:prompt], ids[prompt: prompt + reasoning],
                               ids[prompt + reasoning:], [(0, 0)] * reasoning, False)
        steps = n_deletions(reasoning, args.keep_ratio) if args.keep_ratio is not None else args.steps
        scorer = make_scorer(model, args.method, "joint", max_batch_tokens=args.max_batch_tokens)
        greedy_prune(scorer, encoded, 1)  # warm-up: kernels, allocator
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        began = time.perf_counter()
        trace = greedy_prune(scorer, encoded, steps)
        if cuda:
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - began
        non_embedding = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n and "lm_head" not in n)
        tflops = 2.0 * non_embedding * trace.tokens_processed / seconds / 1e12
        row.update({
            "class": type(model).__name__, "params_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 2),
            "steps": steps, "seconds_per_chain": float(f"{seconds:.4g}"), "seconds_per_step": float(f"{seconds / steps:.4g}"),
            "tokens_processed": trace.tokens_processed, "achieved_tflops": round(tflops, 2),
            "fraction_of_peak": round(tflops / peak, 3) if peak else None,
            "max_batch_tokens_final": scorer.max_batch_tokens,
            "estimated_chain_gb": round(estimate_chain_bytes(model, prompt, reasoning, answer, args.method,
                                                             args.max_batch_tokens) / 2**30, 2),
            "peak_memory_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 1) if cuda else None,
        })
        results["families"].append(row)
        print(json.dumps(row), flush=True)
        del model, scorer
        if cuda:
            torch.cuda.empty_cache()
    results["all_exact"] = all(r["exactness"]["exact"] for r in results["families"])
    print(json.dumps({"all_exact": results["all_exact"]}), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0 if results["all_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
