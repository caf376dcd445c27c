"""One quotable sentence per finding, worded by the data.

Rules (docs/statistics.md): the first sentence is the pre-specified primary, chain-level result; a
difference is claimed only when its (Holm-adjusted within its family of sentences) p-value is below
``ALPHA`` or, for a change, when its interval excludes zero; token-level tests are labelled
"tokens treated as independent" and are descriptive; nothing resting on fewer than
``config["min_chains"]`` chains or ``config["min_tokens"]`` tokens is cited (a note says what was
withheld); chain-bootstrap intervals name the number of chains and warn below ``BOOTSTRAP_WARN_CHAINS``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..provenance import scoring_notes
from ..results import write_text
from ..rundir import RunDir
from .inference import holm

ALPHA = 0.05
#: Below this many chains a chain-bootstrap interval under-covers (81-89% measured with 6 chains).
BOOTSTRAP_WARN_CHAINS = 15
TOKEN_LEVEL = "tokens treated as independent; descriptive only"


def fmt_p(p) -> str:
    """``p < 0.001`` or ``p = 0.012``."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "p undefined"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def fmt_number(x, digits: int = 2) -> str:
    """``x`` with ``digits`` decimals, or ``n/a`` when missing (also used by comparison sentences)."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


_f = fmt_number  # the short name this module's sentences use


def _name(group: str) -> str:
    return str(group).replace("_", " ")


def _n(d) -> str:
    return f"n = {d['n_tokens']:,} tokens in {d['n_chains']:,} chains"


def _boot(n_chains: int) -> str:
    text = f"chain-bootstrap, {n_chains:,} chains"
    if n_chains < BOOTSTRAP_WARN_CHAINS:
        text += f"; with fewer than {BOOTSTRAP_WARN_CHAINS} chains this interval is likely too narrow"
    return text


def support_shortfall(n_chains, n_tokens=None, *, min_chains: int | None = None, min_tokens: int | None = None) -> str:
    """The one minimum-support rule of every command that writes ``citations.md`` (analyze, compare,
    recover): ``""`` when a result resting on ``n_chains`` chains (and ``n_tokens`` tokens, when it
    counts tokens) may be cited, otherwise the reason it is withheld. Defaults: ``MIN_CHAINS`` (6, the
    fewest with which an exact sign-flip test can reach p < 0.05) and ``MIN_TOKENS`` (20)."""
    from .chainlevel import MIN_CHAINS, MIN_TOKENS

    min_chains = MIN_CHAINS if min_chains is None else int(min_chains)
    min_tokens = MIN_TOKENS if min_tokens is None else int(min_tokens)
    if n_chains is None or (isinstance(n_chains, float) and math.isnan(n_chains)) or n_chains < min_chains:
        return f"{0 if n_chains is None else int(n_chains)} chains, below the minimum of {min_chains}"
    if n_tokens is not None and n_tokens < min_tokens:
        return f"{int(n_tokens)} tokens, below the minimum of {min_tokens}"
    return ""


def withheld_note(what: str, *, min_chains: int | None = None, min_tokens: int | None = None) -> str:
    """The one wording of a withheld result in every ``citations.md``."""
    from .chainlevel import MIN_CHAINS, MIN_TOKENS

    return (f"Note: withheld (below the minimum support of {MIN_CHAINS if min_chains is None else min_chains} "
            f"chains / {MIN_TOKENS if min_tokens is None else min_tokens} tokens): {what}")


def _support(result) -> tuple[int, int]:
    from .chainlevel import MIN_CHAINS, MIN_TOKENS

    return int(result.config.get("min_chains", MIN_CHAINS)), int(result.config.get("min_tokens", MIN_TOKENS))


def _enough(result, n_chains, n_tokens) -> bool:
    min_chains, min_tokens = _support(result)
    return n_tokens is not None and not support_shortfall(n_chains, n_tokens, min_chains=min_chains,
                                                          min_tokens=min_tokens)


def citations(result) -> list[str]:
    """Sentences for the findings in an :class:`~cotsurvival.analysis.analyze.AnalysisResult`.

    The first sentence is always the primary result (or why it is withheld).
    """
    withheld: list[str] = []
    out: list[str] = _primary_sentences(result)
    out += _scoring_sentences(result)  # the one place provenance notes (approximation, precision) are added
    out += _chain_level_sentences(result)
    for level in result.config["levels"]:
        out += _group_sentences(result, level, withheld)
    out += _ordering_sentences(result, withheld)
    out += _dynamics_sentences(result, withheld)
    out += _attention_sentences(result, withheld)
    out += [f"Note: {note}" for note in result.notes_]
    out += [withheld_note(w, min_chains=_support(result)[0], min_tokens=_support(result)[1]) for w in withheld]
    return out


def _scoring_sentences(result) -> list[str]:
    """How the run's ranks were scored, where it limits them (:func:`cotsurvival.provenance.scoring_notes`:
    an approximation, half precision, the run's rank stability)."""

    try:
        manifest = RunDir(result.run).read_manifest()
    except Exception:  # noqa: BLE001 - a result without its run directory has nothing to add
        return []
    return [f"Note: {note.text}" for note in scoring_notes(manifest, stability=getattr(result, "stability_", None))]


def _verdict(p: float, floor: float, n_chains: int, family: str = "") -> str | None:
    """None when the test can reject at ``ALPHA``; otherwise the sentence part that says it cannot."""
    if floor is not None and math.isfinite(floor) and floor >= ALPHA:
        return (f"cannot reach p < {ALPHA} with {n_chains} chains{family} (smallest attainable "
                f"p = {floor:.3f})")
    return None


def _end(x: float) -> str:
    """An interval end with 3 decimals, more when 3 would print a nonzero end as 0 (the side of 0 an
    end lies on is what the verdict beside it rests on)."""
    digits = 3
    while x != 0 and round(x, digits) == 0 and digits < 8:
        digits += 1
    return f"{x:+.{digits}f}"


def _interval(low, high) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "95% CI unbounded: the test cannot reject at any shift with this many chains"
    return f"95% CI {_end(low)}, {_end(high)}"


def _primary_sentences(result) -> list[str]:
    p = getattr(result, "primary_", {}) or {}
    if not p:
        return []
    if "p_value" not in p:
        return [f"Primary result: not computed for {p.get('contrast', 'the primary contrast')} ({p.get('note', '')})."]
    if "withheld" in p:
        return [f"Primary result withheld: {p['withheld']}; no claim is made (estimate "
                f"{p['estimate']:+.3f}, {p['n_chains']} chains)."]
    target = _name(" and ".join(p["targets"]))
    floor = p.get("p_floor")
    cannot = _verdict(p["p_value"], floor, p["n_chains"])
    significant = p["p_value"] < ALPHA and not cannot
    adjusted_for = p.get("adjusted_for") or ("within-chain position" if p.get("adjust_position") else "")
    if cannot:
        verb = f"could not be compared with the rest of their chain at this size: the test {cannot}; the"
        text = (f"Primary result (pre-specified): {target} tokens {verb} mean per-chain difference was "
                f"{p['estimate']:+.3f} in normalized survival")
    else:
        verb = (("survived longer than" if p["estimate"] > 0 else "were deleted earlier than") if significant
                else "did not survive significantly differently from")
        text = (f"Primary result (pre-specified): {target} tokens {verb} the rest of their chain, by a mean "
                f"{p['estimate']:+.3f} in normalized survival [{_interval(p['ci_low'], p['ci_high'])}, the interval "
                f"inverting the test]")
    delta = p.get("cliffs_delta")
    text += (f" (per-chain difference in mean normalized survival, "
             f"{'adjusted for ' + adjusted_for if adjusted_for and p.get('adjustment') != 'none' else 'unadjusted'}; "
             f"chain-level sign-flip permutation test{' (exact)' if p.get('exact') else ''}, {fmt_p(p['p_value'])}; "
             + (f"Cliff's δ within position windows = {_f(delta)}, mean over chains; " if delta is not None and
                p.get("cliffs_delta_method") else "")
             + f"n = {p['n_chains']:,} chains, {p['n_tokens']:,} tokens).")
    out = [text]
    power = p.get("power")
    if power:
        out.append(f"From the between-chain spread of this contrast, detecting a 0.1 difference with 80% power "
                   f"needs about {power['n_chains_needed']:,} chains (this run has {p['n_chains']:,}).")
    out += _sensitivity_sentences(p)
    return out


def _sensitivity_sentences(p: dict) -> list[str]:
    """The primary contrast under the other adjustments (each labelled by what it adjusts for), where
    the target tokens sit, and a note wherever that changes the reading."""
    rows = p.get("sensitivity") or {}
    out = []
    if rows:
        parts = []
        for label, r in rows.items():
            what = "unadjusted" if label == "none" else f"adjusted for {r['adjusted_for']}"
            cannot = _verdict(r["p_value"], r.get("p_floor"), r["n_chains"])
            parts.append(f"{what}: {r['estimate']:+.3f} [{_interval(r['ci_low'], r['ci_high'])}], "
                         f"{cannot or fmt_p(r['p_value'])} ({r['n_chains']} chains)")
        out.append(f"Sensitivity of the primary contrast (same chain-level sign-flip test, other adjustments): "
                   f"{'; '.join(parts)}.")
    place = p.get("placement") or {}
    if place:
        text = (f"Placement: {place['share_target_first_15pct']:.0%} of the {_name(p['targets'][0])} tokens sit in the "
                f"first 15% of their chains and {place['share_target_last_15pct']:.0%} in the last 15%")
        flagged = place.get("high_leverage_chains") or []
        without = place.get("without_high_leverage")
        if flagged and without:
            text += (f"; {len(flagged)} high-leverage chain(s) (contrast variance over 4× the median, or a contrast "
                     f"beyond ±1); without them the estimate is {without['estimate']:+.3f} "
                     f"[{_interval(without['ci_low'], without['ci_high'])}], {fmt_p(without['p_value'])} "
                     f"({without['n_chains']} chains)")
        else:
            text += "; no high-leverage chain"
        out.append(text + ".")
    out += [f"Note: primary result: {note}." for note in p.get("notes") or []]
    return out


def _chain_level_sentences(result) -> list[str]:
    table = result.tables_.get("chain_level_category")
    if table is None:
        return []
    cited = table[table["withheld"] == ""]
    if cited.empty:
        return []
    m = len(cited)
    n_chains = int(cited["n_chains"].min())
    floor = float(cited["p_floor"].max()) * m if "p_floor" in cited else None
    cannot = _verdict(np.nan, min(1.0, floor) if floor is not None else None, n_chains,
                      f" after Bonferroni across {m} categories")
    if cannot:
        parts = "; ".join(f"{_name(r.group)} {r.estimate:+.3f} ({int(r.n_chains)} chains)" for r in cited.itertuples())
        return [f"Each category against the rest of its chain (position-adjusted per-chain difference in mean "
                f"normalized survival; sign-flip tests): the family {cannot}, so no category is called different; "
                f"estimates: {parts}."]
    parts = "; ".join(f"{_name(r.group)} {r.estimate:+.3f} [{_interval(r.ci_low, r.ci_high)}], Bonferroni-adjusted "
                      f"{fmt_p(r.p_bonferroni)} ({int(r.n_chains)} chains)" for r in cited.itertuples())
    return [f"Each category against the rest of its chain (position-adjusted per-chain difference in mean "
            f"normalized survival; sign-flip tests, Bonferroni-adjusted across the {m} categories, with the "
            f"simultaneous intervals (level 1 − 0.05/{m}) that invert them): {parts}."]


def _group_sentences(result, level: str, withheld: list[str]) -> list[str]:
    summary = result.tables_.get(f"summary_{level}")
    logrank = result.tests_.get(f"logrank_{level}", {})
    kind = "category" if level == "category" else "fine label"
    out = []
    if summary is not None:
        for row in summary[summary["method"].str.startswith("median not reached")].itertuples():
            out.append(f"Fewer than half of the {_name(row.group)} tokens were deleted before the run stopped, so "
                       f"their median survival was not reached (n = {row.n_tokens:,} tokens in {row.n_chains:,} chains, "
                       f"{row.n_events:,} deleted).")
    if "chi2" in logrank:
        if _enough(result, logrank["n_chains"], logrank["n_tokens"]):
            verdict = "differed" if logrank["p"] < ALPHA else "did not differ significantly"
            out.append(f"Descriptively, survival {verdict} across the {logrank['df'] + 1} {kind} groups (log-rank "
                       f"χ²({logrank['df']}) = {logrank['chi2']:.1f}, {fmt_p(logrank['p'])}; {_n(logrank)}; "
                       f"{TOKEN_LEVEL}).")
        else:
            withheld.append(f"log-rank across {kind} groups ({_n(logrank)})")
    if summary is not None and level == "category" and summary["mean"].notna().any():
        ok = summary[[_enough(result, r.n_chains, r.n_tokens) for r in summary.itertuples()]].dropna(subset=["mean"])
        for r in summary.itertuples():
            if not _enough(result, r.n_chains, r.n_tokens):
                withheld.append(f"mean survival of {_name(r.group)} tokens (n = {r.n_tokens:,} tokens in "
                                f"{r.n_chains:,} chains)")
        if len(ok):
            n_chains = int(result.counts_.get("n_chains", ok["n_chains"].max()))
            parts = ", ".join(f"{_name(r.group)} {_f(r.mean)} [{_f(r.mean_lower)}, {_f(r.mean_upper)}]"
                              for r in ok.sort_values("group").itertuples())
            out.append(f"Mean normalized survival by {kind} (95% CI {_boot(n_chains)}, "
                       f"{result.config['n_boot']} resamples): {parts}.")
    out += _cox_sentences(result, level, kind, withheld)
    kw = result.tests_.get(f"kruskal_{level}", {})
    if "H" in kw and _enough(result, kw["n_chains"], kw["n_tokens"]):
        verdict = "differed" if kw["p"] < ALPHA else "did not differ significantly"
        out.append(f"Descriptively, normalized survival {verdict} across {kind} groups by Kruskal–Wallis "
                   f"(H = {kw['H']:.1f}, {fmt_p(kw['p'])}, ε² = {kw['epsilon2']:.2f}; {_n(kw)}; {TOKEN_LEVEL}).")
    return out


def _cox_sentences(result, level: str, kind: str, withheld: list[str]) -> list[str]:
    cox = result.tables_.get(f"cox_{level}")
    joint = result.tests_.get(f"cox_joint_{level}")
    if cox is None or not joint:
        return []
    reference = result.tests_.get("cox_reference", {}).get(level)
    n_tok, n_ch = int(cox.n_tokens.iloc[0]), int(cox.n_chains.iloc[0])
    if not _enough(result, n_ch, n_tok):
        withheld.append(f"Cox model of {kind} ({n_tok:,} tokens in {n_ch:,} chains)")
        return []
    method = cox["se_method"].iloc[0] if "se_method" in cox else "cluster"
    se_text = {"jackknife": "chain-jackknife SEs, Hotelling-scaled F reference",
               "cluster": "chain-clustered sandwich SEs", "model": "model-based SEs (tokens treated as independent)"}[method]
    if not math.isfinite(joint.get("p", float("nan"))):
        return [f"In a Cox model stratified by chain ({se_text}), the {kind} terms could not be tested jointly "
                f"({joint.get('test', '')}; n = {n_tok:,} tokens in {n_ch:,} chains)."]
    stat = (f"F({joint['df']}, {int(joint['df_denom'])}) = {joint['statistic']:.2f}" if joint.get("df_denom")
            else f"χ²({joint['df']}) = {joint['statistic']:.1f}")
    verdict = "differed" if joint["p"] < ALPHA else "did not differ significantly"
    flexible = "rel_position_2" in set(cox["term"])
    position = ("relative position as covariate" if not flexible
                else "a cubic in relative position, a jump where the final reasoning unit starts and each chain's "
                     "survival jump as covariates" if "final_unit_jump" in set(cox["term"])
                else "a cubic in relative position plus each chain's survival jump as covariates")
    out = [f"Supporting evidence (the primary result is the one to cite): in a Cox model stratified by chain "
           f"({position}, token length not adjusted for; {se_text}), the {kind} terms tested jointly {verdict} in "
           f"deletion hazard ({stat}, {fmt_p(joint['p'])}; n = {n_tok:,} tokens in {n_ch:,} chains)."]
    summary = result.tables_.get(f"summary_{level}")
    support = ({str(r.group): (r.n_chains, r.n_tokens) for r in summary.itertuples()} if summary is not None else {})
    terms = cox[cox.term.str.startswith(f"{level}[")].copy()
    if joint["p"] < ALPHA and len(terms) and reference:
        terms["p_holm"] = holm(terms["p"])
        parts = []
        for t in terms.itertuples():
            name = t.term.split("[", 1)[1][:-1]
            if not _enough(result, *support.get(name, (0, 0))):
                withheld.append(f"Cox hazard ratio of {_name(name)} ({support.get(name, (0, 0))[1]} tokens in "
                                f"{support.get(name, (0, 0))[0]} chains)")
                continue
            parts.append(f"{_name(name)} HR = {t.hr:.2f} [{t.hr_lower:.2f}, {t.hr_upper:.2f}], Holm-adjusted "
                         f"{fmt_p(t.p_holm)}")
        if parts:
            out.append(f"Deletion hazard ratios versus {_name(reference)} tokens (HR < 1: deleted later): "
                       f"{'; '.join(parts)}.")
    ph = result.tables_.get(f"ph_test_{level}")
    if ph is not None:
        bad = ph[ph.p_holm < ALPHA]
        if len(bad):
            out.append(f"The proportional-hazards check (Schoenfeld residuals vs. time rank) flagged "
                       f"{', '.join(bad.term)} (smallest Holm-adjusted {fmt_p(bad.p_holm.min())}), so those hazard "
                       f"ratios are averages over a pruning in which their effect changes.")
        else:
            out.append("The proportional-hazards check found no significant time trend for any term (all "
                       f"Holm-adjusted p ≥ {ALPHA}).")
    return out


def _ordering_sentences(result, withheld: list[str]) -> list[str]:
    out = []
    paired = result.tables_.get("orderings_chain_level")
    if paired is not None and len(paired):
        primary = _name(result.config.get("primary", "symbolic_math"))
        paired = paired[paired["ordering"] != "random"]  # greedy vs random repeats the primary test
        parts, cited = [], []
        for r in paired.itertuples():
            if support_shortfall(r.n_chains, min_chains=_support(result)[0]):
                withheld.append(f"greedy vs {r.ordering} ordering ({r.n_chains} chains)")
            else:
                cited.append(r)
        m = len(cited)
        for r in cited:
            floor = getattr(r, "p_floor", None)
            cannot = _verdict(np.nan, min(1.0, floor * m) if floor is not None else None, r.n_chains,
                              f" after Bonferroni across {m} orderings")
            if cannot:
                parts.append(f"{r.ordering}: {r.estimate:+.3f}, the test {cannot}")
                continue
            p_adj = min(1.0, r.p_value * m)
            verdict = "larger" if p_adj < ALPHA and r.estimate > 0 else (
                "smaller" if p_adj < ALPHA else "not significantly different")
            parts.append(f"{r.ordering}: {verdict}, {r.estimate:+.3f} [{_interval(r.ci_low, r.ci_high)}], "
                         f"Bonferroni-adjusted {fmt_p(p_adj)} ({r.n_chains} chains)")
        if parts:
            out.append(f"Compared with each baseline ordering, the greedy order's position-adjusted {primary}-vs-rest "
                       f"contrast was (paired chain-level sign-flip tests, Bonferroni across {m} orderings with the "
                       f"simultaneous intervals that invert them; greedy vs random is not listed: random's expected "
                       f"contrast is 0, so it repeats the primary result): {'; '.join(parts)}.")
    effects = result.tables_.get("orderings_category")
    if effects is not None:
        for ordering, sub in effects.groupby("ordering", sort=False):
            row = sub.iloc[0]
            if math.isnan(row.logrank_p):
                continue
            if not _enough(result, int(row.n_chains_ordering), int(row.n_tokens_ordering)):
                continue
            verdict = "differed" if row.logrank_p < ALPHA else "did not differ significantly"
            out.append(f"Descriptively, under the {ordering} ordering survival {verdict} across categories "
                       f"(log-rank χ² = {row.logrank_chi2:.1f}, {fmt_p(row.logrank_p)}; Kruskal–Wallis ε² = "
                       f"{_f(row.epsilon2)}; n = {int(row.n_tokens_ordering):,} tokens in "
                       f"{int(row.n_chains_ordering):,} chains; {TOKEN_LEVEL}).")
    return out


def _dynamics_sentences(result, withheld: list[str]) -> list[str]:
    out = []
    min_chains = _support(result)[0]
    tau = result.tests_.get("tau", {})
    if tau.get("n", 0) >= min_chains:
        out.append(f"Static (leave-one-out) and greedy deletion orders agreed with a mean Kendall τ of {_f(tau['mean'])} "
                   f"[95% CI {_f(tau['lower'])}, {_f(tau['upper'])}, t over chains] across {tau['n_chains']:,} chains "
                   f"({tau['n_tokens']:,} tokens); τ < 1 means importance changed as tokens were deleted.")
    elif tau.get("n", 0):
        withheld.append(f"Kendall τ between static and greedy orders ({tau['n']} chains)")
    shift = result.tests_.get("rank_shift_overall", {})
    if shift.get("n", 0) >= min_chains:
        out.append(f"Tokens moved by a mean absolute {_f(shift['mean'], 3)} in percentile between the static order and "
                   f"the greedy order (per-chain means; 95% CI {_f(shift['lower'], 3)}, {_f(shift['upper'], 3)}, t over "
                   f"chains; {_n(shift)}).")
    test = result.tests_.get("rank_shift_test", {})
    if "p" in test and _enough(result, test["n_chains"], test["n_tokens"]):
        verdict = "differed" if test["p"] < ALPHA else "did not differ significantly"
        out.append(f"Descriptively, rank shift {verdict} across categories (Kruskal–Wallis H = {test['H']:.1f}, "
                   f"{fmt_p(test['p'])}; {_n(test)}; {TOKEN_LEVEL}).")
    rescue = result.tables_.get("rescue_category")
    rtest = result.tests_.get("rescue_test", {})
    if rescue is not None and len(rescue):
        if _enough(result, rtest.get("n_chains", 0), rtest.get("n_tokens", 0)):
            shares = ", ".join(f"{_name(r.group)} {r.n_rescued}/{r.n_bottom}" for r in rescue.itertuples())
            tail = (f"; descriptively {'the shares differed' if rtest['p'] < ALPHA else 'no significant difference'} "
                    f"across categories ({rtest['test'].replace('_', ' ')}, {fmt_p(rtest['p'])}; {TOKEN_LEVEL})"
                    if "p" in rtest else "")
            out.append(f"Of the tokens in the bottom quartile at step 1, those surviving past the median step were: "
                       f"{shares}{tail}.")
        else:
            withheld.append(f"bottom-quartile rescue ({rtest.get('n_tokens', 0)} tokens in {rtest.get('n_chains', 0)} chains)")
    degradation = result.tables_.get("degradation")
    if degradation is not None:
        half = degradation[(degradation.fraction_pruned - 0.5).abs() < 1e-9]
        if len(half) and half.n_chains.iloc[0] > 0:
            row = half.iloc[0]
            if int(row.n_chains) < min_chains:
                withheld.append(f"objective change at half pruned ({int(row.n_chains)} chains)")
            elif row.lower > 0 or row.upper < 0:
                out.append(f"Pruning half the reasoning tokens changed the objective by a mean of {_f(row.mean_change)} "
                           f"nats [95% CI {_f(row.lower)}, {_f(row.upper)}, t over chains] across "
                           f"{int(row.n_chains):,} chains.")
            else:
                out.append(f"Pruning half the reasoning tokens did not change the objective significantly (mean "
                           f"{_f(row.mean_change)} nats [95% CI {_f(row.lower)}, {_f(row.upper)}] across "
                           f"{int(row.n_chains):,} chains; the interval includes 0).")
    return out


def _below_floor(p, n_chains) -> str:
    """A bootstrap p below what an exact test over ``n_chains`` chains could give says so."""
    from .inference import smallest_p

    floor = smallest_p(int(n_chains))
    return (f" (a bootstrap p; an exact test over {n_chains} chains cannot go below {floor:.3f})"
            if p is not None and math.isfinite(p) and p < floor else "")


def _attention_sentences(result, withheld: list[str]) -> list[str]:
    out = []
    min_chains = _support(result)[0]
    best = result.tests_.get("attention_best_layer", {})
    for kind, row in best.items():
        what = "answer tokens" if kind == "answer" else "later reasoning tokens"
        if row["n_chains"] < min_chains:
            withheld.append(f"best attention layer ({what}, {row['n_chains']} chains)")
            continue
        adjusted = row.get("p_selection_adjusted")
        k = row.get("n_layers_compared", "?")
        if adjusted is None:
            tail = "; not adjusted for choosing the best layer"
        else:
            verdict = ("significant" if adjusted < ALPHA else "not significant")
            tail = (f"; {verdict} after adjusting for choosing it among {k} layer(s): selection-adjusted "
                    f"{fmt_p(adjusted)}, {row.get('selection_test', '')}")
        out.append(f"Attention received from {what} correlated best with survival at layer {row['layer']} (mean "
                   f"per-chain Spearman ρ = {_f(row['mean_rho'])} [95% CI {_f(row['lower'])}, {_f(row['upper'])}], "
                   f"{row['n_chains']:,} chains{tail}).")
    comp = result.tests_.get("attention_probe_comparison", {})
    probe = result.tests_.get("attention_probe_attention", {})
    if "auc" in comp and "auc_ci" in comp:
        if comp["n_chains"] < min_chains:
            withheld.append(f"attention probe AUC ({comp['n_chains']} chains)")
        else:
            out.append(f"A chain-grouped cross-validated ridge probe on all attention layers predicted survival past "
                       f"the midpoint with held-out ROC-AUC {_f(comp['auc'])} [95% CI {_f(comp['auc_ci'][0])}, "
                       f"{_f(comp['auc_ci'][1])}], against {_f(comp['auc_other'])} [{_f(comp['auc_other_ci'][0])}, "
                       f"{_f(comp['auc_other_ci'][1])}] for surprisal alone (difference {comp['difference']:+.2f} "
                       f"[{comp['difference_ci'][0]:+.2f}, {comp['difference_ci'][1]:+.2f}], {comp['test']}, "
                       f"{fmt_p(comp['p_value'])}{_below_floor(comp['p_value'], comp['n_chains'])}; {_boot(comp['n_chains'])}; "
                       f"{comp['n_tokens']:,} tokens, "
                       f"{probe.get('n_folds', '?')} folds).")
    elif "auc" in probe and probe.get("n_chains", 0) >= min_chains:
        out.append(f"A chain-grouped cross-validated ridge probe on all attention layers predicted survival past the "
                   f"midpoint with held-out ROC-AUC {_f(probe['auc'])} ({_n(probe)}, {probe['n_folds']} folds; no "
                   f"surprisal baseline to compare with, no interval).")
    return out


def write_citations(path: Path, result) -> None:
    """``citations.md``: the sentences as a Markdown list."""
    lines = ["# Findings", "", f"Run: `{result.run}`", ""]
    lines += [f"- {sentence}" for sentence in result.citations_]
    write_text(path, "\n".join(lines) + "\n")
