"""Survival of tokens by category: Kaplan–Meier curves, log-rank tests and Cox models.

Time is the normalized survival (``deleted_step / n_tokens``); the event is a deletion, so
tokens still present when a run stopped at a keep ratio are right-censored.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import CotSurvivalError
from .inference import holm

Z95 = float(stats.norm.ppf(0.975))


def kaplan_meier(
    df: pd.DataFrame,
    group: str | None = "category",
    *,
    time: str = "survival",
    censored: str = "censored",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Kaplan–Meier survival curves with pointwise confidence bands, per group.

    Parameters
    ----------
    df : pandas.DataFrame
        A token table (e.g. from :func:`~cotsurvival.analysis.load_run`).
    group : str or None, default "category"
        Column to split by; ``None`` gives one pooled curve (group ``"all"``). Rows whose group
        is missing are left out.
    time, censored : str
        Columns with the survival time and the censoring flag (event = not censored).
    alpha : float, default 0.05
        Bands cover ``1 - alpha``. They use Greenwood's variance on the log(-log) scale (as
        lifelines and R's ``survival`` with ``conf.type="log-log"``), so they stay in [0, 1].

    Returns
    -------
    pandas.DataFrame
        ``group, time, survival, lower, upper, at_risk, events``: one row at time 0
        (survival 1) and one per distinct event time. ``at_risk`` counts tokens still present
        just before ``time``.
    """
    _require_columns(df, [time, censored] + ([group] if group else []))
    frame = df.dropna(subset=[time] + ([group] if group else []))
    keys = ["all"] * len(frame) if group is None else frame[group]
    curves = [_km_one(sub[time].to_numpy(float), ~sub[censored].to_numpy(bool), name, alpha)
              for name, sub in frame.groupby(keys, sort=True, observed=True)]
    columns = ["group", "time", "survival", "lower", "upper", "at_risk", "events"]
    if not curves:
        return pd.DataFrame(columns=columns)
    return pd.concat(curves, ignore_index=True)[columns]


def _km_one(time: np.ndarray, event: np.ndarray, name, alpha: float) -> pd.DataFrame:
    # statsmodels' SurvfuncRight computes the estimate, Greenwood SE, numbers at risk and events; the
    # log(-log) band is formed here from its counts (Greenwood sum = (se / S)^2; SurvfuncRight offers only a
    # simultaneous band). A group
    # with no events (all censored) makes SurvfuncRight fail, so its flat curve is written directly.
    from statsmodels.duration.survfunc import SurvfuncRight

    if not event.any():
        times = np.empty(0)
        survival = greenwood = np.empty(0)
        at_risk, events = np.empty(0, dtype=int), np.empty(0, dtype=int)
    else:
        fit = SurvfuncRight(time, event.astype(int))
        keep = np.asarray(fit.n_events) > 0
        times = np.asarray(fit.surv_times, float)[keep]
        survival = np.asarray(fit.surv_prob, float)[keep]
        at_risk = np.asarray(fit.n_risk, float)[keep].astype(int)
        events = np.asarray(fit.n_events, float)[keep].astype(int)
        with np.errstate(divide="ignore", invalid="ignore"):
            greenwood = np.cumsum(events / (at_risk * (at_risk - events)))  # = (se / S)^2 where S > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        z = float(stats.norm.ppf(1 - alpha / 2))
        log_s = np.log(survival)
        half = z * np.sqrt(greenwood) / log_s
        lower = np.exp(-np.exp(np.log(-log_s) - half))
        upper = np.exp(-np.exp(np.log(-log_s) + half))
    # S = 0 (everyone deleted): the band collapses to 0; S = 1 cannot happen at an event time.
    lower = np.where(survival <= 0, 0.0, lower)
    upper = np.where(survival <= 0, 0.0, upper)
    curve = pd.DataFrame({"group": name, "time": np.r_[0.0, times], "survival": np.r_[1.0, survival],
                          "lower": np.r_[1.0, lower], "upper": np.r_[1.0, upper],
                          "at_risk": np.r_[len(time), at_risk].astype(int), "events": np.r_[0, events].astype(int)})
    return curve


def _require_columns(df: pd.DataFrame, columns: list[str]) -> None:
    for column in columns:
        if column not in df.columns:
            raise CotSurvivalError("E042", column=column, available=", ".join(map(str, df.columns)))


# --------------------------------------------------------------------------- shared helpers
def _counts(df: pd.DataFrame) -> dict:
    """``n_tokens`` and ``n_chains`` of a table: every statistic carries them."""
    return {"n_tokens": int(len(df)), "n_chains": int(df["chain_index"].nunique()) if "chain_index" in df else 0}


def _usable(df: pd.DataFrame, group: str, *, time: str = "survival", min_groups: int = 2) -> pd.DataFrame:
    """Rows with a time and a group; raises E041 when fewer than ``min_groups`` groups remain."""
    _require_columns(df, [group, time, "censored", "chain_index"])
    frame = df.dropna(subset=[group, time])
    present = frame[group].nunique()
    if present < min_groups:
        names = ", ".join(map(str, sorted(frame[group].unique()))) or "none"
        raise CotSurvivalError("E041", reason=f"needs at least {min_groups} {group} groups with tokens; found {present} ({names})")
    return frame


def _dummies(values: pd.Series, reference, prefix: str) -> pd.DataFrame:
    levels = sorted(values.unique(), key=str)
    if reference is None:
        reference = values.value_counts().sort_index().idxmax()  # largest group; ties by name
    if reference not in levels:
        raise CotSurvivalError("E088", option=f"reference {prefix}", value=reference, choices=", ".join(map(str, levels)))
    columns = {f"{prefix}[{level}]": (values == level).astype(float).to_numpy() for level in levels if level != reference}
    frame = pd.DataFrame(columns, index=values.index)
    frame.attrs["reference"] = reference
    return frame


def _covariates(frame: pd.DataFrame, covariates, notes: list[str]) -> pd.DataFrame:
    """Numeric covariate columns; constant ones are dropped (they are not identifiable) with a note."""
    kept = {}
    for name in covariates:
        _require_columns(frame, [name])
        column = frame[name].astype(float)
        if column.nunique() < 2:
            notes.append(f"covariate {name!r} is constant ({column.iloc[0] if len(column) else 'empty'}); left out of the model")
            continue
        kept[name] = column.to_numpy()
    return pd.DataFrame(kept, index=frame.index)


# --------------------------------------------------------------------------- log-rank
def logrank_test(df: pd.DataFrame, group: str = "category", *, time: str = "survival") -> dict:
    """Log-rank test that all groups share one survival curve.

    Tokens are treated as independent; :func:`cox_ph` accounts for clustering by chain.

    Returns
    -------
    dict
        ``chi2, df, p, n_tokens, n_chains, n_events, groups``.
    """
    from statsmodels.duration.survfunc import survdiff

    frame = _usable(df, group, time=time)
    event = (~frame["censored"].astype(bool)).to_numpy(int)
    if event.sum() == 0:
        raise CotSurvivalError("E041", reason="no token was deleted (all censored); a log-rank test needs events")
    try:
        chi2, p = survdiff(frame[time].to_numpy(float), event, frame[group].astype(str).to_numpy())
    except np.linalg.LinAlgError:
        raise CotSurvivalError("E041", reason="the log-rank variance is zero (every deletion at the same normalized "
                               "time, e.g. only one-token chains)") from None
    groups = sorted(frame[group].astype(str).unique())
    return {"chi2": float(chi2), "df": len(groups) - 1, "p": float(p), **_counts(frame),
            "n_events": int(event.sum()), "groups": groups}


def pairwise_logrank(df: pd.DataFrame, group: str = "category", *, time: str = "survival") -> pd.DataFrame:
    """Log-rank test for every pair of groups, Holm-adjusted across pairs.

    Returns
    -------
    pandas.DataFrame
        ``group_a, group_b, chi2, p, p_holm, n_tokens, n_chains, n_events``.
    """
    frame = _usable(df, group, time=time)
    groups = sorted(frame[group].astype(str).unique())
    rows = []
    for i, a in enumerate(groups):
        for b in groups[i + 1:]:
            pair = frame[frame[group].astype(str).isin([a, b])]
            try:
                result = logrank_test(pair, group, time=time)
                rows.append({"group_a": a, "group_b": b, "chi2": result["chi2"], "p": result["p"],
                             **_counts(pair), "n_events": result["n_events"]})
            except CotSurvivalError:  # no events in this pair
                rows.append({"group_a": a, "group_b": b, "chi2": np.nan, "p": np.nan, **_counts(pair), "n_events": 0})
    table = pd.DataFrame(rows)
    table.insert(4, "p_holm", holm(table["p"]))
    return table


# --------------------------------------------------------------------------- Cox PH
#: From this many chains on, chain-clustered sandwich SEs are used; below it a chain jackknife with
#: t(C-1) reference (the sandwich with 6 chains rejected a true null about half the time, issue 11).
CLUSTER_MIN_CHAINS = 30


def _tied_events(frame: pd.DataFrame, time: str, event: np.ndarray, strata) -> bool:
    keys = [frame[strata].to_numpy(), frame[time].to_numpy()] if strata else [frame[time].to_numpy()]
    events = pd.DataFrame({f"k{i}": k[event.astype(bool)] for i, k in enumerate(keys)})
    return bool(events.duplicated().any())


def _fit_cox(df, group, covariates, reference, time, cluster, strata=None, ties=None):
    from statsmodels.duration.hazard_regression import PHReg

    frame = _usable(df, group, time=time, min_groups=1)
    notes: list[str] = []
    event = (~frame["censored"].astype(bool)).to_numpy(int)
    if event.sum() == 0:
        raise CotSurvivalError("E041", reason="no token was deleted (all censored); a Cox model needs events")
    one_group = frame[group].nunique() == 1
    dummies = pd.DataFrame(index=frame.index) if one_group else _dummies(frame[group].astype(str), reference, group)
    design = pd.concat([dummies, _covariates(frame, covariates, notes)], axis=1)
    if design.shape[1] == 0:
        raise CotSurvivalError("E041", reason=f"one {group} only and no varying covariate: nothing to model")
    if ties is None:
        # Efron (as lifelines and R). statsmodels' own score and Schoenfeld residuals are Breslow-type,
        # which with tied times would not match an Efron fit, so the residuals behind the clustered SE
        # and the PH test come from `_efron_residuals` instead (checked against lifelines on tied data).
        ties = "efron"
        if _tied_events(frame, time, event, strata):
            notes.append("tied deletion times: Efron ties, with Efron score and Schoenfeld residuals")
    kwargs = {"strata": frame[strata].to_numpy()} if strata else {}
    model = PHReg(frame[time].to_numpy(float), design.to_numpy(float), status=event, ties=ties, **kwargs)
    result = model.fit(groups=frame[cluster].to_numpy() if cluster else None)
    if one_group:
        notes.append(f"only one {group} ({frame[group].iloc[0]}); the model has covariates only")
    return frame, design, event, model, result, dummies.attrs.get("reference"), notes


def flexible_position(df: pd.DataFrame, time: str = "survival") -> tuple[pd.DataFrame, tuple[str, ...]]:
    """``df`` with the columns of the flexible position term and their names: ``rel_position_2``,
    ``rel_position_3`` (Legendre terms of degree 2 and 3), ``final_unit_jump`` (1 in the chain's final
    reasoning unit; only when ``df`` has ``final_unit`` and some chain has more than one unit) and
    ``position_jump`` (1 from the point where the chain's survival jumps most, given the rest). The same
    term as the primary chain-level test's (:data:`~cotsurvival.analysis.chainlevel.DEFAULT_ADJUSTMENT`)."""
    from numpy.polynomial import legendre

    from .chainlevel import DEFAULT_ADJUSTMENT, effective_adjustment, position_basis

    out = df.copy()
    rel = out["rel_position"].to_numpy(float)
    poly = legendre.legvander(2 * np.nan_to_num(rel) - 1, 3)
    out["rel_position_2"], out["rel_position_3"] = poly[:, 2], poly[:, 3]
    adjustment = effective_adjustment(DEFAULT_ADJUSTMENT, out)
    final = (out["final_unit"].to_numpy(dtype=float, na_value=0.0) if adjustment == DEFAULT_ADJUSTMENT
             else np.zeros(len(out)))
    jump, final_jump = np.zeros(len(out)), np.zeros(len(out))
    y = out[time].to_numpy(float)
    for index in out.groupby("chain_index", sort=False).indices.values():
        ok = index[np.isfinite(y[index]) & np.isfinite(rel[index])]
        if len(ok) >= 8:
            basis = position_basis(rel[ok], y[ok], adjustment, final_unit=final[ok])
            columns = 4  # intercept and 3 polynomial terms, then the final-unit jump, then the data-placed one
            if 0 < final[ok].sum() < len(ok):
                final_jump[ok] = final[ok]
                columns += 1
            if basis.shape[1] == columns + 1:
                jump[ok] = basis[:, columns]
    out["position_jump"] = jump
    names = ("rel_position_2", "rel_position_3", "position_jump")
    if final_jump.any():  # a jump at the final unit only where some chain has one (else the column is all 0)
        out["final_unit_jump"] = final_jump
        names = ("rel_position_2", "rel_position_3", "final_unit_jump", "position_jump")
    return out, names


def cox_ph(
    df: pd.DataFrame,
    group: str = "category",
    *,
    covariates: tuple[str, ...] = ("rel_position",),
    reference: str | None = None,
    time: str = "survival",
    cluster: str | None = "chain_index",
    strata: str | None = "chain_index",
    se: str = "auto",
    ties: str | None = None,
    position: str = "cubic_step",
) -> pd.DataFrame:
    """Cox proportional-hazards model of deletion with group dummies and covariates.

    ``position="cubic_step"`` (default) widens a ``rel_position`` covariate to the primary test's
    flexible position term (:func:`flexible_position`): a cubic in relative position, a jump where the
    chain's final reasoning unit starts (when the table has ``final_unit``) and, per chain, the jump
    where the chain's survival jumps most (:func:`~cotsurvival.analysis.chainlevel.position_basis`);
    with a linear term alone the model rejected nearly every simulated null with a sharp position effect.
    ``position="linear"`` keeps ``rel_position`` as given.

    A hazard ratio below 1 means the tokens are deleted later (survive longer) than the
    reference group's. By default the baseline hazard is stratified by chain (each chain is
    compared only with itself) and token length is *not* a covariate: it is nearly fixed by
    category and would absorb the category effect (pass ``covariates=("rel_position", "token_len")``
    for the adjusted version).

    Standard errors (``se``): ``"cluster"`` is the chain-clustered sandwich, used by ``"auto"`` from
    ``CLUSTER_MIN_CHAINS`` chains on; below that ``"auto"`` uses a leave-one-chain-out jackknife with
    t(C-1) intervals and p-values (the sandwich is anti-conservative with few clusters); ``"model"`` is
    the model-based (token-independent) SE.

    Returns
    -------
    pandas.DataFrame
        One row per term: ``term, coef, se, z, p, hr, hr_lower, hr_upper, n_tokens, n_chains,
        n_events, se_method``; ``attrs`` holds ``reference``, ``notes``, ``se_method`` and ``joint``
        (Wald test of all ``group`` terms together: ``statistic, df, df_denom, p, test``).
    """
    cluster_key = cluster or "chain_index"
    if position == "cubic_step" and "rel_position" in covariates:
        df, extra = flexible_position(df, time)
        covariates = tuple(covariates) + extra
    frame, design, event, model, result, ref, notes = _fit_cox(df, group, covariates, reference, time, None,
                                                               strata, ties)
    n_chains = int(frame[cluster_key].nunique()) if cluster_key in frame else 0
    method = se
    if se == "auto":
        method = "cluster" if n_chains >= CLUSTER_MIN_CHAINS or n_chains < 3 else "jackknife"
        if n_chains < 3:
            method = "model"
            notes.append(f"{n_chains} chains: model-based standard errors (tokens treated as independent)")
    coef = np.asarray(result.params)
    dof = np.inf
    if method == "cluster":
        cov = _robust_cov(frame, design, event, time, strata, model.ties, coef, np.asarray(result.cov_params()),
                          frame[cluster_key].to_numpy())
    elif method == "jackknife":
        cov, dof = _jackknife_cov(frame, design, event, time, cluster_key, strata, model.ties, coef)
    elif method == "model":
        cov = np.asarray(result.cov_params())
    else:
        raise CotSurvivalError("E088", option="se", value=se, choices="auto, cluster, jackknife, model")
    se_values = np.sqrt(np.diag(cov))
    z = coef / se_values
    reference_dist = stats.t(dof) if np.isfinite(dof) else stats.norm
    crit = float(reference_dist.ppf(0.975))
    table = pd.DataFrame({"term": design.columns, "coef": coef, "se": se_values, "z": z,
                          "p": 2 * reference_dist.sf(np.abs(z)), "hr": np.exp(coef),
                          "hr_lower": np.exp(coef - crit * se_values), "hr_upper": np.exp(coef + crit * se_values)})
    table = table.assign(**_counts(frame), n_events=int(event.sum()), se_method=method)
    joint = _joint_wald(coef, cov, [i for i, t in enumerate(design.columns) if t.startswith(f"{group}[")], dof)
    table.attrs.update(reference=ref, notes=notes, clustered_by=cluster_key if method == "cluster" else None,
                       se_method=method, strata=strata, joint=joint)
    return table


def _residuals(frame, design, event, time, strata, ties, beta):
    """Score and Schoenfeld residuals consistent with the fit's tie method (rows in ``frame`` order)."""
    t = frame[time].to_numpy(float)
    x = design.to_numpy(float)
    keys = frame[strata].to_numpy() if strata else np.zeros(len(t))
    return _efron_residuals(t, event.astype(bool), x, beta, keys, efron=(ties == "efron"))


def _efron_residuals(t, event, x, beta, strata, efron=True):
    """Cox score residuals and Schoenfeld residuals with Efron (or Breslow) handling of ties.

    Written with numpy because statsmodels' residuals are Breslow-type only. For an event time with
    ``d`` tied deaths, Efron's l-th partial step (l = 0..d-1) removes the fraction l/d of the tied
    subjects' risk: denominator ``S0 - l/d S0_D``, mean ``(S1 - l/d S1_D) / den``, hazard ``1/den``.
    A tied death's Schoenfeld residual is ``x_i`` minus the average of the d means; its at-risk term
    at its own time carries weight ``1 - l/d``. The score residuals sum to the score (0 at the MLE).
    """
    n, p = x.shape
    score = np.zeros((n, p))
    schoenfeld = np.full((n, p), np.nan)
    risk = np.exp(x @ beta)
    for key in np.unique(strata):
        idx = np.flatnonzero(strata == key)
        ti, ei, xi, ri = t[idx], event[idx], x[idx], risk[idx]
        event_times = np.unique(ti[ei])
        if not len(event_times):
            continue
        m = len(event_times)
        abar, hs, ms, hw, mw = (np.zeros((m, p)), np.zeros(m), np.zeros((m, p)), np.zeros(m), np.zeros((m, p)))
        for j, time_j in enumerate(event_times):
            at_risk = ti >= time_j
            dead = (ti == time_j) & ei
            s0, s1 = ri[at_risk].sum(), ri[at_risk] @ xi[at_risk]
            s0d, s1d = ri[dead].sum(), ri[dead] @ xi[dead]
            d = int(dead.sum())
            steps = np.arange(d) / d if efron else np.zeros(d)
            den = s0 - steps * s0d
            means = (s1[None, :] - steps[:, None] * s1d[None, :]) / den[:, None]
            h = 1.0 / den
            abar[j] = means.mean(axis=0)
            hs[j], ms[j] = h.sum(), h @ means
            keep = 1 - steps
            hw[j], mw[j] = (keep * h).sum(), (keep * h) @ means
        cum_h, cum_m = np.cumsum(hs), np.cumsum(ms, axis=0)
        last = np.searchsorted(event_times, ti, side="right") - 1  # last event time <= own time
        seen = last >= 0
        resid = np.zeros((len(idx), p))
        resid[seen] = -ri[seen, None] * (xi[seen] * cum_h[last[seen], None] - cum_m[last[seen]])
        own = ei  # deaths: Schoenfeld part, and their own-time at-risk term reweighted by 1 - l/d
        j = last[own]
        resid[own] += xi[own] - abar[j]
        resid[own] += ri[own, None] * ((xi[own] * hs[j, None] - ms[j]) - (xi[own] * hw[j, None] - mw[j]))
        score[idx] = resid
        schoenfeld[idx[own]] = xi[own] - abar[j]
    return score, schoenfeld


def _robust_cov(frame, design, event, time, strata, ties, beta, model_cov, clusters):
    """Chain-clustered sandwich ``V (sum_c U_c U_c') V`` from tie-consistent score residuals."""
    score, _ = _residuals(frame, design, event, time, strata, ties, beta)
    _, codes = np.unique(clusters, return_inverse=True)
    grouped = np.zeros((codes.max() + 1, score.shape[1]))
    np.add.at(grouped, codes, score)
    return model_cov @ (grouped.T @ grouped) @ model_cov


def _jackknife_cov(frame, design, event, time, cluster, strata, ties, coef):
    """Leave-one-chain-out jackknife covariance ((C-1)/C sum of outer products); t(C-1) reference."""
    from statsmodels.duration.hazard_regression import PHReg

    chains = frame[cluster].to_numpy()
    unique = np.unique(chains)
    x, t = design.to_numpy(float), frame[time].to_numpy(float)
    estimates = []
    for chain in unique:
        keep = chains != chain
        kwargs = {"strata": frame[strata].to_numpy()[keep]} if strata else {}
        # Warm start at the full-data estimate: one or two Newton steps instead of a fit from zero.
        fit = PHReg(t[keep], x[keep], status=event[keep], ties=ties, **kwargs).fit(start_params=coef)
        estimates.append(np.asarray(fit.params))
    est = np.array(estimates)
    c = len(unique)
    centred = est - est.mean(axis=0)
    return (c - 1) / c * centred.T @ centred, float(c - 1)


def _joint_wald(coef, cov, index, dof) -> dict:
    """Wald test of several terms together. With a chain jackknife (finite ``dof`` = C - 1) the
    Hotelling scaling: W (C - k) / (k (C - 1)) against F(k, C - k), the exact reference for a Wald
    statistic whose covariance is estimated from C replicates (W / k against F(k, C - 1) rejected a
    quarter of simulated nulls with 6 chains)."""
    if not index:
        return {}
    beta, v = coef[index], cov[np.ix_(index, index)]
    statistic = float(beta @ np.linalg.lstsq(v, beta, rcond=None)[0])
    k = int(np.linalg.matrix_rank(v))
    if np.isfinite(dof):
        c = int(round(dof)) + 1
        if c - k < 1:
            return {"statistic": float("nan"), "df": k, "df_denom": float(c - k), "p": float("nan"),
                    "wald": statistic, "test": f"joint Wald, Hotelling-scaled F (chain jackknife): {c} chains "
                                               f"cannot test {k} terms jointly"}
        scaled = statistic * (c - k) / (k * (c - 1))
        return {"statistic": scaled, "df": k, "df_denom": float(c - k), "wald": statistic,
                "p": float(stats.f.sf(scaled, k, c - k)), "test": "joint Wald, Hotelling-scaled F (chain jackknife)"}
    return {"statistic": statistic, "df": k, "df_denom": None, "p": float(stats.chi2.sf(statistic, k)),
            "test": "joint Wald chi-square"}


def ph_test(
    df: pd.DataFrame,
    group: str = "category",
    *,
    covariates: tuple[str, ...] = ("rel_position",),
    reference: str | None = None,
    time: str = "survival",
    strata: str | None = "chain_index",
    transform: str = "rank",
) -> pd.DataFrame:
    """Proportional-hazards check: scaled Schoenfeld residuals against rank of event time.

    The Grambsch–Therneau one-degree-of-freedom test per term, in the form lifelines'
    ``proportional_hazard_test(..., time_transform="rank")`` computes (model-based variance,
    residuals scaled by ``n_events * V``). A small p means the term's hazard ratio drifts over the
    pruning (its effect is not constant in time). Holm-adjusted across terms.

    Returns
    -------
    pandas.DataFrame
        ``term, chi2, p, p_holm, n_tokens, n_chains, n_events``.
    """
    frame, design, event, model, result, _, notes = _fit_cox(df, group, covariates, reference, time, None, strata)
    _, resid = _residuals(frame, design, event, time, strata, model.ties, np.asarray(result.params))
    is_event = event.astype(bool)
    resid = resid[is_event]
    variance = np.asarray(result.cov_params())
    n_events = int(is_event.sum())
    scaled = n_events * resid @ variance
    event_times = frame[time].to_numpy(float)[is_event]
    # "rank": average ranks of the event times (R's cox.zph convention; invariant to the order of ties)
    times = stats.rankdata(event_times) if transform == "rank" else event_times
    centered = times - times.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = (centered @ scaled) ** 2 / (n_events * np.diag(variance) * (centered ** 2).sum())
    table = pd.DataFrame({"term": design.columns, "chi2": chi2, "p": stats.chi2.sf(chi2, 1)})
    table["p_holm"] = holm(table["p"])
    table = table.assign(**_counts(frame), n_events=n_events)
    table.attrs["notes"] = notes
    return table


# --------------------------------------------------------------------------- medians and means
def survival_summary(
    df: pd.DataFrame,
    group: str = "category",
    *,
    time: str = "survival",
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Median and mean normalized survival per group with chain-cluster bootstrap CIs.

    ``mean`` is *the* mean normalized survival of the project (docs/statistics.md): the mean over
    chains of each chain's mean over its tokens in the group, with the percentile chain-bootstrap
    CI of :func:`mean_normalized_survival` (the function ``compare`` uses too, so the same run gives
    the same number in both). ``median`` is the median over the group's tokens (pooled).

    Chains are resampled with replacement (``n_boot`` times, seeded) and every token of a drawn
    chain comes along, so the intervals respect the dependence of tokens within a chain. The
    bootstrap is written with numpy rather than a library because scipy's ``bootstrap``
    resamples observations, not clusters.

    With censoring (a run stopped at a keep ratio > 0) the median is the Kaplan–Meier median
    (``nan`` with ``method`` saying so when fewer than half the group was deleted) and no mean
    is given, since a mean of censored times would be biased.

    Returns
    -------
    pandas.DataFrame
        ``group, n_tokens, n_chains, n_events, median, median_lower, median_upper, mean,
        mean_lower, mean_upper, method``.
    """
    frame = _usable(df, group, time=time, min_groups=1)
    censored = bool(frame["censored"].any())
    chains, codes = np.unique(frame["chain_index"].to_numpy(), return_inverse=True)
    rng = np.random.default_rng(seed)
    draws = [np.bincount(rng.integers(0, len(chains), len(chains)), minlength=len(chains)) for _ in range(n_boot)]
    rows = []
    for name, sub in frame.groupby(group, sort=True):
        idx = sub.index.to_numpy()
        values = sub[time].to_numpy(float)
        events = ~sub["censored"].to_numpy(bool)
        sub_codes = codes[frame.index.get_indexer(idx)]
        stat = _km_median if censored else _weighted_median_mean
        point = list(stat(values, events, np.ones(len(values))))
        boot = np.array([stat(values, events, counts[sub_codes]) for counts in draws]) if n_boot else np.empty((0, 2))
        lo, hi = _percentile_ci(boot, alpha, nan_is_inf=censored)
        method = ("Kaplan-Meier median; chain bootstrap CI; mean not estimable under censoring" if censored
                  else "sample median and mean; chain bootstrap CI")
        if censored and np.isnan(point[0]):
            method = "median not reached (under half the group deleted before the run stopped)"
            lo[0] = hi[0] = np.nan
        elif censored and np.isnan(hi[0]) and n_boot:
            method += "; upper CI limit not reached"
        if not n_boot:
            method = method.replace("chain bootstrap CI", "no CI (n_boot=0)")
        if not censored:  # the chain-level mean (one definition), not the token-pooled one
            chain_mean = mean_normalized_survival(sub, group, n_boot=n_boot, seed=seed, alpha=alpha).iloc[0]
            point[1], lo[1], hi[1] = chain_mean["mean"], chain_mean["ci_low"], chain_mean["ci_high"]
            method = method.replace("sample median and mean", "token median, mean over chains of per-chain means")
        rows.append({"group": name, **_counts(sub), "n_events": int(events.sum()), "median": point[0],
                     "median_lower": lo[0], "median_upper": hi[0], "mean": point[1], "mean_lower": lo[1],
                     "mean_upper": hi[1], "method": method})
    table = pd.DataFrame(rows)
    table.attrs.update(n_boot=n_boot, seed=seed)
    return table


def mean_normalized_survival(df: pd.DataFrame, group: str = "category", *, time: str = "survival",
                             n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """Mean normalized survival per group: the one definition every output uses (docs/statistics.md).

    Per group, each chain's mean normalized survival over its tokens in the group, then the mean
    over chains (the chain is the unit: a long chain does not weigh more), with a percentile
    chain-bootstrap CI (:func:`~cotsurvival.analysis.inference.bootstrap_ci`, ``n_boot`` resamples,
    ``seed``). Tokens still present when the run stopped (censored) enter at the run's last step, so
    under censoring the mean is a lower bound (``censored`` says so; ``analyze`` then gives none).

    Returns
    -------
    pandas.DataFrame
        ``group, n_chains, n_tokens, mean, ci_low, ci_high, censored``.
    """
    from .inference import bootstrap_ci

    frame = df.dropna(subset=[group, time])
    rows = []
    for name, sub in frame.groupby(group, sort=True):
        per_chain = sub.groupby("chain_index")[time].mean()
        ci = bootstrap_ci(per_chain.to_numpy(float), n_resamples=n_boot, seed=seed, alpha=alpha) if n_boot else \
            {"estimate": float(per_chain.mean()), "ci_low": np.nan, "ci_high": np.nan, "n_chains": len(per_chain)}
        rows.append({"group": name, "n_chains": int(ci["n_chains"]), "n_tokens": int(len(sub)), "mean": ci["estimate"],
                     "ci_low": ci["ci_low"], "ci_high": ci["ci_high"],
                     "censored": bool(sub["censored"].any()) if "censored" in sub else False})
    return pd.DataFrame(rows, columns=["group", "n_chains", "n_tokens", "mean", "ci_low", "ci_high", "censored"])


def _percentile_ci(boot: np.ndarray, alpha: float, nan_is_inf: bool) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval per column.

    With ``nan_is_inf`` a nan is a Kaplan-Meier median 'not reached' and counts as +inf;
    otherwise it is a resample in which the group was absent, and is dropped.
    """
    if len(boot) == 0:
        return np.full(2, np.nan), np.full(2, np.nan)
    lo, hi = [], []
    for column in boot.T:
        if np.isnan(column).all():
            lo.append(np.nan), hi.append(np.nan)
            continue
        column = np.where(np.isnan(column), np.inf, column) if nan_is_inf else column[~np.isnan(column)]
        q = np.quantile(column, [alpha / 2, 1 - alpha / 2])
        lo.append(q[0] if np.isfinite(q[0]) else np.nan), hi.append(q[1] if np.isfinite(q[1]) else np.nan)
    return np.array(lo), np.array(hi)


def _weighted_median_mean(values, events, weights) -> tuple[float, float]:
    """Median and mean of the sample in which value i appears ``weights[i]`` times (exactly)."""
    total = weights.sum()
    if total == 0:
        return np.nan, np.nan
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    k1, k2 = (total + 1) // 2, total // 2 + 1  # 1-based middle positions of the expanded sample
    sorted_values = values[order]
    median = 0.5 * (sorted_values[np.searchsorted(cum, k1)] + sorted_values[np.searchsorted(cum, k2)])
    return float(median), float(np.dot(weights, values) / total)


def _km_median(values, events, weights) -> tuple[float, float]:
    """Kaplan–Meier median with frequency weights (smallest time where S(t) <= 0.5)."""
    times, inverse = np.unique(values, return_inverse=True)
    d = np.bincount(inverse, weights=weights * events, minlength=len(times))
    n = np.bincount(inverse, weights=weights, minlength=len(times))
    at_risk = n[::-1].cumsum()[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        surv = np.cumprod(np.where(at_risk > 0, 1 - d / at_risk, 1.0))
    hit = np.flatnonzero(surv <= 0.5 + 1e-12)
    if not len(hit):
        return np.nan, np.nan
    first = hit[0]
    # As R's survfit: where S stays exactly 0.5 over an interval, the median is its midpoint
    # (so with no censoring the KM median equals the sample median).
    if abs(surv[first] - 0.5) < 1e-12:
        later = np.flatnonzero((d > 0) & (np.arange(len(times)) > first))
        if len(later):
            return float(0.5 * (times[first] + times[later[0]])), np.nan
    return float(times[first]), np.nan


# --------------------------------------------------------------------------- rank tests
def kruskal_test(df: pd.DataFrame, group: str = "category", *, time: str = "survival") -> dict:
    """Kruskal–Wallis test of normalized survival across groups (tokens as independent units).

    Returns
    -------
    dict
        ``H, df, p, epsilon2`` (effect size ``H / (n - 1)``), ``n_tokens, n_chains, groups``.
    """
    frame = _usable(df, group, time=time)
    samples = [sub[time].to_numpy(float) for _, sub in frame.groupby(group, sort=True)]
    if np.ptp(frame[time].to_numpy(float)) == 0:
        raise CotSurvivalError("E041", reason="every token has the same survival; nothing to rank")
    h, p = stats.kruskal(*samples)
    n = len(frame)
    return {"H": float(h), "df": len(samples) - 1, "p": float(p), "epsilon2": float(h / (n - 1)),
            **_counts(frame), "groups": sorted(map(str, frame[group].unique()))}


def cliffs_delta(x, y) -> float:
    """Cliff's delta, P(X > Y) - P(X < Y), from the Mann–Whitney U statistic."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    u = stats.mannwhitneyu(x, y, alternative="two-sided").statistic
    return float(2 * u / (len(x) * len(y)) - 1)


def pairwise_mannwhitney(df: pd.DataFrame, group: str = "category", *, time: str = "survival") -> pd.DataFrame:
    """Two-sided Mann–Whitney U test and Cliff's delta for every pair of groups (Holm-adjusted).

    ``delta > 0`` means ``group_a`` tokens tend to survive longer than ``group_b`` tokens.

    Returns
    -------
    pandas.DataFrame
        ``group_a, group_b, U, p, p_holm, cliffs_delta, n_a, n_b, n_tokens, n_chains``.
    """
    frame = _usable(df, group, time=time)
    groups = sorted(frame[group].astype(str).unique())
    values = {g: frame.loc[frame[group].astype(str) == g, time].to_numpy(float) for g in groups}
    rows = []
    for i, a in enumerate(groups):
        for b in groups[i + 1:]:
            x, y = values[a], values[b]
            test = stats.mannwhitneyu(x, y, alternative="two-sided")
            pair = frame[frame[group].astype(str).isin([a, b])]
            rows.append({"group_a": a, "group_b": b, "U": float(test.statistic), "p": float(test.pvalue),
                         "cliffs_delta": float(2 * test.statistic / (len(x) * len(y)) - 1),
                         "n_a": len(x), "n_b": len(y), **_counts(pair)})
    table = pd.DataFrame(rows)
    table.insert(4, "p_holm", holm(table["p"]))
    return table


# --------------------------------------------------------------------------- orderings
def ordering_effects(long: pd.DataFrame, group: str = "category", *, time: str = "survival") -> pd.DataFrame:
    """Category structure under each ordering (greedy and baselines), side by side.

    For each ordering: log-rank and Kruskal–Wallis across groups, and each group's median
    normalized survival and Cliff's delta against all other tokens (``> 0``: survives longer).

    Parameters
    ----------
    long : pandas.DataFrame
        From :func:`~cotsurvival.analysis.orderings_long`.

    Returns
    -------
    pandas.DataFrame
        One row per (ordering, group): ``ordering, group, median, cliffs_delta_vs_rest,
        logrank_chi2, logrank_p, kruskal_H, kruskal_p, epsilon2, n_tokens, n_chains`` (of the
        group) and ``n_tokens_ordering, n_chains_ordering`` (of the tests).
    """
    rows = []
    for ordering, sub in long.groupby("ordering", sort=False, observed=True):
        sub = _usable(sub, group, time=time)
        lr = _try(logrank_test, sub, group, time=time)
        kw = _try(kruskal_test, sub, group, time=time)
        for name, part in sub.groupby(group, sort=True):
            rest = sub.loc[sub[group] != name, time]
            rows.append({"ordering": str(ordering), "group": name, "median": float(part[time].median()),
                         "cliffs_delta_vs_rest": cliffs_delta(part[time], rest) if len(rest) else np.nan,
                         "logrank_chi2": lr.get("chi2", np.nan), "logrank_p": lr.get("p", np.nan),
                         "kruskal_H": kw.get("H", np.nan), "kruskal_p": kw.get("p", np.nan),
                         "epsilon2": kw.get("epsilon2", np.nan), **_counts(part),
                         "n_tokens_ordering": int(len(sub)), "n_chains_ordering": int(sub["chain_index"].nunique())})
    return pd.DataFrame(rows)


def ordering_interaction(long: pd.DataFrame, group: str = "category", *, time: str = "survival") -> dict:
    """Does the category structure differ between orderings? Wald test of category x ordering.

    A Cox model on the stacked orderings, stratified by chain x ordering, with group and group x
    ordering terms, robust standard errors clustered by chain (each chain contributes every
    ordering). Descriptive with few chains; the cited comparison is the paired chain-level test in
    ``analyze`` (``orderings_chain_level``). The Wald
    chi-square of all interaction terms tests whether hazard ratios between groups are the same
    under every ordering. Also tested against ``greedy`` one ordering at a time.

    Returns
    -------
    dict
        ``chi2, df, p, n_tokens, n_chains, orderings`` and ``per_ordering``: a list of
        ``{ordering, chi2, df, p, p_holm}`` (greedy versus that ordering).
    """
    frame = _usable(long, group, time=time)
    orderings = [str(o) for o in frame["ordering"].astype(str).unique()]
    if len(orderings) < 2:
        raise CotSurvivalError("E041", reason="no baseline orderings in the run (prune with --baselines)")
    overall = _interaction_wald(frame, group, time)
    per = []
    for name in orderings:
        if name == "greedy":
            continue
        pair = frame[frame["ordering"].astype(str).isin(["greedy", name])]
        per.append({"ordering": name, **{k: v for k, v in _interaction_wald(pair, group, time).items()
                                         if k in ("chi2", "df", "p", "note")}})
    p_holm = holm([row["p"] for row in per])
    for row, adjusted in zip(per, p_holm):
        row["p_holm"] = float(adjusted)
    return {**overall, "orderings": orderings, "per_ordering": per}


def _interaction_wald(frame: pd.DataFrame, group: str, time: str) -> dict:
    from statsmodels.duration.hazard_regression import PHReg

    event = (~frame["censored"].astype(bool)).to_numpy(int)
    if event.sum() == 0:
        raise CotSurvivalError("E041", reason="no token was deleted (all censored); nothing to compare between orderings")
    g = _dummies(frame[group].astype(str), None, group)
    o = _dummies(frame["ordering"].astype(str), "greedy", "ordering")
    inter = {f"{a}:{b}": g[a].to_numpy() * o[b].to_numpy() for a in g for b in o}
    # Stratified by chain x ordering: each ordering of each chain is its own deletion process (its own
    # baseline hazard, no tied deletion times), so the ordering main effects are absorbed by the strata.
    strata = frame["chain_index"].astype(str) + "|" + frame["ordering"].astype(str)
    design = pd.concat([g, pd.DataFrame(inter, index=frame.index)], axis=1)
    model = PHReg(frame[time].to_numpy(float), design.to_numpy(float), status=event, ties="breslow",
                  strata=strata.to_numpy())
    result = model.fit(groups=frame["chain_index"].to_numpy())
    k = len(inter)
    beta = np.asarray(result.params)[-k:]
    cov = np.asarray(result.cov_params())[-k:, -k:]
    chi2 = float(beta @ np.linalg.lstsq(cov, beta, rcond=None)[0])
    rank = int(np.linalg.matrix_rank(cov))
    out = {"chi2": chi2, "df": rank, "p": float(stats.chi2.sf(chi2, rank)), **_counts(frame),
           "n_events": int(event.sum())}
    if rank < k:
        out["note"] = (f"the chain-clustered covariance of the {k} interaction terms has rank {rank} "
                       f"(too few chains: {out['n_chains']}); the test uses {rank} degrees of freedom and is approximate")
    return out


def _try(func, *args, **kwargs) -> dict:
    """Run a test that may be undefined on this data; the reason goes in ``note``."""
    try:
        return func(*args, **kwargs)
    except CotSurvivalError as exc:
        return {"note": exc.message}
