"""HTML snippets for Jupyter (``_repr_html_``): a chain coloured by category, and a run summary.

``RunDir`` shows :func:`run_summary_html`; ``RunDir.chain(i)`` returns a :class:`ChainView`
that shows :func:`chain_html`.

All chain text goes through :func:`html.escape`, so a token such as ``<script>`` shows as text.
"""
from __future__ import annotations

import html
import os

import pandas as pd

from ..analysis.data import join_labels
from ..errors import CotSurvivalError
from ..labels import resolve_source
from ..rundir import RunDir, as_rundir
from .data import display_name, token_segments
from .stored import number_cell
from .style import COARSE, category_colours, order_present

_TOKEN_COLUMNS = ["position", "text", "char_start", "char_end", "deleted_step", "survival", "censored",
                  "label", "category", "deletion_gap"]


_rundir = as_rundir  # the one opener (cotsurvival.rundir.as_rundir)


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha:.2f})"


def read_chain_tokens(run: RunDir, chain_index: int, labels: str = "rule") -> pd.DataFrame:
    """One chain's tokens (columns a render needs), sorted by position; E051 if the chain is unknown.

    ``label``/``category`` come from the labels source ``labels`` (missing when it has none).
    """
    indices = run.part_indices("tokens")
    if chain_index not in indices:
        raise CotSurvivalError("E051", chain=chain_index, n_chains=len(indices), last=max(indices, default=-1))
    names = run.part_columns("tokens", chain_index)
    frame = run.read_part("tokens", chain_index, columns=[c for c in _TOKEN_COLUMNS + ["chain_index", "chain_id"]
                                                         if c in names and c not in ("label", "category")])

    try:
        source = resolve_source(run, labels)
    except CotSurvivalError:
        source = None
    frame = join_labels(run, frame, source)
    if "deletion_gap" in frame:  # near-tie deletions (cotsurvival.pruning.diagnostics)
        from ..precision import near_tie_threshold
        from ..pruning.diagnostics import near_tie

        manifest = run.read_manifest()
        threshold = (manifest.get("diagnostics") or {}).get("near_tie_threshold") or \
            near_tie_threshold((manifest.get("model") or {}).get("dtype", "float32"))
        frame["near_tie"] = near_tie(frame["deletion_gap"], threshold)
    return frame.sort_values("position").reset_index(drop=True)


def chain_html(run: str | os.PathLike | RunDir, chain_index: int) -> str:
    """A chain as HTML: background colour = category, opacity = survival; hover shows the details.

    Parameters
    ----------
    run : str, PathLike or RunDir
        The run directory.
    chain_index : int
        Row of the chain in ``chains.parquet``.

    Returns
    -------
    str
        An HTML fragment (no scripts), safe to show in a notebook.
    """
    run = _rundir(run)
    tokens = read_chain_tokens(run, chain_index)
    chains = run.read_chains()
    row = chains[chains["chain_index"] == chain_index].iloc[0]
    colours = category_colours()
    segments, tail = token_segments(row["reasoning"], tokens)
    spans = []
    for segment, token in zip(segments, tokens.itertuples()):
        colour = colours.get(token.category, "#BBBBBB") if isinstance(token.category, str) else "#BBBBBB"
        alpha = 0.12 + 0.78 * float(token.survival)
        step = "kept (censored)" if pd.isna(token.deleted_step) else f"deleted at step {int(token.deleted_step)}"
        tip = f"{token.text!r} · {token.label or 'untagged'} · {step} · survival {token.survival:.3f}"
        tie = bool(getattr(token, "near_tie", False))
        if tie:  # a dotted underline: the step that deleted it could have gone the other way by rounding
            tip += f" · near-tie deletion (gap {token.deletion_gap:.2g} nats)"
        mark = ";text-decoration:underline dotted" if tie else ""
        spans.append(f'<span style="background:{_rgba(colour, alpha)}{mark}" title="{html.escape(tip, quote=True)}">'
                     f"{html.escape(segment)}</span>")
    present = order_present(tokens["category"].dropna().unique(), COARSE)
    legend = "".join(f'<span style="background:{_rgba(colours.get(c, "#BBBBBB"), 0.7)}">{html.escape(display_name(c))}</span>'
                     for c in present)
    ties = int(tokens["near_tie"].sum()) if "near_tie" in tokens else 0
    head = (f"<div><b>{html.escape(str(row['chain_id']))}</b> · {len(tokens)} tokens · "
            f"opacity = survival" + (f" · {ties} near-tie deletions (dotted)" if ties else "") + "</div>"
            f"<div><i>Q:</i> {html.escape(str(row['question']))}</div>")
    return (f'<div class="cs-chain-box">{head}<div class="cs-legend">{legend}</div>'
            f'<div class="cs-chain" style="font-family:monospace;white-space:pre-wrap;line-height:1.9">'
            f'{"".join(spans)}{html.escape(tail)}</div></div>')


class ChainView:
    """One chain of a run, shown in Jupyter as :func:`chain_html` (``RunDir.chain(i)`` makes one).

    Parameters
    ----------
    run : str, PathLike or RunDir
        The run directory.
    chain_index : int
        Row of the chain in ``chains.parquet``; E051 at once if the run has no such chain.
    """

    def __init__(self, run: str | os.PathLike | RunDir, chain_index: int) -> None:
        self.run = _rundir(run)
        indices = self.run.part_indices("tokens")
        if chain_index not in indices:
            raise CotSurvivalError("E051", chain=chain_index, n_chains=len(indices), last=max(indices, default=-1))
        self.chain_index = int(chain_index)

    @property
    def html(self) -> str:
        """The HTML fragment (re-read from the run, so it follows a later ``tag``)."""
        return chain_html(self.run, self.chain_index)

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return f"ChainView({str(self.run.path)!r}, chain_index={self.chain_index})"


def run_summary_html(run: str | os.PathLike | RunDir, stats=None) -> str:
    """A run at a glance: model, settings, chain and token counts, survival by category.

    Survival medians are Kaplan–Meier medians ("not reached" when under half of a group was
    deleted before the run stopped), read from the stored analysis (``stats`` or
    ``RUN/stats/stats.json``) when it matches the run, else computed by the function
    ``analyze`` itself uses (:func:`cotsurvival.analysis.survival_summary`, without CIs).

    Parameters
    ----------
    run : str, PathLike or RunDir
    stats : AnalysisResult, optional
        The stored analysis to quote (default: loaded from the run when present).

    Returns
    -------
    str
        An HTML fragment with two small tables.
    """
    run = _rundir(run)
    manifest = run.read_manifest()
    model = manifest.get("model") or {}
    taxonomy = manifest.get("taxonomy") or {}
    if stats is None:
        from ..analysis import AnalysisResult

        try:
            stats = AnalysisResult.load(run)
        except CotSurvivalError:
            stats = None
    rows = [("model", model.get("spec")), ("objective", manifest.get("objective")),
            ("labels analysed", analysed_labels(stats)),
            ("chains", manifest.get("n_chains")), ("keep ratio reached", manifest.get("keep_ratio")),
            ("baselines", ", ".join(manifest.get("baselines") or []) or "none"),
            ("taxonomy", " ".join(str(taxonomy.get(k, "")) for k in ("name", "version")).strip() or "not tagged"),
            ("skipped inputs", len(manifest.get("skipped") or [])),
            ("near-ties", _near_ties(manifest)), ("replicate paths", _stability(manifest, stats)),
            ("cotsurvival", manifest.get("cotsurvival_version")), ("created", manifest.get("created"))]
    info = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows if v is not None)
    return f'<table class="cs-summary">{info}</table>{_category_table(run, stats)}'


def _near_ties(manifest: dict) -> str | None:
    """The free near-tie diagnostic in words (None for runs pruned before it was recorded)."""
    from ..provenance import NO_NEAR_TIE_DIAGNOSTIC, near_tie_sentence

    diagnostics = manifest.get("diagnostics")
    if not diagnostics:
        return None
    replicated = (manifest.get("replicates") or {}).get("k", 1) > 1
    return near_tie_sentence(diagnostics, manifest.get("n_chains"), suggest_replicates=not replicated) or NO_NEAR_TIE_DIAGNOSTIC


def _stability(manifest: dict, stats) -> str | None:
    """K, T and, once analysed, the replicate τ (stats.json ``stability.sentence``)."""
    replicates = manifest.get("replicates") or {}
    if replicates.get("k", 1) <= 1:
        return "1 (the greedy path; prune --replicates K measures how stable ranks are)"
    sentence = (getattr(stats, "stability_", None) or {}).get("sentence")
    return sentence or (f"{replicates['k']} per chain, Gumbel noise of {replicates['scale_nats']:g} nats "
                        "(run `cotsurvival analyze` for their agreement)")


def analysed_labels(stats) -> str:
    """The label source the stored analysis used (``stats.json`` ``config.labels_source``), in words."""
    if stats is None:
        return "not analysed yet (run `cotsurvival analyze`)"
    source = (getattr(stats, "config", None) or {}).get("labels_source")
    return f"{source} (stats.json config.labels_source)" if source else "none (stats.json records no label source)"


def _stored_summary(run: RunDir, stats) -> pd.DataFrame | None:
    """``summary_category`` of the stored analysis, when there is one and it covers this run's chains."""
    if stats is None:
        from ..analysis import AnalysisResult

        try:
            stats = AnalysisResult.load(run)
        except CotSurvivalError:
            return None
    summary = stats.tables_.get("summary_category")
    from ..provenance import stale_reason

    if summary is None or summary.empty:
        return None  # not analysed by category
    if stale_reason(stats.counts_.get("fingerprint"), run, (stats.config or {}).get("labels_source")):
        return None  # analysed before the run changed (continued, grown, re-tagged): computed afresh instead
    return summary.reset_index(drop=True)


def _category_table(run: RunDir, stats=None) -> str:
    if not run.part_indices("tokens"):
        return ""
    summary = _stored_summary(run, stats)
    stored = summary is not None
    if not stored:
        from ..analysis import load_run, survival_summary

        tokens = load_run(run, require_tags=False, baselines=False, attention=False)
        if tokens["category"].isna().all():
            return f"<p>{len(tokens):,} tokens, not tagged yet.</p>"
        # As analyze: one-token chains carry no ranking and are left out.
        ranked = tokens[tokens["n_tokens"] > 1].dropna(subset=["category"])
        if ranked.empty:
            return f"<p>{len(tokens):,} tokens; no chain has 2 or more tokens, so no survival summary.</p>"
        summary = survival_summary(ranked, "category", n_boot=0)
    colours = category_colours()
    order = order_present(summary["group"], COARSE)
    position = {g: i for i, g in enumerate(summary["group"])}
    body = []
    for group in order:
        i = position[group]
        row = summary.iloc[i]

        def cell(column, spec=".3f", missing=""):
            if pd.isna(row[column]):
                return f"<td>{html.escape(missing)}</td>"
            if stored:
                return number_cell(("tables", "summary_category", i, column), row[column], spec)
            return f"<td>{html.escape(format(int(row[column]), ',d') if spec == ',d' else format(row[column], spec))}</td>"

        body.append(f'<tr><td><span style="color:{colours.get(group, "#BBBBBB")}">■</span> '
                    f"{html.escape(display_name(group))}</td>{cell('n_tokens', ',d')}{cell('n_events', ',d')}"
                    f"{cell('median', missing='not reached')}{cell('mean', missing='not estimable (censored)')}</tr>")
    source = ("from stats/stats.json" if stored else
              "computed from the tokens; run `cotsurvival analyze` for confidence intervals")
    return ('<table class="cs-categories"><caption>Survival by category (Kaplan–Meier median; '
            f'{html.escape(source)})</caption><tr><th>category</th><th>tokens</th><th>deleted</th>'
            f"<th>median survival</th><th>mean survival</th></tr>{''.join(body)}</table>")
