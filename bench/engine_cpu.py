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
from cotsurvival.testing import pruned_sequences
from cotsurvival.pruning.crossstep import CrossStepScorer
from cotsurvival.pruning.scoring import NaiveScorer, PrefixReuseScorer
from cotsurvival.threads import cap_torch_threads


def suffix_lower_bound(p: int, n: int, a: int, steps: int) -> int:
    """Σ over steps and candidates of the tokens after the deleted one.

    What a method that reuses only the shared prefix must run at the least; cross-step reuse can
    go below it, since it also reuses the part of a candidate's suffix that lies before the
    previous step's deletion.
    """
    total = 0
    for step in range(steps):
        m = n - step
        total += sum(m + a - k - 1 for k in range(m))
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--keep-ratio", type=float, default=0.5)
    parser.add_argument("--max-batch-tokens", type=int, default=4096)
    parser.add_argument("--min-tokens", type=int, default=40, help="shortest reasoning (tokens) to pick")
    parser.add_argument("--max-tokens", type=int, default=70, help="longest reasoning (tokens) to pick")
    parser.add_argument("--json", default=None, help="write results here")
    args = parser.parse_args()
    threads = cap_torch_threads()  # the CPUs this process can get (affinity, quota, load)
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
        for name, cls in (("naive", NaiveScorer), ("prefix", PrefixReuseScorer), ("crossstep", CrossStepScorer)):
            scorer = cls(model, "joint", max_batch_tokens=args.max_batch_tokens)
            began = time.perf_counter()
            traces[name] = greedy_prune(scorer, encoded, steps)
            timings[name] = time.perf_counter() - began
        reference = pruned_sequences(encoded.reasoning_ids, traces["naive"].order)
        same = all(pruned_sequences(encoded.reasoning_ids, traces[k].order) == reference for k in ("prefix", "crossstep"))
        bound = suffix_lower_bound(p, n, a, steps)
        row = {"chain": encoded.chain.id, "prompt_tokens": p, "reasoning_tokens": n, "answer_tokens": a, "steps": steps,
               "identical_orders": same, "lower_bound_tokens": bound}
        for name in ("naive", "prefix", "crossstep"):
            row[f"{name}_s"] = round(timings[name], 1)
            row[f"{name}_tokens"] = traces[name].tokens_processed
            row[f"{name}_tokens_over_bound"] = round(traces[name].tokens_processed / bound, 3)
            row[f"{name}_speedup"] = round(timings["naive"] / timings[name], 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    totals = {name: sum(r[f"{name}_s"] for r in rows) for name in ("naive", "prefix", "crossstep")}
    summary = {"model": info.spec, "device": "cpu", "dtype": "float32", "torch_threads": threads,
               "max_batch_tokens": args.max_batch_tokens,
               "keep_ratio": args.keep_ratio, **{f"total_{k}_s": round(v, 1) for k, v in totals.items()},
               "speedup_prefix": round(totals["naive"] / totals["prefix"], 2),
               "speedup_crossstep": round(totals["naive"] / totals["crossstep"], 2),
               "all_identical": all(r["identical_orders"] for r in rows)}
    print(json.dumps(summary))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"chains": rows, "summary": summary}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
