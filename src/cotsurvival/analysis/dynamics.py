"""Is importance static or dynamic? Rankings along the greedy trajectory, from the traces.

Conventions: at every step the remaining tokens are ranked by their deletion cost, lowest
first with ties to the lower position (the greedy rule), so rank 0 is the token deleted at that
step. A token's *percentile* is ``rank / (n_remaining - 1)``: 0 = least important, 1 = most.

* static order: step 1's costs (leave-one-out on the full chain);
* ``static_pct``: the token's percentile at step 1;
* ``greedy_pct``: its place in the greedy deletion order, ``(deleted_step - 1) / (N - 1)``;
* ``rank_shift = greedy_pct - static_pct``: > 0 means the token outlived what its static cost
  predicted (it became more important as others were deleted).
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import CotSurvivalError
from ..rundir import RunDir
from .data import as_rundir
from .inference import mean_ci

TRACE_COLUMNS = ["step", "position", "cost"]


def rank_trajectories(run: str | os.PathLike | RunDir, chain_index: int) -> pd.DataFrame:
    """Every remaining token's rank and percentile at every step of one chain.

    Returns
    -------
    pandas.DataFrame
        ``step, position, cost, n_remaining, rank, percentile`` (rank 0 = deleted at that step).
    """
    run = as_rundir(run)
    if not run.has_part("traces", chain_index):
        raise CotSurvivalError("E041", reason=f"chain {chain_index} has no traces (traces.parquet/part-{chain_index:06d})")
    trace = run.read_part("traces", chain_index, columns=TRACE_COLUMNS)
    return _rank(trace)


def _rank(trace: pd.DataFrame) -> pd.DataFrame:
    trace = trace.sort_values(["step", "cost", "position"], kind="stable").reset_index(drop=True)
    trace["rank"] = trace.groupby("step").cumcount()
    trace["n_remaining"] = trace.groupby("step")["position"].transform("size")
    denominator = (trace["n_remaining"] - 1).where(trace["n_remaining"] > 1)
    trace["percentile"] = (trace["rank"] / denominator).fillna(0.0)
    return trace[["step", "position", "cost", "n_remaining", "rank", "percentile"]]


def static_vs_greedy(run: str | os.PathLike | RunDir, tokens: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compare each chain's static (step-1) order with its greedy deletion order.

    Traces are read one chain at a time.

    Parameters
    ----------
    run : str, PathLike or RunDir
    tokens : pandas.DataFrame
        From :func:`~cotsurvival.analysis.load_run`.

    Returns
    -------
    per_token : pandas.DataFrame
        ``chain_index, position, static_cost, static_pct, greedy_pct, rank_shift`` joined to
        ``label, category, survival, censored``. ``greedy_pct`` and ``rank_shift`` are missing for
        censored tokens (their place in the order is unknown).
    per_chain : pandas.DataFrame
        ``chain_index, n_tokens, n_deleted, kendall_tau, p``: Kendall's tau-b between step-1
        cost and survival (censored tokens tied at the end); missing for chains under 3 tokens.
    """
    run = as_rundir(run)
    available = set(run.part_indices("traces"))
    if not available:
        raise CotSurvivalError("E041", reason="the run has no traces.parquet (needed for dynamics)")
    token_rows, chain_rows = [], []
    for index, chain in tokens.groupby("chain_index", sort=True):
        if index not in available:
            continue
        trace = run.read_part("traces", index, columns=TRACE_COLUMNS)
        static = _rank(trace[trace["step"] == 1])[["position", "cost", "percentile"]]
        static.columns = ["position", "static_cost", "static_pct"]
        merged = chain.merge(static, on="position", how="left")
        token_rows.append(merged)
        chain_rows.append(_chain_tau(index, merged))
    if not token_rows:
        raise CotSurvivalError("E041", reason="no chain of the token table has traces")
    per_token = pd.concat(token_rows, ignore_index=True)
    n = per_token["n_tokens"]
    deleted = per_token["deleted_step"].astype(float)
    per_token["greedy_pct"] = ((deleted - 1) / (n - 1).where(n > 1)).where(~per_token["censored"])
    per_token.loc[(n == 1) & ~per_token["censored"], "greedy_pct"] = 0.0
    per_token["rank_shift"] = per_token["greedy_pct"] - per_token["static_pct"]
    columns = ["chain_index", "chain_id", "position", "n_tokens", "label", "category", "survival", "censored",
               "deleted_step", "static_cost", "static_pct", "greedy_pct", "rank_shift"]
    return per_token[columns], pd.DataFrame(chain_rows)


def _chain_tau(index: int, chain: pd.DataFrame) -> dict:
    row = {"chain_index": int(index), "n_tokens": int(len(chain)), "n_deleted": int((~chain["censored"]).sum()),
           "kendall_tau": np.nan, "p": np.nan}
    ok = chain["static_cost"].notna()
    if ok.sum() >= 3 and chain.loc[ok, "survival"].nunique() > 1 and chain.loc[ok, "static_cost"].nunique() > 1:
        tau = stats.kendalltau(chain.loc[ok, "static_cost"], chain.loc[ok, "survival"])
        row.update(kendall_tau=float(tau.statistic), p=float(tau.pvalue))
    return row


def rank_shift_by_group(per_token: pd.DataFrame, group: str = "category") -> tuple[pd.DataFrame, dict]:
    """Mean rank shift and mean absolute shift per group, with a Kruskal–Wallis test of shift.

    Returns
    -------
    table : pandas.DataFrame
        ``group, mean_shift, mean_abs_shift, share_up, n_tokens, n_chains``.
    test : dict
        Kruskal–Wallis across groups: ``H, p, n_tokens, n_chains`` (or ``note``).
    """
    frame = per_token.dropna(subset=["rank_shift", group])
    rows = [{"group": name, "mean_shift": float(sub["rank_shift"].mean()),
             "mean_abs_shift": float(sub["rank_shift"].abs().mean()), "share_up": float((sub["rank_shift"] > 0).mean()),
             "n_tokens": int(len(sub)), "n_chains": int(sub["chain_index"].nunique())}
            for name, sub in frame.groupby(group, sort=True)]
    samples = [sub["rank_shift"].to_numpy() for _, sub in frame.groupby(group, sort=True)]
    test = {"n_tokens": int(len(frame)), "n_chains": int(frame["chain_index"].nunique())}
    if len(samples) < 2:
        test["note"] = f"rank shift compared across {group}: needs at least 2 groups with deleted tokens"
    elif np.ptp(frame["rank_shift"]) == 0:
        test["note"] = "every token has the same rank shift"
    else:
        h, p = stats.kruskal(*samples)
        test.update(H=float(h), p=float(p), unit="tokens treated as independent")
    return pd.DataFrame(rows), test


def bottom_quartile_rescue(per_token: pd.DataFrame, group: str = "category", *, quantile: float = 0.25,
                           past: float = 0.5) -> tuple[pd.DataFrame, dict]:
    """Of the tokens in the bottom quartile at step 1, what share survives past the median?

    "Bottom quartile" means ``static_pct < quantile`` (least important a priori); "past the
    median" means normalized survival ``> past`` (a censored token counts when its run went
    past ``past``). The shares are compared across groups with a chi-square test of
    independence (Fisher's exact test for a 2 x 2 table).

    Returns
    -------
    table : pandas.DataFrame
        ``group, n_bottom, n_rescued, share_rescued, n_chains``.
    test : dict
        ``test, statistic, p, n_tokens, n_chains`` (or ``note``).
    """
    frame = per_token.dropna(subset=["static_pct", group])
    bottom = frame[frame["static_pct"] < quantile].copy()
    known = ~bottom["censored"] | (bottom["survival"] >= past)
    bottom = bottom[known]
    bottom["rescued"] = bottom["survival"] > past
    bottom.loc[bottom["censored"], "rescued"] = True
    rows = [{"group": name, "n_bottom": int(len(sub)), "n_rescued": int(sub["rescued"].sum()),
             "share_rescued": float(sub["rescued"].mean()), "n_chains": int(sub["chain_index"].nunique())}
            for name, sub in bottom.groupby(group, sort=True)]
    table = pd.DataFrame(rows, columns=["group", "n_bottom", "n_rescued", "share_rescued", "n_chains"])
    test = {"n_tokens": int(len(bottom)), "n_chains": int(bottom["chain_index"].nunique()) if len(bottom) else 0}
    contingency = np.column_stack([table["n_rescued"], table["n_bottom"] - table["n_rescued"]]) if len(table) else None
    if contingency is None or len(table) < 2:
        test["note"] = f"rescue compared across {group}: needs bottom-quartile tokens in at least 2 groups"
    elif (contingency.sum(axis=0) == 0).any():
        test["note"] = "rescue is all-or-none in every group; nothing to test"
    elif contingency.shape == (2, 2):
        result = stats.fisher_exact(contingency)
        test.update(test="fisher_exact", statistic=float(result.statistic), p=float(result.pvalue))
    else:
        chi2, p, dof, expected = stats.chi2_contingency(contingency)
        if (expected < 5).any():
            # Small expected counts: the chi-square approximation fails, so the p-value comes from the
            # statistic's distribution with both margins fixed (random permutations of the rescue flags
            # across groups, the r x 2 analogue of Fisher's exact test; scipy has no exact r x c test).
            p = _permutation_chi2_p(bottom[group].astype(str).to_numpy(), bottom["rescued"].to_numpy(bool), chi2)
            test.update(test="permutation_chi2 (fixed margins, 10000 permutations)", statistic=float(chi2),
                        df=int(dof), p=float(p))
        else:
            test.update(test="chi2_contingency", statistic=float(chi2), df=int(dof), p=float(p))
    test["unit"] = "tokens treated as independent"
    return table, test


def _permutation_chi2_p(groups: np.ndarray, flags: np.ndarray, observed: float, n_resamples: int = 10000,
                        seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    names, codes = np.unique(groups, return_inverse=True)
    sizes = np.bincount(codes, minlength=len(names)).astype(float)
    total, k = flags.sum(), len(flags)
    expected_yes = sizes * total / k
    expected_no = sizes - expected_yes
    hits = 0
    for _ in range(n_resamples):
        yes = np.bincount(codes, weights=rng.permutation(flags), minlength=len(names))
        stat = ((yes - expected_yes) ** 2 / expected_yes).sum() + (((sizes - yes) - expected_no) ** 2 / expected_no).sum()
        hits += stat >= observed * (1 - 1e-9)
    return (hits + 1) / (n_resamples + 1)


def degradation_curves(run: str | os.PathLike | RunDir, *, grid: int = 21, alpha: float = 0.05
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Objective against fraction of reasoning tokens pruned, per chain and pooled.

    ``change`` is the objective after a step *minus* the objective of the unpruned chain (nats;
    it starts at 0; negative: the model finds the answer less likely, positive: more likely; the
    objective is a log-likelihood, so a positive change is possible). Pooled curves are
    *interpolated*: each chain's steps sit at fractions k/N of its own length N, so each chain is
    interpolated linearly onto ``grid`` evenly spaced fractions in [0, 1] (never extrapolating past
    the chain's last step) before the mean over chains and its t-interval (docs/statistics.md,
    "Degradation curve").

    Returns
    -------
    per_chain : pandas.DataFrame
        ``chain_index, step, fraction_pruned, objective, change``.
    pooled : pandas.DataFrame
        ``fraction_pruned, mean_change, lower, upper, median_change, n_chains`` (``attrs["notes"]``
        says that the values are interpolated and what the sign means).
    """
    run = as_rundir(run)
    steps = run.read_table("steps", columns=["chain_index", "step", "objective", "n_remaining"])
    steps = steps.sort_values(["chain_index", "step"], kind="stable")
    first = steps.groupby("chain_index")[["objective", "n_remaining"]].transform("first")
    n = first["n_remaining"].where(first["n_remaining"] > 0)
    steps["fraction_pruned"] = (steps["step"] / n).fillna(0.0)
    steps["change"] = steps["objective"] - first["objective"]
    fractions = np.linspace(0.0, 1.0, grid)
    curves = []
    for _, chain in steps.groupby("chain_index", sort=True):
        x, y = chain["fraction_pruned"].to_numpy(), chain["change"].to_numpy()
        curves.append(np.where(fractions <= x.max() + 1e-12, np.interp(fractions, x, y), np.nan))
    matrix = np.vstack(curves)
    rows = []
    for j, fraction in enumerate(fractions):
        summary = mean_ci(matrix[:, j], alpha=alpha)
        rows.append({"fraction_pruned": float(fraction), "mean_change": summary["mean"], "lower": summary["lower"],
                     "upper": summary["upper"], "median_change": summary["median"], "n_chains": summary["n"]})
    per_chain = steps[["chain_index", "step", "fraction_pruned", "objective", "change"]].reset_index(drop=True)
    pooled = pd.DataFrame(rows)
    # Fractions no chain reached (a run stopped at a keep ratio) are left out rather than shown as NaN.
    pooled = pooled[pooled["n_chains"] > 0].reset_index(drop=True)
    pooled.attrs["notes"] = [CHANGE_NOTE]
    return per_chain, pooled


#: What the degradation table's numbers are, stored with it (stats.json table_notes) and in the notes.
CHANGE_NOTE = ("mean_change/median_change: objective after pruning minus the unpruned objective (nats; negative = "
               "the answer became less likely), each chain linearly interpolated onto the grid of fractions pruned")
