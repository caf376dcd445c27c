"""On-policy importance beside greedy survival: the figure.

Takes an :class:`~cotsurvival.analysis.onpolicy.OnPolicyResult` (registered in
``registry.VIEWS`` as ``onpolicy_figure``, so the statistics layer never imports this one); the
citable sentences live beside the statistics (:func:`cotsurvival.analysis.onpolicy.onpolicy_sentences`).

Figure: (a) each unit's mean greedy survival against its on-policy importance (Δ log P(answer),
rollout-bootstrap 95% bars), coloured by the unit's dominant category; (b) the per-chain Spearman
rho of the two, for both importance measures, with the mean and its 95% t-interval over chains;
(c) regeneration: share of deleted tokens written back against the keep ratio, beside the kept
tokens' share (dashed) as the reference.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .style import OKABE_ITO, WIDTHS, category_colours, figure_style, palette_for, save_figure

# ---------------------------------------------------------------------------------------- figure

def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def onpolicy_figure(result, width: str = "two"):
    """The three-panel figure (matplotlib ``Figure``)."""
    import matplotlib.pyplot as plt

    table = result.importance()
    with figure_style():
        fig, axes = plt.subplots(1, 3, figsize=(WIDTHS[width], 2.5 if width == "two" else 2.4), layout="constrained")
        ax = axes[0]
        categories = sorted(table["category"].dropna().unique()) if "category" in table else []
        colours = palette_for(categories, category_colours())
        for category in categories or [None]:
            sub = table[table["category"] == category] if category is not None else table
            colour = colours.get(category, OKABE_ITO["black"]) if category is not None else OKABE_ITO["black"]
            ax.errorbar(sub["survival_mean"], sub["d_logprob"],
                        yerr=[sub["d_logprob"] - sub["d_logprob_ci_low"], sub["d_logprob_ci_high"] - sub["d_logprob"]],
                        fmt="o", markersize=3, color=colour, elinewidth=0.6, label=category or "units")
        ax.axhline(0, color="0.6", linewidth=0.6)
        ax.set(xlabel="unit mean greedy survival", ylabel="Δ log P(answer), kept − resampled")
        ax.set_title("a  unit importance", loc="left", fontweight="bold")
        if categories:
            ax.legend(fontsize=5, loc="best")
        ax = axes[1]
        for k, measure in enumerate(("d_logprob", "d_correct")):
            a = result.agreement(measure)
            rho = a["per_chain"]["rho"].dropna().to_numpy()
            jitter = np.linspace(-0.12, 0.12, len(rho)) if len(rho) > 1 else np.zeros(len(rho))
            ax.plot(k + jitter, rho, "o", markersize=3, color=OKABE_ITO["sky_blue"])
            if not _nan(a["mean_rho"]):
                low, high = a["ci_low"], a["ci_high"]
                yerr = None if _nan(low) else [[a["mean_rho"] - low], [high - a["mean_rho"]]]
                ax.errorbar([k + 0.3], [a["mean_rho"]], yerr=yerr, fmt="D", markersize=4, color=OKABE_ITO["black"])
        if result.agreement()["n_chains"] == 0:
            ax.text(0.5, 0.75, f"no chain with {result.agreement()['min_units']}+ units\nand varying values", ha="center", va="center",
                    transform=ax.transAxes, fontsize=6)
        ax.axhline(0, color="0.6", linewidth=0.6)
        ax.set(xticks=[0, 1], xticklabels=["Δ log P", "Δ correct"], ylim=(-1.05, 1.05), xlim=(-0.5, 1.6),
               ylabel="Spearman rho per chain")
        ax.set_title(f"b  agreement ({result.agreement()['n_chains']} chains)", loc="left", fontweight="bold")
        ax = axes[2]
        regen = result.regeneration()
        if regen.empty:
            ax.text(0.5, 0.5, "no regeneration rows", ha="center", va="center", transform=ax.transAxes)
        else:
            names = ["all"] + [c for c in sorted(regen["category"].unique()) if c != "all"]
            colours = {**palette_for(names[1:], category_colours()), "all": OKABE_ITO["black"]}
            for name in names:
                sub = regen[regen["category"] == name].sort_values("keep_ratio")
                ax.plot(sub["keep_ratio"], sub["rewritten_deleted"], marker="o", markersize=3, color=colours[name],
                        linewidth=1.5 if name == "all" else 0.9, label=name)
                if name == "all":
                    ax.fill_between(sub["keep_ratio"], sub["ci_low"], sub["ci_high"], color=colours[name], alpha=0.12,
                                    linewidth=0)
                    ax.plot(sub["keep_ratio"], sub["rewritten_kept"], linestyle="--", marker="x", markersize=3,
                            color=colours[name], linewidth=0.9, label="kept (reference)")
            ax.set(xlim=(1.0, max(0.0, float(regen["keep_ratio"].min()) - 0.05)), ylim=(-0.03, 1.03),
                   xlabel="keep ratio", ylabel="share written back")
            ax.legend(fontsize=5, loc="best")
        ax.set_title("c  regeneration", loc="left", fontweight="bold")
        fig.suptitle(f"On-policy importance beside greedy survival, {result.n_chains} chains", fontsize=7.5)
    return fig


def save_onpolicy_figure(result, stem: Path, width: str = "two", footnote: str | None = None) -> list[Path]:
    """Draw and save the figure; ``footnote`` goes under it."""
    fig = onpolicy_figure(result, width)
    if footnote:
        from .style import add_footnote

        add_footnote(fig, footnote)
    return save_figure(fig, stem)
