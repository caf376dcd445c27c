"""Survival statistics against independent oracles (lifelines, scipy, naive loops, known answers)."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cotsurvival.analysis import load_run, orderings_long
from cotsurvival.analysis import survival as surv
from cotsurvival.errors import CotSurvivalError
from cotsurvival.testing import synthetic_run


def simulated(n=400, seed=0, censor_at=1.5, effects=None):
    """Exponential survival times with known log-hazard effects; continuous, so no ties."""
    rng = np.random.default_rng(seed)
    effects = effects or {"a": 0.0, "b": 0.5, "c": 1.0}
    df = pd.DataFrame({"category": rng.choice(list(effects), n), "rel_position": rng.random(n),
                       "token_len": rng.integers(1, 6, n).astype(float), "chain_index": rng.integers(0, 30, n)})
    rate = np.exp(df["category"].map(effects) + 0.3 * df["token_len"])
    df["survival"] = rng.exponential(1 / rate)
    df["censored"] = df["survival"] > censor_at
    df.loc[df["censored"], "survival"] = censor_at
    return df


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    return load_run(synthetic_run(tmp_path_factory.mktemp("s") / "r", n_chains=8, n_tokens=30, seed=3))


def test_logrank_matches_lifelines():
    from lifelines.statistics import multivariate_logrank_test, pairwise_logrank_test

    df = simulated()
    mine = surv.logrank_test(df)
    theirs = multivariate_logrank_test(df["survival"], df["category"], ~df["censored"])
    assert mine["chi2"] == pytest.approx(theirs.test_statistic, rel=1e-8)
    assert mine["p"] == pytest.approx(theirs.p_value, rel=1e-6)
    assert (mine["n_tokens"], mine["n_chains"], mine["df"]) == (400, 30, 2)
    pairs = surv.pairwise_logrank(df)
    ref = pairwise_logrank_test(df["survival"], df["category"], ~df["censored"]).summary
    for row in pairs.itertuples():
        assert row.chi2 == pytest.approx(ref.loc[(row.group_a, row.group_b), "test_statistic"], rel=1e-8)
    from statsmodels.stats.multitest import multipletests
    np.testing.assert_allclose(pairs["p_holm"], multipletests(pairs["p"], method="holm")[1])


def test_cox_matches_lifelines_with_clustered_se():
    from lifelines import CoxPHFitter

    df = simulated()
    mine = surv.cox_ph(df, reference="a", covariates=("rel_position", "token_len"), strata=None,
                       se="cluster", position="linear").set_index("term")
    x = pd.get_dummies(df["category"]).drop(columns="a").astype(float)
    x = x.assign(rel_position=df["rel_position"], token_len=df["token_len"], T=df["survival"], E=~df["censored"],
                 chain=df["chain_index"])
    fit = CoxPHFitter().fit(x, "T", "E", cluster_col="chain").summary
    for term, name in [("category[b]", "b"), ("category[c]", "c"), ("rel_position", "rel_position"),
                       ("token_len", "token_len")]:
        assert mine.loc[term, "coef"] == pytest.approx(fit.loc[name, "coef"], abs=1e-5)
        assert mine.loc[term, "se"] == pytest.approx(fit.loc[name, "se(coef)"], rel=1e-4)
    # Known answer: true log-hazard ratios 0.5 and 1.0 lie in the 95% intervals.
    assert mine.loc["category[b]", "hr_lower"] < np.exp(0.5) < mine.loc["category[b]", "hr_upper"]
    assert mine.loc["category[c]", "hr_lower"] < np.exp(1.0) < mine.loc["category[c]", "hr_upper"]
    assert mine.attrs["reference"] == "a"


def test_ph_test_matches_lifelines():
    from lifelines import CoxPHFitter
    from lifelines.statistics import proportional_hazard_test

    df = simulated(seed=1)
    mine = surv.ph_test(df, reference="a", covariates=("rel_position", "token_len"), strata=None).set_index("term")
    x = pd.get_dummies(df["category"]).drop(columns="a").astype(float)
    x = x.assign(rel_position=df["rel_position"], token_len=df["token_len"], T=df["survival"], E=~df["censored"])
    fit = CoxPHFitter().fit(x, "T", "E")
    ref = proportional_hazard_test(fit, x, time_transform="rank").summary
    for term, name in [("category[b]", "b"), ("category[c]", "c"), ("token_len", "token_len")]:
        assert mine.loc[term, "chi2"] == pytest.approx(ref.loc[name, "test_statistic"], rel=1e-4)


def test_ph_test_detects_time_varying_effect():
    rng = np.random.default_rng(2)
    n = 600
    group = rng.choice(["a", "b"], n)
    # Group b: high hazard early, none late (crossing curves) -> non-proportional.
    early = rng.exponential(0.2, n)
    late = 1.0 + rng.exponential(1.0, n)
    time = np.where(group == "b", np.where(rng.random(n) < 0.5, early, late + 1.0), rng.exponential(1.0, n))
    df = pd.DataFrame({"category": group, "survival": time, "censored": False, "chain_index": rng.integers(0, 40, n),
                       "rel_position": rng.random(n), "token_len": 1.0})
    table = surv.ph_test(df, covariates=(), reference="a", strata=None)
    assert table.loc[0, "p"] < 0.01


def test_weighted_median_equals_expanded_sample():
    rng = np.random.default_rng(0)
    for _ in range(50):
        values = rng.random(rng.integers(1, 12))
        weights = rng.integers(0, 4, len(values))
        if weights.sum() == 0:
            continue
        median, mean = surv._weighted_median_mean(values, None, weights)
        expanded = np.repeat(values, weights)
        assert median == pytest.approx(np.median(expanded)) and mean == pytest.approx(expanded.mean())


def test_cluster_bootstrap_matches_naive_resampling(full_run):
    table = surv.survival_summary(full_run, n_boot=200, seed=7).set_index("group")
    # Naive oracle: same chain draws, concatenating the drawn chains' tokens.
    chains = np.unique(full_run["chain_index"])
    rng = np.random.default_rng(7)
    draws = [rng.integers(0, len(chains), len(chains)) for _ in range(200)]
    for name, sub in full_run.groupby("category"):
        by_chain = {c: sub.loc[sub.chain_index == c, "survival"].to_numpy() for c in chains}
        medians = [np.median(np.concatenate([by_chain[chains[i]] for i in d])) for d in draws]
        assert table.loc[name, "median"] == pytest.approx(sub["survival"].median())
        assert table.loc[name, "median_lower"] == pytest.approx(np.quantile(medians, 0.025))
        assert table.loc[name, "median_upper"] == pytest.approx(np.quantile(medians, 0.975))
        assert table.loc[name, "n_chains"] == sub["chain_index"].nunique()


def test_km_median_with_censoring():
    df = simulated(seed=4, censor_at=0.4)
    table = surv.survival_summary(df, n_boot=50).set_index("group")
    from lifelines import KaplanMeierFitter

    for name, sub in df.groupby("category"):
        fit = KaplanMeierFitter().fit(sub["survival"], ~sub["censored"])
        expected = fit.median_survival_time_
        curve = fit.survival_function_.iloc[:, 0]
        exact = curve.index[np.isclose(curve, 0.5)]
        if len(exact):  # R's convention: midpoint of the interval where S = 0.5
            events = sub.loc[~sub.censored, "survival"]
            expected = 0.5 * (exact[0] + events[events > exact[0]].min())
        if np.isfinite(expected):
            assert table.loc[name, "median"] == pytest.approx(expected)
        else:
            assert np.isnan(table.loc[name, "median"]) and "not reached" in table.loc[name, "method"]
    assert table["mean"].isna().all()
    # Without censoring the Kaplan-Meier median is the sample median (even and odd n).
    for n in (10, 11):
        values = np.random.default_rng(n).random(n)
        assert surv._km_median(values, np.ones(n, bool), np.ones(n))[0] == pytest.approx(np.median(values))


def test_rank_tests_and_cliffs_delta(full_run):
    kw = surv.kruskal_test(full_run)
    samples = [s["survival"] for _, s in full_run.groupby("category")]
    assert kw["H"] == pytest.approx(stats.kruskal(*samples).statistic)
    pairs = surv.pairwise_mannwhitney(full_run)
    for row in pairs.itertuples():
        x = full_run.loc[full_run.category == row.group_a, "survival"].to_numpy()
        y = full_run.loc[full_run.category == row.group_b, "survival"].to_numpy()
        naive = np.mean([np.sign(a - b) for a, b in itertools.product(x, y)])
        assert row.cliffs_delta == pytest.approx(naive)
    sym = pairs[(pairs.group_a == "grammar") & (pairs.group_b == "symbolic_math")].iloc[0]
    assert sym.cliffs_delta < -0.5 and sym.p_holm < 0.001  # synthetic: math costs most, survives longest


def test_ordering_interaction_known_answers(full_run):
    long = orderings_long(full_run)
    same = pd.concat([long[long.ordering == "greedy"],
                      long[long.ordering == "greedy"].assign(ordering="copy")], ignore_index=True)
    result = surv.ordering_interaction(same)
    assert result["chi2"] == pytest.approx(0.0, abs=1e-6)
    random = long[long.ordering.astype(str).isin(["greedy", "random"])]
    assert surv.ordering_interaction(random)["p"] < 0.001
    effects = surv.ordering_effects(long).set_index(["ordering", "group"])
    assert effects.loc[("random", "symbolic_math"), "logrank_p"] > 0.01
    assert effects.loc[("greedy", "symbolic_math"), "cliffs_delta_vs_rest"] > 0.5


def test_degenerate_inputs_raise_clear_errors():
    df = simulated(n=50)
    with pytest.raises(CotSurvivalError, match="at least 2 category groups"):
        surv.logrank_test(df.assign(category="a"))
    with pytest.raises(CotSurvivalError, match="all censored"):
        surv.logrank_test(df.assign(censored=True))
    with pytest.raises(CotSurvivalError, match="all censored"):
        surv.cox_ph(df.assign(censored=True))
    one = surv.cox_ph(df.assign(category="a"), covariates=("rel_position", "token_len"), position="linear")
    assert list(one["term"]) == ["rel_position", "token_len"] and one.attrs["notes"]
    const = surv.cox_ph(df.assign(token_len=2.0), covariates=("rel_position", "token_len"), position="linear")
    assert "token_len" not in set(const["term"]) and "constant" in const.attrs["notes"][0]


def test_stratified_cox_matches_lifelines_and_jackknife_matches_naive_refits():
    """Stratified by chain: coefficients and model SEs against lifelines' strata; with few chains the
    SE is a leave-one-chain-out jackknife, checked against lifelines refits (an independent fitter)."""
    from lifelines import CoxPHFitter

    df = simulated(n=300, seed=4)
    df["chain_index"] = df["chain_index"] % 8
    x = pd.get_dummies(df["category"]).drop(columns="a").astype(float)
    x = x.assign(rel_position=df["rel_position"], T=df["survival"], E=~df["censored"], chain=df["chain_index"])
    fit = CoxPHFitter().fit(x, "T", "E", strata=["chain"]).summary
    model = surv.cox_ph(df, reference="a", se="model", position="linear").set_index("term")
    for term, name in [("category[b]", "b"), ("category[c]", "c"), ("rel_position", "rel_position")]:
        assert model.loc[term, "coef"] == pytest.approx(fit.loc[name, "coef"], abs=1e-5)
        assert model.loc[term, "se"] == pytest.approx(fit.loc[name, "se(coef)"], rel=1e-4)
    jack = surv.cox_ph(df, reference="a", position="linear")  # 8 chains < 30: auto picks the jackknife
    assert (jack["se_method"] == "jackknife").all()
    loo = np.array([CoxPHFitter().fit(x[x.chain != c], "T", "E", strata=["chain"]).params_[["b", "c", "rel_position"]]
                    for c in range(8)])
    naive = np.sqrt(7 / 8 * ((loo - loo.mean(axis=0)) ** 2).sum(axis=0))
    np.testing.assert_allclose(jack["se"], naive, rtol=1e-3)
    t = jack["coef"] / jack["se"]
    np.testing.assert_allclose(jack["p"], 2 * stats.t.sf(np.abs(t), 7))
    joint = jack.attrs["joint"]
    # Hotelling scaling: W (C - k) / (k (C - 1)) against F(k, C - k), with C = 8 chains and k = 2 terms
    assert joint["df"] == 2 and joint["df_denom"] == 6 and 0 <= joint["p"] <= 1
    assert joint["statistic"] == pytest.approx(joint["wald"] * 6 / (2 * 7))


def test_cox_flexible_position_term_matches_lifelines_strata():
    """The default position term (cubic, the final-unit jump and each chain's survival jump) against
    lifelines CoxPHFitter(strata=...) fitted on the same columns, computed independently here."""
    from lifelines import CoxPHFitter
    from numpy.polynomial import legendre

    from cotsurvival.analysis.simulate import simulate_token_table

    df = simulate_token_table(6, scenario="answer_jump", seed=3, max_tokens=40)
    model = surv.cox_ph(df, reference="grammar", se="model").set_index("term")
    assert {"rel_position_2", "rel_position_3", "final_unit_jump", "position_jump"} <= set(model.index)
    poly = legendre.legvander(2 * df["rel_position"].to_numpy() - 1, 3)
    jump = np.zeros(len(df))
    for _, chain in df.groupby("chain_index"):  # brute-force best cut on cubic + final unit, per chain (no labels)
        y, rel = chain["survival"].to_numpy(), chain["rel_position"].to_numpy()
        fixed = np.column_stack([legendre.legvander(2 * rel - 1, 3), chain["final_unit"].to_numpy(float)])
        cuts = [c for c in range(2, len(y) - 1)
                if np.linalg.matrix_rank(np.column_stack([fixed, np.arange(len(y)) >= c])) == fixed.shape[1] + 1]
        ssr = [np.linalg.lstsq(np.column_stack([fixed, np.arange(len(y)) >= c]), y, rcond=None)[1][0] for c in cuts]
        jump[chain.index] = np.arange(len(y)) >= cuts[int(np.argmin(ssr))]
    x = pd.get_dummies(df["category"]).drop(columns="grammar").astype(float)
    x = x.assign(rel_position=df["rel_position"], rel_position_2=poly[:, 2], rel_position_3=poly[:, 3],
                 final_unit_jump=df["final_unit"].astype(float), position_jump=jump, T=df["survival"],
                 E=~df["censored"], chain=df["chain_index"])
    fit = CoxPHFitter().fit(x, "T", "E", strata=["chain"]).summary
    for name in ("narration", "referential", "symbolic_math", "rel_position", "rel_position_2", "final_unit_jump",
                 "position_jump"):
        term = f"category[{name}]" if name in ("narration", "referential", "symbolic_math") else name
        assert model.loc[term, "coef"] == pytest.approx(fit.loc[name, "coef"], abs=1e-5)
        assert model.loc[term, "se"] == pytest.approx(fit.loc[name, "se(coef)"], rel=1e-4)


def test_hotelling_scaled_joint_test_holds_its_level():
    """The jackknife of a mean over C replicates is S / C, so the jackknife Wald statistic is Hotelling's
    T². Simulated null means: W / k against F(k, C-1) over-rejects; the Hotelling scaling holds 0.05."""
    rng = np.random.default_rng(9)
    c, k, reps = 6, 3, 4000
    hits = []
    for _ in range(reps):
        x = rng.normal(size=(c, k))
        loo = np.array([np.delete(x, i, axis=0).mean(axis=0) for i in range(c)])
        cov = (c - 1) / c * (loo - loo.mean(axis=0)).T @ (loo - loo.mean(axis=0))
        joint = surv._joint_wald(x.mean(axis=0), cov, list(range(k)), float(c - 1))
        old = stats.f.sf(joint["wald"] / k, k, c - 1)
        hits.append((joint["p"] < 0.05, old < 0.05))
    new_rate, old_rate = np.mean(hits, axis=0)
    assert abs(new_rate - 0.05) < 0.012 and old_rate > 0.15


def test_tied_data_efron_residuals_match_lifelines():
    """Tied deletion times: Efron fit, with the PH test and the clustered SE built on Efron Schoenfeld and
    score residuals (statsmodels' own are Breslow-type: with an Efron fit they do not sum to zero)."""
    from lifelines import CoxPHFitter
    from lifelines.statistics import proportional_hazard_test

    df = simulated(n=300, seed=5)
    df["survival"] = np.ceil(df["survival"] * 5) / 5  # heavy ties
    mine = surv.cox_ph(df, reference="a", strata=None, se="model", position="linear").set_index("term")
    assert any("Efron" in n for n in mine.attrs["notes"])
    x = pd.get_dummies(df["category"]).drop(columns="a").astype(float)
    x = x.assign(rel_position=df["rel_position"], T=df["survival"], E=~df["censored"])
    plain = CoxPHFitter().fit(x, "T", "E")
    for term, name in [("category[b]", "b"), ("category[c]", "c"), ("rel_position", "rel_position")]:
        assert mine.loc[term, "coef"] == pytest.approx(plain.summary.loc[name, "coef"], abs=1e-5)
        assert mine.loc[term, "se"] == pytest.approx(plain.summary.loc[name, "se(coef)"], rel=1e-4)
    # Schoenfeld residuals (lifelines computes them with Efron ties) and the PH test built on them
    _, design, event, model, result, _, _ = surv._fit_cox(df, "category", ("rel_position",), "a", "survival", None)
    score, schoenfeld = surv._residuals(df, design, event, "survival", None, "efron", np.asarray(result.params))
    theirs = plain.compute_residuals(x, kind="schoenfeld")[["b", "c", "rel_position"]]
    np.testing.assert_allclose(schoenfeld[theirs.index.to_numpy()], theirs.to_numpy(), atol=1e-6)
    # (lifelines' "rank" transform breaks ties by row order, so the tied comparison uses identity time)
    ph = surv.ph_test(df, reference="a", strata=None, transform="identity").set_index("term")
    ref = proportional_hazard_test(plain, x, time_transform="identity").summary
    for term, name in [("category[b]", "b"), ("category[c]", "c"), ("rel_position", "rel_position")]:
        assert ph.loc[term, "chi2"] == pytest.approx(ref.loc[name, "test_statistic"], rel=1e-4)
    # Efron score residuals sum to the score, 0 at the estimate; statsmodels' Breslow-type ones do not
    assert np.abs(score.sum(axis=0)).max() < 1e-6
    assert np.abs(np.asarray(result.score_residuals).sum(axis=0)).max() > 0.05
    # untied, Efron = Breslow: the residuals equal statsmodels' (and the clustered SE equals lifelines',
    # test_cox_matches_lifelines_with_clustered_se)
    untied = simulated(n=200, seed=6)
    _, d2, e2, _, r2, _, _ = surv._fit_cox(untied, "category", ("rel_position",), "a", "survival", None)
    s2, _ = surv._residuals(untied, d2, e2, "survival", None, "efron", np.asarray(r2.params))
    np.testing.assert_allclose(s2, np.asarray(r2.score_residuals), atol=1e-10)
