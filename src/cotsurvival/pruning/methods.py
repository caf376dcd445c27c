"""Scorer classes by method name (:data:`cotsurvival.pruning.registry.SCORING_METHODS`).

Kept apart from :mod:`.scoring` because the cross-step scorer builds on the scoring module: with
the factory here, neither of the two imports the other back. Each scorer class registers itself
under its method name where it is defined; importing both modules here fills the registry.
"""
from __future__ import annotations

from . import crossstep, scoring  # noqa: F401 - importing them registers their scorer classes
from ..errors import CotSurvivalError
from .forward import supports_prefix_reuse, unsupported_reason
from .registry import SCORING_METHODS
from .scoring import Scorer


@SCORING_METHODS.register("auto")
def auto_method(model) -> str:
    """``auto``: cross-step reuse where the architecture is supported, naive otherwise."""
    return "crossstep" if supports_prefix_reuse(model) else "naive"


#: Method name -> scorer class (every method but ``auto``, which picks one of these).
SCORERS = {name: cls for name, cls in SCORING_METHODS.implementations().items() if name != "auto"}


def make_scorer(model, method: str = "auto", objective: str = "joint", max_batch_tokens: int = 4096) -> Scorer:
    """``auto`` = cross-step reuse where the architecture is supported, naive otherwise.

    Supported: the classes of :data:`cotsurvival.pruning.forward.FAMILIES` (Llama, Mistral,
    Qwen2/3, Gemma 2/3 text, Phi-3, OLMo 2, Granite, SmolLM3) with sdpa or eager attention.
    Asking for ``prefix``/``crossstep`` on anything else raises ``CotSurvivalError("E100")``;
    an unknown method E088.

    Methods: ``crossstep`` (prefix reuse + each candidate's own computation carried across
    steps), ``prefix`` (prefix reuse only; less memory), ``naive`` (full recompute, any model).
    """
    if SCORING_METHODS.check(method) == "auto":
        method = auto_method(model)
    reason = unsupported_reason(model)
    if method != "naive" and reason is not None:
        raise CotSurvivalError("E100", method=method, architecture=type(model).__name__, reason=reason)
    return SCORING_METHODS.resolve(method)(model, objective=objective, max_batch_tokens=max_batch_tokens)
