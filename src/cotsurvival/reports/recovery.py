"""Answer recovery: the figure of a :class:`RecoveryResult` (its sentences are statistics: ``recovery.py``).

Takes the result object (``summary()``, ``tests()``, ``orderings``, ...); ``RecoveryResult.figure``
reaches it through :data:`cotsurvival.registry.VIEWS`, so statistics never import presentation.

Figure: (a) share of chains whose greedy-decoded answer is right and (b) mean teacher-forced
log P(answer), each against the keep ratio, one line per ordering, with 95% chain-bootstrap bands.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .style import OKABE_ITO, WIDTHS, figure_style, save_figure

#: One colour and marker per ordering (greedy black, the reference).
ORDERING_STYLE = {
    "greedy": (OKABE_ITO["black"], "o"), "random": (OKABE_ITO["sky_blue"], "s"),
    "surprisal": (OKABE_ITO["orange"], "^"), "loo": (OKABE_ITO["bluish_green"], "D"),
    "attention": (OKABE_ITO["reddish_purple"], "v"), "llmlingua2": (OKABE_ITO["vermillion"], "P"),
}


def recovery_figure(result, width: str = "two"):
    """The two-panel figure (matplotlib ``Figure``)."""
    import matplotlib.pyplot as plt

    summary = result.summary()
    with figure_style():
        fig, axes = plt.subplots(1, 2, figsize=(WIDTHS[width], 2.5 if width == "two" else 2.2), layout="constrained")
        panels = [("accuracy", "answer recovered (share of chains)", "a  greedy-decoded answer correct"),
                  ("answer_logprob", "log P(answer) (nats, chain mean)", "b  teacher-forced log P(answer)")]
        for ax, (column, ylabel, title) in zip(axes, panels):
            n = len(result.orderings)
            for k, ordering in enumerate(result.orderings):
                sub = summary[summary["ordering"] == ordering].sort_values("keep_ratio")
                colour, marker = ORDERING_STYLE.get(ordering, ("#777777", "x"))
                # A small horizontal dodge keeps coinciding lines (e.g. equal accuracies) visible.
                x = sub["keep_ratio"].to_numpy() + 0.008 * (k - (n - 1) / 2)
                ax.fill_between(x, sub[f"{column}_ci_low"], sub[f"{column}_ci_high"], color=colour,
                                alpha=0.08 if ordering == "greedy" else 0.15, linewidth=0)
                ax.plot(x, sub[column], color=colour, marker=marker, markersize=3,
                        linewidth=1.6 if ordering == "greedy" else 1.0, label=ordering)
            ax.set(xlim=(1.02, min(result.keep_ratios) - 0.02), xlabel="keep ratio (tokens kept / N)", ylabel=ylabel)
            ax.set_title(title, loc="left", fontweight="bold")
            if column == "accuracy":
                ax.set_ylim(-0.03, 1.03)
        axes[1].legend(title="ordering", loc="lower left")
        fig.suptitle(f"Answer recovery, {result.n_chains} chains (95% chain-bootstrap bands)", fontsize=7.5)
    return fig


def save_recovery_figure(result, stem: Path, width: str = "two", footnote: str | None = None) -> list[Path]:
    """Draw and save the recovery figure; ``footnote`` (e.g. the run's approximation) goes under it."""
    return save_figure(recovery_figure(result, width), stem, footnote)
