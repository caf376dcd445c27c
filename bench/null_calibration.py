"""Rejection rates under simulated nulls (and power under a true effect): token-level tests, Cox and
the chain-level primary test with its alternative position adjustments.

Each cell simulates RUNS synthetic runs (cotsurvival.analysis.simulate, one scenario each; labels
carry no information about importance once position is known) and counts p < 0.05. A valid test
rejects about 0.05 of the time; the Monte Carlo SE of a rate r over R runs is sqrt(r(1-r)/R)
(0.013 at 0.05 with 300 runs). ``--power`` adds the rejection rate for a true 0.1 difference shared
by all chains, with the mean between-chain SD of the per-chain contrast.

    PYTHONPATH=src nice python bench/null_calibration.py --runs 300 --jobs 2 --adjustments cubic_final_step cubic_step
    PYTHONPATH=src nice python bench/null_calibration.py --runs 300 --token-tests --cox --chains 6 30 --scenarios runs drift
"""
from __future__ import annotations

import argparse
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from cotsurvival.analysis import survival as surv
from cotsurvival.analysis.chainlevel import ADJUSTMENTS, DEFAULT_ADJUSTMENT, chain_contrasts
from cotsurvival.analysis.inference import sign_flip_test
from cotsurvival.analysis.simulate import SCENARIOS, simulate_token_table
from cotsurvival.errors import CotSurvivalError


def _primary(adjustment):
    # The p-value chain_level_test reports (same per-chain contrasts, same sign-flip test) without the
    # interval inversion and sensitivity work the bench does not need.
    def test(table):
        values = chain_contrasts(table, adjustment=adjustment)["contrast_symbolic_math"].dropna().to_numpy()
        return sign_flip_test(values, n_resamples=999)["p_value"], (values.std(ddof=1) if len(values) > 1 else np.nan)
    return test


TOKEN_TESTS = {
    "log-rank (tokens independent)": lambda t: (surv.logrank_test(t, "category")["p"], np.nan),
    "Kruskal-Wallis (tokens independent)": lambda t: (surv.kruskal_test(t, "category")["p"], np.nan),
}
COX_TESTS = {"Cox, stratified, flexible position, jackknife (Hotelling F)":
             lambda t: (surv.cox_ph(t).attrs["joint"]["p"], np.nan)}


def cell(args) -> dict:
    scenario, n_chains, runs, effect, seed, tests = args
    rng = np.random.default_rng(seed)
    hits, sds = {n: [] for n in tests}, {n: [] for n in tests}
    for _ in range(runs):
        table = simulate_token_table(n_chains, scenario=scenario, effect=effect, seed=rng)
        for name in tests:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    p, sd = ALL[name](table)
                hits[name].append(float(p < 0.05) if np.isfinite(p) else np.nan)
                sds[name].append(sd)
            except (CotSurvivalError, np.linalg.LinAlgError, ValueError):
                hits[name].append(np.nan)
    return {name: (float(np.nanmean(hits[name])), int(np.isfinite(np.array(hits[name], float)).sum()),
                   float(np.nanmean(sds[name])) if np.isfinite(np.array(sds[name], float)).any() else np.nan)
            for name in tests}


ALL = {f"chain-level, {name}{' (primary)' if name == DEFAULT_ADJUSTMENT else ''}": _primary(name)
       for name in ADJUSTMENTS}
ALL.update(TOKEN_TESTS)
ALL.update(COX_TESTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300, help="simulated runs per cell")
    parser.add_argument("--chains", type=int, nargs="+", default=[6, 10, 30])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--token-tests", action="store_true", help="add log-rank and Kruskal-Wallis rows")
    parser.add_argument("--cox", action="store_true", help="add the Cox row (slow: ~100x the others)")
    parser.add_argument("--no-power", action="store_true", help="skip the power cell (true 0.1 difference, 30 chains)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--progress", action="store_true", help="print each cell as it completes")
    parser.add_argument("--adjustments", nargs="+", default=list(ADJUSTMENTS), choices=list(ADJUSTMENTS),
                        help="position adjustments of the chain-level test to calibrate (default: all)")
    args = parser.parse_args()
    tests = [f"chain-level, {a}{' (primary)' if a == DEFAULT_ADJUSTMENT else ''}" for a in args.adjustments]
    tests += list(TOKEN_TESTS) if args.token_tests else []
    tests += list(COX_TESTS) if args.cox else []
    started = time.time()
    # Cheap cells first (6, then 10, then 30 chains), each printed as it completes (--progress) so that an
    # interrupted run still reports what it measured.
    jobs = [(s, c, args.runs, 0.0, 1000 + 97 * i + c, tests) for c in args.chains for i, s in enumerate(args.scenarios)]
    if not args.no_power:
        jobs.append(("runs", 30, args.runs, 0.1, 7, tests))
    results = {}
    with ProcessPoolExecutor(args.jobs) as pool:
        for job, result in zip(jobs, pool.map(cell, jobs)):
            results[(job[0], job[1], job[3])] = result
            if args.progress:
                print(f"cell {job[0]} chains={job[1]} effect={job[3]}: " + "; ".join(
                    f"{n} {v[0]:.3f} ({v[1]} runs, mean SD {v[2]:.3f})" for n, v in result.items())
                    + f" [{time.time() - started:.0f} s]", flush=True)
    sizes = " / ".join(map(str, args.chains))
    print(f"| scenario (null unless stated) | " + " | ".join(f"{n} ({sizes} chains)" for n in tests) + " |")
    print("|---|" + "---|" * len(tests))
    for scenario in args.scenarios:
        cells = []
        for name in tests:
            cells.append(" / ".join(f"{results[(scenario, c, 0.0)][name][0]:.3f}" for c in args.chains))
        print(f"| {scenario} | " + " | ".join(cells) + " |")
    if not args.no_power:
        row = results[("runs", 30, 0.1)]
        print("| power: true 0.1 difference, runs, 30 chains (mean between-chain SD) | " + " | ".join(
            f"{row[n][0]:.3f} (SD {row[n][2]:.3f})" for n in tests) + " |")
    n = min(v[1] for r in results.values() for v in r.values())
    print(f"\nRejection rate at alpha = 0.05; at least {n} runs per cell (Monte Carlo SE "
          f"{np.sqrt(0.05 * 0.95 / max(n, 1)):.3f} at a rate of 0.05, at most {np.sqrt(0.25 / max(n, 1)):.3f}); "
          f"{time.time() - started:.0f} s wall.")


if __name__ == "__main__":
    main()
