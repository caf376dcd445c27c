"""Agreement between settings against a ceiling: each setting's own replicate stability.

A run pruned with ``--replicates K`` holds K near-equal greedy paths per chain (replicate 0 the
greedy one; see :mod:`cotsurvival.analysis.stability`). For a pair of greedy views whose runs both
have replicates, on the pair's own units (:func:`cotsurvival.comparison.align.align`):

* **own τ** of each setting: per chain the mean Kendall τ-b over its pairs of replicates;
* **between τ**: per chain the mean τ-b over every (replicate of a, replicate of b) pair;
* **noise-corrected agreement**: ``mean(between) / sqrt(mean(own a) · mean(own b))`` over chains
  (:func:`cotsurvival.analysis.stability.noise_corrected_agreement`): 1 when the settings agree
  as well as each agrees with itself.

Each comes with a percentile chain-bootstrap 95% CI (chains resampled jointly for the ratio).
"""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pandas as pd

from .align import GREEDY, RunView, align


def replicate_views(view: RunView) -> list[RunView] | None:
    """One view per replicate path of a greedy view's run (replicate 0 first); None without replicates."""
    from ..analysis.stability import replicate_survival, replicates_of
    from ..rundir import RunDir

    if view.ordering != GREEDY:
        return None
    run = RunDir(view.path)
    if replicates_of(run).get("k", 1) <= 1:
        return None
    long = replicate_survival(run)
    views = []
    for replicate, rows in long.groupby("replicate", sort=True):
        rows = rows[["chain_index", "position", "deleted_step", "survival", "censored"]]
        tokens = view.tokens.drop(columns=["deleted_step", "survival", "censored"]).merge(
            rows, on=["chain_index", "position"], how="left", validate="1:1")
        tokens["deleted_step"] = pd.to_numeric(tokens["deleted_step"], errors="coerce").astype(float)
        tokens["censored"] = tokens["censored"].astype(bool)
        views.append(dataclasses.replace(view, tokens=tokens[view.tokens.columns]))
    return views if len(views) > 1 else None


def pair_stability(a: RunView, b: RunView, chain_ids: list[str], n_boot: int, seed: int) -> tuple[dict, pd.DataFrame]:
    """``pair["stability"]`` and its per-chain table (empty dict when neither run has replicates)."""
    from ..analysis.inference import bootstrap_ci
    from ..analysis.stability import kendall_tau, noise_corrected_agreement

    views_a, views_b = replicate_views(a), replicate_views(b)
    if views_a is None and views_b is None:
        return {}, pd.DataFrame()
    views_a, views_b = views_a or [a], views_b or [b]
    # Every replicate's unit survival on the pair's units: a's replicates aligned against b's first
    # path, b's against a's first (the units depend only on the texts and tokenizations).
    side_a = [align(v, views_b[0], chain_ids)[0] for v in views_a]
    side_b = [align(views_a[0], v, chain_ids)[0] for v in views_b]
    keys = side_a[0][["chain_id", "unit"]]
    surv_a = np.column_stack([u["survival_a"].to_numpy(float) for u in side_a])
    surv_b = np.column_stack([u["survival_b"].to_numpy(float) for u in side_b])
    rows = []
    for chain_id, index in keys.groupby("chain_id", sort=False).groups.items():
        x, y = surv_a[np.asarray(index)], surv_b[np.asarray(index)]

        def mean_tau(pairs):
            taus = [kendall_tau(*_complete(p, q)) for p, q in pairs]
            taus = [t for t in taus if not np.isnan(t)]
            return float(np.mean(taus)) if taus else np.nan

        rows.append({"chain_id": chain_id, "n_units": len(index),
                     "own_tau_a": mean_tau((x[:, i], x[:, j]) for i, j in itertools.combinations(range(x.shape[1]), 2)),
                     "own_tau_b": mean_tau((y[:, i], y[:, j]) for i, j in itertools.combinations(range(y.shape[1]), 2)),
                     "between_tau": mean_tau((x[:, i], y[:, j]) for i in range(x.shape[1]) for j in range(y.shape[1]))})
    per_chain = pd.DataFrame(rows)

    def ci(column):
        out = bootstrap_ci(per_chain[column], n_resamples=n_boot or 1, seed=seed)
        return {"mean": out["estimate"], "ci_low": out["ci_low"] if n_boot else np.nan,
                "ci_high": out["ci_high"] if n_boot else np.nan, "n_chains": out["n_chains"]}

    corrected = noise_corrected_agreement(per_chain["between_tau"], per_chain["own_tau_a"], per_chain["own_tau_b"],
                                          n_boot=n_boot, seed=seed)
    stability = {"k_a": len(views_a), "k_b": len(views_b),
                 "scale_nats_a": (a.manifest.get("replicates") or {}).get("scale_nats"),
                 "scale_nats_b": (b.manifest.get("replicates") or {}).get("scale_nats"),
                 "own_tau_a": ci("own_tau_a"), "own_tau_b": ci("own_tau_b"), "between_tau": ci("between_tau"),
                 "noise_corrected": corrected,
                 "method": "own tau: mean pairwise Kendall tau-b between a setting's replicate paths per chain; "
                           "between tau: mean over every (replicate of a, replicate of b) pair; noise-corrected: "
                           "mean(between) / sqrt(mean(own a) * mean(own b)); percentile chain-bootstrap 95% CIs"}
    return stability, per_chain


def _complete(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Units with a survival in both (a word no token of one run overlaps has none)."""
    ok = ~(np.isnan(x) | np.isnan(y))
    return x[ok], y[ok]


def sentence(a: RunView, b: RunView, stability: dict, fmt) -> str | None:
    """The citable sentence of a pair's stability (``fmt`` formats numbers); None without replicates."""
    if not stability:
        return None

    def own(side, view):
        tau, k = stability[f"own_tau_{side}"], stability[f"k_{side}"]
        if k < 2:
            return f"{view.describe()} has one path per chain (prune --replicates K to measure its stability)"
        return (f"{view.describe()} reproduced its own ranks at mean τ = {fmt(tau['mean'])} (95% CI "
                f"[{fmt(tau['ci_low'])}, {fmt(tau['ci_high'])}]) across {k} paths perturbed by "
                f"{stability[f'scale_nats_{side}']:g} nats")

    between, corrected = stability["between_tau"], stability["noise_corrected"]
    text = (f"Against their own path noise: {own('a', a)}; {own('b', b)}; between the settings' paths τ = "
            f"{fmt(between['mean'])} (95% CI [{fmt(between['ci_low'])}, {fmt(between['ci_high'])}])")
    if np.isfinite(corrected.get("ratio", np.nan)):
        text += (f", a noise-corrected agreement of {fmt(corrected['ratio'])} (95% CI [{fmt(corrected['ci_low'])}, "
                 f"{fmt(corrected['ci_high'])}]; 1 = as close as each setting is to itself)")
    return text + f" (n = {between['n_chains']} chains)."
