"""Rank stability of greedy survival: replicate paths, the free near-tie diagnostic, dtypes, cost,
and the approximations re-scored against the exact replicate ensemble.

Two steps. ``paths`` computes every greedy path the tables need, one JSON file per path under
``--cache`` (so several processes can share the work, one per core, and an interrupted run resumes
where it stopped); ``report`` reads them and prints the tables (markdown and ``--out`` JSON).

    OMP_NUM_THREADS=1 PYTHONPATH=src nice -n 10 python bench/stability.py paths --cache bench/out/stab &
    OMP_NUM_THREADS=1 PYTHONPATH=src nice -n 10 python bench/stability.py paths --cache bench/out/stab &
    wait; PYTHONPATH=src python bench/stability.py report --cache bench/out/stab --out bench/out/stability.json
    PYTHONPATH=src python bench/stability.py check --cache bench/out/stab --chains 1   # prune --replicates == cache

Paths. Replicate 0 is the greedy path of the exact engine (``crossstep``, float32); replicate r ≥ 1
adds Gumbel noise of scale T nats to each step's costs (:class:`cotsurvival.pruning.engine.Perturbation`,
the rule ``prune --replicates K --perturbation-scale T`` runs), reusing the greedy path's costs while
its deleted set equals the greedy one's (``reuse=``). ``check`` runs ``prune --replicates`` itself on
the first chains and asserts that its orders are the cached ones, so every number below is what
``prune --replicates`` gives. Also cached: the greedy path with the model in float16 and bfloat16, and
the approximations (``--approx``) of each chain.

Tables (``report``):
* per-chain stability: mean pairwise Kendall τ-b between the K replicates' survival, per T, with
  the mean over chains and its chain-bootstrap 95% CI;
* the free near-tie diagnostic of the greedy path against that stability (Spearman ρ across chains):
  near-tie steps at the dtype's rounding error, steps with a gap below T, the expected number of
  perturbed choices Σ_s 1/(1 + exp(gap_s/T)), and the smallest gap;
* each category effect (per chain: the category's median survival minus the chain's; mean over
  chains, chain-bootstrap CI) per replicate: its spread across replicates against its CI;
* cost: token rows and wall seconds per path, greedy against replicates, side by side in one process;
* dtypes: τ of the float16 / bfloat16 greedy path against the float32 greedy path and against the
  float32 ensemble mean, beside the replicates' own τ to the mean of the others;
* approximations: τ to the ensemble's mean survival beside the exact replicates' own τ to it (each
  replicate against the mean of the others), category effect signs, token rows against one exact path.
"""
from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

# 8 chains at the short end of the 50-160-token range the issue asks for (one exact float32 path of a
# 50-token chain is ~150 CPU s here, growing ~n^3): 4 built-in GSM8K chains (human solutions) and 4
# model-written ones (175b_verification), 50-52 reasoning tokens, the shortest prompts of that length.
GSM8K_IDS = ["gsm8k-test-799", "gsm8k-test-655", "gsm8k-test-491", "gsm8k-test-918"]
MODEL_IDS = ["model-190", "model-519", "model-261", "model-907"]
CHAIN_IDS = GSM8K_IDS + MODEL_IDS
TEMPERATURES = (0.05, 0.01, 0.2)  # nats, in the order they are computed (the default first)
K = 8
HALF = ("float16", "bfloat16")
# On this CPU (one thread) the first two exact steps of a 50-token chain took 17.7 CPU s in float32,
# 114.5 in bfloat16, and float16 did not finish them in the ~140 s left of the probe: the half-precision paths come
# last, bfloat16 (the study's dtype) first, float16 after everything else.
# Approximations. Their token rows are counted against one exact path of the default engine
# (crossstep, which at 50 tokens runs about half the rows of the prefix-reuse bound estimate_rows counts,
# while the approximations run ~1.3x their estimate): the ones that target >= 3x fewer rows than that
# at 50-160 tokens first (topk:0.5, topk:0.35), then topk:0.2 and topk:k=4 (about 2x at 50 tokens,
# measured), a windowed one, and lazy re-scoring (~4.6x at 101-159 tokens, less here).
APPROX_SPECS = ("topk:0.5", "topk:0.35", "topk:0.2", "topk:k=4", "topk:0.3,window=8,block=8", "lazy")
SEED = 0
# ``--set long``: the longer end of the range, 70-103 reasoning tokens (one exact float32 path of a
# 102-token chain is ~10x a 50-token one), then two of 142 tokens if time allows: the default T (0.05)
# and the cheap T = 0.01 (replicates reuse the greedy path), the approximations given with --approx.
# No T = 0.2 and no half-precision paths at this length on this CPU (cost).
LONG_GSM8K_IDS = ["gsm8k-test-440", "gsm8k-test-546", "gsm8k-test-858"]
LONG_MODEL_IDS = ["model-858", "model-881", "model-1317"]
LONG_ORDER = ["gsm8k-test-440", "model-858", "gsm8k-test-546", "model-881", "gsm8k-test-858", "model-1317"]
LONG_TEMPERATURES = (0.05, 0.01)


def use_set(name: str, approx: list[str] | None = None) -> None:
    """Switch the module's chain set (``short``: the 8 chains of 50-52 tokens; ``long``: 70-142) and,
    with ``approx``, its approximation specs (``short``: added after the built-in ones)."""
    global GSM8K_IDS, MODEL_IDS, CHAIN_IDS, TEMPERATURES, APPROX_SPECS, SET
    SET = name
    if name == "long":
        GSM8K_IDS, MODEL_IDS, CHAIN_IDS = LONG_GSM8K_IDS, LONG_MODEL_IDS, LONG_ORDER
        TEMPERATURES = LONG_TEMPERATURES
        APPROX_SPECS = tuple(approx or ("topk:0.5", "topk:0.35"))
    elif approx:
        APPROX_SPECS = APPROX_SPECS + tuple(a for a in approx if a not in APPROX_SPECS)


SET = "short"


def load_uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def chains_file(cache: Path) -> Path:
    """The bench's chains as one JSONL (so ``prune`` reads exactly them)."""
    from approx_fidelity import model_written_chains

    from cotsurvival.chains import read_chains

    path = cache / "chains.jsonl"
    if not path.exists():
        pool = {c.id: c for c in read_chains("gsm8k")}
        pool.update({c.id: c for c in model_written_chains() if c.id in MODEL_IDS})
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as handle:
            for chain_id in CHAIN_IDS:
                c = pool[chain_id]
                handle.write(json.dumps({"id": c.id, "question": c.question, "reasoning": c.reasoning,
                                         "answer": c.answer}) + "\n")
        tmp.replace(path)
    return path


def path_file(cache: Path, chain_id: str, dtype: str, scale: float, replicate: int, approx: str | None = None) -> Path:
    if approx:
        return cache / "paths" / f"{chain_id}@approx={approx.replace(':', '_').replace(',', '_')}.json"
    tail = "greedy" if replicate == 0 else f"T{scale:g}_r{replicate}"
    return cache / "paths" / f"{chain_id}@{dtype}_{tail}.json"


def _write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)


def _trace_from(record: dict):
    """A ChainTrace from a cached greedy path (the replicates reuse its costs)."""
    from cotsurvival.pruning.engine import ChainTrace

    return ChainTrace(order=list(record["order"]), objectives=list(record["objectives"]),
                      step_costs=[np.asarray(c, dtype=np.float32) for c in record["step_costs"]],
                      step_positions=[np.asarray(p, dtype=np.int32) for p in record["step_positions"]],
                      static_logprobs=np.asarray(record["static_logprobs"]), token_rows=record["token_rows"])


def stages_long(chain_ids: list[str]):
    """``--set long``: chain by chain (shortest first), the greedy path, its replicates at T = 0.05 and
    0.01, then the approximations."""
    for chain_id in chain_ids:
        yield chain_id, "float32", 0.0, 0, None
        for scale in LONG_TEMPERATURES:
            for r in range(1, K):
                yield chain_id, "float32", scale, r, None
        for spec in APPROX_SPECS:
            yield chain_id, "float32", 0.0, 0, spec


def stages(chain_ids: list[str]):
    """(chain, dtype, T, replicate, approx) in the order they are computed: chain by chain what the first
    tables need (the greedy path; its replicates at T = 0.05 and 0.01, cheap where they reuse the greedy
    path; the two approximations that target >= 3x fewer rows), so that an unfinished run has whole
    chains; then T = 0.2, the other approximations and the half-precision paths (slow on this CPU)."""
    if SET == "long":
        yield from stages_long(chain_ids)
        return
    half = K // 2
    for chain_id in chain_ids:
        yield chain_id, "float32", 0.0, 0, None
        for scale in (0.05, 0.01):
            for r in range(1, half):
                yield chain_id, "float32", scale, r, None
        for spec in APPROX_SPECS[:2]:
            yield chain_id, "float32", 0.0, 0, spec
        for scale in (0.05, 0.01):
            for r in range(half, K):
                yield chain_id, "float32", scale, r, None
    for chain_id in chain_ids:
        for r in range(1, half):
            yield chain_id, "float32", 0.2, r, None
    for spec in APPROX_SPECS[2:4]:
        for chain_id in chain_ids:
            yield chain_id, "float32", 0.0, 0, spec
    for chain_id in chain_ids:
        yield chain_id, "float32", 0.0, 0, APPROX_SPECS[4]
    for chain_id in chain_ids:
        yield chain_id, "bfloat16", 0.0, 0, None
    for chain_id in chain_ids:
        for r in range(half, K):
            yield chain_id, "float32", 0.2, r, None
    for spec in APPROX_SPECS[5:]:  # lazy, then any given with --approx
        for chain_id in chain_ids:
            yield chain_id, "float32", 0.0, 0, spec
    for chain_id in chain_ids:
        yield chain_id, "float16", 0.0, 0, None


def _kind(item) -> str:
    """``approx``, ``dtype`` or ``replicates`` (the float32 paths)."""
    _, dtype, _, _, approx = item
    return "approx" if approx else "dtype" if dtype != "float32" else "replicates"


def _claim(target: Path) -> bool:
    """Claim one path for this process (any number of processes share the cache); False if another has it.
    A claim older than its process (a killed run) is taken over: the lock records the pid."""
    import os

    lock = target.with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            os.kill(int(lock.read_text() or 0), 0)
            return False
        except (ProcessLookupError, ValueError):
            lock.unlink(missing_ok=True)
            return _claim(target)
    with os.fdopen(fd, "w") as handle:
        handle.write(str(os.getpid()))
    return True


def run_paths(args) -> None:
    import torch

    from cotsurvival.chains import read_chains
    from cotsurvival.models import load_model
    from cotsurvival.pruning.methods import make_scorer

    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    chains = {c.id: c for c in read_chains(str(chains_file(cache)))}
    loaded: dict[str, tuple] = {}

    def scorer_for(dtype):
        if dtype not in loaded:
            model, tokenizer, _ = load_model("smollm2-135m", device="cpu", dtype=dtype)
            loaded[dtype] = (make_scorer(model, method="crossstep"), tokenizer)
        return loaded[dtype]

    while True:
        todo = [item for item in stages(CHAIN_IDS) if not path_file(cache, *item).exists()
                and (args.only is None or _kind(item) == args.only)]
        if not todo:
            return
        claimed = None
        for item in todo:
            chain_id, dtype, scale, replicate, approx = item
            needs = path_file(cache, chain_id, dtype, 0.0, 0)  # replicates reuse the greedy path's costs
            if (replicate == 0 or needs.exists()) and _claim(path_file(cache, *item)):
                claimed = item
                break
        if claimed is None:  # everything left waits on a greedy path another process is computing
            time.sleep(15)
            continue
        try:
            _compute(cache, chains, scorer_for, *claimed)
        finally:
            path_file(cache, *claimed).with_suffix(".lock").unlink(missing_ok=True)


def _compute(cache, chains, scorer_for, chain_id, dtype, scale, replicate, approx) -> None:
    import torch

    from cotsurvival.encoding import encode_chain
    from cotsurvival.pruning.engine import Perturbation, greedy_prune

    target = path_file(cache, chain_id, dtype, scale, replicate, approx)
    scorer, tokenizer = scorer_for(dtype)
    encoded = encode_chain(chains[chain_id], tokenizer)
    n = len(encoded.reasoning_ids)
    uptime, began, cpu = load_uptime(), time.perf_counter(), time.process_time()
    if approx is not None:
        trace = greedy_prune(scorer, encoded, n, approx=approx)
    elif replicate == 0:
        trace = greedy_prune(scorer, encoded, n)
    else:
        greedy = json.loads(path_file(cache, chain_id, dtype, 0.0, 0).read_text())
        trace = greedy_prune(scorer, encoded, n, reuse=_trace_from(greedy),
                             perturbation=Perturbation(scale=scale, seed=SEED, replicate=replicate))
    record = {"chain": chain_id, "dtype": dtype, "scale": scale, "replicate": replicate, "approx": approx,
              "seed": SEED, "n": n, "prompt": len(encoded.prefix_ids), "answer": len(encoded.answer_ids),
              "reasoning_ids": list(map(int, encoded.reasoning_ids)),
              "order": list(map(int, trace.order)), "token_rows": int(trace.token_rows),
              "reused_steps": int(getattr(trace, "reused_steps", 0)),
              "seconds": round(time.perf_counter() - began, 2), "cpu_seconds": round(time.process_time() - cpu, 2),
              "uptime_before": uptime, "uptime_after": load_uptime(), "threads": torch.get_num_threads(),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if replicate == 0 and approx is None:  # the greedy path's costs: diagnostics, and reused by replicates
        record.update(objectives=[float(x) for x in trace.objectives],
                      step_costs=[np.asarray(c, dtype=np.float32).astype(float).tolist() for c in trace.step_costs],
                      step_positions=[np.asarray(p).tolist() for p in trace.step_positions],
                      static_logprobs=np.asarray(trace.static_logprobs, dtype=float).tolist())
    _write(target, record)
    print(f"{target.name}: n={n} rows={trace.token_rows} reused={record['reused_steps']} "
          f"{record['seconds']:.0f}s", flush=True)

# ----------------------------------------------------------------------------------------- report
def _load(cache: Path) -> dict:
    """Every cached path: key (chain, dtype, T, replicate, approx) -> record."""
    out = {}
    for path in sorted((cache / "paths").glob("*.json")):
        r = json.loads(path.read_text())
        out[(r["chain"], r["dtype"], float(r["scale"]), int(r["replicate"]), r.get("approx"))] = r
    return out


def survival(order, n) -> np.ndarray:
    """Normalized survival (deletion step / n) of each of n tokens."""
    steps = np.zeros(n)
    for step, position in enumerate(order, 1):
        steps[position] = step
    return steps / n


def _tau(a, b) -> float:
    from scipy.stats import kendalltau

    if np.array_equal(a, b):
        return 1.0
    return float(kendalltau(a, b)[0])


def _ci(values) -> dict:
    from cotsurvival.analysis.inference import bootstrap_ci

    return bootstrap_ci(np.asarray(values, dtype=float))


def _fmt(ci: dict, digits: int = 3) -> str:
    if ci["n_chains"] == 0:
        return "–"
    if ci["n_chains"] == 1:
        return f"{ci['estimate']:.{digits}f}"
    return f"{ci['estimate']:.{digits}f} [{ci['ci_low']:.{digits}f}, {ci['ci_high']:.{digits}f}]"


def gaps_of(record: dict) -> np.ndarray:
    """The greedy path's gap per step (second-cheapest minus cheapest distinct deletion), as the engine's
    free diagnostic computes it."""
    from cotsurvival.pruning.diagnostics import step_gap

    ids = record["reasoning_ids"]
    return np.array([step_gap(np.asarray(c), np.asarray(p), ids)
                     for c, p in zip(record["step_costs"], record["step_positions"])])


def leave_probability(record: dict, scale: float) -> float:
    """Probability that a replicate at T leaves the greedy path somewhere: 1 − Π_s softmin_s(greedy choice),
    from the greedy path's stored costs alone (identical adjacent tokens merged, as the engine does)."""
    ids = np.asarray(record["reasoning_ids"])
    stay = 0.0  # log of the probability of staying on the path
    for costs, positions in zip(record["step_costs"], record["step_positions"]):
        costs, positions = np.asarray(costs, dtype=float), np.asarray(positions)
        distinct = np.ones(len(positions), dtype=bool)
        distinct[1:] = ids[positions[1:]] != ids[positions[:-1]]
        values = costs[distinct]
        stay -= np.log(np.sum(np.exp(-(values - values.min()) / scale)))
    return float(1.0 - np.exp(stay))


def replicate_set(paths: dict, chain: str, scale: float, k: int = K) -> list[dict] | None:
    """The K paths of one chain at T (replicate 0 the greedy path), None until all are cached."""
    out = [paths.get((chain, "float32", 0.0, 0, None))] + [paths.get((chain, "float32", scale, r, None))
                                                           for r in range(1, k)]
    return out if all(out) else None


def stability_of(survivals: list[np.ndarray]) -> float:
    """Mean pairwise Kendall τ-b between replicates' survival."""
    return float(np.mean([_tau(a, b) for a, b in itertools.combinations(survivals, 2)]))


def chains_with(frame, column: str):
    """The per-chain rows that have ``column`` (an unfinished cache lacks some paths), None if no chain has it."""
    if column not in frame or frame[column].notna().sum() == 0:
        return None
    return frame[frame[column].notna()]


def own_tau(survivals: list[np.ndarray]) -> float:
    """Mean over replicates of τ(replicate, mean survival of the other replicates)."""
    stack = np.vstack(survivals)
    return float(np.mean([_tau(stack[i], np.delete(stack, i, axis=0).mean(axis=0)) for i in range(len(stack))]))


def report(args) -> dict:
    from scipy.stats import spearmanr

    from approx_fidelity import categories, category_effects
    from cotsurvival.chains import read_chains
    from cotsurvival.encoding import encode_chain
    from cotsurvival.models import load_model
    from cotsurvival.pruning.approx import estimate_rows, parse_approx

    import pandas as pd

    cache = Path(args.cache)
    paths = _load(cache)
    chains = {c.id: c for c in read_chains(str(chains_file(cache)))}
    _, tokenizer, _ = load_model("smollm2-135m", device="cpu", dtype="float32")
    encoded = {cid: encode_chain(chains[cid], tokenizer) for cid in CHAIN_IDS}
    labels = dict(zip(CHAIN_IDS, categories([chains[c] for c in CHAIN_IDS], [encoded[c] for c in CHAIN_IDS])))
    out: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "k": K, "seed": SEED,
                 "chains": {c: len(encoded[c].reasoning_ids) for c in CHAIN_IDS}}
    greedy = {c: paths.get((c, "float32", 0.0, 0, None)) for c in CHAIN_IDS}

    # ---- K per T: 8, or the first 4 replicates where more chains have those (an unfinished cache)
    k_of = {}
    for scale in TEMPERATURES:
        full = sum(replicate_set(paths, c, scale, K) is not None for c in CHAIN_IDS)
        half = sum(replicate_set(paths, c, scale, K // 2) is not None for c in CHAIN_IDS)
        k_of[scale] = K if full >= half else K // 2
    out["k_per_T"] = {f"{t:g}": k for t, k in k_of.items()}

    # ---- per chain: stability at each T, and the greedy path's free diagnostics
    per_chain = []
    for c in CHAIN_IDS:
        g = greedy[c]
        if g is None:
            continue
        gaps = gaps_of(g)
        row = {"chain": c, "n": g["n"], "min_gap": float(np.nanmin(gaps)),
               "near_ties_float32": int(np.sum(gaps < 1.5e-4)), "near_ties_float16": int(np.sum(gaps < 0.22))}
        for scale in TEMPERATURES:
            with np.errstate(over="ignore"):
                row[f"expected_flips_T{scale:g}"] = float(np.nansum(1.0 / (1.0 + np.exp(gaps / scale))))
            row[f"gaps_below_T{scale:g}"] = int(np.sum(gaps < scale))
            row[f"p_leave_T{scale:g}"] = leave_probability(g, scale)
            reps = replicate_set(paths, c, scale, k_of[scale])
            if reps is None:
                continue
            surv = [survival(r["order"], r["n"]) for r in reps]
            row[f"stability_T{scale:g}"] = stability_of(surv)
            row[f"own_tau_T{scale:g}"] = own_tau(surv)
            row[f"diverged_T{scale:g}"] = sum(r["order"] != reps[0]["order"] for r in reps[1:])
            row[f"rows_T{scale:g}"] = float(np.mean([r["token_rows"] for r in reps[1:]]))
            row[f"seconds_T{scale:g}"] = float(np.mean([r["seconds"] for r in reps[1:]]))
            row[f"cpu_T{scale:g}"] = float(np.mean([r["cpu_seconds"] for r in reps[1:]]))
            row[f"reused_T{scale:g}"] = float(np.mean([r["reused_steps"] / r["n"] for r in reps[1:]]))
        row.update(rows_greedy=g["token_rows"], seconds_greedy=g["seconds"], cpu_greedy=g["cpu_seconds"])
        for dtype in HALF:
            half = paths.get((c, dtype, 0.0, 0, None))
            if half is not None:
                row[f"tau_{dtype}"] = _tau(survival(half["order"], half["n"]), survival(g["order"], g["n"]))
                row[f"rows_{dtype}"], row[f"cpu_{dtype}"] = half["token_rows"], half["cpu_seconds"]
                reps = replicate_set(paths, c, 0.05)
                if reps is not None:
                    mean = np.mean([survival(r["order"], r["n"]) for r in reps], axis=0)
                    row[f"tau_{dtype}_to_ensemble"] = _tau(survival(half["order"], half["n"]), mean)
        per_chain.append(row)
    frame = pd.DataFrame(per_chain).set_index("chain") if per_chain else pd.DataFrame()
    out["per_chain"] = frame.reset_index().to_dict("records")

    # ---- half precision: the greedy path in float16 / bfloat16 against the float32 greedy path and ensemble,
    # beside the float32 replicates' own tau to the mean of the others (T = 0.05) on the same chains
    dtypes = []
    for dtype in HALF:
        col = f"tau_{dtype}"
        done = chains_with(frame, col)
        if done is None:
            continue
        dtypes.append({"dtype": dtype, "n_chains": len(done), "chain_ids": list(done.index),
                       "tau_to_greedy": _ci(done[col]), "tau_to_ensemble": _ci(done[f"{col}_to_ensemble"].dropna()),
                       "own_tau": _ci(done["own_tau_T0.05"].dropna()) if "own_tau_T0.05" in done else None,
                       "stability_T0.2": _ci(done["stability_T0.2"].dropna()) if "stability_T0.2" in done else None,
                       "rows": float(done[f"rows_{dtype}"].mean()), "rows_greedy": float(done["rows_greedy"].mean()),
                       "cpu": float(done[f"cpu_{dtype}"].mean()), "cpu_greedy": float(done["cpu_greedy"].mean())})
    out["dtypes"] = dtypes

    # ---- stability per T, cost
    summary = []
    for scale in TEMPERATURES:
        col = f"stability_T{scale:g}"
        done = chains_with(frame, col)
        if done is None:
            continue
        summary.append({
            "T": scale, "k": k_of[scale], "n_chains": len(done), "stability": _ci(done[col]), "own_tau": _ci(done[f"own_tau_T{scale:g}"]),
            "stability_min": float(done[col].min()), "stability_max": float(done[col].max()),
            "diverged": f"{int(done[f'diverged_T{scale:g}'].sum())}/{(k_of[scale] - 1) * len(done)}",
            "p_leave_predicted": float(done[f"p_leave_T{scale:g}"].mean()),
            "reused_share": float(done[f"reused_T{scale:g}"].mean()),
            "rows_replicate": float(done[f"rows_T{scale:g}"].mean()), "rows_greedy": float(done["rows_greedy"].mean()),
            "seconds_replicate": float(done[f"seconds_T{scale:g}"].mean()),
            "seconds_greedy": float(done["seconds_greedy"].mean()),
            "cpu_replicate": float(done[f"cpu_T{scale:g}"].mean()), "cpu_greedy": float(done["cpu_greedy"].mean()),
        })
        # How well the free diagnostics predict it (Spearman across chains; descriptive, few chains).
        predictors = {}
        for name in ("near_ties_float32", "near_ties_float16", f"gaps_below_T{scale:g}",
                     f"expected_flips_T{scale:g}", f"p_leave_T{scale:g}", "min_gap"):
            x = done[name].to_numpy(float)
            if np.ptp(x) == 0:
                predictors[name] = None  # constant across chains: predicts nothing
            else:
                rho, p = spearmanr(x, done[col])
                predictors[name] = {"rho": float(rho), "p": float(p)}
        summary[-1]["predictors"] = predictors
    out["summary"] = summary

    # ---- category effects across replicates against their CI (T = each)
    effects = {}
    for scale in TEMPERATURES:
        k = k_of[scale]
        sets = {c: replicate_set(paths, c, scale, k) for c in CHAIN_IDS}
        sets = {c: s for c, s in sets.items() if s is not None}
        if len(sets) < 3:
            continue
        tokens = []
        for c, reps in sets.items():
            t = pd.DataFrame({"chain": c, "category": labels[c]})
            for r, rec in enumerate(reps):
                t[f"r{r}"] = survival(rec["order"], rec["n"])
            t["mean"] = t[[f"r{r}" for r in range(k)]].mean(axis=1)
            tokens.append(t)
        tokens = pd.concat(tokens, ignore_index=True)
        per_rep = {r: category_effects(tokens, f"r{r}") for r in range(k)}
        on_mean = category_effects(tokens, "mean")
        rows = []
        for cat in per_rep[0].index:
            values = np.array([per_rep[r].loc[cat, "effect"] for r in range(k)])
            rows.append({"category": cat, "effect_greedy": per_rep[0].loc[cat, "effect"],
                         "lo": per_rep[0].loc[cat, "lo"], "hi": per_rep[0].loc[cat, "hi"],
                         "effect_mean_survival": on_mean.loc[cat, "effect"],
                         "sd_across_replicates": float(values.std(ddof=1)),
                         "range_across_replicates": float(np.ptp(values)),
                         "ci_width": float(per_rep[0].loc[cat, "hi"] - per_rep[0].loc[cat, "lo"]),
                         "same_sign": f"{int(np.sum(np.sign(values) == np.sign(values[0])))}/{k}"})
        effects[f"{scale:g}"] = {"n_chains": len(sets), "k": k, "rows": rows}
    out["category_effects"] = effects

    # ---- approximations against the exact replicate ensemble (T = 0.05)
    approx_rows = []
    sets = {c: replicate_set(paths, c, 0.05) for c in CHAIN_IDS}
    sets = {c: s for c, s in sets.items() if s is not None}
    for spec in APPROX_SPECS:
        have = [c for c in sets if (c, "float32", 0.0, 0, spec) in paths]
        if len(have) < 2:
            continue
        taus, own, greedy_tau, rows, exact_rows, tokens = [], [], [], 0, 0, []
        for c in have:
            reps = sets[c]
            surv = [survival(r["order"], r["n"]) for r in reps]
            mean = np.mean(surv, axis=0)
            rec = paths[(c, "float32", 0.0, 0, spec)]
            approx_surv = survival(rec["order"], rec["n"])
            taus.append(_tau(approx_surv, mean))
            own.append(own_tau(surv))
            greedy_tau.append(_tau(approx_surv, surv[0]))
            rows += rec["token_rows"]
            exact_rows += reps[0]["token_rows"]
            tokens.append(pd.DataFrame({"chain": c, "category": labels[c], "mean": mean, "approx": approx_surv}))
        tokens = pd.concat(tokens, ignore_index=True)
        e_mean, e_approx = category_effects(tokens, "mean"), category_effects(tokens, "approx")
        joined = e_mean.join(e_approx, rsuffix="_approx")
        same = int((np.sign(joined["effect"]) == np.sign(joined["effect_approx"])).sum())
        parsed = parse_approx(spec)
        projected = {}
        if hasattr(parsed, "deletions"):  # topk: the cost model of BENCHMARKS.md (estimate_rows) ...
            shapes = [(paths[(c, "float32", 0.0, 0, spec)]["n"], paths[(c, "float32", 0.0, 0, spec)]["prompt"],
                       paths[(c, "float32", 0.0, 0, spec)]["answer"]) for c in have]
            # ... calibrated on these chains: estimate_rows counts prefix reuse, the exact paths here ran
            # crossstep (fewer rows), the approximations somewhat more than their estimate; both factors
            # are assumed to hold at other lengths
            exact_factor = exact_rows / sum(estimate_rows(n, p, a, None) for n, p, a in shapes)
            approx_factor = rows / sum(estimate_rows(n, p, a, parsed) for n, p, a in shapes)
            prompt, answer = int(np.mean([p for _, p, _ in shapes])), int(np.mean([a for _, _, a in shapes]))
            for n in (50, 100, 160, 300, 1000):
                projected[n] = (exact_factor * estimate_rows(n, prompt, answer, None)
                                / (approx_factor * estimate_rows(n, prompt, answer, parsed)))
        approx_rows.append({"spec": parsed.describe(), "n_chains": len(have), "chain_ids": have,
                            "tau_to_ensemble": _ci(taus),
                            "own_tau": _ci(own), "gap": _ci(np.array(own) - np.array(taus)),
                            "tau_to_greedy": _ci(greedy_tau), "same_sign": f"{same}/{len(joined)}",
                            "rows": rows, "exact_rows": exact_rows, "row_ratio": exact_rows / rows,
                            "projected_row_ratio": projected})
    out["approximations"] = approx_rows
    out["uptime"] = load_uptime()
    return out


def markdown(result: dict) -> str:
    lines = ["Per chain (float32 greedy path = replicate 0):", "",
             "| chain | n | min gap (nats) | steps gap < 0.22 | " + " | ".join(
                 f"stability T={t:g}" for t in TEMPERATURES) + " | " + " | ".join(
                 f"expected flips T={t:g}" for t in TEMPERATURES) + " | τ float16 / bfloat16 vs greedy |",
             "|---|---:|---:|---:|" + "---:|" * (2 * len(TEMPERATURES)) + "---|"]
    for row in result["per_chain"]:
        stab = " | ".join(f"{row[f'stability_T{t:g}']:.3f}" if row.get(f"stability_T{t:g}") == row.get(f"stability_T{t:g}")
                          and f"stability_T{t:g}" in row else "–" for t in TEMPERATURES)
        flips = " | ".join(f"{row[f'expected_flips_T{t:g}']:.2f}" for t in TEMPERATURES)
        half = " / ".join(f"{row[f'tau_{d}']:.3f}" if f"tau_{d}" in row and row[f"tau_{d}"] == row[f"tau_{d}"] else "–"
                          for d in HALF)
        lines.append(f"| `{row['chain']}` | {row['n']} | {row['min_gap']:.3g} | {row['near_ties_float16']} | "
                     f"{stab} | {flips} | {half} |")
    lines += ["", "| T (nats) | K | chains | stability: mean pairwise τ [95% CI] (min–max) | replicate vs mean of others τ "
              "| replicates that left the greedy path (predicted from greedy costs) | steps reused | token rows: replicate / greedy | wall s: replicate / greedy (CPU s) |",
              "|---:|---:|---:|---|---|---:|---:|---|---|"]
    for row in result["summary"]:
        lines.append(f"| {row['T']:g} | {row['k']} | {row['n_chains']} | {_fmt(row['stability'])} ({row['stability_min']:.3f}–"
                     f"{row['stability_max']:.3f}) | {_fmt(row['own_tau'])} | {row['diverged']} ({row['p_leave_predicted']:.0%}) | {row['reused_share']:.0%} | "
                     f"{row['rows_replicate']:,.0f} / {row['rows_greedy']:,.0f} | {row['seconds_replicate']:.0f} / "
                     f"{row['seconds_greedy']:.0f} ({row['cpu_replicate']:.1f} / {row['cpu_greedy']:.1f}) |")
    lines += ["", "Free diagnostic against stability (Spearman ρ across chains, p):", ""]
    for row in result["summary"]:
        parts = [f"{k}: " + ("constant" if v is None else f"ρ = {v['rho']:+.2f} (p = {v['p']:.2f})")
                 for k, v in row["predictors"].items()]
        lines.append(f"- T = {row['T']:g}: " + "; ".join(parts))
    if result.get("dtypes"):
        lines += ["", "The greedy path in half precision against float32 (same chains, float32 replicates at T = 0.05):", "",
                  "| dtype | chains | τ to the float32 greedy path | τ to the float32 ensemble mean | float32 replicates' own τ | float32 stability at T = 0.2 | token rows / CPU s (float32: rows / CPU s) |",
                  "|---|---:|---|---|---|---|---|"]
        for r in result["dtypes"]:
            lines.append(f"| {r['dtype']} | {r['n_chains']} | {_fmt(r['tau_to_greedy'])} | {_fmt(r['tau_to_ensemble'])} | "
                         f"{_fmt(r['own_tau']) if r['own_tau'] else '–'} | {_fmt(r['stability_T0.2']) if r['stability_T0.2'] else '–'} | "
                         f"{r['rows']:,.0f} / {r['cpu']:.0f} ({r['rows_greedy']:,.0f} / {r['cpu_greedy']:.0f}) |")
    for scale, block in result["category_effects"].items():
        lines += ["", f"Category effects across the {block['k']} replicates, T = {scale} ({block['n_chains']} chains):", "",
                  "| category | greedy effect [95% CI] | CI width | on mean survival | SD across replicates | range | same sign |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for r in block["rows"]:
            lines.append(f"| {r['category']} | {r['effect_greedy']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}] | "
                         f"{r['ci_width']:.3f} | {r['effect_mean_survival']:+.3f} | {r['sd_across_replicates']:.3f} | "
                         f"{r['range_across_replicates']:.3f} | {r['same_sign']} |")
    if result["approximations"]:
        lines += ["", f"Approximations against the exact replicate ensemble (T = 0.05, chain set `{SET}`):", "",
                  "| spec | chains | τ to ensemble mean | exact replicates' own τ | own − approx | τ to greedy | category signs | token rows (ratio to one exact path) | projected ratio n = 50 / 100 / 160 / 300 / 1000 (cost model calibrated on these chains) |",
                  "|---|---:|---|---|---|---|---:|---|---|"]
        for r in result["approximations"]:
            proj = " / ".join(f"{v:.1f}×" for v in r["projected_row_ratio"].values()) or "–"
            lines.append(f"| `{r['spec']}` | {r['n_chains']} | {_fmt(r['tau_to_ensemble'])} | {_fmt(r['own_tau'])} | "
                         f"{_fmt(r['gap'])} | {_fmt(r['tau_to_greedy'])} | {r['same_sign']} | {r['rows']:,} "
                         f"({r['row_ratio']:.1f}×) | {proj} |")
    return "\n".join(lines)


def check(args) -> dict:
    """Run ``prune --replicates K --perturbation-scale T`` itself on the first chains and compare every
    replicate's deletion order with the cached paths: the tables are what ``prune --replicates`` gives."""
    import torch

    from cotsurvival.pruning import prune
    from cotsurvival.rundir import RunDir

    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    ids = CHAIN_IDS[: args.chains]
    out = cache / f"check_T{args.scale:g}"
    began = time.perf_counter()
    prune(str(chains_file(cache)), out, ids=ids, replicates=K, perturbation_scale=args.scale, device="cpu",
          dtype="float32", progress=False)
    seconds = time.perf_counter() - began
    run = RunDir(out)
    tokens = run.read_table("tokens", replicates=True)
    compared, same = 0, 0
    for (chain_id, replicate), group in tokens.groupby(["chain_id", "replicate"]):
        order = group.dropna(subset=["deleted_step"]).sort_values("deleted_step")["position"].astype(int).tolist()
        cached = path_file(cache, chain_id, "float32", args.scale, int(replicate))
        if cached.exists():
            compared += 1
            same += order == json.loads(cached.read_text())["order"]
    result = {"chains": ids, "scale": args.scale, "replicates_compared": compared, "identical": same,
              "prune_seconds": round(seconds, 1), "uptime": load_uptime()}
    print(json.dumps(result))
    return result


def update_fidelity(result: dict, path: Path) -> None:
    """The ensemble rows of the approximations table, as the data file citations and ``--approx auto``
    (:func:`cotsurvival.pruning.approx.auto_spec`) read them from."""
    data = json.loads(path.read_text(encoding="utf-8"))

    def described(ids: list[str]) -> str:
        lengths = sorted(result["chains"][c] for c in ids)
        human, model = sum(c in GSM8K_IDS for c in ids), sum(c in MODEL_IDS for c in ids)
        return f"GSM8K chains of {lengths[0]}-{lengths[-1]} tokens ({human} human-written, {model} model-written)"

    rows = [{"spec": r["spec"], "set": SET, "k": K, "scale": 0.05, "tau": round(r["tau_to_ensemble"]["estimate"], 3),
             "lo": round(r["tau_to_ensemble"]["ci_low"], 3), "hi": round(r["tau_to_ensemble"]["ci_high"], 3),
             "own_tau": round(r["own_tau"]["estimate"], 3),
             "same_sign": int(r["same_sign"].split("/")[0]), "n_categories": int(r["same_sign"].split("/")[1]),
             "row_ratio": round(r["row_ratio"], 2), "n_chains": r["n_chains"], "chains": described(r["chain_ids"]),
             "max_tokens": max(result["chains"][c] for c in r["chain_ids"])}
            for r in result["approximations"]]
    # the other chain set's rows stay (each set's report replaces only its own)
    kept = [r for r in (data.get("ensemble") or {}).get("approximations", []) if r.get("set", "short") != SET]
    data["ensemble"] = {
        "about": "Approximations against the exact replicate ensemble (bench/stability.py, BENCHMARKS.md "
                 "'Rank stability'): tau to the mean survival of K exact paths perturbed by T nats, beside the exact "
                 "replicates' own tau to the mean of the others; category effect signs kept against the ensemble "
                 "mean's; token rows of one exact path over the approximation's. --approx auto applies its rule "
                 "(cotsurvival.pruning.approx.auto_spec) to these rows.",
        "date": result["date"],
        "approximations": kept + rows}
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    paths = sub.add_parser("paths", help="compute (or resume) the cached paths of one part of the chains")
    paths.add_argument("--cache", required=True)
    paths.add_argument("--threads", type=int, default=1)
    paths.add_argument("--only", choices=["replicates", "approx", "dtype"], default=None,
                       help="only this kind of path (a process of its own for the cheap or the slow ones)")
    rep = sub.add_parser("report", help="tables from the cached paths")
    rep.add_argument("--cache", required=True)
    rep.add_argument("--out", default=None)
    rep.add_argument("--update-fidelity", default=None, metavar="JSON",
                     help="write the approximations' ensemble fidelity into this data file "
                          "(src/cotsurvival/data/fidelity.json, which citations quote)")
    chk = sub.add_parser("check", help="prune --replicates on the first chains equals the cached paths")
    chk.add_argument("--cache", required=True)
    chk.add_argument("--chains", type=int, default=1)
    chk.add_argument("--scale", type=float, default=0.05)
    chk.add_argument("--threads", type=int, default=1)
    for sub_parser in (paths, rep, chk):
        sub_parser.add_argument("--set", choices=["short", "long"], default="short",
                                help="the chains: short (8 of 50-52 tokens) or long (70-142)")
        sub_parser.add_argument("--approx", action="append", default=None, metavar="SPEC",
                                help="an approximation to add (short) or to run (long); repeat for more")
    args = parser.parse_args(argv)
    use_set(args.set, args.approx)
    if args.command == "check":
        check(args)
    elif args.command == "paths":
        run_paths(args)
    elif args.command == "report":
        result = report(args)
        print(markdown(result))
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=1, default=str))
        if args.update_fidelity:
            update_fidelity(result, Path(args.update_fidelity))


if __name__ == "__main__":
    main()
