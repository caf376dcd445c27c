"""Rejection rates under simulated nulls (and power under a true effect): token-level tests vs the
chain-level primary test.

Each cell simulates RUNS synthetic runs (cotsurvival.analysis.simulate: chains of 20-150 tokens,
labels independent of importance within chains) and counts p < 0.05 for:

* log-rank across categories (tokens treated as independent),
* Kruskal-Wallis across categories (tokens treated as independent),
* Cox, unstratified, chain-clustered sandwich, joint Wald test of the category terms (the old default),
* Cox, stratified by chain, jackknife SEs below 30 chains / clustered from 30 (the new default),
* chain_level_test (symbolic math vs the rest, position-adjusted; the primary statistic).

A valid test rejects about 0.05 of the time under the null. The last column block is power for a
true 0.1 difference shared across chains.

    PYTHONPATH=src nice python bench/null_calibration.py --runs 300 --cox-runs 40
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from cotsurvival.analysis import survival as surv
from cotsurvival.analysis.chainlevel import chain_level_test
from cotsurvival.analysis.simulate import simulate_token_table
from cotsurvival.errors import CotSurvivalError

TESTS = {
    "log-rank (tokens independent)": lambda t: surv.logrank_test(t, "category")["p"],
    "Kruskal-Wallis (tokens independent)": lambda t: surv.kruskal_test(t, "category")["p"],
    "Cox, chain-clustered Wald (old default)": lambda t: surv.cox_ph(
        t, strata=None, se="cluster", covariates=("rel_position",)).attrs["joint"]["p"],
    "Cox, stratified by chain, jackknife < 30 chains (new)": lambda t: surv.cox_ph(t).attrs["joint"]["p"],
    "chain-level test, position-adjusted (primary)": lambda t: chain_level_test(t, n_resamples=999)["p_value"],
}


def cell(scenario: str, n_chains: int, runs: int, effect: float, seed: int, cox_runs: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    hits = {name: [] for name in TESTS}
    for i in range(runs):
        table = simulate_token_table(n_chains, scenario=scenario, effect=effect, seed=rng)
        for name, test in TESTS.items():
            if name.startswith("Cox") and i >= cox_runs:
                continue  # the Cox fits cost ~100x the other tests: fewer runs for them
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    hits[name].append(test(table) < 0.05)
            except (CotSurvivalError, np.linalg.LinAlgError, ValueError):
                hits[name].append(np.nan)
    return {name: (float(np.nanmean(v)), int(np.isfinite(np.array(v, float)).sum())) for name, v in hits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300, help="simulated runs per cell")
    parser.add_argument("--cox-runs", type=int, default=None, help="runs per cell for the two Cox rows (default: --runs)")
    args = parser.parse_args()
    started = time.time()
    cells = [("runs", 6, 0.0), ("runs", 30, 0.0), ("drift", 6, 0.0), ("drift", 30, 0.0), ("runs", 30, 0.1)]
    results = {}
    for i, (scenario, n_chains, effect) in enumerate(cells):
        results[(scenario, n_chains, effect)] = cell(scenario, n_chains, args.runs, effect, seed=1000 + i,
                                                     cox_runs=args.cox_runs or args.runs)
    header = ("| test | null: labels in runs, smooth position effect, 6 / 30 chains | null: label shares drift "
              "with position, order by position only, 6 / 30 chains | power, true 0.1 difference, 30 chains |")
    print(header)
    print("|---|---|---|---|")
    for name in TESTS:
        r = {k: v[name][0] for k, v in results.items()}
        n = results[("runs", 6, 0.0)][name][1]
        print(f"| {name} (runs per cell: {n}) | {r[('runs', 6, 0.0)]:.2f} / {r[('runs', 30, 0.0)]:.2f} | "
              f"{r[('drift', 6, 0.0)]:.2f} / {r[('drift', 30, 0.0)]:.2f} | {r[('runs', 30, 0.1)]:.2f} |")
    print(f"\nRejection rate at alpha = 0.05 over simulated runs; {time.time() - started:.0f} s wall.")


if __name__ == "__main__":
    main()
