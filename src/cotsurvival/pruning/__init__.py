"""Greedy survival pruning: exact deletion order and per-step cost traces.

>>> from cotsurvival.pruning import prune                    # doctest: +SKIP
>>> run = prune("gsm8k", "runs/demo", limit=3, keep_ratio=0.5)  # doctest: +SKIP

The choices (``OBJECTIVES``, ``SCORING_METHODS``, ``BASELINES``) are light; everything else is
imported on first use, so reading the choices (as the CLI does) does not load torch.
"""
from ..registry import lazy_attributes
from .registry import BASELINES, OBJECTIVES, SCORING_METHODS

_LAZY = {
    "ChainTrace": ".engine", "greedy_prune": ".engine", "n_deletions": ".engine",
    "export_pruned": ".export",
    "prune": ".run",
    "NaiveScorer": ".scoring", "PrefixReuseScorer": ".scoring",
    "make_scorer": ".methods", "SCORERS": ".methods",
}

__all__ = ["BASELINES", "OBJECTIVES", "SCORING_METHODS", *_LAZY]


__getattr__ = lazy_attributes(__name__, _LAZY, globals())
