"""Greedy survival pruning: exact deletion order and per-step cost traces.

>>> from cotsurvival.pruning import prune                    # doctest: +SKIP
>>> run = prune("gsm8k", "runs/demo", limit=3, keep_ratio=0.5)  # doctest: +SKIP

The choices (``OBJECTIVES``, ``SCORING_METHODS``, ``BASELINES``) are light; everything else is
imported on first use, so reading the choices (as the CLI does) does not load torch.
"""
from importlib import import_module

from .registry import BASELINES, OBJECTIVES, SCORING_METHODS

_LAZY = {
    "ChainTrace": ".engine", "greedy_prune": ".engine", "n_deletions": ".engine",
    "export_pruned": ".export",
    "prune": ".run",
    "NaiveScorer": ".scoring", "PrefixReuseScorer": ".scoring",
    "make_scorer": ".methods", "SCORERS": ".methods",
}

__all__ = ["BASELINES", "OBJECTIVES", "SCORING_METHODS", *_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
