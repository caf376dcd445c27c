"""Chain-level inference primitives: the chain, not the token, is the unit.

Tokens are nested in chains, labels come in runs and importance varies with position, so a test
that treats tokens as independent rejects a true null far too often. Every headline statistic in
cotsurvival reduces each chain to one number (or one vector) first and then tests *across chains*
with the functions below. They are the single home of these computations: `analysis` (the primary
chain-level test, effect sizes) and `comparison` (paired tests between runs) both call them.

Why hand-written: scipy's `permutation_test(permutation_type="samples")` does sign flips for the
one-sample case but neither enumerates exactly with a Hotelling-type statistic for several
contrasts nor returns the chain-level interval we report beside it; the code is short and tested
against scipy and against brute-force enumeration in tests/test_inference.py.
"""
from __future__ import annotations

import itertools

import numpy as np
from scipy import stats

__all__ = ["sign_flip_test", "sign_flip_ci", "smallest_p", "paired_sign_flip_test", "mean_ci", "bootstrap_ci", "holm"]

#: Up to this many chains the sign-flip null distribution is enumerated exactly (2**n patterns).
EXACT_MAX_CHAINS = 16


def _flip_patterns(n: int, n_resamples: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    if n <= EXACT_MAX_CHAINS:
        # all 2**n patterns (bit j of row i gives chain j's sign): the rows of itertools.product((1, -1), repeat=n)
        bits = (np.arange(2 ** n)[:, None] >> np.arange(n - 1, -1, -1)[None, :]) & 1
        return 1.0 - 2.0 * bits, True
    return rng.choice((1.0, -1.0), size=(n_resamples, n)), False


def sign_flip_test(values, *, n_resamples: int = 20000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Test that per-chain contrasts are centred on zero by flipping their signs.

    Parameters
    ----------
    values : array (n_chains,) or (n_chains, k)
        One contrast per chain (or k contrasts per chain, tested jointly). Rows with a NaN are dropped.
    n_resamples : int
        Random sign patterns when there are more than ``EXACT_MAX_CHAINS`` chains; with fewer, all
        ``2**n`` patterns are enumerated and the p-value is exact.

    Returns
    -------
    dict with ``estimate`` (mean contrast; a list for k > 1), ``ci_low``/``ci_high`` (t-interval over
    chains, per contrast), ``p_value`` (two-sided), ``n_chains``, ``exact``, ``test``, ``statistic``.
    Under H0 each chain's contrast is symmetric about zero, which holds when labels carry no
    information about importance within a chain (the contrast is then a difference of exchangeable
    means). The statistic is |mean| for one contrast (equivalent to |t|: the sum of squares does not
    change under sign flips) and m' (X'X/n)^+ m for several (equivalent to Hotelling's T² for the
    same reason).
    """
    x = np.asarray(values, dtype=float)
    multi = x.ndim == 2
    if not multi:
        x = x[:, None]
    x = x[~np.isnan(x).any(axis=1)]
    n, k = x.shape
    out = {"test": "sign-flip permutation over chains" + (" (Hotelling-type, joint)" if multi else ""),
           "n_chains": int(n), "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan,
           "statistic": np.nan, "exact": False}
    if n == 0:
        return out
    means = x.mean(axis=0)
    intervals = [mean_ci(x[:, j], alpha=alpha) for j in range(k)]
    if multi:
        out.update(estimate=means.tolist(), ci_low=[c["lower"] for c in intervals],
                   ci_high=[c["upper"] for c in intervals])
    else:
        out.update(estimate=float(means[0]), ci_low=intervals[0]["lower"], ci_high=intervals[0]["upper"])
    if n < 2 or not np.any(x):
        out["p_value"] = 1.0 if n >= 2 else np.nan
        return out
    rng = np.random.default_rng(seed)
    signs, exact = _flip_patterns(n, n_resamples, rng)
    flipped_means = signs @ x / n                                    # (patterns, k)
    if k == 1:
        null = np.abs(flipped_means[:, 0])
        observed = abs(means[0])
    else:
        inv = np.linalg.pinv(x.T @ x / n)
        null = np.einsum("pi,ij,pj->p", flipped_means, inv, flipped_means)
        observed = float(means @ inv @ means)
    # A relative tolerance so that the observed pattern counts itself despite rounding.
    hits = int(np.sum(null >= observed * (1 - 1e-12) - 1e-300))
    p = hits / len(signs) if exact else (hits + 1) / (len(signs) + 1)
    out.update(p_value=float(min(1.0, p)), statistic=float(observed), exact=bool(exact))
    return out


def smallest_p(n_chains: int, *, n_resamples: int = 20000, n_tests: int = 1) -> float:
    """Smallest p-value a two-sided sign-flip test over ``n_chains`` chains can return, times
    ``n_tests`` (the smallest Holm-adjusted p of a family of that size): ``2 / 2**C`` when enumerated
    exactly (the observed pattern and its mirror image), ``1 / (n_resamples + 1)`` above."""
    if n_chains < 1:
        return 1.0
    floor = 2.0 / 2 ** n_chains if n_chains <= EXACT_MAX_CHAINS else 1.0 / (n_resamples + 1)
    return float(min(1.0, floor * max(1, n_tests)))


def sign_flip_ci(values, *, alpha: float = 0.05, n_resamples: int = 20000, seed: int = 0) -> tuple[float, float]:
    """Confidence interval that inverts the one-contrast sign-flip test: every shift ``mu`` for which
    ``sign_flip_test(values - mu)`` has ``p >= alpha``.

    Hand-written (no library inverts a sign-flip test): the p-value is a step function of ``mu`` that
    is 1 at the mean and falls towards the ends, so each end is found by bisection between the mean
    and a shift where p < alpha (the same sign patterns at every ``mu``: same ``seed``). When the test
    cannot reach ``alpha`` at all (too few chains) the interval is unbounded, returned as ``(nan, nan)`` so
    that it stores in JSON (sentences say "unbounded").
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n < 2 or smallest_p(n, n_resamples=n_resamples) >= alpha:
        return (np.nan, np.nan)
    rng = np.random.default_rng(seed)
    signs, exact = _flip_patterns(n, n_resamples, rng)
    denom = len(signs) if exact else len(signs) + 1

    def p_at(mu: float) -> float:
        d = x - mu
        null = np.abs(signs @ d)
        hits = int(np.sum(null >= abs(d.sum()) * (1 - 1e-12) - 1e-300))
        return (hits if exact else hits + 1) / denom

    centre = float(x.mean())
    spread = float(np.ptp(x)) + abs(centre) + 1e-12
    ends = []
    for direction in (-1.0, 1.0):
        inside, outside = centre, centre + direction * spread
        while p_at(outside) >= alpha:  # widen until the test rejects
            outside = centre + 2 * (outside - centre)
        for _ in range(60):
            mid = (inside + outside) / 2
            inside, outside = (mid, outside) if p_at(mid) >= alpha else (inside, mid)
        ends.append(inside)
    return float(ends[0]), float(ends[1])


def paired_sign_flip_test(a, b, **kwargs) -> dict:
    """Sign-flip test of per-chain paired differences ``a - b`` (same chains, same order)."""
    return sign_flip_test(np.asarray(a, float) - np.asarray(b, float), **kwargs)


def mean_ci(values, *, alpha: float = 0.05) -> dict:
    """Mean with a t-interval over independent units (chains), median, sd and n (NaNs dropped)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    n = len(values)
    out = {"mean": np.nan, "lower": np.nan, "upper": np.nan, "median": np.nan, "sd": np.nan, "n": n}
    if n == 0:
        return out
    out.update(mean=float(values.mean()), median=float(np.median(values)))
    if n > 1:
        sd = float(values.std(ddof=1))
        half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * sd / np.sqrt(n)
        out.update(sd=sd, lower=out["mean"] - half, upper=out["mean"] + half)
    return out


def bootstrap_ci(values, statistic=np.mean, *, n_resamples: int = 2000, seed: int = 0,
                 alpha: float = 0.05) -> dict:
    """Percentile bootstrap over chains: ``values`` holds one number per chain (NaNs dropped)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    n = len(values)
    out = {"estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n_chains": int(n)}
    if n == 0:
        return out
    out["estimate"] = float(statistic(values))
    if n > 1:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n, size=(n_resamples, n))
        boot = np.apply_along_axis(statistic, 1, values[idx])
        out.update(ci_low=float(np.quantile(boot, alpha / 2)), ci_high=float(np.quantile(boot, 1 - alpha / 2)))
    return out


def holm(pvalues) -> np.ndarray:
    """Holm-adjusted p-values; NaNs stay NaN and do not count in the family.

    Written with numpy (step-down: sorted p times (m, m-1, ..., 1), running maximum, capped at 1)
    rather than statsmodels' ``multipletests``, which calls ``gc.collect()`` on every Holm call
    (over a second each in a process holding torch, and analyze calls it a dozen times). Checked
    against ``multipletests(method="holm")`` in tests/test_inference.py.
    """
    pvalues = np.asarray(pvalues, dtype=float)
    out = np.full_like(pvalues, np.nan)
    ok = np.flatnonzero(~np.isnan(pvalues))
    if len(ok):
        order = ok[np.argsort(pvalues[ok], kind="stable")]
        m = len(order)
        adjusted = np.maximum.accumulate(pvalues[order] * np.arange(m, 0, -1))
        out[order] = np.minimum(adjusted, 1.0)
    return out
