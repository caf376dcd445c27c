"""CPU benchmark of the greedy engine: prefix reuse vs the naive batched full recompute.

Side by side in one process, on real GSM8K chains of the built-in corpus, SmolLM2-135M, float32,
equal batch budget (``--max-batch-tokens``). Reports wall time, the ratio, whether the deletion
orders are identical (compared as pruned sequences), and decoder token rows processed per chain
against the lower bound Σ (suffix lengths).

    .venv/bin/python bench/engine_cpu.py --chains 2 --keep-ratio 0.5
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from cotsurvival import read_chains
from cotsurvival.encoding import encode_chain
from cotsurvival.models import load_model
from cotsurvival.pruning.engine import greedy_prune, n_deletions
from cotsurvival.pruning.scoring import NaiveScorer, PrefixReuseScorer


def suffix_lower_bound(p: int, n: int, a: int, steps: int) -> int:
    """Σ over steps and candidates of the tokens after the deleted one: what any exact method must run."""
    total = 0
    for step in range(steps):
        m = n - step
        total += sum(m + a - k - 1 for k in range(m))
    return total


def sequences(reasoning, order):
    alive = list(range(len(reasoning)))
    out = []
    for position in order:
        alive.remove(position)
        out.append(tuple(reasoning[i] for i in alive))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--keep-ratio", type=float, default=0.5)
    parser.add_argument("--max-batch-tokens", type=int, default=4096)
    parser.add_argument("--min-tokens", type=int, default=40, help="shortest reasoning (tokens) to pick")
    parser.add_argument("--max-tokens", type=int, default=70, help="longest reasoning (tokens) to pick")
    parser.add_argument("--json", default=None, help="write results here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, tokenizer, info = load_model("smollm2-135m", device="cpu", dtype="float32")
    picked = []
    for chain in read_chains("gsm8k"):
        encoded = encode_chain(chain, tokenizer)
        if args.min_tokens <= len(encoded.reasoning_ids) <= args.max_tokens:
            picked.append(encoded)
        if len(picked) == args.chains:
            break
    rows = []
    for encoded in picked:
        p, n, a = len(encoded.prefix_ids), len(encoded.reasoning_ids), len(encoded.answer_ids)
        steps = n_deletions(n, args.keep_ratio)
        timings = {}
        traces = {}
        for name, cls in (("naive", NaiveScorer), ("prefix", PrefixReuseScorer)):
            scorer = cls(model, "joint", max_batch_tokens=args.max_batch_tokens)
            began = time.perf_counter()
            traces[name] = greedy_prune(scorer, encoded, steps)
            timings[name] = time.perf_counter() - began
        same = sequences(encoded.reasoning_ids, traces["naive"].order) == sequences(encoded.reasoning_ids, traces["prefix"].order)
        bound = suffix_lower_bound(p, n, a, steps)
        row = {"chain": encoded.chain.id, "prefix_tokens": p, "reasoning_tokens": n, "answer_tokens": a, "steps": steps,
               "naive_s": round(timings["naive"], 1), "prefix_s": round(timings["prefix"], 1),
               "speedup": round(timings["naive"] / timings["prefix"], 2), "identical_orders": same,
               "naive_tokens": traces["naive"].tokens_processed, "prefix_tokens_run": traces["prefix"].tokens_processed,
               "lower_bound_tokens": bound,
               "prefix_over_bound": round(traces["prefix"].tokens_processed / bound, 3)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    total_naive = sum(r["naive_s"] for r in rows)
    total_prefix = sum(r["prefix_s"] for r in rows)
    summary = {"model": info.spec, "device": "cpu", "dtype": "float32", "max_batch_tokens": args.max_batch_tokens,
               "keep_ratio": args.keep_ratio, "total_naive_s": round(total_naive, 1),
               "total_prefix_s": round(total_prefix, 1), "speedup": round(total_naive / total_prefix, 2),
               "all_identical": all(r["identical_orders"] for r in rows)}
    print(json.dumps(summary))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"chains": rows, "summary": summary}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
