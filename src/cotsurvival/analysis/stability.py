"""How reproducible a run's ranks are: its replicate paths (``prune --replicates K``) compared.

Replicate 0 is the greedy path; replicates 1..K-1 sample each deletion from ``softmin(cost / T)``
(see :mod:`cotsurvival.pruning.engine`). Per chain, **stability** is the mean Kendall τ-b between
the survival of every pair of replicates (``K(K-1)/2`` pairs); a run's stability is the mean over
chains, with a percentile chain-bootstrap CI (chains resampled, each chain's mean τ kept whole).

>>> from cotsurvival.analysis.stability import replicate_survival, chain_stability, stability_summary  # doctest: +SKIP
>>> per_chain = chain_stability(replicate_survival("runs/demo"))                                     # doctest: +SKIP
>>> stability_summary(per_chain)["tau"]                                                              # doctest: +SKIP
"""
from __future__ import annotations

import itertools
import os

import numpy as np
import pandas as pd

from ..errors import CotSurvivalError
from ..rundir import RunDir, as_rundir

#: Per-token summary columns :func:`cotsurvival.load_run` adds for a run with replicates.
SUMMARY_COLUMNS = ("survival_mean", "survival_sd", "survival_min", "survival_max", "n_replicates")


def replicates_of(run: RunDir) -> dict:
    """The manifest's ``replicates`` record (``{"k": 1}`` for a run without replicates)."""
    return dict(run.read_manifest().get("replicates") or {"k": 1})


def replicate_survival(run: str | os.PathLike | RunDir) -> pd.DataFrame:
    """Every replicate's rows of ``tokens.parquet``: ``chain_index, chain_id, position, replicate,
    deleted_step, survival, censored, deletion_gap`` (replicate 0 only for a run without replicates)."""
    run = as_rundir(run)
    frames = []
    for index in run.part_indices("tokens"):
        names = run.part_columns("tokens", index)
        wanted = [c for c in ("chain_index", "chain_id", "position", "replicate", "deleted_step", "survival",
                              "censored", "deletion_gap") if c in names]
        frame = run.read_part("tokens", index, columns=wanted, replicates=True)
        if "replicate" not in frame:
            frame["replicate"] = 0
        frames.append(frame)
    long = pd.concat(frames, ignore_index=True)
    long["replicate"] = long["replicate"].astype(int)
    long["survival"] = long["survival"].astype(float)
    if "deletion_gap" not in long:
        long["deletion_gap"] = np.nan
    return long.sort_values(["chain_index", "replicate", "position"], kind="stable").reset_index(drop=True)


def token_summary(long: pd.DataFrame) -> pd.DataFrame:
    """Per token (``chain_index, position``): mean, SD (ddof 1; NaN for one replicate), min and max of
    survival over replicates, and how many replicates there are."""
    grouped = long.groupby(["chain_index", "position"], sort=True)["survival"]
    out = grouped.agg(survival_mean="mean", survival_sd="std", survival_min="min", survival_max="max",
                      n_replicates="size").reset_index()
    out["n_replicates"] = out["n_replicates"].astype(int)
    return out


def kendall_tau(x, y) -> float:
    """Kendall τ-b (ties corrected: censored tokens share a survival); NaN below 3 tokens or for a constant."""
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.kendalltau(x, y).statistic)


def chain_stability(long: pd.DataFrame) -> pd.DataFrame:
    """Per chain: ``n_tokens``, ``n_replicates``, ``tau_mean`` (mean pairwise τ between replicates),
    ``tau_min``/``tau_max`` over pairs, ``tau_to_greedy`` (mean τ of the perturbed replicates against
    replicate 0) and ``pairs`` (how many τ are defined). NaN where a chain has one replicate."""
    rows = []
    for (chain_index, chain_id), chain in long.groupby(["chain_index", "chain_id"], sort=True):
        wide = chain.pivot(index="position", columns="replicate", values="survival").sort_index()
        replicates = list(wide.columns)
        pairs = {(a, b): kendall_tau(wide[a], wide[b]) for a, b in itertools.combinations(replicates, 2)}
        taus = np.array([t for t in pairs.values() if not np.isnan(t)])
        to_greedy = np.array([t for (a, _), t in pairs.items() if a == replicates[0] == 0 and not np.isnan(t)])
        rows.append({"chain_index": int(chain_index), "chain_id": chain_id, "n_tokens": int(len(wide)),
                     "n_replicates": len(replicates),
                     "tau_mean": float(taus.mean()) if len(taus) else np.nan,
                     "tau_min": float(taus.min()) if len(taus) else np.nan,
                     "tau_max": float(taus.max()) if len(taus) else np.nan,
                     "tau_to_greedy": float(to_greedy.mean()) if len(to_greedy) else np.nan,
                     "pairs": int(len(taus))})
    return pd.DataFrame(rows, columns=["chain_index", "chain_id", "n_tokens", "n_replicates", "tau_mean", "tau_min",
                                       "tau_max", "tau_to_greedy", "pairs"])


def stability_summary(per_chain: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """The run's stability: mean over chains of ``tau_mean`` with a percentile chain-bootstrap 95% CI.

    Returns ``{"tau": {"mean", "ci_low", "ci_high", "n_chains"}, "tau_to_greedy": {...},
    "n_replicates", "n_chains", "chains_below_0.9"}``; chains whose τ is undefined (fewer than 3
    tokens, constant survival) are left out and counted in ``n_chains_undefined``."""
    from .inference import bootstrap_ci

    def ci(column):
        out = bootstrap_ci(per_chain[column], n_resamples=n_boot or 1, seed=seed)
        result = {"mean": out["estimate"], "ci_low": out["ci_low"], "ci_high": out["ci_high"], "n_chains": out["n_chains"]}
        if not n_boot:  # no CI asked for
            result.update(ci_low=float("nan"), ci_high=float("nan"))
        return result

    tau = per_chain["tau_mean"]
    return {"tau": ci("tau_mean"), "tau_to_greedy": ci("tau_to_greedy"),
            "n_replicates": int(per_chain["n_replicates"].max()) if len(per_chain) else 0,
            "n_chains": int(len(per_chain)), "n_chains_undefined": int(tau.isna().sum()),
            "n_chains_below_0.9": int((tau < 0.9).sum()), "min_chain_tau": float(tau.min()) if tau.notna().any() else None}


def noise_corrected_agreement(between: pd.Series, own_a: pd.Series, own_b: pd.Series, *, n_boot: int = 1000,
                              seed: int = 0) -> dict:
    """τ between two settings relative to their own replicate τ, with a chain-bootstrap CI.

    ``between``, ``own_a`` and ``own_b`` hold one number per chain (same index: the chains both
    settings share): the mean τ between the settings' replicate paths, and each setting's own mean
    pairwise replicate τ. The ratio is ``mean(between) / sqrt(mean(own_a) · mean(own_b))``, the
    classical correction for attenuation (Spearman 1904) applied to path noise: 1 means the settings
    agree as well as each agrees with itself, so their τ is all path noise. It is computed on means
    over chains (a per-chain ratio explodes where a chain's own τ is near 0), and the bootstrap
    resamples chains jointly for all three. NaN when either setting's own τ is not positive.
    """
    frame = pd.concat({"between": between, "a": own_a, "b": own_b}, axis=1).dropna()
    out = {"ratio": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n_chains": int(len(frame))}

    def ratio(rows: np.ndarray) -> float:
        m = rows.mean(axis=0)
        return float(m[0] / np.sqrt(m[1] * m[2])) if m[1] > 0 and m[2] > 0 else float("nan")

    if frame.empty:
        return out
    values = frame[["between", "a", "b"]].to_numpy(float)
    out["ratio"] = ratio(values)
    if n_boot and len(frame) > 1:
        rng = np.random.default_rng(seed)
        boot = np.array([ratio(values[rng.integers(0, len(values), len(values))]) for _ in range(n_boot)])
        boot = boot[~np.isnan(boot)]
        if len(boot):
            out.update(ci_low=float(np.quantile(boot, 0.025)), ci_high=float(np.quantile(boot, 0.975)))
    return out


# --------------------------------------------------------------------------- analyze
def replicate_mean(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``survival`` replaced by the replicate mean when the run has replicates (the
    primary test's input); unchanged otherwise."""
    if "survival_mean" not in table:
        return table
    return table.assign(survival=table["survival_mean"].astype(float))


def run_stability(run: RunDir, table: pd.DataFrame, result, n_boot: int, seed: int, *, min_chains: int,
                  min_tokens: int, test=None) -> dict:
    """``stats.json["stability"]``: the near-tie diagnostic and, with replicates, the run's stability,
    and the spread of the primary estimate across replicates (also put in ``result.primary_``).

    ``test`` is the primary test (:func:`~cotsurvival.analysis.chain_level_test`; passed in, so this
    module stays below the one that reads runs). Adds the table ``stability_per_chain`` to ``result.tables_``."""
    from ..pruning.diagnostics import run_diagnostics
    from ..provenance import NO_NEAR_TIE_DIAGNOSTIC, near_tie_sentence, stability_sentence

    try:
        diagnostics = run_diagnostics(run)
    except CotSurvivalError as exc:  # e.g. an unreadable traces part (E008): a note, the other sections still run
        result.notes_.append(f"stability: {exc.message}")
        diagnostics = {"n_steps": 0}
    per_chain = pd.DataFrame([{"chain_id": chain_id, **values} for chain_id, values in
                              (diagnostics.pop("chains", None) or {}).items()])
    ties = near_tie_sentence(diagnostics, int(table["chain_id"].nunique()), suggest_replicates=False)
    out: dict = {"diagnostics": {**diagnostics, "sentence": ties or NO_NEAR_TIE_DIAGNOSTIC}}
    replicates = replicates_of(run)
    out["replicates"] = replicates
    if replicates.get("k", 1) > 1:
        long = replicate_survival(run)
        chains = chain_stability(long)
        summary = stability_summary(chains, n_boot=n_boot, seed=seed)
        out.update(summary)
        out["sentence"] = stability_sentence(summary, replicates)
        per_chain = chains if per_chain.empty else chains.merge(per_chain, on="chain_id", how="left")
        spread = _primary_spread(long, table, result, min_chains, min_tokens, seed, test) if test else {}
        if spread:
            out["primary_spread"] = spread
    if not per_chain.empty:
        result.tables_["stability_per_chain"] = per_chain
    return out


def _primary_spread(long: pd.DataFrame, table: pd.DataFrame, result, min_chains: int, min_tokens: int,
                    seed: int, test) -> dict:
    """The primary contrast's estimate on each replicate path alone: how much it moves between
    near-equal paths, to read beside its CI (which is on the replicate mean)."""

    primary = result.primary_
    if not primary or "estimate" not in primary:
        return {}
    name = result.config.get("primary")
    ranked = table[(table["n_tokens"] > 1) & table["category"].notna()]
    wide = long.pivot_table(index=["chain_index", "position"], columns="replicate", values="survival")
    estimates = {}
    for replicate in wide.columns:
        path = ranked.drop(columns=["survival"]).merge(
            wide[replicate].rename("survival").reset_index(), on=["chain_index", "position"], how="left")
        try:
            alone = test(path, "category", name, min_chains=min_chains, min_tokens=min_tokens, seed=seed)
        except CotSurvivalError:
            continue
        estimates[int(replicate)] = float(alone["estimate"])
    if not estimates:
        return {}
    values = np.array(list(estimates.values()))
    spread = {"k": len(values), "estimates": estimates, "greedy": estimates.get(0),
              "sd": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
              "min": float(values.min()), "max": float(values.max()),
              "same_sign": bool((np.sign(values) == np.sign(primary["estimate"])).all())}
    primary["survival"] = f"mean over {len(values)} replicate paths"
    primary["replicate_spread"] = spread
    return spread
