"""Statistics on a pruned run: which kinds of tokens survive, how rankings move, what predicts them.

Entry points (each mirrored by a CLI command)::

    load_run(RUN)                 joined token table (one row per reasoning token)
    kaplan_meier(table)           survival curves by category with 95% bands
    chain_level_test(table)       the primary, chain-level position-adjusted contrast
    power(RUN, delta=0.1)         chains needed for 80% power  (cotsurvival power RUN)
    analyze(RUN)                  every test; writes RUN/stats/   (cotsurvival analyze RUN)
    compute_attention_features    attention.parquet               (cotsurvival attention RUN)
"""
from __future__ import annotations

from .analyze import AnalysisResult, analyze, power
from .chainlevel import chain_contrasts, chain_level_test
from .attention import attention_predictors, compute_attention_features, roc_auc
from .data import attention_layers, baseline_orderings, load_run, orderings_long
from .dynamics import bottom_quartile_rescue, degradation_curves, rank_trajectories, static_vs_greedy
from .survival import (cox_ph, kaplan_meier, kruskal_test, logrank_test, ordering_effects,
                       ordering_interaction, pairwise_logrank, pairwise_mannwhitney, ph_test, survival_summary)

__all__ = [
    "AnalysisResult", "analyze", "chain_contrasts", "chain_level_test", "power", "attention_layers", "attention_predictors", "baseline_orderings",
    "bottom_quartile_rescue", "compute_attention_features", "cox_ph", "degradation_curves", "kaplan_meier",
    "kruskal_test", "load_run", "logrank_test", "ordering_effects", "ordering_interaction",
    "orderings_long", "pairwise_logrank", "pairwise_mannwhitney", "ph_test", "rank_trajectories", "roc_auc",
    "static_vs_greedy", "survival_summary",
]
