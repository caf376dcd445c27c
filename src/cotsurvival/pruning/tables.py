"""ChainTrace <-> the run directory's per-chain tables (tokens, steps, traces) and checkpoints.

Every row carries its ``replicate`` (0: the greedy path; r ≥ 1: perturbed replicates, see
:mod:`cotsurvival.pruning.engine`); a chain's part holds all its committed replicates.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from ..encoding import EncodedChain
from ..rundir import atomic_write_bytes
from .diagnostics import trace_gaps
from .engine import ChainTrace

#: The per-chain tables that hold one block of rows per replicate.
REPLICATED_TABLES = ("tokens", "steps", "traces")


def null_if_zero(steps: np.ndarray) -> pd.Series:
    """Deletion steps as nullable integers: 0 (never deleted) becomes null."""
    return pd.Series(steps).where(steps > 0).astype("Int64")


def tokens_frame(encoded: EncodedChain, trace: ChainTrace, chain_index: int) -> pd.DataFrame:
    n = len(encoded.reasoning_ids)
    deleted = np.zeros(n, dtype=np.int64)
    cost_at = np.full(n, np.nan)
    scored = _scored_steps(trace)
    # A step not scored itself (approximate runs) takes the cost from its round's scoring.
    latest = np.searchsorted(scored, np.arange(1, trace.n_steps + 1), side="right") - 1
    measured = trace.deletion_costs if trace.deletion_costs is not None and \
        len(trace.deletion_costs) == trace.n_steps else None
    for step, position in enumerate(trace.order, 1):
        deleted[position] = step
        if measured is not None:  # lazy re-scoring measured each deletion on its own step's sequence
            cost_at[position] = measured[step - 1]
            continue
        costs, alive = trace.step_costs[latest[step - 1]], trace.step_positions[latest[step - 1]]
        cost_at[position] = costs[int(np.searchsorted(alive, position))]
    texts = encoded.token_texts()
    frame = pd.DataFrame({
        "chain_index": chain_index, "chain_id": encoded.chain.id, "position": np.arange(n),
        "token_id": np.asarray(encoded.reasoning_ids, dtype=np.int64), "text": texts,
        "char_start": [a for a, _ in encoded.offsets], "char_end": [b for _, b in encoded.offsets],
        "is_whitespace": [not t.strip() for t in texts],
        "deleted_step": null_if_zero(deleted), "n_tokens": n,
    })
    frame["survival"] = frame["deleted_step"].fillna(trace.n_steps).astype(float) / n
    frame["censored"] = frame["deleted_step"].isna()
    frame["deletion_cost"] = cost_at
    # log p of the token in the unpruned chain: the surprisal baseline, kept so a run can be continued.
    frame["static_logprob"] = trace.static_logprobs if trace.static_logprobs is not None else np.nan
    frame["replicate"] = np.int32(trace.replicate)
    frame["deletion_gap"] = _deletion_gaps(encoded, trace, deleted)
    return frame


def _deletion_gaps(encoded: EncodedChain, trace: ChainTrace, deleted: np.ndarray) -> np.ndarray:
    """Per token, the gap of the step that deleted it (:mod:`.diagnostics`); NaN when censored, or when
    the engine did not score every candidate at every step (approximations)."""
    gaps = np.full(len(deleted), np.nan)
    if trace.scored_steps is not None or len(trace.step_costs) < trace.n_steps:
        return gaps
    per_step = trace_gaps(trace.step_costs[:trace.n_steps], trace.step_positions[:trace.n_steps], encoded.reasoning_ids)
    has = deleted > 0
    gaps[has] = per_step[deleted[has] - 1]
    return gaps


def _scored_steps(trace: ChainTrace) -> np.ndarray:
    """1-based step of each entry of ``trace.step_costs`` (every step for the exact engine)."""
    if trace.scored_steps is None:
        return np.arange(1, len(trace.step_costs) + 1)
    return np.asarray(trace.scored_steps, dtype=np.int64)


def steps_frame(encoded: EncodedChain, trace: ChainTrace, chain_index: int) -> pd.DataFrame:
    n = len(encoded.reasoning_ids)
    return pd.DataFrame({
        "chain_index": chain_index, "chain_id": encoded.chain.id, "step": np.arange(trace.n_steps + 1),
        "position_deleted": pd.array([None] + list(trace.order), dtype="Int64"),
        "objective": np.asarray(trace.objectives, dtype=np.float64), "n_remaining": n - np.arange(trace.n_steps + 1),
        "replicate": np.int32(trace.replicate),
    })


def traces_frame(encoded: EncodedChain, trace: ChainTrace, chain_index: int) -> pd.DataFrame:
    lengths = [len(c) for c in trace.step_costs]
    return pd.DataFrame({
        "chain_index": chain_index, "chain_id": encoded.chain.id,
        "step": np.repeat(_scored_steps(trace).astype(np.int32), lengths),
        "position": np.concatenate(trace.step_positions) if lengths else np.array([], dtype=np.int32),
        "cost": np.concatenate(trace.step_costs).astype(np.float32) if lengths else np.array([], dtype=np.float32),
        "replicate": np.int32(trace.replicate),
    })


def trace_from_tables(steps: pd.DataFrame, traces: pd.DataFrame, static_logprobs: np.ndarray | None,
                      replicate: int = 0) -> ChainTrace:
    """Rebuild a committed chain's trace (one replicate's rows), to continue it to a lower keep ratio."""
    steps = steps.sort_values("step")
    trace = ChainTrace(order=[int(x) for x in steps["position_deleted"].iloc[1:]],
                       objectives=[float(x) for x in steps["objective"]], static_logprobs=static_logprobs,
                       replicate=int(replicate))
    scored = []
    for step, group in traces.sort_values(["step", "position"]).groupby("step", sort=True):
        scored.append(int(step))
        trace.step_positions.append(group["position"].to_numpy(np.int32))
        trace.step_costs.append(group["cost"].to_numpy(np.float32))
    if scored != list(range(1, len(scored) + 1)) or len(scored) != trace.n_steps:
        trace.scored_steps = scored  # an approximate run scored only some steps
    return trace


def save_checkpoint(path: Path, trace: ChainTrace) -> None:
    """Arrays only (``np.savez``, loaded with ``allow_pickle=False``): a checkpoint never runs code."""

    lengths = np.array([len(c) for c in trace.step_costs], dtype=np.int64)
    buffer = io.BytesIO()
    np.savez(buffer, order=np.asarray(trace.order, dtype=np.int64), objectives=np.asarray(trace.objectives),
             lengths=lengths,
             costs=np.concatenate(trace.step_costs) if len(lengths) else np.zeros(0, np.float32),
             positions=np.concatenate(trace.step_positions) if len(lengths) else np.zeros(0, np.int32),
             static=trace.static_logprobs if trace.static_logprobs is not None else np.zeros(0),
             tokens_processed=np.array(trace.tokens_processed), seconds=np.array(trace.seconds),
             scored_steps=np.asarray(trace.scored_steps if trace.scored_steps is not None else [-1], dtype=np.int64),
             token_rows=np.array(trace.token_rows), replicate=np.array(trace.replicate),
             reused_steps=np.array(trace.reused_steps))
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> ChainTrace:
    with np.load(path, allow_pickle=False) as data:
        bounds = np.concatenate([[0], np.cumsum(data["lengths"])])
        return ChainTrace(
            order=[int(x) for x in data["order"]], objectives=[float(x) for x in data["objectives"]],
            step_costs=[data["costs"][a:b].astype(np.float32) for a, b in zip(bounds[:-1], bounds[1:])],
            step_positions=[data["positions"][a:b].astype(np.int32) for a, b in zip(bounds[:-1], bounds[1:])],
            static_logprobs=data["static"] if data["static"].size else None,
            tokens_processed=int(data["tokens_processed"]), seconds=float(data["seconds"]),
            scored_steps=_checkpoint_scored(data),
            token_rows=int(data["token_rows"]) if "token_rows" in data.files else 0,
            replicate=int(data["replicate"]) if "replicate" in data.files else 0,
            reused_steps=int(data["reused_steps"]) if "reused_steps" in data.files else 0,
        )


def _checkpoint_scored(data) -> list[int] | None:
    """[-1] (or a checkpoint from before approximations) means every step was scored."""
    if "scored_steps" not in data.files or (data["scored_steps"].size == 1 and data["scored_steps"][0] == -1):
        return None
    return [int(x) for x in data["scored_steps"]]


def with_replicate(committed: pd.DataFrame | None, new: pd.DataFrame, sort: list[str]) -> pd.DataFrame:
    """A chain's part with ``new`` (one replicate's rows) replacing that replicate's committed rows.

    Parts written before replicates existed have no ``replicate`` column: their rows are replicate 0."""
    if committed is None or committed.empty:
        return new
    if "replicate" not in committed:
        committed = committed.assign(replicate=np.int32(0))
    replicate = int(new["replicate"].iloc[0]) if len(new) else -1
    kept = committed[committed["replicate"] != replicate]
    if kept.empty:
        return new
    merged = pd.concat([kept, new], ignore_index=True)
    return merged.sort_values(["replicate", *sort], kind="stable").reset_index(drop=True)
