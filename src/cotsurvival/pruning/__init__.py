"""Greedy survival pruning: exact deletion order and per-step cost traces.

>>> from cotsurvival.pruning import prune                    # doctest: +SKIP
>>> run = prune("gsm8k", "runs/demo", limit=3, keep_ratio=0.5)  # doctest: +SKIP
"""
from .engine import ChainTrace, greedy_prune, n_deletions
from .export import export_pruned
from .run import prune
from .scoring import NaiveScorer, PrefixReuseScorer, make_scorer

__all__ = ["ChainTrace", "NaiveScorer", "PrefixReuseScorer", "export_pruned", "greedy_prune", "make_scorer",
           "n_deletions", "prune"]
