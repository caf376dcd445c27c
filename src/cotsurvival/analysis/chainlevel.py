"""The headline statistic: a chain-level, position-adjusted test of a category contrast.

Tokens are nested in chains, labels come in runs and importance varies with position, so tests
that treat tokens as independent reject a true null 7-12 times too often (``bench/null_calibration.py``).
Here each chain is reduced to one number first:

1. within the chain, regress normalized survival on indicator(s) of the contrasted category and a
   position term; the indicator's coefficient is the chain's *position-adjusted difference in mean
   normalized survival* (with ``adjustment="none"`` it is exactly the difference of the two means);
2. test across chains that these contrasts are centred on zero with
   :func:`~cotsurvival.analysis.inference.sign_flip_test` (exact enumeration up to 16 chains;
   Hotelling-type joint statistic for several contrasts), with the interval that inverts that test
   (:func:`~cotsurvival.analysis.inference.sign_flip_ci`).

The position term (``ADJUSTMENTS``) was chosen by simulation (``bench/null_calibration.py``, table in
docs/statistics.md). The default, ``"cubic_final_step"``, is a cubic Legendre polynomial in relative
position, a jump where the chain's **final reasoning unit** starts (the ``final_unit`` column
:func:`~cotsurvival.analysis.load_run` derives from the text with the splitter of
:mod:`cotsurvival.taxonomy.units`: fixed before survival is seen, so it costs no selection) and one
more jump placed where the chain's own survival jumps most (found from survival and position alone,
never from the labels, so that it cannot soak up a category effect). A cubic alone is biased when
importance jumps where the answer starts and the category sits there (it rejected 1.00 of such
simulated nulls with 30 chains); the data-placed jump alone removed only two thirds of that bias;
the final-unit jump removes it when the jump sits at the final unit's start, and the data-placed one
limits the damage when it sits elsewhere. ``"cubic_final"``, ``"cubic_step"``, ``"cubic"``,
``"windows"`` (within-chain matched contrast: each target token against the rest of its tenth of the
chain, linear within the window) and ``"none"`` are reported as sensitivity analyses. A table without
``final_unit`` (no reasoning text or offsets) gets the same term without the final-unit jump, and the
result says so.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from numpy.polynomial import legendre

from ..errors import CotSurvivalError
from .inference import mean_ci, sign_flip_ci, sign_flip_test, smallest_p

__all__ = ["chain_level_test", "chain_contrasts", "power", "position_basis", "effective_adjustment", "MIN_CHAINS",
           "MIN_TOKENS", "DEFAULT_PRIMARY", "ADJUSTMENTS", "DEFAULT_ADJUSTMENT", "FINAL_UNIT_ADJUSTMENTS"]

#: Defaults of the minimum support below which a result is computed but not cited. Six chains is
#: the fewest with which an exact two-sided sign-flip test can reach p < 0.05 (2 / 2**6 = 0.031).
MIN_CHAINS = 6
MIN_TOKENS = 20
#: The pre-specified primary contrast: this category versus the rest of the chain.
DEFAULT_PRIMARY = "symbolic_math"
#: Degree of the within-chain position polynomial (reduced for short chains).
POSITION_DEGREE = 3
#: Position adjustments: name -> wording used in sentences.
ADJUSTMENTS = {
    "cubic_final_step": "a cubic within-chain position trend, a jump where the final reasoning unit starts and one "
                        "more jump where the chain's survival jumps most",
    "cubic_final": "a cubic within-chain position trend plus a jump where the final reasoning unit starts",
    "cubic_step": "a cubic within-chain position trend plus one jump where the chain's survival jumps most",
    "cubic": "a cubic within-chain position trend",
    "windows": "position windows (each tenth of the chain, linear within it)",
    "none": "no position adjustment",
}
DEFAULT_ADJUSTMENT = "cubic_final_step"
#: Adjustments with a jump at the final unit's start (the table's ``final_unit`` column).
FINAL_UNIT_ADJUSTMENTS = ("cubic_final_step", "cubic_final")
#: Adjustments with one more jump placed from the data (where the chain's survival jumps most).
DATA_STEP_ADJUSTMENTS = ("cubic_step", "cubic_final_step")
#: What a final-unit adjustment becomes on a table without ``final_unit`` (the same terms, less that jump).
WITHOUT_FINAL_UNIT = {"cubic_final_step": "cubic_step", "cubic_final": "cubic"}
#: Share of a chain at either end that the placement diagnostic counts as "at the end".
END_SHARE = 0.15
#: Covariates (beyond position) the covariate-adjusted sensitivity analysis uses when the table has them.
COVARIATES = {"static_logprob": "surprisal (static log-probability)", "token_len": "token length",
              "answer_logprob_before": "the answer's log-probability before the token"}


def effective_adjustment(adjustment: str, table: pd.DataFrame) -> str:
    """The adjustment ``table`` supports: a final-unit one without its final-unit jump when the table
    has no ``final_unit`` column (a table built by hand, a run without character offsets)."""
    if adjustment not in ADJUSTMENTS:
        raise CotSurvivalError("E045", value=adjustment, available=", ".join(ADJUSTMENTS))
    if adjustment in FINAL_UNIT_ADJUSTMENTS and ("final_unit" not in table.columns or table["final_unit"].isna().all()):
        return WITHOUT_FINAL_UNIT[adjustment]
    return adjustment


def _targets(contrast) -> list[str]:
    return [contrast] if isinstance(contrast, str) else [str(c) for c in contrast]


def _residualize(basis: np.ndarray, values: np.ndarray) -> np.ndarray:
    coef, *_ = np.linalg.lstsq(basis, values, rcond=None)
    return values - basis @ coef


def _step(rel: np.ndarray, y: np.ndarray, basis: np.ndarray) -> np.ndarray | None:
    """The step (0 before, 1 from the cut) that most reduces the residual sum of squares of ``y`` on
    ``basis``; at least 2 tokens on each side. Uses survival and position only, not labels."""
    n = len(y)
    if n < 8:
        return None
    order = np.argsort(rel, kind="stable")
    cuts = np.arange(2, n - 1)
    steps = np.zeros((n, len(cuts)))
    ranks = np.empty(n, dtype=int)
    ranks[order] = np.arange(n)
    steps[:] = (ranks[:, None] >= cuts[None, :])
    q, _ = np.linalg.qr(basis)
    yr = y - q @ (q.T @ y)
    sr = steps - q @ (q.T @ steps)
    den = (sr * sr).sum(axis=0)
    score = np.where(den > 1e-9, (sr.T @ yr) ** 2 / np.where(den > 1e-9, den, 1.0), -1.0)
    return steps[:, int(np.argmax(score))]


def position_basis(rel, y=None, adjustment: str = DEFAULT_ADJUSTMENT, *, n_targets: int = 1,
                   final_unit=None) -> np.ndarray:
    """Columns spanning the within-chain position term of ``adjustment`` (first column: intercept).

    ``rel`` is relative position in [0, 1]; ``y`` (survival) is needed by ``"cubic_step"`` and
    ``"cubic_final_step"`` to place their data-placed jump; ``final_unit`` (bool per token) gives the
    final-unit jump (left out when the chain is one unit). The polynomial degree falls for short chains
    (one degree per 4 tokens beyond the targets).
    """
    rel = np.asarray(rel, dtype=float)
    n = len(rel)
    if adjustment not in ADJUSTMENTS:
        raise CotSurvivalError("E045", value=adjustment, available=", ".join(ADJUSTMENTS))
    if adjustment == "none":
        return np.ones((n, 1))
    if adjustment == "windows":
        k = int(min(10, max(1, n // 6)))
        window = np.minimum((rel * k).astype(int), k - 1)
        dummies = np.eye(k)[window]
        dummies = dummies[:, dummies.any(axis=0)]
        centre = rel - (window + 0.5) / k
        return np.column_stack([dummies, dummies * centre[:, None]])
    degree = int(min(POSITION_DEGREE, max(0, (n - n_targets - 2) // 4)))
    basis = legendre.legvander(2 * rel - 1, degree)
    if adjustment in FINAL_UNIT_ADJUSTMENTS and final_unit is not None:
        final = np.asarray(final_unit, dtype=float)
        if 0 < final.sum() < n:
            basis = np.column_stack([basis, final])
    if adjustment in DATA_STEP_ADJUSTMENTS and y is not None:
        step = _step(rel, np.asarray(y, float), basis)
        if step is not None:
            basis = np.column_stack([basis, step])
    return basis


def _chain_row(y, rel, indicators, adjustment, extra, windows_delta, final_unit=None
               ) -> tuple[np.ndarray, float, float]:
    """Per-chain contrast(s), variance factor (1 / residual sum of squares of the first indicator)
    and the within-window Cliff's delta of the first target."""
    k = indicators.shape[1]
    values, inflation = np.full(k, np.nan), np.nan
    basis = position_basis(rel, y, adjustment, n_targets=k, final_unit=final_unit)
    if extra is not None:
        basis = np.column_stack([basis, extra])
    xr = _residualize(basis, indicators)
    yr = _residualize(basis, y)
    gram = xr.T @ xr
    raw = ((indicators - indicators.mean(axis=0)) ** 2).sum(axis=0)
    # the contrast is identified only if each indicator keeps some variation the position term does not explain
    if np.all(np.diag(gram) > 1e-8 * np.maximum(raw, 1e-12)) and np.linalg.matrix_rank(gram) == k:
        values = np.linalg.solve(gram, xr.T @ yr)
        inflation = float(1.0 / gram[0, 0])
    delta = np.nan
    if windows_delta:
        inside = indicators[:, 0].astype(bool)
        window = np.minimum((rel * 10).astype(int), 9)
        total, pairs = 0.0, 0
        for w in np.unique(window):
            a, b = y[inside & (window == w)], y[~inside & (window == w)]
            if len(a) and len(b):
                total += float(np.sign(a[:, None] - b[None, :]).sum())
                pairs += len(a) * len(b)
        delta = total / pairs if pairs else np.nan
    return values, inflation, delta


def chain_contrasts(
    table: pd.DataFrame,
    contrast: str | list[str] = DEFAULT_PRIMARY,
    *,
    group: str = "category",
    adjust_position: bool = True,
    time: str = "survival",
    adjustment: str | None = None,
    covariates: tuple[str, ...] = (),
    degree: int | None = None,
) -> pd.DataFrame:
    """One row per chain: its contrast(s) of ``contrast`` tokens against the rest of the chain.

    ``adjustment`` (one of :data:`ADJUSTMENTS`, default ``"cubic_final_step"``; ``adjust_position=False``
    means ``"none"``) is the position term (its final-unit jump needs the ``final_unit`` column, see
    :func:`effective_adjustment`); ``covariates`` are further token columns adjusted for (standardized
    within the chain).

    Returns
    -------
    pandas.DataFrame
        ``chain_index, n_tokens, n_target, n_target_first, n_target_last`` (targets in the first /
        last 15% of the chain), ``contrast_<name>`` per target, ``variance_factor`` (1 / residual sum
        of squares of the first indicator: the contrast's variance relative to the noise),
        ``cliffs_delta`` (first target vs rest, unadjusted) and ``cliffs_delta_windows`` (pairs within
        the same tenth of the chain only). A chain with no target token or nothing else (or a design
        in which position explains the indicator) has NaN contrasts.
    """
    del degree  # kept for old calls; the degree is POSITION_DEGREE, reduced for short chains
    adjustment = effective_adjustment(adjustment or (DEFAULT_ADJUSTMENT if adjust_position else "none"), table)
    for column in (group, time, "chain_index", *covariates):
        if column not in table.columns:
            raise CotSurvivalError("E042", column=column, available=", ".join(map(str, table.columns)))
    targets = _targets(contrast)
    frame = table.dropna(subset=[group, time, *covariates])
    present = sorted(map(str, frame[group].unique()))
    missing = [t for t in targets if t not in present]
    if missing:
        raise CotSurvivalError("E044", value=", ".join(missing), group=group, available=", ".join(present) or "none")
    if "n_tokens" in frame:
        frame = frame[frame["n_tokens"] > 1]  # one-token chains carry no ranking
    rows = []
    for index, chain in frame.groupby("chain_index", sort=True):
        y = chain[time].to_numpy(float)
        labels = chain[group].astype(str).to_numpy()
        indicators = np.column_stack([labels == t for t in targets]).astype(float)
        rel = (chain["rel_position"].to_numpy(float) if "rel_position" in chain
               else chain["position"].to_numpy(float) / max(chain["position"].max(), 1))
        target_any = indicators.any(axis=1)
        row = {"chain_index": index, "n_tokens": len(y), "n_target": int(target_any.sum()),
               "n_target_first": int((target_any & (rel < END_SHARE)).sum()),
               "n_target_last": int((target_any & (rel > 1 - END_SHARE)).sum())}
        values, inflation, delta = np.full(len(targets), np.nan), np.nan, np.nan
        if indicators.any(axis=0).all() and (~target_any).any():
            extra = None
            if covariates:
                raw = chain[list(covariates)].to_numpy(float)
                sd = raw.std(axis=0)
                extra = (raw - raw.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
            final = chain["final_unit"].to_numpy(bool) if "final_unit" in chain else None
            values, inflation, delta = _chain_row(y, rel, indicators, adjustment, extra, True, final)
        for t, v in zip(targets, values):
            row[f"contrast_{t}"] = float(v)
        row["variance_factor"] = inflation
        inside = indicators[:, 0].astype(bool)
        row["cliffs_delta"] = (float(np.sign(y[inside][:, None] - y[~inside][None, :]).mean())
                               if inside.any() and (~inside).any() else np.nan)
        row["cliffs_delta_windows"] = delta
        rows.append(row)
    columns = (["chain_index", "n_tokens", "n_target", "n_target_first", "n_target_last"]
               + [f"contrast_{t}" for t in targets] + ["variance_factor", "cliffs_delta", "cliffs_delta_windows"])
    return pd.DataFrame(rows, columns=columns)


def _across(values: np.ndarray, *, alpha: float, n_resamples: int, seed: int) -> dict:
    """Sign-flip test over chains plus the interval that inverts it (one contrast) and the p floor."""
    test = sign_flip_test(values, n_resamples=n_resamples, seed=seed, alpha=alpha)
    n = test["n_chains"]
    out = {"estimate": test["estimate"], "p_value": test["p_value"], "exact": test["exact"], "n_chains": n,
           "test": test["test"], "p_floor": smallest_p(n, n_resamples=n_resamples),
           "t_ci_low": test["ci_low"], "t_ci_high": test["ci_high"]}
    if np.ndim(values) == 1:
        low, high = sign_flip_ci(values, alpha=alpha, n_resamples=n_resamples, seed=seed)
        out.update(ci_low=low, ci_high=high, ci_method="sign-flip test inversion")
    else:
        out.update(ci_low=test["ci_low"], ci_high=test["ci_high"], ci_method="t over chains, per contrast")
    return out


def chain_level_test(
    table: pd.DataFrame,
    group: str = "category",
    contrast: str | list[str] = DEFAULT_PRIMARY,
    *,
    adjust_position: bool = True,
    adjustment: str | None = None,
    covariates: tuple[str, ...] = (),
    time: str = "survival",
    min_chains: int = MIN_CHAINS,
    min_tokens: int = MIN_TOKENS,
    n_resamples: int = 20000,
    seed: int = 0,
    alpha: float = 0.05,
    sensitivity: bool = False,
) -> dict:
    """Chain-level test that ``contrast`` tokens survive like the rest of their chain.

    Parameters
    ----------
    table : pandas.DataFrame
        A token table as :func:`~cotsurvival.analysis.load_run` returns it.
    group : str, default "category"
        Label column (``category`` or ``label``).
    contrast : str or list of str, default "symbolic_math"
        One group (tested against the rest of each chain) or several (each against the tokens in
        none of them, tested jointly with the Hotelling-type sign-flip statistic).
    adjust_position, adjustment : bool, str
        The position term (:data:`ADJUSTMENTS`; default ``"cubic_final_step"``, the pre-specified
        primary; ``adjust_position=False`` is ``"none"``). Without a ``final_unit`` column the
        final-unit jump is left out; ``adjustment`` then names what was used and
        ``adjustment_requested`` what was asked for.
    covariates : tuple of str
        Further token columns to adjust for (e.g. ``("static_logprob", "token_len")``).
    time : str, default "survival"
        The survival column to test (e.g. a replicate-averaged ``"survival_mean"``).
    min_chains, min_tokens : int
        Minimum support for citing: with fewer chains contributing, or fewer tokens in the
        contrasted group(s), the result is still computed but carries ``withheld`` (a reason).
    sensitivity : bool, default False
        Also compute the ``sensitivity`` block (the other adjustments, unadjusted, covariate-adjusted)
        and the ``placement`` diagnostic (what ``analyze`` stores in ``stats.json["primary"]``).

    Returns
    -------
    dict
        ``estimate`` (mean over chains of the per-chain difference in mean normalized survival;
        a list for several targets), ``ci_low``/``ci_high`` (one contrast: the sign-flip interval,
        inverting the reported test; ``t_ci_low``/``t_ci_high`` the t-interval), ``p_value``,
        ``p_floor`` (smallest attainable p), ``test``, ``exact``, ``n_chains`` (contributing),
        ``n_tokens``, ``n_target_tokens``, ``sd_between_chains``, ``cliffs_delta`` (within position
        windows, mean over chains; ``cliffs_delta_unadjusted`` the raw one), ``adjustment``,
        ``covariates``, ``per_chain`` (records), ``withheld`` when support is too small, and with
        ``sensitivity=True`` the ``sensitivity`` and ``placement`` blocks and ``notes``.
    """
    requested = adjustment or (DEFAULT_ADJUSTMENT if adjust_position else "none")
    adjustment = effective_adjustment(requested, table)
    targets = _targets(contrast)
    per_chain = chain_contrasts(table, targets, group=group, time=time, adjustment=adjustment,
                                covariates=tuple(covariates))
    value_columns = [f"contrast_{t}" for t in targets]
    used = per_chain.dropna(subset=value_columns)
    values = used[value_columns].to_numpy(float)
    across = _across(values if len(targets) > 1 else values[:, 0], alpha=alpha, n_resamples=n_resamples, seed=seed)
    what = " and ".join(targets) + " vs the rest of the chain"
    adjusted_for = ADJUSTMENTS[adjustment] + "".join(f", {COVARIATES.get(c, c)}" for c in covariates)
    out = {
        "contrast": what, "targets": targets, "group": group, "time": time,
        "adjust_position": adjustment != "none", "adjustment": adjustment, "adjusted_for": adjusted_for,
        "covariates": list(covariates),
        **{k: across[k] for k in ("estimate", "ci_low", "ci_high", "ci_method", "t_ci_low", "t_ci_high",
                                  "p_value", "p_floor", "exact")},
        "test": ("chain-level " + across["test"] + " on per-chain differences in mean normalized survival, "
                 + ("adjusted for " + adjusted_for if adjustment != "none" or covariates else "unadjusted")),
        "n_chains": int(len(used)), "n_tokens": int(used["n_tokens"].sum()),
        "n_target_tokens": int(used["n_target"].sum()),
        "n_chains_without_contrast": int(len(per_chain) - len(used)),
        "sd_between_chains": (float(values[:, 0].std(ddof=1)) if len(used) > 1 else float("nan")),
        # The adjusted effect size: pairs of tokens in the same tenth of the chain only (no interval:
        # the interval quoted is the one inverting the test on the difference in means).
        "cliffs_delta": float(np.nanmean(used["cliffs_delta_windows"])) if used["cliffs_delta_windows"].notna().any()
        else float("nan"),
        "cliffs_delta_method": "within position windows (pairs in the same tenth of the chain), mean over chains",
        "cliffs_delta_unadjusted": float(np.nanmean(used["cliffs_delta"])) if used["cliffs_delta"].notna().any()
        else float("nan"),
        "min_chains": min_chains, "min_tokens": min_tokens, "alpha": alpha,
        "per_chain": per_chain.to_dict(orient="records"),
    }
    if adjustment != requested:
        out["adjustment_requested"] = requested
    if len(used) < min_chains or out["n_target_tokens"] < min_tokens:
        out["withheld"] = (f"{what}: {len(used)} chains with both kinds of token and {out['n_target_tokens']} "
                           f"{' / '.join(targets)} tokens, below the minimum support for citing "
                           f"({min_chains} chains, {min_tokens} tokens)")
    if sensitivity and len(targets) == 1:
        out["sensitivity"], out["placement"], out["notes"] = _sensitivity(
            table, used, out, group=group, time=time, alpha=alpha, n_resamples=n_resamples, seed=seed)
    return out


def _sensitivity(table, used, primary, *, group, time, alpha, n_resamples, seed):
    """The primary contrast under the other adjustments, unadjusted and covariate-adjusted; where the
    target tokens sit; which chains carry unusual weight and the estimate without them."""
    target = primary["targets"][0]
    column = f"contrast_{target}"
    rows = {}
    available = tuple(c for c in COVARIATES if c in table.columns and table[c].notna().any()
                      and table[c].nunique(dropna=True) > 1)
    names = dict.fromkeys(effective_adjustment(name, table) for name in ADJUSTMENTS)  # without final_unit some coincide
    variants = [(name, name, ()) for name in names if name != primary["adjustment"]]
    if available:
        variants.append(("covariates", primary["adjustment"], available))
    for label, adjustment, covariates in variants:
        frame = chain_contrasts(table, target, group=group, time=time, adjustment=adjustment, covariates=covariates)
        values = frame[column].dropna().to_numpy(float)
        res = _across(values, alpha=alpha, n_resamples=n_resamples, seed=seed)
        rows[label] = {"adjusted_for": ADJUSTMENTS[adjustment] + "".join(f", {COVARIATES[c]}" for c in covariates),
                       "covariates": list(covariates),
                       **{k: res[k] for k in ("estimate", "ci_low", "ci_high", "p_value", "p_floor", "n_chains")}}
    missing = [COVARIATES[c] for c in COVARIATES if c not in available]
    notes = []
    if primary.get("adjustment_requested"):
        notes.append(f"the table has no reasoning units (final_unit), so the position term has no jump at the "
                     f"final unit: adjusted for {ADJUSTMENTS[primary['adjustment']]}")
    if missing:
        notes.append("covariate-adjusted sensitivity without " + ", ".join(missing) + " (not in the run)")
    significant = primary["p_value"] < alpha
    for label, row in rows.items():
        if row["n_chains"] < 2 or not math.isfinite(row["estimate"]):
            continue
        # a sign change between two estimates that are both indistinguishable from 0 is noise, not news
        flips = (np.sign(row["estimate"]) != np.sign(primary["estimate"])
                 and (significant or row["p_value"] < alpha))
        if flips or (row["p_value"] < alpha) != significant:
            how = "unadjusted" if label == "none" else f"adjusted for {row['adjusted_for']}"
            notes.append(f"{how}, the estimate is {row['estimate']:+.3f} "
                         f"({'p < ' + str(alpha) if row['p_value'] < alpha else 'p ≥ ' + str(alpha)}), which "
                         f"{'changes the sign' if flips else 'changes the significance'} of the primary result")
    n_target = int(used["n_target"].sum())
    first = float(used["n_target_first"].sum() / n_target) if n_target else float("nan")
    last = float(used["n_target_last"].sum() / n_target) if n_target else float("nan")
    factor = used["variance_factor"].to_numpy(float)
    contrasts = used[column].to_numpy(float)
    median = float(np.nanmedian(factor)) if len(factor) else float("nan")
    # A chain whose contrast has 4x the median variance (position nearly explains its indicator) or
    # that lies outside [-1, 1] (impossible for a difference of normalized survival means) can drive
    # an equally weighted mean.
    flagged = used[(factor > 4 * median) | (np.abs(contrasts) > 1)]
    placement = {"share_target_first_15pct": first, "share_target_last_15pct": last,
                 "high_leverage_chains": [int(i) for i in flagged["chain_index"]],
                 "variance_factor_median": median}
    if len(flagged) and len(used) - len(flagged) >= 2:
        rest = used[~used["chain_index"].isin(flagged["chain_index"])][column].to_numpy(float)
        res = _across(rest, alpha=alpha, n_resamples=n_resamples, seed=seed)
        placement["without_high_leverage"] = {k: res[k] for k in ("estimate", "ci_low", "ci_high", "p_value",
                                                                  "n_chains")}
        if (res["p_value"] < alpha) != significant or np.sign(res["estimate"]) != np.sign(primary["estimate"]):
            notes.append(f"without the {len(flagged)} high-leverage chain(s) the estimate is {res['estimate']:+.3f} "
                         f"({'p < ' + str(alpha) if res['p_value'] < alpha else 'p ≥ ' + str(alpha)}, "
                         f"{res['n_chains']} chains)")
    crowd = max(first, last) if n_target else 0.0
    if crowd > 0.5:
        end = "last" if last >= first else "first"
        notes.append(f"{crowd:.0%} of the {target.replace('_', ' ')} tokens sit in the {end} 15% of their chains, "
                     f"where position and category are hard to separate; read the estimate with the sensitivity block")
    return rows, placement, notes


def power(
    run_or_table,
    delta: float = 0.1,
    *,
    contrast: str = DEFAULT_PRIMARY,
    group: str = "category",
    adjust_position: bool = True,
    alpha: float = 0.05,
    target_power: float = 0.8,
    sd: float | None = None,
    n_chains: int | None = None,
    n_sim: int = 400,
    seed: int = 0,
) -> dict:
    """Chains needed to detect a difference ``delta`` in the primary contrast with ``target_power``.

    The between-chain standard deviation of the per-chain contrast (from the run, or ``sd``; with
    ``sd``, ``n_chains`` is the pilot's size, for the power it had) gives a standardized effect
    ``delta / sd``. Up to 16 chains, power is that of the exact sign-flip test itself, simulated from
    normal per-chain contrasts (``n_sim`` draws; the t-test's power is optimistic there, and a size
    whose smallest attainable p is above ``alpha`` has power 0 and is never recommended); from 17
    chains on, statsmodels ``TTestPower`` (one-sample t over chains, the large-sample behaviour of the
    sign-flip test; Monte Carlo SE about 0.02 at 0.8 with the default ``n_sim``). Checked against
    simulation in tests/test_analysis_chainlevel.py.

    Returns
    -------
    dict
        ``delta, sd_between_chains, effect_size, alpha, power, n_chains_needed, n_chains_observed,
        power_at_observed, contrast, method``.
    """
    n_observed = n_chains
    if sd is None:
        if not isinstance(run_or_table, pd.DataFrame):  # a run directory: analysis.power loads it first
            raise TypeError("chainlevel.power takes a token table; cotsurvival.analysis.power also takes a run")
        result = chain_level_test(run_or_table, group, contrast, adjust_position=adjust_position, n_resamples=999)
        sd, n_observed = result["sd_between_chains"], result["n_chains"]
    if not (isinstance(sd, (int, float)) and math.isfinite(sd) and sd > 0):
        raise CotSurvivalError("E043", reason=f"the between-chain spread of {contrast} vs the rest is not estimable "
                               "(fewer than 2 chains contain both kinds of token)")
    if delta <= 0:
        raise CotSurvivalError("E043", reason=f"delta must be positive (got {delta})")
    effect = float(delta) / float(sd)
    simulate = _SignFlipPower(effect, alpha, n_sim, seed)
    out = {"delta": float(delta), "sd_between_chains": float(sd), "effect_size": effect, "alpha": alpha,
           "power": target_power, "n_chains_needed": _chains_needed(simulate, target_power),
           "n_chains_observed": n_observed, "contrast": f"{contrast} vs the rest of the chain",
           "method": "simulated exact sign-flip test up to 16 chains, statsmodels TTestPower above, from the "
                     "between-chain SD of the position-adjusted per-chain contrast"}
    out["power_at_observed"] = float(simulate(n_observed)) if n_observed and n_observed > 1 else None
    return out


class _SignFlipPower:
    """Power of the two-sided sign-flip test at ``n`` chains for a standardized effect (cached)."""

    def __init__(self, effect: float, alpha: float, n_sim: int, seed: int, screen: float | None = None):
        self.effect, self.alpha, self.n_sim, self.seed, self.cache = effect, alpha, n_sim, seed, {}
        self.screen = screen  # skip simulating sizes whose t-test power is below this

    def __call__(self, n: int) -> float:
        from statsmodels.stats.power import TTestPower

        from .inference import EXACT_MAX_CHAINS, _flip_patterns

        n = int(n)
        if n not in self.cache:
            t_power = float(TTestPower().power(effect_size=self.effect, nobs=max(n, 2), alpha=self.alpha,
                                               alternative="two-sided"))
            if n < 2 or smallest_p(n) >= self.alpha:
                value = 0.0  # the test cannot reject at this size
            elif n > EXACT_MAX_CHAINS:
                value = t_power
            elif self.screen is not None and t_power < self.screen:
                # Under normal contrasts the t-test is the uniformly most powerful unbiased test, so the
                # sign-flip test's power is below the t-test's: no need to simulate what cannot reach the target.
                value = t_power
            else:
                rng = np.random.default_rng(self.seed + n)
                signs, _ = _flip_patterns(n, 0, rng)
                draws = rng.normal(self.effect, 1.0, size=(self.n_sim, n))
                observed = np.abs(draws.sum(axis=1))
                rejected = 0
                for chunk in range(0, self.n_sim, 50):  # (50, 2**n) at a time: each draw's sign-flip distribution
                    null = np.abs(draws[chunk:chunk + 50] @ signs.T)
                    p = (null >= observed[chunk:chunk + 50, None] * (1 - 1e-12)).mean(axis=1)
                    rejected += int((p < self.alpha).sum())
                value = rejected / self.n_sim
            self.cache[n] = 0.0 if not math.isfinite(value) else value
        return self.cache[n]


def _chains_needed(power_at: _SignFlipPower, target: float) -> int:
    """Smallest whole number of chains whose power reaches ``target`` (never one whose smallest
    attainable p is above alpha: there power is 0). Linear up to 16 chains (the simulated exact test
    is not smooth in n), then doubling and bisection over the monotone t-test power."""
    screened = _SignFlipPower(power_at.effect, power_at.alpha, power_at.n_sim, power_at.seed, screen=target)
    screened.cache = power_at.cache if power_at.screen == target else {}
    for n in range(2, 17):
        if screened(n) >= target:
            return n
    power_at = screened
    high = 32
    while power_at(high) < target:
        if high > 10 ** 7:
            raise CotSurvivalError("E043", reason="more than 10 million chains would be needed")
        high *= 2
    low = high // 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if power_at(mid) >= target else (mid, high)
    return max(high, 17)
