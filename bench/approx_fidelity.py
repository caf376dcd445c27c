"""Fidelity of approximate greedy survival (``prune --approx``) against the exact engine.

Per method and parameter, side by side in one process on the same chains:
Kendall τ between approximate and exact survival per chain (mean, chain-bootstrap CI), agreement of
the category effects (per-category median survival: same sign of the difference from the chain's
median, overlapping chain-bootstrap CIs, difference of medians), and the token-row and wall-time
ratios against exact ``crossstep``.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/approx_fidelity.py --chains 5 --min-tokens 100 \\
        --max-tokens 160 --ids model-2 model-5 model-9 model-10 model-15 --threads 1 \\
        --exact-cache bench/out/exact --specs topk:0.1 lazy:radius=2,batch=2,refresh=0.5 --out bench/out/fid.json

``--exact-cache DIR`` stores each chain's exact ranking (order, per-step costs, rows, seconds and the
load it ran at) and reuses it: exact runs of 100–160 tokens take 6–45 minutes each on this CPU, so
several invocations (e.g. one per core) can share them. ``--ids`` picks chains by id. A spec
``exact@DTYPE`` (e.g. ``exact@bfloat16``, the dtype ``--dtype auto`` picks on CUDA) is a reference
row: the exact engine itself with the model in that dtype, against the float32 exact order.

``--long N`` instead builds one chain of about N reasoning tokens by concatenating consecutive GSM8K
test problems and their worked (human) solutions into one multi-problem reasoning, and prunes it
fully with ``--specs`` (one spec), reporting token rows, wall time and peak memory.

Chains: ``--source gsm8k-model`` (default) uses model-written solutions from
/work/shared/data/gsm8k/example_model_solutions.jsonl (175b_verification); ``--source gsm8k`` the
built-in corpus. Token rows do not depend on machine load; wall times do (``uptime`` is recorded).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

SHARED = Path("/work/shared/data/gsm8k")
_CALC = re.compile(r"<<[^>]*>>")


def model_written_chains():
    from cotsurvival.chains import Chain

    out = []
    with open(SHARED / "example_model_solutions.jsonl") as handle:
        for line_no, line in enumerate(handle):
            record = json.loads(line)
            solution = record.get("175b_verification", {}).get("solution", "")
            lines = solution.strip().split("\n")
            if not lines or not lines[-1].startswith("A:"):
                continue
            reasoning = _CALC.sub("", "\n".join(lines[:-1])).strip()
            if reasoning:
                out.append(Chain(id=f"model-{line_no}", question=record["question"], reasoning=reasoning,
                                 answer=lines[-1][2:].strip()))
    return out


def long_chain(n_target: int, tokenizer, start: int = 0):
    """One honest long reasoning: consecutive GSM8K test problems solved one after another.

    The question lists the problems; the reasoning is their worked human solutions (calculator
    annotations stripped), each headed "Problem i:"; the answer is the last problem's answer.
    """
    from cotsurvival.chains import Chain, split_gsm8k_solution

    questions, parts, answer = [], [], ""
    with open(SHARED / "test.jsonl") as handle:
        records = [json.loads(line) for line in handle]
    index = start
    while True:
        record = records[index]
        reasoning, answer = split_gsm8k_solution(record["answer"])
        questions.append(f"Problem {len(questions) + 1}: {record['question']}")
        parts.append(f"Problem {len(parts) + 1}: {reasoning}")
        index += 1
        text = "\n\n".join(parts)
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) >= n_target:
            break
    question = "Solve these problems one after another.\n\n" + "\n\n".join(questions)
    return Chain(id=f"long-{len(parts)}problems", question=question, reasoning=text, answer=answer)


def load_uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def prune_one(scorer, encoded, spec):
    from cotsurvival.pruning.engine import greedy_prune

    began = time.perf_counter()
    trace = greedy_prune(scorer, encoded, len(encoded.reasoning_ids), approx=spec)
    return trace, time.perf_counter() - began


def exact_trace(scorer, encoded, cache_dir, variant: str = ""):
    """The exact ranking of one chain, from ``cache_dir`` when an earlier run stored it there.

    Exact runs of 100+ tokens take many minutes each; storing them lets approximations be measured
    against the same exact orders in later runs (the file records when and at what load it ran)."""
    from types import SimpleNamespace

    path = Path(cache_dir) / f"{encoded.chain.id}{variant}.json" if cache_dir else None
    if path is not None and path.exists():
        stored = json.loads(path.read_text())
        if stored["reasoning_ids"] == list(encoded.reasoning_ids):
            trace = SimpleNamespace(order=stored["order"], token_rows=stored["token_rows"],
                                    step_costs=[np.asarray(c) for c in stored["step_costs"]],
                                    step_positions=[np.asarray(p) for p in stored["step_positions"]])
            return trace, stored["seconds"]
    uptime = load_uptime()
    trace, seconds = prune_one(scorer, encoded, None)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "chain": encoded.chain.id, "reasoning_ids": list(encoded.reasoning_ids), "order": list(trace.order),
            "token_rows": trace.token_rows, "seconds": round(seconds, 1), "uptime_before": uptime,
            "uptime_after": load_uptime(), "torch_threads": torch.get_num_threads(),
            "step_costs": [np.asarray(c, dtype=float).round(6).tolist() for c in trace.step_costs],
            "step_positions": [np.asarray(p).tolist() for p in trace.step_positions]}))
    return trace, seconds


def survival(order, n):
    """Normalized survival (deletion step / n) of each of n tokens from a deletion order."""
    steps = np.zeros(n)
    for step, position in enumerate(order, 1):
        steps[position] = step
    return steps / n


def categories(chains, encoded):
    """Category of each reasoning token, from the rule tagger (as ``cotsurvival tag`` assigns them)."""
    from cotsurvival.taxonomy import load_spec, project_spans, tag_many

    spec = load_spec()
    spans = tag_many([c.reasoning for c in chains], [c.question for c in chains], spec=spec)
    out = []
    for chain_spans, item in zip(spans, encoded):
        labels = project_spans(chain_spans, item.offsets, item.chain.reasoning, spec)
        out.append([spec.category_of.get(label, label) if label else None for label in labels])
    return out


def category_effects(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per category: chain-bootstrap CI of the mean (over chains) of the category's median survival
    minus the chain's median survival."""
    from cotsurvival.analysis.inference import bootstrap_ci

    rows = []
    for category, group in frame.dropna(subset=["category"]).groupby("category"):
        per_chain = []
        for chain, tokens in group.groupby("chain"):
            chain_median = frame.loc[frame["chain"] == chain, column].median()
            per_chain.append(tokens[column].median() - chain_median)
        ci = bootstrap_ci(np.asarray(per_chain))
        rows.append({"category": category, "effect": ci["estimate"], "lo": ci["ci_low"], "hi": ci["ci_high"],
                     "median": group[column].median(), "n_chains": ci["n_chains"]})
    return pd.DataFrame(rows).set_index("category")


def fidelity(args) -> dict:
    from scipy.stats import kendalltau

    from cotsurvival.analysis.inference import bootstrap_ci
    from cotsurvival.chains import read_chains
    from cotsurvival.encoding import encode_chain
    from cotsurvival.models import load_model
    from cotsurvival.pruning.methods import make_scorer

    model, tokenizer, _ = load_model("smollm2-135m", device="cpu", dtype="float32")
    pool = model_written_chains() if args.source == "gsm8k-model" else list(read_chains("gsm8k"))
    chains, encoded = [], []
    for chain in pool:
        if args.ids and chain.id not in args.ids:
            continue
        item = encode_chain(chain, tokenizer)
        if args.min_tokens <= len(item.reasoning_ids) <= args.max_tokens:
            chains.append(chain)
            encoded.append(item)
        if len(chains) == args.chains:
            break
    cats = categories(chains, encoded)
    load_before = load_uptime()
    scorer = make_scorer(model, method="crossstep")
    results = {"exact": []}
    for item in encoded:
        trace, seconds = exact_trace(scorer, item, args.exact_cache)
        results["exact"].append((trace, seconds))
        print(f"exact {item.chain.id} n={len(item.reasoning_ids)} rows={trace.token_rows} {seconds:.0f}s", flush=True)
    for spec in args.specs:
        results[spec] = []
        spec_scorer, approx = scorer, spec
        if spec.startswith("exact@"):
            # A reference row: the exact engine itself with the model in another dtype (bfloat16 is
            # what ``--dtype auto`` picks on CUDA), i.e. how reproducible the exact order is at all.
            other, _, _ = load_model("smollm2-135m", device="cpu", dtype=spec.partition("@")[2])
            spec_scorer, approx = make_scorer(other, method="crossstep"), None
        for i, item in enumerate(encoded):
            if approx is None:
                trace, seconds = exact_trace(spec_scorer, item, args.exact_cache, variant=spec[len("exact"):])
            else:
                trace, seconds = prune_one(spec_scorer, item, approx)
            results[spec].append((trace, seconds))
            n = len(item.reasoning_ids)
            tau = kendalltau(survival(results["exact"][i][0].order, n), survival(trace.order, n))[0]
            print(f"{spec} {item.chain.id} tau={tau:.3f} rows={trace.token_rows} "
                  f"(exact/approx {results['exact'][i][0].token_rows / trace.token_rows:.1f}x) {seconds:.0f}s", flush=True)
    frames = []
    for i, item in enumerate(encoded):
        n = len(item.reasoning_ids)
        frame = pd.DataFrame({"chain": i, "category": cats[i]})
        for name, runs in results.items():
            frame[name] = survival(runs[i][0].order, n)
        frames.append(frame)
    tokens = pd.concat(frames, ignore_index=True)
    exact_effects = category_effects(tokens, "exact")
    exact_rows = sum(t.token_rows for t, _ in results["exact"])
    exact_seconds = sum(s for _, s in results["exact"])
    table = []
    for spec in args.specs:
        taus = [kendalltau(tokens.loc[tokens.chain == i, "exact"], tokens.loc[tokens.chain == i, spec])[0]
                for i in range(len(encoded))]
        ci = bootstrap_ci(np.asarray(taus))
        effects = category_effects(tokens, spec)
        joined = exact_effects.join(effects, rsuffix="_approx")
        same_sign = int((np.sign(joined["effect"]) == np.sign(joined["effect_approx"])).sum())
        overlap = int(((joined["lo"] <= joined["hi_approx"]) & (joined["lo_approx"] <= joined["hi"])).sum())
        exact_order = list(joined["median"].sort_values().index)
        approx_order = list(joined["median_approx"].sort_values().index)
        rows = sum(t.token_rows for t, _ in results[spec])
        seconds = sum(s for _, s in results[spec])
        table.append({
            "spec": spec, "tau_mean": ci["estimate"], "tau_lo": ci["ci_low"], "tau_hi": ci["ci_high"],
            "tau_min": float(np.min(taus)), "n_chains": len(encoded),
            "categories_same_sign": f"{same_sign}/{len(joined)}", "categories_ci_overlap": f"{overlap}/{len(joined)}",
            "max_abs_median_diff": float((joined["median"] - joined["median_approx"]).abs().max()),
            "same_category_order": exact_order == approx_order,
            "row_ratio": exact_rows / rows, "time_ratio": exact_seconds / seconds,
            "rows": rows, "seconds": round(seconds, 1),
        })
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "uptime_before": load_before,
        "uptime_after": load_uptime(), "torch_threads": torch.get_num_threads(), "source": args.source,
        "chain_ids": [c.id for c in chains], "n_tokens": [len(e.reasoning_ids) for e in encoded],
        "prompt_tokens": [len(e.prefix_ids) for e in encoded],
        "exact": {"rows": exact_rows, "seconds": round(exact_seconds, 1)},
        "exact_category_effects": exact_effects.reset_index().to_dict("records"),
        "table": table,
    }


def long_run(args) -> dict:
    from cotsurvival.encoding import encode_chain
    from cotsurvival.models import load_model
    from cotsurvival.pruning.engine import greedy_prune
    from cotsurvival.pruning.methods import make_scorer
    from cotsurvival.pruning.tables import tokens_frame

    model, tokenizer, _ = load_model("smollm2-135m", device="cpu", dtype="float32")
    chain = long_chain(args.long, tokenizer)
    item = encode_chain(chain, tokenizer)
    n = len(item.reasoning_ids)
    print(f"{chain.id}: {n} reasoning tokens, prompt {len(item.prefix_ids)}, answer {len(item.answer_ids)}", flush=True)
    load_before = load_uptime()
    scorer = make_scorer(model, method="auto")
    progress = {"last": time.perf_counter()}

    def on_step(trace):
        if time.perf_counter() - progress["last"] > 60:
            progress["last"] = time.perf_counter()
            print(f"  step {trace.n_steps}/{n} rows={trace.token_rows}", flush=True)

    began = time.perf_counter()
    trace = greedy_prune(scorer, item, n, approx=args.specs[0], on_step=on_step)
    seconds = time.perf_counter() - began
    frame = tokens_frame(item, trace, 0)
    if args.save_tokens:
        frame.to_parquet(args.save_tokens)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "uptime_before": load_before,
        "uptime_after": load_uptime(), "torch_threads": torch.get_num_threads(), "chain": chain.id,
        "n_tokens": n, "prompt_tokens": len(item.prefix_ids), "answer_tokens": len(item.answer_ids),
        "spec": args.specs[0], "token_rows": trace.token_rows, "seconds": round(seconds, 1),
        "scored_rounds": len(trace.step_costs), "fully_ranked": int(frame["deleted_step"].notna().sum()) == n,
        "peak_rss_gib": round(peak_gib, 2),
    }


def markdown(result: dict) -> str:
    """The fidelity table as BENCHMARKS.md shows it."""
    lines = ["| spec | mean τ [95% CI] (min) | category effects: same sign / CIs overlap | same category order "
             "| max |Δ median survival| | token rows (ratio vs exact crossstep) | wall s (ratio) |",
             "|---|---|---|---|---|---|---|"]
    exact = result["exact"]
    lines.append(f"| exact crossstep | 1 | – | – | – | {exact['rows']:,} (1×) | {exact['seconds']} (1×) |")
    for row in result["table"]:
        lines.append(f"| `{row['spec']}` | {row['tau_mean']:.3f} [{row['tau_lo']:.3f}, {row['tau_hi']:.3f}] "
                     f"({row['tau_min']:.3f}) | {row['categories_same_sign']} / {row['categories_ci_overlap']} | "
                     f"{'yes' if row['same_category_order'] else 'no'} | {row['max_abs_median_diff']:.3f} | "
                     f"{row['rows']:,} ({row['row_ratio']:.1f}×) | {row['seconds']} ({row['time_ratio']:.1f}×) |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--min-tokens", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=150)
    parser.add_argument("--source", choices=["gsm8k-model", "gsm8k"], default="gsm8k-model")
    parser.add_argument("--specs", nargs="+", default=["topk:0.05", "topk:0.1", "topk:0.2"])
    parser.add_argument("--long", type=int, default=None, help="Prune one ~N-token concatenated chain instead.")
    parser.add_argument("--save-tokens", default=None)
    parser.add_argument("--exact-cache", default=None,
                        help="Directory storing exact rankings per chain (reused when present).")
    parser.add_argument("--ids", nargs="+", default=None, help="Only these chain ids (e.g. model-5 model-9).")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", "2")))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = long_run(args) if args.long else fidelity(args)
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if "table" in result:
        print(markdown(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    sys.exit(main())
