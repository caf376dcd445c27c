"""What replicate paths cost, and what reusing the greedy path's costs saves (prune --replicates).

For each chosen chain: the greedy path (replicate 0) with the exact ``crossstep`` engine, then
replicates 1..K-1 (Gumbel noise of scale T nats) twice, with and without reuse of the greedy
path's costs while a replicate's deleted set equals the greedy one's. Prints per chain: token rows
and seconds of each, steps reused, and the mean pairwise Kendall τ between the K paths.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/replicate_reuse.py --min-tokens 50 --max-tokens 70 --chains 2 --k 4 --scale 0.05
"""
from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chains", type=int, default=1)
    parser.add_argument("--min-tokens", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=70)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--scale", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-baseline", action="store_true", help="skip the replicates without reuse")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from cotsurvival.analysis.stability import kendall_tau
    from cotsurvival.chains import read_chains
    from cotsurvival.encoding import encode_chain
    from cotsurvival.models import load_model
    from cotsurvival.pruning.crossstep import CrossStepScorer
    from cotsurvival.pruning.diagnostics import trace_gaps
    from cotsurvival.pruning.engine import Perturbation, greedy_prune

    model, tokenizer, _ = load_model("smollm2-135m", device="cpu", dtype="float32")
    chosen = []
    for chain in read_chains("gsm8k"):
        item = encode_chain(chain, tokenizer)
        if args.min_tokens <= len(item.reasoning_ids) <= args.max_tokens:
            chosen.append(item)
        if len(chosen) == args.chains:
            break
    for item in chosen:
        n = len(item.reasoning_ids)
        scorer = CrossStepScorer(model, "joint", 4096)
        began = time.perf_counter()
        greedy = greedy_prune(scorer, item, n)
        row = {"chain": item.chain.id, "tokens": n, "greedy_rows": greedy.token_rows,
               "greedy_s": round(time.perf_counter() - began, 1),
               "min_gap": float(np.nanmin(trace_gaps(greedy.step_costs, greedy.step_positions, item.reasoning_ids)))}
        paths, reused, rows, seconds, rows_fresh, seconds_fresh = [greedy], [], [], [], [], []
        for r in range(1, args.k):
            perturbation = Perturbation(args.scale, args.seed, r)
            began = time.perf_counter()
            trace = greedy_prune(scorer, item, n, perturbation=perturbation, reuse=greedy)
            seconds.append(time.perf_counter() - began)
            rows.append(trace.token_rows)
            reused.append(trace.reused_steps)
            paths.append(trace)
            if not args.no_baseline:
                began = time.perf_counter()
                fresh = greedy_prune(scorer, item, n, perturbation=perturbation)
                seconds_fresh.append(time.perf_counter() - began)
                rows_fresh.append(fresh.token_rows)
                assert fresh.order == trace.order, "reuse changed a replicate's path"
        steps = [np.empty(n) for _ in paths]
        for s, p in zip(steps, paths):
            s[p.order] = np.arange(1, n + 1)
        taus = [kendall_tau(steps[i], steps[j]) for i, j in itertools.combinations(range(len(paths)), 2)]
        row.update(replicate_rows=rows, replicate_s=[round(x, 1) for x in seconds], reused_steps=reused,
                   tau_pairwise_mean=round(float(np.mean(taus)), 3), tau_min=round(float(np.min(taus)), 3))
        if rows_fresh:
            row.update(no_reuse_rows=rows_fresh, no_reuse_s=[round(x, 1) for x in seconds_fresh],
                       rows_saved=round(1 - sum(rows) / sum(rows_fresh), 3))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
