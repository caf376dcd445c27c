"""Measured rounding error of one deletion cost, per scoring dtype: the scale of a near-tie.

A deletion's cost is a difference of two sums of log-probabilities; the dtype the model runs in
rounds it. These are the errors measured in BENCHMARKS.md ("Precision": step-1 costs of the exact
``crossstep`` engine against a reference, SmolLM2-135M, model-written GSM8K chains of 56-159
tokens). A greedy step whose two cheapest distinct deletions differ by less than its dtype's
``max`` error could have been decided by rounding: that is a near-tie (see
:mod:`cotsurvival.pruning.diagnostics`). No heavy imports: reports and the CLI read it too.
"""
from __future__ import annotations

#: Per dtype: median and max absolute error of a deletion cost (nats), the range of per-chain values
#: measured, against what, and on which chains (BENCHMARKS.md "Precision").
COST_ERROR_NATS: dict[str, dict] = {
    "float32": {"median": 3.6e-5, "max": 1.5e-4, "median_range": "3.6e-05", "max_range": "1.5e-04",
                "against": "float64", "chains": "chain model-2, 159 tokens"},
    "float16": {"median": 0.073, "max": 0.22, "median_range": "0.024-0.073", "max_range": "0.085-0.22",
                "against": "float32", "chains": "model-written GSM8K chains of 56-159 tokens"},
    "bfloat16": {"median": 0.33, "max": 1.14, "median_range": "0.25-0.33", "max_range": "0.74-1.14",
                 "against": "float32", "chains": "model-written GSM8K chains of 56-159 tokens"},
}
# float64 was the reference itself, so its own error was not measured; float32's bound is an upper bound.
COST_ERROR_NATS["float64"] = {**COST_ERROR_NATS["float32"], "against": "float64 (float32's bound, an upper bound)"}


def dtype_name(dtype) -> str:
    """Canonical dtype name (``torch.float16`` and ``"fp16"`` become ``"float16"``)."""
    name = str(dtype).replace("torch.", "")
    return {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "fp64": "float64", "half": "float16",
            "float": "float32", "double": "float64"}.get(name, name)


def near_tie_threshold(dtype) -> float:
    """The near-tie threshold (nats) of a run scored in ``dtype``: its largest measured cost error.

    Unknown dtypes get float32's, the most common (and the engine's default)."""
    return float(COST_ERROR_NATS.get(dtype_name(dtype), COST_ERROR_NATS["float32"])["max"])
