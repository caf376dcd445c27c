"""How path-dependent is the exact greedy order? The measurements behind BENCHMARKS.md, "Why no
setting reaches τ ≥ 0.9", from the exact rankings ``bench/approx_fidelity.py --exact-cache`` stores.

    python bench/approx_paths.py gaps --cache /tmp/exact_cache            # gap between the two cheapest
    python bench/approx_paths.py contenders --cache /tmp/exact_cache      # where new contenders appear
    python bench/approx_paths.py volatility --cache /tmp/exact_cache      # how far costs move per step
    PYTHONPATH=src python bench/approx_paths.py force --cache /tmp/exact_cache --chain model-5 --steps 40 60 80
    PYTHONPATH=src python bench/approx_paths.py noise --cache /tmp/exact_cache --chain model-1 --sigma 0.05 0.5
    PYTHONPATH=src python bench/approx_paths.py dtype --cache /tmp/exact_cache --chain model-1 --dtype bfloat16 float16

``force`` makes step s+1 delete the second-cheapest candidate (a different sequence) and continues
exactly; ``noise`` adds N(0, σ²) nats to every candidate's cost at every step of the exact engine.
``dtype`` reruns the exact engine with the model in another dtype. All three report Kendall τ of
survival against the cached exact order. SmolLM2-135M, float32 unless named, one thread.

``volatility`` needs no model: teacher-forced along the exact path, how far every candidate's cost
moves per step, and how often re-scoring rules that trust stale costs (lazy re-scoring with a
radius, copies of the deleted token, and every token whose stale cost is within a margin of the
cheapest fresh one) would pick another token than the exact argmin, with their row cost.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from approx_fidelity import model_written_chains, survival  # noqa: E402  (a sibling bench script)


def load(cache: Path) -> dict[str, dict]:
    # Reference runs in other dtypes are stored beside the float32 ones as "<chain>@<dtype>.json".
    return {p.stem: json.loads(p.read_text()) for p in sorted(cache.glob("*.json")) if "@" not in p.stem}


def gaps(chains: dict[str, dict]) -> None:
    for name, d in chains.items():
        ids, out = d["reasoning_ids"], []
        for costs, alive in zip(d["step_costs"], d["step_positions"]):
            # One candidate per distinct sequence: a token equal to its left neighbour is its twin.
            distinct = [i == 0 or ids[alive[i]] != ids[alive[i - 1]] for i in range(len(alive))]
            ranked = np.sort(np.asarray(costs)[distinct])
            if len(ranked) > 1:
                out.append(ranked[1] - ranked[0])
        out = np.asarray(out)
        print(f"{name}: {len(out)} steps; gap between the two cheapest, quantiles 5/10/25/50%: "
              f"{np.round(np.quantile(out, [0.05, 0.1, 0.25, 0.5]), 3).tolist()}")


def contenders(chains: dict[str, dict], margin: float = 1.0) -> None:
    """Teacher-forced along the exact path: tokens whose cost moved > 1 nat, and tokens that became
    contenders (within ``margin`` of the step's minimum, having been above it), by distance."""
    moved, new, steps = 0, collections.Counter(), 0
    for d in chains.values():
        order, costs, alive, ids = d["order"], d["step_costs"], d["step_positions"], d["reasoning_ids"]
        for t in range(1, len(order)):
            before, now = dict(zip(alive[t - 1], costs[t - 1])), dict(zip(alive[t], costs[t]))
            gap = alive[t - 1].index(order[t - 1])
            low = min(now.values())
            steps += 1
            for k in alive[t]:
                moved += abs(before[k] - now[k]) > 1.0
                if now[k] <= low + margin < before[k]:
                    distance = alive[t - 1].index(k) - gap
                    key = ("same token" if ids[k] == ids[order[t - 1]] else
                           distance if abs(distance) <= 4 else "further")
                    new[key] += 1
    print(f"{steps} steps, {len(chains)} chains: {moved / steps:.1f} tokens per step move by > 1 nat; "
          f"{sum(new.values()) / steps:.2f} new contenders per step (within {margin} nat of the minimum):")
    for key, count in new.most_common():
        print(f"  {key}: {count} ({count / sum(new.values()):.0%})")


def _rule_misses(d: dict, radius: int, margin: float, answer_tokens: int = 8) -> tuple[int, int, int, list[float]]:
    """Steps where a stale-cost re-scoring rule picks another token than the exact argmin (teacher
    forced: the exact deletion is made anyway), its wrong picks' excess cost, and its rows (each
    re-scored candidate runs its suffix to the end; the sequence reruns from each deletion)."""
    ids, order = d["reasoning_ids"], d["order"]
    stale: dict[int, float] = {}
    misses, excess, rows = 0, [], 0
    for t, (costs, alive) in enumerate(zip(d["step_costs"], d["step_positions"])):
        now, index, fresh = dict(zip(alive, costs)), {p: k for k, p in enumerate(alive)}, set()

        def rescore(positions):
            nonlocal rows
            for p in set(positions) - fresh:
                fresh.add(p)
                stale[p] = now[p]
                rows += len(alive) - index[p] + answer_tokens

        if t == 0:
            rescore(alive)
        else:
            rescore(alive[max(0, last_gap - radius): last_gap + radius])
            rescore(p for p in alive if ids[p] == last_token)
            if margin > 0:
                low = min(stale[p] for p in fresh)
                rescore(p for p in alive if stale[p] < low + margin)
        while (winner := min(alive, key=lambda p: (stale[p], p))) not in fresh:
            rescore([min((p for p in alive if p not in fresh), key=lambda p: (stale[p], p))])
        if winner != order[t]:
            misses += 1
            excess.append(now[winner] - now[order[t]])
        last_gap, last_token = index[order[t]], ids[order[t]]
        rows += len(alive) - last_gap + answer_tokens
        del stale[order[t]]
    return misses, len(order), rows, excess


def volatility(chains: dict[str, dict]) -> None:
    for name, d in chains.items():
        moved, drift, jump = [], [], []
        for t in range(1, len(d["order"])):
            before = dict(zip(d["step_positions"][t - 1], d["step_costs"][t - 1]))
            now = dict(zip(d["step_positions"][t], d["step_costs"][t]))
            delta = np.array([now[p] - before[p] for p in now])
            moved.append(np.mean(np.abs(delta - np.median(delta)) > 1.0))
            drift.append(np.median(np.abs(delta - np.median(delta))))
            jump.append(before[d["order"][t]] - min(before.values()))
        print(f"{name} (n={len(d['order'])}): per step, {np.mean(moved):.0%} of costs move > 1 nat beyond the "
              f"common shift (median |move| {np.median(drift):.2f}); the next deletion was > 2 / > 5 nats above "
              f"the cheapest one step before at {np.mean(np.array(jump) > 2):.0%} / {np.mean(np.array(jump) > 5):.0%} "
              f"of steps")
    exact_rows = sum(d["token_rows"] for d in chains.values())
    for radius, margin in [(2, 0.0), (2, 1.0), (2, 2.0), (2, 5.0), (4, 2.0)]:
        results = [_rule_misses(d, radius, margin) for d in chains.values()]
        misses, steps = sum(r[0] for r in results), sum(r[1] for r in results)
        excess = np.concatenate([r[3] for r in results])
        print(f"radius={radius}, margin={margin:g} nats: picks another token than exact at {misses}/{steps} steps "
              f"({misses / steps:.1%}; {np.sum(excess > 0.5)} by > 0.5 nats); rows {exact_rows / sum(r[2] for r in results):.1f}x "
              f"fewer than exact crossstep")


def _model_chain(chain_id: str, dtype: str = "float32"):
    from cotsurvival.encoding import encode_chain
    from cotsurvival.models import load_model

    model, tokenizer, _ = load_model("smollm2-135m", device="cpu", dtype=dtype)
    chain = next(c for c in model_written_chains() if c.id == chain_id)
    return model, encode_chain(chain, tokenizer)


def _tau(n: int, a: list[int], b: list[int]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(survival(a, n), survival(b, n))[0])


def force(chains: dict[str, dict], chain_id: str, steps: list[int]) -> None:
    from cotsurvival.pruning.engine import ChainTrace, greedy_prune
    from cotsurvival.pruning.methods import make_scorer

    model, encoded = _model_chain(chain_id)
    d, ids, n = chains[chain_id], encoded.reasoning_ids, len(encoded.reasoning_ids)
    order = d["order"]
    for s in steps:
        costs, alive = np.asarray(d["step_costs"][s]), d["step_positions"][s]
        ranked = np.argsort(costs, kind="stable")
        second = next(alive[j] for j in ranked[1:] if ids[alive[j]] != ids[order[s]])
        start = ChainTrace(order=order[:s] + [second], objectives=[0.0] * (s + 2))
        began = time.perf_counter()
        trace = greedy_prune(make_scorer(model, method="crossstep"), encoded, n, start=start)
        apart = [len(set(order[:k]) ^ set(trace.order[:k])) // 2 for k in (s + 2, s + 5, s + 10, s + 20) if k <= n]
        print(f"{chain_id} (n={n}): second-cheapest at step {s + 1} (gap {costs[ranked[1]] - costs[ranked[0]]:.3f} "
              f"nats): tau {_tau(n, order, trace.order):.3f}; tokens deleted by one path only after +1/+4/+9/+19 "
              f"steps: {apart} ({time.perf_counter() - began:.0f} s)", flush=True)


def noise(chains: dict[str, dict], chain_id: str, sigmas: list[float], seed: int = 0) -> None:
    from cotsurvival.pruning.crossstep import CrossStepScorer
    from cotsurvival.pruning.engine import greedy_prune

    class NoisyScorer(CrossStepScorer):
        def __init__(self, model, sigma):
            super().__init__(model)
            self.sigma, self.rng = sigma, np.random.default_rng(seed)

        def score(self, prefix, kept, answer):
            scores = super().score(prefix, kept, answer)
            scores.candidate_objectives = scores.candidate_objectives + self.rng.normal(
                0.0, self.sigma, len(scores.candidate_objectives))
            return scores

    model, encoded = _model_chain(chain_id)
    n = len(encoded.reasoning_ids)
    for sigma in sigmas:
        began = time.perf_counter()
        trace = greedy_prune(NoisyScorer(model, sigma), encoded, n)
        print(f"{chain_id} (n={n}): cost noise sigma={sigma} nats: tau {_tau(n, chains[chain_id]['order'], trace.order):.3f} "
              f"({time.perf_counter() - began:.0f} s)", flush=True)


def dtypes(chains: dict[str, dict], chain_id: str, names: list[str], first_step: bool = False) -> None:
    """The exact engine in another dtype: how far its own greedy order moves from the float32 one
    (with ``first_step``, only how far the first step's costs move)."""
    from cotsurvival.pruning.engine import greedy_prune
    from cotsurvival.pruning.methods import make_scorer

    reference = chains[chain_id]
    for name in names:
        model, encoded = _model_chain(chain_id, dtype=name)
        n = len(encoded.reasoning_ids)
        began = time.perf_counter()
        trace = greedy_prune(make_scorer(model, method="prefix" if first_step else "crossstep"), encoded,
                             1 if first_step else n)
        # float64 costs: the engine stores step costs as float32, which rounds ~10-nat costs to ~1e-6
        first = np.abs(np.asarray(trace.step_costs[0], dtype=float) - np.asarray(reference["step_costs"][0], dtype=float))
        tau = "" if first_step else f"tau {_tau(n, reference['order'], trace.order):.3f} against float32; "
        print(f"{chain_id} (n={n}): exact engine in {name}: {tau}step-1 cost differences |d| median "
              f"{np.median(first):.2e}, max {np.max(first):.2e} nats ({time.perf_counter() - began:.0f} s)", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["gaps", "contenders", "volatility", "force", "noise", "dtype"])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--chain", default=None)
    parser.add_argument("--steps", type=int, nargs="+", default=[40, 60, 80])
    parser.add_argument("--sigma", type=float, nargs="+", default=[0.05, 0.5])
    parser.add_argument("--dtype", nargs="+", default=["bfloat16", "float64"])
    parser.add_argument("--first-step", action="store_true", help="dtype: compare the first step's costs only")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    chains = load(args.cache)
    if args.what == "gaps":
        gaps(chains)
    elif args.what == "contenders":
        contenders(chains)
    elif args.what == "volatility":
        volatility(chains)
    elif args.what == "force":
        force(chains, args.chain, args.steps)
    elif args.what == "noise":
        noise(chains, args.chain, args.sigma)
    else:
        dtypes(chains, args.chain, args.dtype, args.first_step)


if __name__ == "__main__":
    main()
