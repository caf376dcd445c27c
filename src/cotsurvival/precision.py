"""Measured rounding error of one deletion cost, per scoring dtype: the scale of a near-tie.

A deletion's cost is a difference of two sums of log-probabilities; the dtype the model runs in
rounds it. These are the errors measured in BENCHMARKS.md ("Precision": step-1 costs of the exact
``crossstep`` engine against a reference, SmolLM2-135M, model-written GSM8K chains of 56-159
tokens). A greedy step whose two cheapest distinct deletions differ by less than its dtype's
``max`` error could have been decided by rounding: that is a near-tie (see
:mod:`cotsurvival.pruning.diagnostics`). No heavy imports: reports and the CLI read it too.
"""
from __future__ import annotations

from .provenance import dtype_name, fidelity_data

__all__ = ["COST_ERROR_NATS", "dtype_name", "near_tie_threshold"]

#: Per dtype: median and max absolute error of a deletion cost (nats), the range of per-chain values
#: measured, against what, and on which chains (BENCHMARKS.md "Precision"; read from the one data file
#: of measured figures, :func:`cotsurvival.provenance.fidelity_data`).
COST_ERROR_NATS: dict[str, dict] = {dtype: dict(values) for dtype, values in fidelity_data()["cost_error_nats"].items()
                                    if dtype != "about"}
# float64 was the reference itself, so its own error was not measured; float32's bound is an upper bound.
COST_ERROR_NATS["float64"] = {**COST_ERROR_NATS["float32"], "against": "float64 (float32's bound, an upper bound)"}


def near_tie_threshold(dtype) -> float:
    """The near-tie threshold (nats) of a run scored in ``dtype``: its largest measured cost error.

    Unknown dtypes get float32's, the most common (and the engine's default)."""
    return float(COST_ERROR_NATS.get(dtype_name(dtype), COST_ERROR_NATS["float32"])["max"])
