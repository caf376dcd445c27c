"""CPU benchmark of the engine on every supported family: fast path vs naive, side by side in one run.

Random-weight models of each family's own class (``cotsurvival.testing.tiny_model`` with a
larger size: 4 layers, hidden 256, vocabulary 8192, float32), one synthetic chain per family
(random token ids; prompt, reasoning and answer lengths below), pruned to ``--keep-ratio`` by
``naive`` (batched full recompute, sparse vocabulary head: like for like) and by ``crossstep``
(the default fast path), one after the other in this process. Reports seconds, the ratio, and
whether the deletion orders are identical (compared as pruned sequences).

``--load N`` starts N busy processes (``while True: pass``) for the whole measurement, to show
what a shared machine does to each method; they are stopped at the end.

    PYTHONPATH=src .venv/bin/python bench/families_cpu.py [--load 1] [--families qwen3,gemma2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone

import torch

from cotsurvival.chains import Chain
from cotsurvival.encoding import EncodedChain
from cotsurvival.pruning.engine import greedy_prune, n_deletions
from cotsurvival.pruning.methods import make_scorer
from cotsurvival.testing import TINY_FAMILIES, tiny_model
from cotsurvival.threads import cap_torch_threads
from engine_cpu import sequences  # the same check as the engine benchmark (bench/ is on sys.path when run)

SIZE = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8,
            num_key_value_heads=2, head_dim=32, vocab_size=8192)


def busy_processes(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(TINY_FAMILIES))
    parser.add_argument("--prompt", type=int, default=60)
    parser.add_argument("--reasoning", type=int, default=48)
    parser.add_argument("--answer", type=int, default=6)
    parser.add_argument("--keep-ratio", type=float, default=0.75)
    parser.add_argument("--max-batch-tokens", type=int, default=4096)
    parser.add_argument("--methods", default="naive,crossstep")
    parser.add_argument("--load", type=int, default=0, help="busy processes competing for the CPUs")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    threads = cap_torch_threads()
    methods = args.methods.split(",")
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, SIZE["vocab_size"], (args.prompt + args.reasoning + args.answer,), generator=generator).tolist()
    p, n = args.prompt, args.reasoning
    encoded = EncodedChain(Chain("random", "", "", ""), ids[:p], ids[p: p + n], ids[p + n:], [(0, 0)] * n, False)
    steps = n_deletions(n, args.keep_ratio)
    header = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "loadavg_before": os.getloadavg(),
              "torch_threads": threads, "competing_busy_processes": args.load, "size": SIZE, "dtype": "float32",
              "prompt": p, "reasoning": n, "answer": args.answer, "steps": steps,
              "max_batch_tokens": args.max_batch_tokens}
    print(json.dumps(header), flush=True)
    busy = busy_processes(args.load)
    rows = []
    try:
        for family in args.families.split(","):
            variant = {"sliding_window": 4096} if family in ("mistral", "phi3") else {}
            model = tiny_model(family, dtype=torch.float32, **{**SIZE, **variant})
            traces, seconds = {}, {}
            for method in methods:
                scorer = make_scorer(model, method, "joint", args.max_batch_tokens)
                began = time.perf_counter()
                traces[method] = greedy_prune(scorer, encoded, steps)
                seconds[method] = time.perf_counter() - began
            reference = sequences(encoded.reasoning_ids, traces[methods[0]].order)
            row = {"family": family, "class": type(model).__name__,
                   "identical_orders": all(sequences(encoded.reasoning_ids, t.order) == reference for t in traces.values())}
            for method in methods:
                row[f"{method}_s"] = round(seconds[method], 2)
                row[f"{method}_tokens"] = traces[method].tokens_processed
            for method in methods[1:]:
                row[f"speedup_{method}"] = round(seconds[methods[0]] / seconds[method], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    summary = {"loadavg_after": os.getloadavg(), "all_identical": all(r["identical_orders"] for r in rows),
               **{f"min_speedup_{m}": min(r[f"speedup_{m}"] for r in rows) for m in methods[1:]}}
    print(json.dumps(summary), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"header": header, "families": rows, "summary": summary}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
