"""The headline statistic: a chain-level, position-adjusted test of a category contrast.

Tokens are nested in chains, labels come in runs and importance varies smoothly with position,
so tests that treat tokens as independent reject a true null 7-12 times too often (issue 11,
``bench/null_calibration.py``). Here each chain is reduced to one number first:

1. within the chain, regress normalized survival on indicator(s) of the contrasted category and
   (``adjust_position=True``) a cubic Legendre polynomial in relative position; the indicator's
   coefficient is the chain's *position-adjusted difference in mean normalized survival* (without
   adjustment it is exactly the difference of the two means in that chain);
2. test across chains that these contrasts are centred on zero with
   :func:`~cotsurvival.analysis.inference.sign_flip_test` (exact enumeration up to 16 chains;
   Hotelling-type joint statistic for several contrasts), with a t-interval over chains.

The polynomial (rather than centring within position bins) is what held the level in simulation:
bins leave a within-bin trend that, when label shares drift with position, biases every chain the
same way (centring within 5 bins rejected 0.33 of 40 simulated drift nulls with 30 chains). :func:`power` turns the between-chain spread of the contrast into the number of chains
needed (statsmodels ``TTestPower``).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from numpy.polynomial import legendre

from ..errors import CotSurvivalError
from .inference import mean_ci, sign_flip_test

__all__ = ["chain_level_test", "chain_contrasts", "power", "MIN_CHAINS", "MIN_TOKENS", "DEFAULT_PRIMARY"]

#: Defaults of the minimum support below which a result is computed but not cited.
MIN_CHAINS = 5
MIN_TOKENS = 20
#: The pre-specified primary contrast: this category versus the rest of the chain.
DEFAULT_PRIMARY = "symbolic_math"
#: Degree of the within-chain position polynomial (reduced for short chains).
POSITION_DEGREE = 3


def _targets(contrast) -> list[str]:
    return [contrast] if isinstance(contrast, str) else [str(c) for c in contrast]


def chain_contrasts(
    table: pd.DataFrame,
    contrast: str | list[str] = DEFAULT_PRIMARY,
    *,
    group: str = "category",
    adjust_position: bool = True,
    time: str = "survival",
    degree: int = POSITION_DEGREE,
) -> pd.DataFrame:
    """One row per chain: its contrast(s) of ``contrast`` tokens against the rest of the chain.

    Returns
    -------
    pandas.DataFrame
        ``chain_index, n_tokens, n_target, contrast_<name>`` per target, ``cliffs_delta`` (first
        target vs rest, unadjusted). A chain with no target token or nothing else (or a design the
        polynomial makes singular) has NaN contrasts.
    """
    for column in (group, time, "chain_index"):
        if column not in table.columns:
            raise CotSurvivalError("E042", column=column, available=", ".join(map(str, table.columns)))
    targets = _targets(contrast)
    frame = table.dropna(subset=[group, time])
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
        row = {"chain_index": index, "n_tokens": len(y), "n_target": int(indicators.any(axis=1).sum())}
        values = np.full(len(targets), np.nan)
        ok = indicators.any(axis=0).all() and (~indicators.any(axis=1)).any()
        if ok:
            if adjust_position:
                rel = (chain["rel_position"].to_numpy(float) if "rel_position" in chain
                       else chain["position"].to_numpy(float) / max(chain["position"].max(), 1))
                deg = int(min(degree, max(0, (len(y) - len(targets) - 2) // 4)))
                basis = legendre.legvander(2 * rel - 1, deg)  # column 0 is the intercept
            else:
                basis = np.ones((len(y), 1))
            design = np.column_stack([indicators, basis])
            coef, _, rank, _ = np.linalg.lstsq(design, y, rcond=None)
            if rank == design.shape[1]:
                values = coef[:len(targets)]
        for t, v in zip(targets, values):
            row[f"contrast_{t}"] = float(v)
        inside = indicators[:, 0].astype(bool)
        if inside.any() and (~inside).any():
            a, b = y[inside], y[~inside]
            row["cliffs_delta"] = float((np.sign(a[:, None] - b[None, :])).mean())
        else:
            row["cliffs_delta"] = np.nan
        rows.append(row)
    columns = ["chain_index", "n_tokens", "n_target"] + [f"contrast_{t}" for t in targets] + ["cliffs_delta"]
    return pd.DataFrame(rows, columns=columns)


def chain_level_test(
    table: pd.DataFrame,
    group: str = "category",
    contrast: str | list[str] = DEFAULT_PRIMARY,
    *,
    adjust_position: bool = True,
    time: str = "survival",
    min_chains: int = MIN_CHAINS,
    min_tokens: int = MIN_TOKENS,
    n_resamples: int = 20000,
    seed: int = 0,
    alpha: float = 0.05,
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
    adjust_position : bool, default True
        Remove a smooth (cubic) within-chain position trend before contrasting.
    min_chains, min_tokens : int
        Minimum support for citing: with fewer chains contributing, or fewer tokens in the
        contrasted group(s), the result is still computed but carries ``withheld`` (a reason).

    Returns
    -------
    dict
        ``estimate`` (mean over chains of the per-chain difference in mean normalized survival;
        a list for several targets), ``ci_low``, ``ci_high`` (t-interval over chains), ``p_value``,
        ``test``, ``exact``, ``n_chains`` (contributing), ``n_tokens`` (in contributing chains),
        ``n_target_tokens``, ``sd_between_chains``, ``cliffs_delta`` with ``cliffs_delta_ci_low``/
        ``_high`` (mean per-chain Cliff's δ, unadjusted, t-interval), ``contrast``, ``group``,
        ``adjust_position``, ``per_chain`` (list of records) and, when support is too small,
        ``withheld``.
    """
    targets = _targets(contrast)
    per_chain = chain_contrasts(table, targets, group=group, adjust_position=adjust_position, time=time)
    value_columns = [f"contrast_{t}" for t in targets]
    used = per_chain.dropna(subset=value_columns)
    values = used[value_columns].to_numpy(float)
    test = sign_flip_test(values if len(targets) > 1 else values[:, 0], n_resamples=n_resamples, seed=seed,
                          alpha=alpha)
    cliff = mean_ci(used["cliffs_delta"], alpha=alpha)
    what = " and ".join(targets) + " vs the rest of the chain"
    out = {
        "contrast": what, "targets": targets, "group": group, "adjust_position": bool(adjust_position),
        "estimate": test["estimate"], "ci_low": test["ci_low"], "ci_high": test["ci_high"],
        "p_value": test["p_value"], "exact": test["exact"],
        "test": ("chain-level " + test["test"] + " on per-chain differences in mean normalized survival"
                 + (", adjusted for a cubic within-chain position trend" if adjust_position else "")),
        "n_chains": int(len(used)), "n_tokens": int(used["n_tokens"].sum()),
        "n_target_tokens": int(used["n_target"].sum()),
        "n_chains_without_contrast": int(len(per_chain) - len(used)),
        "sd_between_chains": (float(values[:, 0].std(ddof=1)) if len(used) > 1 else float("nan")),
        # Cliff's delta lies in [-1, 1]; a t-interval over few chains can reach past that, so clip it.
        "cliffs_delta": cliff["mean"], "cliffs_delta_ci_low": float(np.clip(cliff["lower"], -1.0, 1.0)),
        "cliffs_delta_ci_high": float(np.clip(cliff["upper"], -1.0, 1.0)),
        "min_chains": min_chains, "min_tokens": min_tokens,
        "per_chain": per_chain.to_dict(orient="records"),
    }
    if len(used) < min_chains or out["n_target_tokens"] < min_tokens:
        out["withheld"] = (f"{what}: {len(used)} chains with both kinds of token and {out['n_target_tokens']} "
                           f"{' / '.join(targets)} tokens, below the minimum support for citing "
                           f"({min_chains} chains, {min_tokens} tokens)")
    return out


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
) -> dict:
    """Chains needed to detect a difference ``delta`` in the primary contrast with ``target_power``.

    The between-chain standard deviation of the per-chain contrast (from the run, or ``sd``) gives
    a standardized effect ``delta / sd`` (``n_chains`` with ``sd``: the pilot's size, for the power it had); statsmodels ``TTestPower`` (one-sample t-test across
    chains, two-sided, the large-sample behaviour of the sign-flip test) solves for the number of
    chains. Checked against simulation in tests/test_analysis_chainlevel.py.

    Returns
    -------
    dict
        ``delta, sd_between_chains, effect_size, alpha, power, n_chains_needed, n_chains_observed,
        power_at_observed, contrast, method``.
    """
    from statsmodels.stats.power import TTestPower

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
    solver = TTestPower()
    out = {"delta": float(delta), "sd_between_chains": float(sd), "effect_size": effect, "alpha": alpha,
           "power": target_power, "n_chains_needed": _chains_needed(solver, effect, alpha, target_power),
           "n_chains_observed": n_observed, "contrast": f"{contrast} vs the rest of the chain",
           "method": "statsmodels TTestPower (one-sample t over chains, two-sided) from the between-chain SD "
                     "of the position-adjusted per-chain contrast"}
    out["power_at_observed"] = (float(solver.power(effect_size=effect, nobs=n_observed, alpha=alpha))
                                if n_observed and n_observed > 1 else None)
    return out


def _chains_needed(solver, effect: float, alpha: float, target: float) -> int:
    """Smallest whole number of chains (>= 2) whose t-test power reaches ``target``.

    A search over ``solver.power`` (monotone in n) instead of ``solve_power``, whose root finder
    returns NaN when the answer is below its bracket (large effects) and is not an integer.
    """
    def enough(n: int) -> bool:
        return float(solver.power(effect_size=effect, nobs=n, alpha=alpha, alternative="two-sided")) >= target

    high = 2
    while not enough(high):
        if high > 10 ** 7:
            raise CotSurvivalError("E043", reason=f"more than 10 million chains would be needed (effect size {effect:.2g})")
        high *= 2
    low = high // 2 if high > 2 else 1
    while high - low > 1:  # enough(high) holds, enough(low) does not (or low < 2)
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return max(high, 2)
