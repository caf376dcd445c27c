"""chain_level_test and power: against naive per-chain arithmetic, statsmodels OLS, scipy's t-test and
simulated null and alternative runs (the calibration the headline statistic must keep)."""
from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats

from cotsurvival.analysis import chain_contrasts, chain_level_test, power
from cotsurvival.analysis.chainlevel import DEFAULT_ADJUSTMENT
from cotsurvival.analysis.inference import sign_flip_test
from cotsurvival.analysis.simulate import SCENARIOS, simulate_token_table
from cotsurvival.errors import CotSurvivalError


def test_unadjusted_contrast_is_the_naive_difference_of_means():
    table = simulate_token_table(8, seed=1, max_tokens=60)
    naive = (table.assign(target=table["category"] == "symbolic_math")
             .groupby(["chain_index", "target"])["survival"].mean().unstack())
    naive = naive[True] - naive[False]
    result = chain_level_test(table, adjust_position=False)
    assert np.isclose(result["estimate"], naive.mean())
    ci = stats.ttest_1samp(naive.to_numpy(), 0).confidence_interval()
    assert np.isclose(result["t_ci_low"], ci.low) and np.isclose(result["t_ci_high"], ci.high)
    assert result["p_value"] == sign_flip_test(naive.to_numpy())["p_value"] and result["exact"]
    # the reported interval inverts the reported test: brute force over a grid of shifts
    grid = np.linspace(naive.mean() - 0.4, naive.mean() + 0.4, 801)
    kept = [mu for mu in grid if sign_flip_test(naive.to_numpy() - mu)["p_value"] >= 0.05]
    assert abs(result["ci_low"] - min(kept)) <= 0.0011 and abs(result["ci_high"] - max(kept)) <= 0.0011
    assert (result["p_value"] < 0.05) == (result["ci_low"] > 0 or result["ci_high"] < 0)
    assert result["n_chains"] == 8 and result["n_tokens"] == len(table)
    assert result["n_target_tokens"] == int((table["category"] == "symbolic_math").sum())
    # Cliff's delta per chain from scipy's Mann-Whitney U
    deltas = [2 * stats.mannwhitneyu(c.survival[c.category == "symbolic_math"], c.survival[c.category != "symbolic_math"]
                                     ).statistic / ((c.category == "symbolic_math").sum() * (c.category != "symbolic_math").sum()) - 1
              for _, c in table.groupby("chain_index")]
    assert np.isclose(result["cliffs_delta_unadjusted"], np.mean(deltas))


def test_adjusted_contrast_equals_statsmodels_ols_with_cubic_position():
    table = simulate_token_table(5, seed=2, scenario="drift")
    mine = chain_contrasts(table, ["symbolic_math", "grammar"], adjustment="cubic").set_index("chain_index")
    for index, chain in table.groupby("chain_index"):
        rel = chain["rel_position"].to_numpy()
        x = np.column_stack([chain.category == "symbolic_math", chain.category == "grammar", np.ones(len(rel)),
                             rel, rel ** 2, rel ** 3]).astype(float)
        fit = sm.OLS(chain["survival"].to_numpy(), x).fit()
        assert np.allclose(mine.loc[index, ["contrast_symbolic_math", "contrast_grammar"]], fit.params[:2], atol=1e-10)
    joint = chain_level_test(table, contrast=["symbolic_math", "grammar"], adjustment="cubic")
    assert "joint" in joint["test"] and len(joint["estimate"]) == 2
    assert joint["p_value"] == sign_flip_test(mine[["contrast_symbolic_math", "contrast_grammar"]].to_numpy())["p_value"]


@pytest.mark.parametrize("adjustment", ["cubic_final_step", "cubic_step"])
def test_default_adjustment_equals_ols_with_the_best_single_jump(adjustment):
    """The primary's position term, checked by brute force: every cut of the chain tried with statsmodels
    OLS on the cubic, the final-unit indicator (the primary only) and a step (no labels), the best one
    kept, then OLS with the category indicator added."""
    table = simulate_token_table(4, seed=4, scenario="answer_jump", max_tokens=60)
    mine = chain_contrasts(table, adjustment=adjustment).set_index("chain_index")
    checked = 0
    for index, chain in table.groupby("chain_index"):
        rel, y = chain["rel_position"].to_numpy(), chain["survival"].to_numpy()
        fixed = [np.ones(len(rel)), rel, rel ** 2, rel ** 3]
        if adjustment == "cubic_final_step":
            fixed.append(chain["final_unit"].to_numpy(float))
        fixed = np.column_stack(fixed)
        fits = [(sm.OLS(y, np.column_stack([fixed, np.arange(len(y)) >= cut])).fit().ssr, cut)
                for cut in range(2, len(y) - 1)
                if np.linalg.matrix_rank(np.column_stack([fixed, np.arange(len(y)) >= cut])) == fixed.shape[1] + 1]
        cut = min(fits)[1]
        x = np.column_stack([chain.category == "symbolic_math", fixed, np.arange(len(y)) >= cut]).astype(float)
        if np.linalg.matrix_rank(x) < x.shape[1]:  # position explains the indicator: no contrast
            assert np.isnan(mine.loc[index, "contrast_symbolic_math"])
            continue
        checked += 1
        assert np.isclose(mine.loc[index, "contrast_symbolic_math"], sm.OLS(y, x).fit().params[0], atol=1e-9)
    assert checked >= 2


def test_final_unit_jump_needs_the_unit_column_and_says_when_it_is_missing():
    table = simulate_token_table(8, seed=9, scenario="answer_jump")
    assert chain_level_test(table)["adjustment"] == "cubic_final_step"
    bare = chain_level_test(table.drop(columns=["final_unit"]), sensitivity=True)
    assert bare["adjustment"] == "cubic_step" and bare["adjustment_requested"] == "cubic_final_step"
    assert np.isclose(bare["estimate"], chain_level_test(table, adjustment="cubic_step")["estimate"])
    assert "final unit" not in bare["adjusted_for"] and any("final_unit" in n for n in bare["notes"])
    assert set(bare["sensitivity"]) == {"cubic", "windows", "none", "covariates"}
    with pytest.raises(CotSurvivalError, match="E045"):
        chain_level_test(table, adjustment="quintic")


def test_simulated_units_end_with_a_final_unit_of_12_to_18_percent():
    table = simulate_token_table(40, seed=10, scenario="answer_jump")
    for _, chain in table.groupby("chain_index"):
        unit, final = chain["unit"].to_numpy(), chain["final_unit"].to_numpy()
        assert np.all(np.diff(unit) >= 0) and unit[0] == 0 and 3 <= unit.max() + 1 <= 6  # contiguous units
        assert np.array_equal(final, unit == unit.max())
        assert 0.10 <= final.mean() <= 0.20
    # the category sits in the final unit (where the answer-region jump is)
    inside = table["category"] == "symbolic_math"
    assert inside[table["final_unit"]].mean() > 0.4 and inside[~table["final_unit"]].mean() < 0.1


def test_sensitivity_block_and_placement_diagnostic():
    table = simulate_token_table(10, seed=6, scenario="answer_jump")
    result = chain_level_test(table, sensitivity=True)
    rows = result["sensitivity"]
    assert set(rows) == {"cubic_final", "cubic_step", "cubic", "windows", "none", "covariates"}
    assert rows["covariates"]["covariates"] == ["static_logprob"]  # the simulated run has no varying token_len
    assert np.isclose(rows["none"]["estimate"], chain_level_test(table, adjust_position=False)["estimate"])
    assert np.isclose(rows["cubic"]["estimate"], chain_level_test(table, adjustment="cubic")["estimate"])
    per_chain = chain_contrasts(table)
    last = per_chain["n_target_last"].sum() / per_chain["n_target"].sum()
    assert np.isclose(result["placement"]["share_target_last_15pct"], last) and last > 0.5
    assert any("last 15%" in note for note in result["notes"])  # crowding is said
    # a near-collinear chain: three targets at the very end of a 20-token chain is flagged, and the
    # estimate without it is the mean of the others
    rows_ = []
    for chain in range(8):
        n = 20 if chain == 0 else 80
        for position in range(n):
            target = position >= n - 3 if chain == 0 else position % 4 == 0
            rows_.append({"chain_index": chain, "position": position, "n_tokens": n,
                          "rel_position": position / (n - 1), "survival": ((position * 7919) % n + 1) / n,
                          "category": "symbolic_math" if target else "grammar"})
    import pandas as pd

    toy = pd.DataFrame(rows_)
    flagged = chain_level_test(toy, sensitivity=True)
    assert 0 in flagged["placement"]["high_leverage_chains"]
    others = chain_contrasts(toy).query("chain_index != 0")["contrast_symbolic_math"]
    assert np.isclose(flagged["placement"]["without_high_leverage"]["estimate"], others.mean())


def test_survival_column_is_a_parameter():
    table = simulate_token_table(6, seed=8)
    table["survival_mean"] = table["survival"]
    table["survival"] = np.random.default_rng(0).permutation(table["survival"].to_numpy())
    assert np.isclose(chain_level_test(table, time="survival_mean")["estimate"],
                      chain_level_test(table.assign(survival=table["survival_mean"]))["estimate"])


def test_minimum_support_withholds_and_chains_without_contrast_are_dropped():
    table = simulate_token_table(4, seed=3, min_tokens=20, max_tokens=25)
    assert "withheld" in chain_level_test(table)
    assert "withheld" in chain_level_test(simulate_token_table(6, seed=3), min_tokens=10_000)
    assert "withheld" not in chain_level_test(simulate_token_table(6, seed=3))
    no_math = table.assign(category=np.where(table.chain_index == 0, "grammar", table.category))
    result = chain_level_test(no_math)
    assert result["n_chains"] == 3 and result["n_chains_without_contrast"] == 1
    # the default minimum is the fewest chains with which the exact test can reject at 0.05
    from cotsurvival.analysis.chainlevel import MIN_CHAINS
    from cotsurvival.analysis.inference import smallest_p

    assert smallest_p(MIN_CHAINS) < 0.05 <= smallest_p(MIN_CHAINS - 1)
    assert "withheld" in chain_level_test(simulate_token_table(5, seed=3))


def _p(table, adjustment=DEFAULT_ADJUSTMENT):
    # the p-value chain_level_test reports, without its interval and sensitivity work
    values = chain_contrasts(table, adjustment=adjustment)["contrast_symbolic_math"].dropna().to_numpy()
    return sign_flip_test(values, n_resamples=199)["p_value"]


def _rejection(scenario, n_chains, reps, effect=0.0, seed=0, adjustment=DEFAULT_ADJUSTMENT):
    rng = np.random.default_rng(seed)
    return float(np.mean([_p(simulate_token_table(n_chains, scenario=scenario, effect=effect, seed=rng,
                                                  max_tokens=90), adjustment) < 0.05 for _ in range(reps)]))


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s != "answer_offset"])
def test_null_calibration_holds_the_level(scenario):
    """Simulated nulls built to break the test (bench/null_calibration.py has the full table, 300 runs
    per cell). Token-level tests reject these 30-100% of the time; this small version (15 + 5 runs per
    scenario) catches a gross failure, such as an unadjusted contrast under drift or a cubic alone in the
    answer region."""
    assert _rejection(scenario, 6, 15, seed=11) <= 0.25
    assert _rejection(scenario, 20, 5, seed=12) <= 0.4


def test_answer_region_jump_at_the_final_unit_is_absorbed_and_elsewhere_only_reduced():
    """Importance jumps where the answer starts and the category sits right after it. At the final
    unit's start (what the primary assumes) the primary's bias is gone; a cubic alone carries it whole.
    A few tokens away from it (``answer_offset``, the known limit in docs/statistics.md) the final-unit
    jump alone is as biased as a cubic and the data-placed jump removes about two thirds of that; the
    placement diagnostic says when targets crowd one end."""
    rng = np.random.default_rng(13)

    def bias(scenario, adjustment):
        return np.mean([chain_contrasts(t, adjustment=adjustment)["contrast_symbolic_math"].mean() for t in tables[scenario]])

    tables = {s: [simulate_token_table(20, scenario=s, seed=rng) for _ in range(4)] for s in ("answer_jump", "answer_offset")}
    assert bias("answer_jump", "cubic") > 0.1 and abs(bias("answer_jump", "cubic_final_step")) < 0.02
    assert bias("answer_offset", "cubic_final") > 0.1
    assert 0 < bias("answer_offset", "cubic_final_step") < 0.6 * bias("answer_offset", "cubic_final")
    result = chain_level_test(tables["answer_jump"][0], sensitivity=True)
    assert result["placement"]["share_target_last_15pct"] > 0.5 and any("last 15%" in n for n in result["notes"])


def test_the_simulation_can_break_a_test():
    # without position adjustment the drift null is rejected; a cubic alone fails the answer region, and a
    # final-unit jump alone fails when the jump sits elsewhere
    assert _rejection("drift", 20, 5, seed=5, adjustment="none") >= 0.8
    assert _rejection("answer_jump", 20, 5, seed=5, adjustment="cubic") >= 0.8
    assert _rejection("answer_offset", 20, 5, seed=5, adjustment="cubic_final") >= 0.8


def test_power_for_a_shared_difference_of_0_1_at_30_chains():
    table = simulate_token_table(300, effect=0.1, seed=21)
    realized = chain_contrasts(table, adjust_position=False)["contrast_symbolic_math"].mean()
    assert abs(realized - 0.1) < 0.015  # the simulator's effect is on the survival scale
    assert _rejection("runs", 30, 10, effect=0.1, seed=22) >= 0.8


def test_power_matches_simulation():
    table = simulate_token_table(30, seed=31)
    result = power(table, delta=0.1)
    sd, n = result["sd_between_chains"], result["n_chains_needed"]
    assert np.isclose(sd, chain_level_test(table)["sd_between_chains"]) and result["n_chains_observed"] == 30
    # independent check: per-chain contrasts with that spread, counted sign-flip rejections
    rng = np.random.default_rng(32)

    def simulated(n_chains, effect, reps=300):
        return np.mean([sign_flip_test(rng.normal(effect, 1.0, n_chains), n_resamples=499, seed=i)["p_value"] < 0.05
                        for i in range(reps)])

    assert 0.7 <= simulated(n, 0.1 / sd) and simulated(max(n - 3, 2), 0.1 / sd) < 0.8 + 0.05
    # small studies: the exact test's own power, never a size that cannot reject
    big = power(None, 0.3, sd=0.1, n_chains=5)  # effect size 3: the t-test would say 3 chains
    assert big["n_chains_needed"] == 6 and big["power_at_observed"] == 0.0
    assert simulated(6, 3.0) >= 0.8 and simulated(5, 3.0) == 0.0
    mid = power(None, 0.1, sd=0.1, n_chains=8)
    assert abs(mid["power_at_observed"] - simulated(8, 1.0)) < 0.08
    huge = power(None, 5.0, sd=0.01, n_chains=30)
    assert huge["power_at_observed"] == 1.0 and huge["n_chains_needed"] == 6  # never NaN
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


def test_adjusted_cliffs_delta_compares_tokens_in_the_same_position_window_only():
    # Three chains where symbolic_math tokens sit late and survival rises with position: the raw
    # Cliff's delta is large, the within-window one (pairs in the same tenth of the chain) is not.
    import pandas as pd

    rows = []
    for chain, late in enumerate([[16, 17, 18, 19], [17, 18, 19, 12], [18, 19, 15, 16]]):
        for position in range(20):
            rows.append({"chain_index": chain, "position": position, "n_tokens": 20, "rel_position": position / 19,
                         "survival": (position + 1) / 20,
                         "category": "symbolic_math" if position in late else "grammar"})
    table = pd.DataFrame(rows)
    result = chain_level_test(table, adjust_position=False, min_chains=1)
    raw, windowed = [], []
    for _, c in table.groupby("chain_index"):
        inside = (c.category == "symbolic_math").to_numpy()
        y, w = c.survival.to_numpy(), np.minimum((c.rel_position.to_numpy() * 10).astype(int), 9)
        raw.append(np.sign(y[inside][:, None] - y[~inside][None, :]).mean())
        pairs = [np.sign(a - b) for i, a in enumerate(y) for j, b in enumerate(y)
                 if inside[i] and not inside[j] and w[i] == w[j]]
        windowed.append(np.mean(pairs))
    assert np.isclose(result["cliffs_delta_unadjusted"], np.mean(raw)) and np.mean(raw) > 0.8
    assert np.isclose(result["cliffs_delta"], np.nanmean(windowed)) and abs(np.nanmean(windowed)) < np.mean(raw)
