"""Free stability diagnostics of a greedy run, from the per-step costs it already stores.

At each step the greedy engine deletes the cheapest token. The **gap** of a step is the cost of
its second-cheapest distinct deletion minus the cheapest (nats; identical adjacent tokens give one
sequence, so they count once). A step is a **near-tie** when its gap is below the run's threshold,
by default the largest cost error measured for the run's dtype
(:data:`cotsurvival.precision.COST_ERROR_NATS`): rounding alone could have decided it, and one
such step can switch the rest of the path (BENCHMARKS.md, "Precision"). Each deleted token carries
its step's gap as ``deletion_gap`` in ``tokens.parquet``; censored tokens (never deleted) and runs
whose engine did not score every candidate at every step (approximations) have none.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..precision import COST_ERROR_NATS, dtype_name, near_tie_threshold


def step_gap(costs: np.ndarray, positions: np.ndarray, token_ids) -> float:
    """Second-cheapest minus cheapest cost among the distinct deletions of one step (NaN if < 2).

    ``positions`` are the alive original positions, ascending, ``costs`` their deletion costs and
    ``token_ids`` the chain's reasoning ids (indexed by original position)."""
    costs = np.asarray(costs, dtype=np.float64)
    ids = np.asarray(token_ids)[np.asarray(positions, dtype=np.int64)]
    distinct = np.ones(len(ids), dtype=bool)
    distinct[1:] = ids[1:] != ids[:-1]
    values = costs[distinct]
    if len(values) < 2:
        return float("nan")
    two = np.partition(values, 1)[:2]
    return float(two[1] - two[0])


def trace_gaps(step_costs, step_positions, token_ids) -> np.ndarray:
    """The gap of every step of a trace (``ChainTrace.step_costs`` / ``step_positions``)."""
    return np.array([step_gap(c, p, token_ids) for c, p in zip(step_costs, step_positions)], dtype=np.float64)


def gaps_from_traces(traces: pd.DataFrame, token_ids) -> pd.Series:
    """Gap per step (index ``step``) from one chain's ``traces.parquet`` rows of one replicate."""
    ordered = traces.sort_values(["step", "position"])
    gaps = {int(step): step_gap(g["cost"].to_numpy(), g["position"].to_numpy(), token_ids)
            for step, g in ordered.groupby("step", sort=True)}
    return pd.Series(gaps, dtype=np.float64, name="gap").rename_axis("step")


def near_tie(gap, threshold: float):
    """True where a deletion's gap is below ``threshold`` (NaN gaps are not near-ties)."""
    gap = np.asarray(gap, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(gap), False, gap < threshold)


def threshold_record(dtype) -> dict:
    """The near-tie threshold of a run in ``dtype`` and where its number comes from (for the manifest)."""
    name = dtype_name(dtype)
    measured = COST_ERROR_NATS.get(name, COST_ERROR_NATS["float32"])
    return {"near_tie_threshold": near_tie_threshold(name), "dtype": name,
            "basis": f"largest deletion-cost error measured in {name if name in COST_ERROR_NATS else 'float32'} "
                     f"against {measured['against']} ({measured['chains']}; BENCHMARKS.md 'Precision')"}


def chain_summary(gaps: np.ndarray, threshold: float) -> dict:
    """Steps with a gap, near-tie steps, the smallest gap and the first near-tie step of one chain."""
    gaps = np.asarray(gaps, dtype=np.float64)
    known = ~np.isnan(gaps)
    ties = near_tie(gaps, threshold)
    return {"n_steps": int(known.sum()), "n_near_tie_steps": int(ties.sum()),
            "min_gap": float(np.nanmin(gaps)) if known.any() else None,
            "median_gap": float(np.nanmedian(gaps)) if known.any() else None,
            "first_near_tie_step": int(np.argmax(ties)) + 1 if ties.any() else None}


def run_summary(tokens: pd.DataFrame, threshold: float) -> dict:
    """The manifest's ``diagnostics``: totals over chains and one :func:`chain_summary` per chain.

    ``tokens`` holds replicate 0's rows (``chain_id``, ``deleted_step``, ``deletion_gap``): each
    deleted token carries the gap of the step that deleted it, so these are the steps' gaps."""
    chains = {}
    for chain_id, group in tokens.groupby("chain_id", sort=False):
        deleted = group[group["deleted_step"].notna()].sort_values("deleted_step")
        chains[str(chain_id)] = chain_summary(deleted["deletion_gap"].to_numpy(np.float64), threshold)
    steps = sum(c["n_steps"] for c in chains.values())
    ties = sum(c["n_near_tie_steps"] for c in chains.values())
    gaps = tokens["deletion_gap"].to_numpy(np.float64) if "deletion_gap" in tokens else np.array([])
    return {"near_tie_threshold": threshold, "n_steps": steps, "n_near_tie_steps": ties,
            "n_chains_with_near_tie": sum(1 for c in chains.values() if c["n_near_tie_steps"]),
            "min_gap": float(np.nanmin(gaps)) if np.isfinite(gaps).any() else None,
            "median_gap": float(np.nanmedian(gaps)) if np.isfinite(gaps).any() else None,
            "chains": chains}


def run_diagnostics(run) -> dict:
    """A run's near-tie diagnostic: the manifest's ``diagnostics`` when ``prune`` recorded it, else
    computed here from ``traces.parquet`` (runs pruned before the diagnostic existed); ``{}`` when the
    run has no traces of every step. ``run`` is a :class:`~cotsurvival.rundir.RunDir`."""
    manifest = run.read_manifest()
    stored = manifest.get("diagnostics")
    if stored and stored.get("n_steps"):
        return dict(stored)
    record = threshold_record((manifest.get("model") or {}).get("dtype", "float32"))
    if (manifest.get("engine") or {}).get("approx"):
        return {**record, "n_steps": 0}
    ids = dict(zip(run.read_chains()["chain_index"], run.read_chains()["reasoning_ids"]))
    frames = []
    for index in run.part_indices("tokens"):
        if not run.has_part("traces", index):
            continue
        tokens = run.read_part("tokens", index, columns=["chain_id", "position", "deleted_step"])
        gaps = gaps_from_traces(run.read_part("traces", index, columns=["step", "position", "cost"]), ids[index])
        step = tokens["deleted_step"].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
        tokens["deletion_gap"] = gaps.reindex(step).to_numpy(np.float64)
        frames.append(tokens)
    if not frames:
        return {**record, "n_steps": 0}
    return {**record, **run_summary(pd.concat(frames, ignore_index=True), record["near_tie_threshold"])}
