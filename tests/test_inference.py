"""Chain-level inference primitives against brute force, scipy and simulated nulls."""
from __future__ import annotations

import itertools

import numpy as np
from scipy import stats

from cotsurvival.analysis.inference import bootstrap_ci, holm, mean_ci, paired_sign_flip_test, sign_flip_test


def _brute_force_p(x: np.ndarray) -> float:
    """Independent oracle: loop over every sign pattern and compare |sum|."""
    observed = abs(x.sum())
    hits = total = 0
    for signs in itertools.product((1, -1), repeat=len(x)):
        total += 1
        hits += abs(sum(s * v for s, v in zip(signs, x))) >= observed - 1e-12
    return hits / total


def test_exact_sign_flip_equals_brute_force():
    rng = np.random.default_rng(3)
    for n in (2, 3, 5, 8):
        x = rng.normal(0.3, 1, size=n)
        res = sign_flip_test(x)
        assert res["exact"] and res["n_chains"] == n
        assert res["p_value"] == _brute_force_p(x)
        assert np.isclose(res["estimate"], x.mean())


def test_monte_carlo_sign_flip_matches_scipy_permutation_test():
    rng = np.random.default_rng(4)
    x = rng.normal(0.25, 1, size=40)
    ours = sign_flip_test(x, n_resamples=40000, seed=1)["p_value"]
    ref = stats.permutation_test((x,), np.mean, permutation_type="samples", n_resamples=40000,
                                 random_state=2).pvalue
    assert not sign_flip_test(x)["exact"]
    assert abs(ours - ref) < 0.01


def test_hotelling_type_joint_test_with_one_column_equals_univariate():
    rng = np.random.default_rng(5)
    x = rng.normal(0.2, 1, size=10)
    assert np.isclose(sign_flip_test(x[:, None])["p_value"], sign_flip_test(x)["p_value"])


def test_sign_flip_holds_its_level_and_has_power():
    rng = np.random.default_rng(6)
    for n in (6, 30):
        null = [sign_flip_test(rng.standard_t(3, size=n), n_resamples=999, seed=i)["p_value"] for i in range(300)]
        assert np.mean(np.array(null) < 0.05) <= 0.08
    alt = [sign_flip_test(rng.normal(0.6, 1, size=30), n_resamples=999, seed=i)["p_value"] for i in range(100)]
    assert np.mean(np.array(alt) < 0.05) >= 0.8


def test_joint_test_level():
    rng = np.random.default_rng(7)
    ps = [sign_flip_test(rng.normal(size=(12, 3)))["p_value"] for _ in range(200)]
    assert np.mean(np.array(ps) < 0.05) <= 0.09


def test_paired_identical_runs_give_zero_and_p_one():
    x = np.array([0.1, 0.5, 0.3, 0.9])
    res = paired_sign_flip_test(x, x)
    assert res["estimate"] == 0 and res["p_value"] == 1.0


def test_mean_ci_matches_scipy_t_interval():
    x = np.array([0.2, 0.5, 0.1, 0.7, np.nan])
    ci = mean_ci(x)
    lo, hi = stats.t.interval(0.95, 3, loc=np.mean(x[:4]), scale=stats.sem(x[:4]))
    assert np.isclose(ci["lower"], lo) and np.isclose(ci["upper"], hi) and ci["n"] == 4


def test_bootstrap_ci_covers_mean_and_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    x = np.random.default_rng(8).normal(1, 1, size=50)
    ci = bootstrap_ci(x)
    assert ci["ci_low"] < x.mean() < ci["ci_high"] and ci["n_chains"] == 50
    p = np.array([0.01, 0.04, np.nan, 0.03])
    adjusted = holm(p)
    np.testing.assert_allclose(adjusted[[0, 1, 3]], multipletests(p[[0, 1, 3]], method="holm")[1])
    assert np.isnan(adjusted[2])
