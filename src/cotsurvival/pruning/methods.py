"""Scorer classes by method name (:data:`cotsurvival.pruning.registry.SCORING_METHODS`).

Kept apart from :mod:`.scoring` because the cross-step scorer builds on the scoring module: with
the factory here, neither of the two imports the other back.
"""
from __future__ import annotations

from .crossstep import CrossStepScorer
from ..errors import CotSurvivalError
from .forward import supports_prefix_reuse, unsupported_reason
from .registry import SCORING_METHODS
from .scoring import NaiveScorer, PrefixReuseScorer, Scorer

SCORERS = {"crossstep": CrossStepScorer, "prefix": PrefixReuseScorer, "naive": NaiveScorer}
assert set(SCORERS) | {"auto"} == set(SCORING_METHODS), "pruning.registry.SCORING_METHODS and SCORERS differ"


def make_scorer(model, method: str = "auto", objective: str = "joint", max_batch_tokens: int = 4096) -> Scorer:
    """``auto`` = cross-step reuse where the architecture is supported, naive otherwise.

    Supported: the classes of :data:`cotsurvival.pruning.forward.FAMILIES` (Llama, Mistral,
    Qwen2/3, Gemma 2/3 text, Phi-3, OLMo 2, Granite, SmolLM3) with sdpa or eager attention.
    Asking for ``prefix``/``crossstep`` on anything else raises ``CotSurvivalError("E100")``.

    Methods: ``crossstep`` (prefix reuse + each candidate's own computation carried across
    steps), ``prefix`` (prefix reuse only; less memory), ``naive`` (full recompute, any model).
    """
    if method == "auto":
        method = "crossstep" if supports_prefix_reuse(model) else "naive"
    if method not in SCORERS:
        raise CotSurvivalError("E088", option="--method", value=method, choices=", ".join(SCORING_METHODS))
    reason = unsupported_reason(model)
    if method != "naive" and reason is not None:
        raise CotSurvivalError("E100", method=method, architecture=type(model).__name__, reason=reason)
    return SCORERS[method](model, objective=objective, max_batch_tokens=max_batch_tokens)
