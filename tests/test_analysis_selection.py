"""Selection-adjusted best layer, paired probe comparison, small-table rescue test and Holm: against
brute-force enumeration, naive resampling loops, scipy/statsmodels and simulated nulls."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cotsurvival.analysis import attention as attn
from cotsurvival.analysis import dynamics as dyn
from cotsurvival.analysis.inference import holm


def _per_chain(rho: np.ndarray, kind: str = "answer") -> tuple[pd.DataFrame, pd.DataFrame]:
    n, k = rho.shape
    per_chain = pd.DataFrame([{"chain_index": i, "feature": f"attn_{kind}_L{j:02d}", "rho": rho[i, j], "n_tokens": 30}
                              for i in range(n) for j in range(k)])
    summary = pd.DataFrame([{"feature": f"attn_{kind}_L{j:02d}", "mean_rho": rho[:, j].mean(),
                             "lower": np.nan, "upper": np.nan, "n_chains": n} for j in range(k)])
    return per_chain, summary


def test_max_t_selection_adjustment_equals_brute_force():
    rng = np.random.default_rng(0)
    rho = rng.normal(0.1, 0.3, size=(7, 5))
    per_chain, summary = _per_chain(rho)
    best = attn.best_layers(summary, per_chain)["answer"]

    def max_t(x):
        return np.max(np.abs(x.mean(0)) / (x.std(0, ddof=1) / np.sqrt(len(x))))

    observed = max_t(rho)
    null = [max_t(rho * np.array(s)[:, None]) for s in itertools.product((1, -1), repeat=7)]
    assert best["p_selection_adjusted"] == pytest.approx(np.mean(np.array(null) >= observed - 1e-12))
    assert best["n_layers_compared"] == 5
    # the adjusted p is never below the best layer's own (unadjusted) sign-flip p
    j = int(np.argmax(rho.mean(0)))
    own = np.mean([abs((rho[:, j] * np.array(s)).mean()) >= abs(rho[:, j].mean()) - 1e-12
                   for s in itertools.product((1, -1), repeat=7)])
    assert best["p_selection_adjusted"] >= own - 1e-12


def test_best_of_30_null_layers_is_not_significant_after_adjustment():
    rng = np.random.default_rng(1)
    adjusted, naive = [], []
    for _ in range(40):
        rho = rng.normal(0, 0.3, size=(12, 30))
        per_chain, summary = _per_chain(rho)
        best = attn.best_layers(summary, per_chain, n_resamples=999)["answer"]
        adjusted.append(best["p_selection_adjusted"] < 0.05)
        j = int(np.argmax(rho.mean(0)))
        naive.append(stats.ttest_1samp(rho[:, j], 0).pvalue < 0.05)
    assert np.mean(adjusted) <= 0.12 and np.mean(naive) >= 0.3  # picking the best of 30 inflates the naive p


def test_compare_probes_against_a_naive_cluster_bootstrap():
    rng = np.random.default_rng(2)
    rows = []
    for chain in range(8):
        n = 25
        survival = rng.permutation(n) / n + 1 / n
        rows.append(pd.DataFrame({"chain_index": chain, "survival": survival, "censored": False,
                                  "a": survival + rng.normal(0, 0.3, n), "b": rng.random(n)}))
    df = pd.concat(rows, ignore_index=True)
    result = attn.compare_probes(df, df["a"], df["b"], n_resamples=300, seed=5)
    y = df["survival"] > 0.5
    assert result["auc"] == pytest.approx(attn.roc_auc(y, df["a"]))
    u = stats.mannwhitneyu(df.loc[y, "a"], df.loc[~y, "a"]).statistic
    assert result["auc"] == pytest.approx(u / (y.sum() * (~y).sum()))
    # naive loop: the same chain draws, AUCs recomputed with scipy's Mann-Whitney U
    draw_rng = np.random.default_rng(5)
    diffs = []
    chains = df["chain_index"].unique()
    for _ in range(300):
        sample = pd.concat([df[df.chain_index == c] for c in draw_rng.choice(chains, len(chains))])
        ys = sample["survival"] > 0.5
        auc = [stats.mannwhitneyu(sample.loc[ys, k], sample.loc[~ys, k]).statistic / (ys.sum() * (~ys).sum())
               for k in ("a", "b")]
        diffs.append(auc[0] - auc[1])
    assert result["difference_ci"] == pytest.approx(np.quantile(diffs, [0.025, 0.975]).tolist())
    assert result["p_value"] < 0.05 and "8 chains" in result["test"]


def test_rescue_uses_a_permutation_test_when_expected_counts_are_small():
    per_token = pd.DataFrame({"chain_index": np.arange(14) % 3, "category": list("aaaabbbbbcccdd"),
                              "static_pct": 0.1, "censored": False,
                              "survival": [0.9, 0.8, 0.7, 0.2, 0.1, 0.2, 0.3, 0.9, 0.1, 0.6, 0.7, 0.8, 0.1, 0.2]})
    _, test = dyn.bottom_quartile_rescue(per_token)
    assert test["test"].startswith("permutation_chi2") and test["unit"] == "tokens treated as independent"
    table = pd.crosstab(per_token["category"], per_token["survival"] > 0.5)
    chi2 = stats.chi2_contingency(table.to_numpy())[0]
    assert test["statistic"] == pytest.approx(chi2)
    # oracle: a naive loop shuffling the group labels, chi-square from scipy each time
    groups = per_token["category"].to_numpy()
    flags = (per_token["survival"] > 0.5).to_numpy()
    cats = np.unique(groups)

    def statistic(g):
        return stats.chi2_contingency(np.array([[np.sum((g == c) & flags), np.sum((g == c) & ~flags)]
                                                for c in cats]))[0]

    rng = np.random.default_rng(0)
    null = np.array([statistic(rng.permutation(groups)) for _ in range(3000)])
    assert test["p"] == pytest.approx(np.mean(null >= chi2 - 1e-9), abs=0.03)


def test_holm_matches_statsmodels_on_random_families():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(3)
    for m in (1, 2, 5, 17):
        p = rng.random(m) ** 3
        np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1])
    p = np.array([0.01, np.nan, 0.04, 0.03, 0.01])
    np.testing.assert_allclose(holm(p)[[0, 2, 3, 4]], multipletests(p[[0, 2, 3, 4]], method="holm")[1])
    assert np.isnan(holm(p)[1])
