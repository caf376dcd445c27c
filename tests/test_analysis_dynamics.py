"""Dynamics from traces: ranks agree with the greedy rule; tau, shift, rescue and degradation by hand."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cotsurvival.analysis import dynamics as dyn
from cotsurvival.analysis import load_run
from cotsurvival.errors import CotSurvivalError
from cotsurvival.testing import synthetic_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return synthetic_run(tmp_path_factory.mktemp("d") / "r", n_chains=5, n_tokens=20, keep_ratio=0.0, seed=2)


def test_rank_zero_is_the_deleted_token(run):
    for index in range(5):
        ranks = dyn.rank_trajectories(run, index)
        steps = run.read_part("steps", index).dropna(subset=["position_deleted"])
        first = ranks[ranks["rank"] == 0].set_index("step")["position"]
        np.testing.assert_array_equal(first.loc[steps["step"]].to_numpy(), steps["position_deleted"].astype(int))
        last = ranks.groupby("step")["percentile"].max()
        assert (last[ranks.groupby("step").size() > 1] == 1.0).all()


def test_static_vs_greedy_by_hand(run):
    tokens = load_run(run)
    per_token, per_chain = dyn.static_vs_greedy(run, tokens)
    chain = per_token[per_token.chain_index == 1]
    trace = run.read_part("traces", 1)
    step1 = trace[trace.step == 1].set_index("position")["cost"]
    np.testing.assert_allclose(chain.set_index("position")["static_cost"], step1.loc[chain["position"]])
    tau = stats.kendalltau(chain["static_cost"], chain["survival"]).statistic
    assert per_chain.set_index("chain_index").loc[1, "kendall_tau"] == pytest.approx(tau)
    n = chain["n_tokens"].iloc[0]
    order = np.lexsort((chain["position"], chain["static_cost"]))
    static_pct = np.empty(n)
    static_pct[order] = np.arange(n) / (n - 1)
    np.testing.assert_allclose(chain["static_pct"], static_pct)
    np.testing.assert_allclose(chain["greedy_pct"], (chain["deleted_step"].astype(float) - 1) / (n - 1))
    np.testing.assert_allclose(chain["rank_shift"], chain["greedy_pct"] - chain["static_pct"])


def test_rescue_hand_example():
    per_token = pd.DataFrame({
        "chain_index": [0, 0, 0, 1, 1, 1, 1, 1], "category": list("aaabbbab"),
        "static_pct": [0.1, 0.2, 0.9, 0.0, 0.1, 0.2, 0.6, 0.05],
        "survival": [0.8, 0.3, 0.9, 0.6, 0.7, 0.2, 0.1, 0.4], "censored": False})
    table, test = dyn.bottom_quartile_rescue(per_token)
    table = table.set_index("group")
    assert (table.loc["a", "n_bottom"], table.loc["a", "n_rescued"]) == (2, 1)
    assert (table.loc["b", "n_bottom"], table.loc["b", "n_rescued"]) == (4, 2)
    assert test["test"] == "fisher_exact" and test["p"] == pytest.approx(stats.fisher_exact([[1, 1], [2, 2]]).pvalue)
    single, note = dyn.bottom_quartile_rescue(per_token.assign(category="a"))
    assert "at least 2 groups" in note["note"]


def test_rank_shift_groups_and_test(run):
    per_token, _ = dyn.static_vs_greedy(run, load_run(run))
    table, test = dyn.rank_shift_by_group(per_token)
    samples = [s["rank_shift"].dropna() for _, s in per_token.groupby("category")]
    assert test["H"] == pytest.approx(stats.kruskal(*samples).statistic)
    assert table["n_tokens"].sum() == test["n_tokens"] == len(per_token)


def test_degradation_by_hand(tmp_path):
    run = synthetic_run(tmp_path / "g", n_chains=3, n_tokens=10, keep_ratio=0.5)
    per_chain, pooled = dyn.degradation_curves(run, grid=5)
    steps = run.read_part("steps", 0)
    chain = per_chain[per_chain.chain_index == 0]
    np.testing.assert_allclose(chain["change"], steps["objective"] - steps["objective"].iloc[0])
    np.testing.assert_allclose(chain["fraction_pruned"], steps["step"] / steps["n_remaining"].iloc[0])
    # The run stopped at keep ratio 0.5: fractions past 0.5 are not reported.
    assert pooled["fraction_pruned"].max() <= 0.5 and pooled["n_chains"].min() >= 1
    curves = [np.interp(0.25, c.fraction_pruned, c["change"]) for _, c in per_chain.groupby("chain_index")]
    row = pooled[pooled.fraction_pruned == 0.25].iloc[0]
    assert row.mean_change == pytest.approx(np.mean(curves))
    half = stats.t.ppf(0.975, 2) * np.std(curves, ddof=1) / np.sqrt(3)
    assert row.upper - row.mean_change == pytest.approx(half)


def test_no_traces_is_a_clear_error(tmp_path):
    import shutil

    run = synthetic_run(tmp_path / "n", n_chains=2, n_tokens=6)
    shutil.rmtree(run.table_dir("traces"))
    with pytest.raises(CotSurvivalError, match="no traces"):
        dyn.static_vs_greedy(run, load_run(run))
