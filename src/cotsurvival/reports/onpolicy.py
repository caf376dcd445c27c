"""On-policy importance beside greedy survival: the figure and the citable sentences.

Takes an :class:`~cotsurvival.analysis.onpolicy.OnPolicyResult` and never imports
:mod:`cotsurvival.resampling`, so the dependency runs one way (analysis -> reports).

Sentences follow the project's rules (docs/statistics.md): every across-chain statement names its
number of chains and is withheld below ``min_chains`` (``analyze``'s minimum); a direction is
claimed only when the test's p-value is below ``ALPHA`` *and* its interval excludes 0; when the two
disagree the sentence says the evidence is mixed and claims nothing, so "no clear difference" never
stands beside an interval that excludes 0. Per-unit rollout intervals are descriptive.

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

from ..analysis.chainlevel import MIN_CHAINS
from ..analysis.citations import ALPHA, fmt_number as _f, fmt_p
from .style import OKABE_ITO, WIDTHS, category_colours, figure_style, palette_for, save_figure

MEASURE_WORDS = {"d_logprob": "Δ log P(answer) (kept − resampled)",
                 "d_correct": "Δ share correct among answered rollouts (kept − resampled)"}


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _verdict(p, low, high) -> str:
    """``claim``, ``none`` or ``mixed`` from a p-value and the interval of the same test."""
    if _nan(p) or _nan(low) or _nan(high):
        return "none"
    excludes = low > 0 or high < 0
    if p < ALPHA and excludes:
        return "claim"
    return "mixed" if (p < ALPHA) != excludes else "none"


def onpolicy_sentences(result) -> list[str]:
    """The citable sentences of an on-policy result (see the module docstring)."""
    min_chains = int(result.config.get("min_chains", MIN_CHAINS))
    s = result.settings
    rollouts = result.rollouts
    importance = result.importance()
    failed = float(rollouts["outcome"].isin(("truncated", "no_answer")).mean()) if len(rollouts) else float("nan")
    out = [f"On-policy importance: {s.get('rollouts')} rollouts per cut (temperature {s.get('temperature')}, "
           f"top-p {s.get('top_p')}, seed {s.get('seed')}, at most {s.get('max_new_tokens')} new tokens) for "
           f"{len(importance)} units of {result.n_chains} chains ({len(rollouts):,} rollouts); "
           f"{_f(100 * failed, 0)}% of rollouts ended without an answer and are counted apart, not as wrong."]
    kept = result.filter_summary()
    if kept["n_resampled"]:
        lost = kept["n_units_without_counterfactual"]
        out.append(f"Counterfactual filter: {kept['n_similar_excluded']:,} of {kept['n_resampled']:,} resampled "
                   f"rollouts rewrote their unit with lexical similarity above {kept['threshold']:g} "
                   f"({kept['measure']}) and were left out of the importance"
                   + (f"; {lost} unit{'' if lost == 1 else 's'} had no dissimilar replacement and no importance."
                      if lost else "."))
    withheld = []
    for measure in ("d_logprob", "d_correct"):
        a = result.agreement(measure)
        what = f"the agreement of unit mean survival with {MEASURE_WORDS[measure]}"
        if a["n_chains"] < min_chains:
            withheld.append(f"{what} ({a['n_chains']} chains with {a['min_units']}+ units and varying values)")
            continue
        numbers = (f"mean per-chain Spearman rho = {_f(a['mean_rho'])} [95% CI {_f(a['ci_low'])}, {_f(a['ci_high'])}] "
                   f"over {a['n_chains']} chains (sign-flip {fmt_p(a['p_sign_flip'])}; t test {fmt_p(a['p_t'])})")
        verdict = _verdict(a["p_sign_flip"], a["ci_low"], a["ci_high"])
        if verdict == "claim":
            direction = "agree" if a["mean_rho"] > 0 else "disagree"
            out.append(f"Within chains, greedy survival and on-policy importance ({MEASURE_WORDS[measure]}) "
                       f"{direction} in rank: {numbers}.")
        elif verdict == "mixed":
            out.append(f"Rank agreement of greedy survival with {MEASURE_WORDS[measure]} is inconclusive (test and "
                       f"interval disagree; no claim is made): {numbers}.")
        else:
            out.append(f"No rank agreement of greedy survival with {MEASURE_WORDS[measure]} was detected: {numbers}.")
    table = result.by_category()
    for category, sub in table.groupby("category", sort=True):
        rows = {r["measure"]: r for _, r in sub.iterrows()}
        greedy, onpolicy = rows.get("greedy survival"), rows.get("on-policy d_logprob")
        if greedy is None or onpolicy is None or min(greedy["n_chains"], onpolicy["n_chains"]) < min_chains:
            n = 0 if onpolicy is None else int(onpolicy["n_chains"])
            withheld.append(f"units dominated by {category} ({n} chains with such and other units)")
            continue
        verdicts = [_verdict(r["p_holm"], r["ci_low"], r["ci_high"]) for r in (greedy, onpolicy)]
        signs = [np.sign(r["estimate"]) if v == "claim" else 0 for r, v in zip((greedy, onpolicy), verdicts)]
        if signs[0] and signs[1]:
            relation = "the two kinds of importance agree in direction" if signs[0] == signs[1] else \
                "the two kinds of importance point in opposite directions"
        elif signs[0] or signs[1]:
            relation = f"only the {'greedy' if signs[0] else 'on-policy'} measure separates these units from the rest"
        else:
            relation = "neither measure separates these units from the rest"
        out.append(f"Greedy vs on-policy importance of units dominated by {category.replace('_', ' ')} "
                   f"({int(onpolicy['n_chains'])} chains, "
                   f"{int(onpolicy['n_units'])} units): {relation}; greedy mean survival "
                   f"{float(greedy['estimate']):+.3f} [95% CI {float(greedy['ci_low']):+.3f}, {float(greedy['ci_high']):+.3f}] "
                   f"({fmt_p(greedy['p_holm'])}, Holm) and Δ log P(answer) {float(onpolicy['estimate']):+.3f} nats "
                   f"[{float(onpolicy['ci_low']):+.3f}, {float(onpolicy['ci_high']):+.3f}] ({fmt_p(onpolicy['p_holm'])}, "
                   f"Holm), each relative to the chain's other units.")
    regen = result.regeneration()
    outcomes = result.regeneration_outcomes()
    for _, row in (regen[regen["category"] == "all"].iterrows() if not regen.empty else []):
        if row["n_chains"] < min_chains:
            withheld.append(f"regeneration at keep ratio {row['keep_ratio']:g} ({int(row['n_chains'])} chains)")
            continue
        o = outcomes[outcomes["keep_ratio"] == row["keep_ratio"]].iloc[0]
        out.append(f"Continuing from reasoning pruned to keep ratio {row['keep_ratio']:g}, the model wrote back "
                   f"{_f(100 * row['rewritten_deleted'], 0)}% [95% CI {_f(100 * row['ci_low'], 0)}, "
                   f"{_f(100 * row['ci_high'], 0)}] of the deleted tokens before its answer, against "
                   f"{_f(100 * row['rewritten_kept'], 0)}% of the kept ones (chain-bootstrap, {int(row['n_chains'])} "
                   f"chains; bag-of-tokens match), and reached the right answer in {_f(100 * o['correct'], 0)}% of "
                   f"chains ({_f(100 * o['failed'], 0)}% without an answer).")
    out.append("Note: per-unit intervals resample rollouts within one chain and are descriptive; claims rest on the "
               "per-chain statistics tested across chains.")
    out += [f"Note: withheld (below the minimum support of {min_chains} chains): {w}" for w in withheld]
    return out


# ---------------------------------------------------------------------------------------- figure

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
            y = sub["d_logprob"].to_numpy(dtype=float)
            ax.errorbar(sub["survival_mean"].to_numpy(dtype=float), y,
                        yerr=np.vstack([y - sub["d_logprob_ci_low"].to_numpy(dtype=float),
                                        sub["d_logprob_ci_high"].to_numpy(dtype=float) - y]),
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
    return save_figure(onpolicy_figure(result, width), stem, footnote)
