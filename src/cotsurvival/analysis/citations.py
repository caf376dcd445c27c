"""One quotable sentence per finding, worded by the data: a difference is claimed only when its
(Holm-adjusted where several were tested) p-value is below ``ALPHA``."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

ALPHA = 0.05


def fmt_p(p) -> str:
    """``p < 0.001`` or ``p = 0.012``."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "p undefined"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _f(x, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _name(group: str) -> str:
    return str(group).replace("_", " ")


def _n(d) -> str:
    return f"n = {d['n_tokens']:,} tokens in {d['n_chains']:,} chains"


def citations(result) -> list[str]:
    """Sentences for the findings in an :class:`~cotsurvival.analysis.analyze.AnalysisResult`."""
    out: list[str] = _approx_sentences(result)  # approx: an approximate run says so first
    for level in result.config["levels"]:
        out += _group_sentences(result, level)
    out += _ordering_sentences(result)
    out += _dynamics_sentences(result)
    out += _attention_sentences(result)
    out += [f"Note: {note}" for note in result.notes_]
    return out


def _approx_sentences(result) -> list[str]:
    """The approximation (``manifest engine.approx``) and its measured fidelity, if the run was approximate."""
    from ..rundir import RunDir

    try:
        manifest = RunDir(result.run).read_manifest()
    except Exception:  # noqa: BLE001 - a result without its run directory has nothing to add
        return []
    if not (manifest.get("engine") or {}).get("approx"):
        return []
    from ..pruning.approx import approx_note  # only approximate runs pay for importing the engine

    return [f"Note: {approx_note(manifest)}"]


def _group_sentences(result, level: str) -> list[str]:
    summary = result.tables_.get(f"summary_{level}")
    logrank = result.tests_.get(f"logrank_{level}", {})
    pairs = result.tables_.get(f"logrank_pairwise_{level}")
    kind = "category" if level == "category" else "fine label"
    out = []
    if summary is not None:
        for row in summary[summary["method"].str.startswith("median not reached")].itertuples():
            out.append(f"Fewer than half of the {_name(row.group)} tokens were deleted before the run stopped, so "
                       f"their median survival was not reached (n = {row.n_tokens:,} tokens in {row.n_chains:,} chains, "
                       f"{row.n_events:,} deleted).")
    if summary is None or pairs is None or summary["median"].notna().sum() < 2 or "chi2" not in logrank:
        return out
    ranked = summary.dropna(subset=["median"]).sort_values("median")
    top, bottom = ranked.iloc[-1], ranked.iloc[0]
    pair = pairs[((pairs.group_a == str(top.group)) & (pairs.group_b == str(bottom.group)))
                 | ((pairs.group_a == str(bottom.group)) & (pairs.group_b == str(top.group)))].iloc[0]
    what = "mean" if not math.isnan(top["mean"]) else None
    stat = "median normalized step"
    if pair.p_holm < ALPHA:
        out.append(
            f"{_name(top.group).capitalize()} tokens survived to a {stat} of {_f(top['median'])} "
            f"[95% CI {_f(top.median_lower)}, {_f(top.median_upper)}] versus {_f(bottom['median'])} "
            f"[{_f(bottom.median_lower)}, {_f(bottom.median_upper)}] for {_name(bottom.group)} tokens "
            f"(log-rank χ² = {pair.chi2:.1f}, Holm-adjusted {fmt_p(pair.p_holm)}; "
            f"n = {int(pair.n_tokens):,} tokens in {int(pair.n_chains):,} chains).")
    else:
        out.append(
            f"{_name(top.group).capitalize()} and {_name(bottom.group)} tokens did not survive significantly "
            f"differently (median normalized step {_f(top['median'])} vs {_f(bottom['median'])}; log-rank "
            f"χ² = {pair.chi2:.1f}, Holm-adjusted {fmt_p(pair.p_holm)}; n = {int(pair.n_tokens):,} tokens in "
            f"{int(pair.n_chains):,} chains).")
    verdict = "differed" if logrank["p"] < ALPHA else "did not differ significantly"
    out.append(f"Survival {verdict} across the {logrank['df'] + 1} {kind} groups (log-rank χ²({logrank['df']}) = "
               f"{logrank['chi2']:.1f}, {fmt_p(logrank['p'])}; {_n(logrank)}).")
    if what and level == "category":
        parts = ", ".join(f"{_name(r.group)} {_f(r['mean'])} [{_f(r.mean_lower)}, {_f(r.mean_upper)}]"
                          for r in ranked.iloc[::-1].itertuples(index=False) for r in [pd.Series(r._asdict())])
        out.append(f"Mean normalized survival by {kind} (chain-bootstrap 95% CI, {result.config['n_boot']} "
                   f"resamples): {parts}.")
    out += _cox_sentences(result, level, kind)
    kw = result.tests_.get(f"kruskal_{level}", {})
    if "H" in kw:
        verdict = "differed" if kw["p"] < ALPHA else "did not differ significantly"
        out.append(f"Normalized survival {verdict} across {kind} groups by Kruskal–Wallis (H = {kw['H']:.1f}, "
                   f"{fmt_p(kw['p'])}, ε² = {kw['epsilon2']:.2f}; {_n(kw)}; tokens treated as independent).")
    return out


def _cox_sentences(result, level: str, kind: str) -> list[str]:
    cox = result.tables_.get(f"cox_{level}")
    if cox is None:
        return []
    reference = result.tests_.get("cox_reference", {}).get(level)
    terms = cox[cox.term.str.startswith(f"{level}[")]
    significant = terms[terms.p < ALPHA]
    out = []
    if len(terms) and reference:
        if len(significant):
            parts = "; ".join(f"{_name(t.term.split('[', 1)[1][:-1])} HR = {t.hr:.2f} [{t.hr_lower:.2f}, "
                              f"{t.hr_upper:.2f}], {fmt_p(t.p)}" for t in significant.itertuples())
            out.append(f"Adjusting for relative position and token length, a Cox model with chain-clustered standard "
                       f"errors gave deletion hazard ratios versus {_name(reference)} tokens of {parts} (HR < 1: deleted "
                       f"later; Wald p unadjusted; n = {int(cox.n_tokens.iloc[0]):,} tokens in {int(cox.n_chains.iloc[0]):,} chains).")
        else:
            out.append(f"No {kind} differed significantly from {_name(reference)} tokens in deletion hazard in the "
                       f"adjusted Cox model (all p ≥ {ALPHA}; n = {int(cox.n_tokens.iloc[0]):,} tokens in "
                       f"{int(cox.n_chains.iloc[0]):,} chains).")
    ph = result.tables_.get(f"ph_test_{level}")
    if ph is not None:
        bad = ph[ph.p_holm < ALPHA]
        if len(bad):
            out.append(f"The proportional-hazards check (Schoenfeld residuals vs. time rank) flagged "
                       f"{', '.join(bad.term)} (smallest Holm-adjusted {fmt_p(bad.p_holm.min())}), so those hazard ratios are "
                       f"averages over a pruning in which their effect changes.")
        else:
            out.append(f"The proportional-hazards check found no significant time trend for any term (all Holm-adjusted "
                       f"p ≥ {ALPHA}).")
    return out


def _ordering_sentences(result) -> list[str]:
    effects = result.tables_.get("orderings_category")
    out = []
    if effects is not None:
        for ordering, sub in effects.groupby("ordering", sort=False):
            row = sub.iloc[0]
            if math.isnan(row.logrank_p):
                continue
            verdict = "differed" if row.logrank_p < ALPHA else "did not differ significantly"
            out.append(f"Under the {ordering} ordering, survival {verdict} across categories (log-rank "
                       f"χ² = {row.logrank_chi2:.1f}, {fmt_p(row.logrank_p)}; Kruskal–Wallis ε² = {_f(row.epsilon2)}; "
                       f"n = {int(row.n_tokens_ordering):,} tokens in {int(row.n_chains_ordering):,} chains).")
    inter = result.tests_.get("ordering_interaction", {})
    if "chi2" in inter and "note" not in inter:
        verdict = "differed" if inter["p"] < ALPHA else "did not differ significantly"
        out.append(f"The category structure {verdict} between orderings (Cox category × ordering Wald "
                   f"χ²({inter['df']}) = {inter['chi2']:.1f}, {fmt_p(inter['p'])}; {_n(inter)} over "
                   f"{len(inter['orderings'])} orderings).")
    for row in inter.get("per_ordering", []):
        if "note" not in row:
            verdict = "differed from" if row["p_holm"] < ALPHA else "did not differ significantly from"
            out.append(f"Category hazard ratios under the {row['ordering']} ordering {verdict} the greedy ones "
                       f"(Wald χ²({row['df']}) = {row['chi2']:.1f}, Holm-adjusted {fmt_p(row['p_holm'])}).")
    return out


def _dynamics_sentences(result) -> list[str]:
    out = []
    tau = result.tests_.get("tau", {})
    if tau.get("n", 0):
        out.append(f"Static (leave-one-out) and greedy deletion orders agreed with a mean Kendall τ of {_f(tau['mean'])} "
                   f"[95% CI {_f(tau['lower'])}, {_f(tau['upper'])}] across {tau['n_chains']:,} chains "
                   f"({tau['n_tokens']:,} tokens); τ < 1 means importance changed as tokens were deleted.")
    shift = result.tests_.get("rank_shift_overall", {})
    if shift.get("n", 0):
        out.append(f"Tokens moved by a mean absolute {_f(shift['mean'], 3)} in percentile between the static order and "
                   f"the greedy order [95% CI {_f(shift['lower'], 3)}, {_f(shift['upper'], 3)}] ({_n(shift)}).")
    test = result.tests_.get("rank_shift_test", {})
    if "p" in test:
        verdict = "differed" if test["p"] < ALPHA else "did not differ significantly"
        out.append(f"Rank shift {verdict} across categories (Kruskal–Wallis H = {test['H']:.1f}, {fmt_p(test['p'])}; "
                   f"{_n(test)}).")
    rescue = result.tables_.get("rescue_category")
    rtest = result.tests_.get("rescue_test", {})
    if rescue is not None and len(rescue):
        shares = ", ".join(f"{_name(r.group)} {r.n_rescued}/{r.n_bottom}" for r in rescue.itertuples())
        tail = (f"; {'the shares differed' if rtest['p'] < ALPHA else 'no significant difference'} across categories "
                f"({rtest['test'].replace('_', ' ')}, {fmt_p(rtest['p'])})" if "p" in rtest else "")
        out.append(f"Of the tokens in the bottom quartile at step 1, those surviving past the median step were: "
                   f"{shares}{tail}.")
    degradation = result.tables_.get("degradation")
    if degradation is not None:
        half = degradation[(degradation.fraction_pruned - 0.5).abs() < 1e-9]
        if len(half) and half.n_chains.iloc[0] > 0:
            row = half.iloc[0]
            out.append(f"Pruning half the reasoning tokens changed the objective by a mean of {_f(row.mean_drop)} nats "
                       f"[95% CI {_f(row.lower)}, {_f(row.upper)}] across {int(row.n_chains):,} chains.")
    return out


def _attention_sentences(result) -> list[str]:
    out = []
    best = result.tests_.get("attention_best_layer", {})
    for kind, row in best.items():
        what = "answer tokens" if kind == "answer" else "later reasoning tokens"
        crosses = row["lower"] is not None and not math.isnan(row["lower"]) and row["lower"] <= 0 <= row["upper"]
        tail = " (the interval includes 0)" if crosses else ""
        out.append(f"Attention received from {what} correlated best with survival at layer {row['layer']} (mean "
                   f"per-chain Spearman ρ = {_f(row['mean_rho'])} [95% CI {_f(row['lower'])}, {_f(row['upper'])}], "
                   f"{row['n_chains']:,} chains){tail}.")
    probe, base = result.tests_.get("attention_probe_attention", {}), result.tests_.get("attention_probe_surprisal", {})
    if "auc" in probe:
        text = (f"A chain-grouped cross-validated ridge probe on all attention layers predicted survival past the "
                f"midpoint with held-out ROC-AUC {_f(probe['auc'])} (Spearman ρ = {_f(probe['spearman'])}")
        if "auc" in base:
            text += f"), against {_f(base['auc'])} (ρ = {_f(base['spearman'])}) for surprisal alone"
        else:
            text += ")"
        out.append(text + f" ({_n(probe)}, {probe['n_folds']} folds).")
    return out


def write_citations(path: Path, result) -> None:
    """``citations.md``: the sentences as a Markdown list."""
    lines = ["# Findings", "", f"Run: `{result.run}`", ""]
    lines += [f"- {sentence}" for sentence in result.citations_]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
