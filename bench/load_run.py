"""Benchmark: `load_run` on a large synthetic run (default 1,000 chains x 300 tokens).

Writes tokens, baselines (4 orderings) and attention parts directly (the simulated greedy
pruner in ``cotsurvival.testing`` is quadratic per chain, too slow at this size), then loads the
run in a fresh subprocess and reports wall time and peak resident memory (``ru_maxrss`` of
that subprocess, which covers Arrow's allocations; tracemalloc sees only Python's).

Usage::

    python bench/load_run.py [--chains 1000] [--tokens 300] [--layers 30] [--keep DIR]

Targets: <= 60 s and <= 4 GB.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cotsurvival.rundir import RunDir
from cotsurvival.testing import CATEGORY_OF_LABEL

CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from cotsurvival.analysis import load_run
t1 = time.perf_counter()
df = load_run(sys.argv[1])
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "rows": len(df), "columns": df.shape[1],
                  "frame_mb": df.memory_usage(deep=True).sum() / 2**20,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_run(path: Path, n_chains: int, n_tokens: int, n_layers: int, seed: int = 0) -> RunDir:
    rng = np.random.default_rng(seed)
    run = RunDir(path)
    run.path.mkdir(parents=True, exist_ok=True)
    labels = np.array(list(CATEGORY_OF_LABEL))
    chains = []
    for index in range(n_chains):
        n = n_tokens
        chain_id = f"bench-{index}"
        label = rng.choice(labels, size=n)
        order = rng.permutation(n)
        step = np.empty(n, dtype=np.int64)
        step[order] = np.arange(1, n + 1)
        tokens = pd.DataFrame({
            "chain_index": index, "chain_id": chain_id, "position": np.arange(n), "token_id": rng.integers(0, 5e4, n),
            "text": [" tok"] * n, "char_start": np.arange(n) * 4, "char_end": np.arange(n) * 4 + 4,
            "is_whitespace": False, "deleted_step": pd.array(step, dtype="Int64"), "n_tokens": n,
            "survival": step / n, "censored": False, "deletion_cost": rng.random(n),
            "label": label, "category": [CATEGORY_OF_LABEL[x] for x in label],
        })
        run.write_part("tokens", index, tokens)
        frames = []
        for ordering in ("random", "surprisal", "loo", "attention"):
            perm = rng.permutation(n)
            s = np.empty(n, dtype=np.int64)
            s[perm] = np.arange(1, n + 1)
            frames.append(pd.DataFrame({"chain_index": index, "chain_id": chain_id, "ordering": ordering,
                                        "position": np.arange(n), "deleted_step": pd.array(s, dtype="Int64"),
                                        "n_tokens": n, "survival": s / n, "censored": False}))
        run.write_part("baselines", index, pd.concat(frames, ignore_index=True))
        if n_layers:
            attention = {"chain_index": index, "chain_id": chain_id, "position": np.arange(n), "surprisal": rng.random(n)}
            for layer in range(n_layers):
                attention[f"attn_answer_L{layer:02d}"] = rng.random(n)
                attention[f"attn_later_L{layer:02d}"] = rng.random(n)
            run.write_part("attention", index, pd.DataFrame(attention))
        chains.append({"chain_index": index, "chain_id": chain_id})
    run.write_chains(pd.DataFrame(chains))
    run.write_manifest({"model": {"spec": "bench"}, "keep_ratio": 0.0, "n_chains": n_chains,
                        "baselines": ["random", "surprisal", "loo", "attention"]})
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--keep", type=Path, help="write the run here and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "run"
        t0 = time.perf_counter()
        write_run(path, args.chains, args.tokens, args.layers)
        build_s = time.perf_counter() - t0
        out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(build_s=build_s, chains=args.chains, tokens=args.tokens, layers=args.layers)
    ok = result["load_s"] <= 60 and result["peak_rss_mb"] <= 4096
    print(json.dumps(result, indent=2))
    print("PASS" if ok else "FAIL", "(targets: load <= 60 s, peak RSS <= 4096 MB)")


if __name__ == "__main__":
    main()
