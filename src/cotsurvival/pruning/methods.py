"""Scorer classes by method name (:data:`cotsurvival.pruning.registry.SCORING_METHODS`).

Kept apart from :mod:`.scoring` because the cross-step scorer builds on the scoring module: with
the factory here, neither of the two imports the other back.
"""
from __future__ import annotations

from .crossstep import CrossStepScorer
from .forward import supports_prefix_reuse
from .registry import SCORING_METHODS
from .scoring import NaiveScorer, PrefixReuseScorer, Scorer

SCORERS = {"crossstep": CrossStepScorer, "prefix": PrefixReuseScorer, "naive": NaiveScorer}
assert set(SCORERS) | {"auto"} == set(SCORING_METHODS), "pruning.registry.SCORING_METHODS and SCORERS differ"


def make_scorer(model, method: str = "auto", objective: str = "joint", max_batch_tokens: int = 4096) -> Scorer:
    """``auto`` = cross-step reuse where the architecture is supported, naive otherwise.

    Methods: ``crossstep`` (prefix reuse + each candidate's own computation carried across
    steps), ``prefix`` (prefix reuse only; less memory), ``naive`` (full recompute, any model).
    """
    if method == "auto":
        method = "crossstep" if supports_prefix_reuse(model) else "naive"
    if method not in SCORERS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(SCORING_METHODS)}")
    if method != "naive" and not supports_prefix_reuse(model):
        raise ValueError(f"method {method!r} does not support model_type {model.config.model_type!r}; use 'naive'")
    return SCORERS[method](model, objective=objective, max_batch_tokens=max_batch_tokens)
