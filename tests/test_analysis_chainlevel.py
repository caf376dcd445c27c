"""chain_level_test and power: against naive per-chain arithmetic, statsmodels OLS, scipy's t-test and
simulated null and alternative runs (the calibration the headline statistic must keep)."""
from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats

from cotsurvival.analysis import chain_contrasts, chain_level_test, power
from cotsurvival.analysis.inference import sign_flip_test
from cotsurvival.analysis.simulate import simulate_token_table
from cotsurvival.errors import CotSurvivalError


def test_unadjusted_contrast_is_the_naive_difference_of_means():
    table = simulate_token_table(8, seed=1, max_tokens=60)
    naive = (table.assign(target=table["category"] == "symbolic_math")
             .groupby(["chain_index", "target"])["survival"].mean().unstack())
    naive = naive[True] - naive[False]
    result = chain_level_test(table, adjust_position=False)
    assert np.isclose(result["estimate"], naive.mean())
    ci = stats.ttest_1samp(naive.to_numpy(), 0).confidence_interval()
    assert np.isclose(result["ci_low"], ci.low) and np.isclose(result["ci_high"], ci.high)
    assert result["p_value"] == sign_flip_test(naive.to_numpy())["p_value"] and result["exact"]
    assert result["n_chains"] == 8 and result["n_tokens"] == len(table)
    assert result["n_target_tokens"] == int((table["category"] == "symbolic_math").sum())
    # Cliff's delta per chain from scipy's Mann-Whitney U
    deltas = [2 * stats.mannwhitneyu(c.survival[c.category == "symbolic_math"], c.survival[c.category != "symbolic_math"]
                                     ).statistic / ((c.category == "symbolic_math").sum() * (c.category != "symbolic_math").sum()) - 1
              for _, c in table.groupby("chain_index")]
    assert np.isclose(result["cliffs_delta"], np.mean(deltas))


def test_adjusted_contrast_equals_statsmodels_ols_with_cubic_position():
    table = simulate_token_table(5, seed=2, scenario="drift")
    mine = chain_contrasts(table, ["symbolic_math", "grammar"]).set_index("chain_index")
    for index, chain in table.groupby("chain_index"):
        rel = chain["rel_position"].to_numpy()
        x = np.column_stack([chain.category == "symbolic_math", chain.category == "grammar", np.ones(len(rel)),
                             rel, rel ** 2, rel ** 3]).astype(float)
        fit = sm.OLS(chain["survival"].to_numpy(), x).fit()
        assert np.allclose(mine.loc[index, ["contrast_symbolic_math", "contrast_grammar"]], fit.params[:2], atol=1e-10)
    joint = chain_level_test(table, contrast=["symbolic_math", "grammar"])
    assert "joint" in joint["test"] and len(joint["estimate"]) == 2
    assert joint["p_value"] == sign_flip_test(mine[["contrast_symbolic_math", "contrast_grammar"]].to_numpy())["p_value"]


def test_minimum_support_withholds_and_chains_without_contrast_are_dropped():
    table = simulate_token_table(4, seed=3, min_tokens=20, max_tokens=25)
    assert "withheld" in chain_level_test(table)
    assert "withheld" in chain_level_test(simulate_token_table(6, seed=3), min_tokens=10_000)
    assert "withheld" not in chain_level_test(simulate_token_table(6, seed=3))
    no_math = table.assign(category=np.where(table.chain_index == 0, "grammar", table.category))
    result = chain_level_test(no_math)
    assert result["n_chains"] == 3 and result["n_chains_without_contrast"] == 1


def _rejection(scenario, n_chains, reps, effect=0.0, seed=0):
    rng = np.random.default_rng(seed)
    hits = [chain_level_test(simulate_token_table(n_chains, scenario=scenario, effect=effect, seed=rng),
                             n_resamples=499, seed=r)["p_value"] < 0.05 for r in range(reps)]
    return float(np.mean(hits))


@pytest.mark.parametrize("scenario", ["runs", "drift"])
def test_null_calibration_holds_the_level(scenario):
    """Simulated nulls: labels independent of importance within chains. Token-level tests reject
    these 40-100% of the time (bench/null_calibration.py); the primary test must stay near 0.05."""
    assert _rejection(scenario, 6, 120, seed=11) <= 0.10
    assert _rejection(scenario, 30, 60, seed=12) <= 0.10


def test_unadjusted_contrast_fails_under_position_drift_so_adjustment_is_needed():
    # the simulation is able to break a test: without position adjustment the drift null is rejected
    rng = np.random.default_rng(5)
    hits = [chain_level_test(simulate_token_table(30, scenario="drift", seed=rng), adjust_position=False,
                             n_resamples=499)["p_value"] < 0.05 for _ in range(10)]
    assert np.mean(hits) >= 0.9


def test_power_for_a_shared_difference_of_0_1_at_30_chains():
    table = simulate_token_table(300, effect=0.1, seed=21)
    realized = chain_contrasts(table, adjust_position=False)["contrast_symbolic_math"].mean()
    assert abs(realized - 0.1) < 0.015  # the simulator's effect is on the survival scale
    assert _rejection("runs", 30, 40, effect=0.1, seed=22) >= 0.8


def test_power_matches_simulation():
    table = simulate_token_table(30, seed=31)
    result = power(table, delta=0.1)
    sd, n = result["sd_between_chains"], result["n_chains_needed"]
    assert np.isclose(sd, chain_level_test(table)["sd_between_chains"]) and result["n_chains_observed"] == 30
    from statsmodels.stats.power import TTestPower
    assert n == int(np.ceil(TTestPower().solve_power(effect_size=0.1 / sd, alpha=0.05, power=0.8)))
    # independent check: simulate per-chain contrasts with that spread and count sign-flip rejections
    rng = np.random.default_rng(32)
    hits = np.mean([sign_flip_test(rng.normal(0.1, sd, n), n_resamples=499, seed=i)["p_value"] < 0.05
                    for i in range(300)])
    assert 0.72 <= hits <= 0.9
    fewer = np.mean([stats.ttest_1samp(rng.normal(0.1, sd, max(n // 2, 2)), 0).pvalue < 0.05 for _ in range(400)])
    assert fewer < 0.7
    with pytest.raises(CotSurvivalError, match="E043"):
        power(table, delta=0.1, sd=0.0)


def test_cli_power(tmp_path, capsys):
    from cotsurvival.cli import main
    from cotsurvival.testing import synthetic_run

    run = synthetic_run(tmp_path / "p", n_chains=6, n_tokens=30, seed=0)
    assert main(["power", str(run.path), "--delta", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "chains" in out and "80%" in out
    assert main(["power", str(run.path), "--delta", "0.1", "--primary", "nonexistent"]) == 2


def test_cliffs_delta_interval_stays_within_its_range():
    # Three chains where symbolic_math tokens mostly outlive the rest: per-chain Cliff's deltas near 1, so
    # the t-interval over chains (scipy) reaches past 1; the reported interval is that one clipped to [-1, 1].
    import pandas as pd

    rows = []
    for chain, late in enumerate([[6, 7, 8, 9], [7, 8, 9, 2], [8, 9, 5, 6]]):
        for position in range(10):
            rows.append({"chain_index": chain, "position": position, "n_tokens": 10, "rel_position": position / 9,
                         "survival": (position + 1) / 10,
                         "category": "symbolic_math" if position in late else "grammar"})
    table = pd.DataFrame(rows)
    result = chain_level_test(table, adjust_position=False, min_chains=1)
    deltas = []
    for _, c in table.groupby("chain_index"):
        a, b = c.survival[c.category == "symbolic_math"].to_numpy(), c.survival[c.category != "symbolic_math"].to_numpy()
        deltas.append(np.sign(a[:, None] - b[None, :]).mean())
    ci = stats.ttest_1samp(deltas, 0).confidence_interval()
    assert ci.high > 1  # the unclipped interval leaves the range: the case this test is about
    assert np.isclose(result["cliffs_delta"], np.mean(deltas))
    assert np.isclose(result["cliffs_delta_ci_low"], max(ci.low, -1.0))
    assert result["cliffs_delta_ci_high"] == 1.0
