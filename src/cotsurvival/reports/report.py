"""``build_report``: every figure as PNG and PDF, and one self-contained ``index.html``."""
from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pandas as pd

from ..analysis import AnalysisResult, analyze
from ..errors import CotSurvivalError
from ..labels import resolve_source
from ..outputs import check_output, is_report_folder, run_inputs
from ..provenance import require_fresh, stale_reason
from ..results import StageResult, frame_html
from ..rundir import RunDir, atomic_write_bytes
from .data import Quote, ReportData, SkipFigure, resolve_chain_ids
from .figures import FIGURES
from .notebook import run_summary_html
from .recovery import save_recovery_figure
from .stored import citations_html, headline_html, notes_html, table_html, tests_html
from .style import WIDTHS, add_footnote, figure_style, save_figure


@dataclass
class Report(StageResult):
    """What :func:`build_report` wrote (a stage result: ``_repr_html_``, ``to_frame()``, ``save``/``load``).

    Attributes
    ----------
    index : Path
        The HTML page.
    figures : dict
        Figure stem -> the files written (PNG and PDF per width).
    skipped : dict
        Figure stem -> why it was left out.
    stats_note : str or None
        Why the statistics section is missing, or why it may be out of date.
    quotes : dict
        Figure stem -> the stored numbers it prints (:class:`~cotsurvival.reports.data.Quote`).
    texts : dict
        Figure stem -> every text it shows except tick labels (titles, legends, annotations).
    """

    index: Path
    figures: dict[str, list[Path]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    stats_note: str | None = None
    quotes: dict[str, list[Quote]] = field(default_factory=dict)
    texts: dict[str, list[str]] = field(default_factory=dict)
    recovery_citations: list[str] = field(default_factory=list)
    onpolicy_citations: list[str] = field(default_factory=list)
    scoring_notes: list[str] = field(default_factory=list)  # how the ranks were scored (every caption)
    approx_label: str | None = None  # an approximate run's short note under every figure

    title = "cotsurvival report"

    def to_frame(self) -> pd.DataFrame:
        """One row per figure: its files, or why it was skipped."""
        rows = [{"figure": stem, "files": [str(p) for p in paths], "skipped": None} for stem, paths in self.figures.items()]
        rows += [{"figure": stem, "files": [], "skipped": reason} for stem, reason in self.skipped.items()]
        return pd.DataFrame(rows, columns=["figure", "files", "skipped"])

    def _repr_html_(self) -> str:
        """Jupyter: the page written and one row per figure (escaped)."""
        return (f"<p><b>cotsurvival report</b> {html.escape(str(self.index))}: {len(self.figures)} figures, "
                f"{len(self.skipped)} skipped</p>" + frame_html(self.to_frame()))


def build_report(
    run: str | os.PathLike | RunDir,
    out: str | os.PathLike,
    *,
    widths: tuple[str, ...] = ("one", "two"),
    chain_index: int | None = None,
    chain_ids: list[str] | None = None,
    run_analysis: bool = True,
    labels: str = "rule",
    overwrite: bool = False,
) -> Report:
    """Draw the report figures of a run and write ``OUT/index.html``.

    Every statistic in the figures and the page is read from the stored analysis
    (:meth:`cotsurvival.analysis.AnalysisResult.load`, i.e. ``RUN/stats/stats.json``).

    Parameters
    ----------
    run : str, PathLike or RunDir
        The run directory.
    out : str or PathLike
        Output folder (created). Figures go to ``OUT/<stem>_<width>.{png,pdf}``.
    widths : tuple of {"one", "two"}, default both
        Layouts to draw: one column (3.3 in) and/or two columns (6.9 in).
    chain_index : int, optional
        The chain drawn as text (figure 8); default the chain of median length. E051 if the run
        has no such chain.
    chain_ids : list of str, optional
        Chain ids (the chains file's ``id``) to draw as text, one figure 8 each; E053 names
        unknown ids. Not together with ``chain_index`` (E054).
    run_analysis : bool, default True
        When ``RUN/stats/stats.json`` is missing, call :func:`cotsurvival.analysis.analyze` (which
        writes it) and show its result.
    labels : str, default "rule"
        The label source of the token-level figures (``"rule"``, ``"judge"`` or an exact source; see
        :func:`cotsurvival.analysis.load_run`), and of the analysis run when stats.json is missing.
        The statistics shown are those stored; when they were computed from another source the
        page says so (``stats_note``).
    overwrite : bool, default False
        Write into ``out`` even if it holds files that are not an earlier report. ``out`` is never
        one of the run's tables or files (E080).

    Returns
    -------
    Report
    """
    bad = [w for w in widths if w not in WIDTHS]
    if bad or not widths:
        raise CotSurvivalError("E050", value=", ".join(bad) or "(none)", allowed=", ".join(WIDTHS))
    run = (run if isinstance(run, RunDir) else RunDir(run)).require()
    check_output(out, inputs=run_inputs(run.path), overwrite=overwrite, ours=is_report_folder, command="report",
                 folder=True)
    text_chains = _text_chains(run, chain_index, chain_ids)
    stats, stats_note = _stats(run, run_analysis, labels)
    data = ReportData(run, stats=stats, labels=labels)
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    report = Report(index=out / "index.html", stats_note=stats_note, approx_label=data.approx_label,
                    scoring_notes=[note.text for note in data.scoring_notes])
    try:
        for spec in FIGURES:
            for stem, kwargs in _variants(spec, text_chains):
                data.quotes = []
                try:
                    report.figures[stem], report.texts[stem] = _draw(spec, data, out, stem, widths, kwargs)
                except SkipFigure as exc:
                    report.skipped[stem] = str(exc)
                report.quotes[stem] = data.quotes
        _draw_recovery(run, out, widths, report)
        _draw_onpolicy(run, out, widths, report, labels)
        page = _page(data, report, widths)
        atomic_write_bytes(report.index, page.encode("utf-8"))
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # leave no empty report folder behind
        raise
    return report


RECOVERY_STEM = "fig_recovery"
RECOVERY_TITLE = "Answer recovery"
RECOVERY_CAPTION = ("(a) Share of chains whose greedy-decoded answer is right and (b) mean teacher-forced log P(answer), "
                    "against the keep ratio, one line per ordering, with 95% chain-bootstrap bands "
                    "(`cotsurvival recover`; tables in RUN/recovery/).")


def _recovery_result(run: RunDir):
    """The run's answer-recovery result (``RUN/recovery.parquet/``, else ``RUN/recovery/``), or ``None``."""
    if not ((run.path / "recovery.parquet").is_dir() or (run.path / "recovery" / "recovery_rows.parquet").is_file()):
        return None  # the common case: no recovery run, nothing added to the report
    # imported here, not at the top: the recovery module runs models (torch), which a report never needs
    from ..recovery import RecoveryResult

    for where in (run.path, run.path / "recovery"):
        try:
            return RecoveryResult.load(where)
        except CotSurvivalError:
            continue  # an empty recovery.parquet/ (interrupted first chain): try the saved folder
    return None


def _draw_recovery(run: RunDir, out: Path, widths, report: Report) -> None:
    """The recovery figure and its sentences, when the run has recovery results (reports/recovery.py draws it)."""
    result = _recovery_result(run)
    if result is None:
        return
    from ..provenance import stale_reason

    stale = stale_reason((run.read_manifest().get("recovery") or {}).get("fingerprint"), run, labels_source="")
    if stale:  # recovery rows of an earlier state of the run: left out, naming the command that updates them
        report.skipped[RECOVERY_STEM] = (f"the recovery results no longer describe the run ({stale}); re-run "
                                         f"`cotsurvival recover {run.path}`.")
        return

    report.figures[RECOVERY_STEM] = [p for width in widths
                                     for p in save_recovery_figure(result, out / f"{RECOVERY_STEM}_{width}", width,
                                                                   footnote=report.approx_label)]
    report.recovery_citations = list(result.citations())


ONPOLICY_STEM = "fig_onpolicy"
ONPOLICY_TITLE = "On-policy importance beside greedy survival"
ONPOLICY_CAPTION = ("(a) Each reasoning unit's mean greedy survival against its resampling importance (mean log P(answer) "
                    "of rollouts that keep the unit minus rollouts that resample it; rollout-bootstrap 95% bars); "
                    "(b) per-chain Spearman rho of the two, with the mean and its 95% t-interval over chains; "
                    "(c) share of deleted tokens the model writes back when continuing from pruned reasoning, "
                    "kept tokens dashed for reference (`cotsurvival resample`; tables in RUN/onpolicy/).")


def _draw_onpolicy(run: RunDir, out: Path, widths, report: Report, labels: str) -> None:
    """The on-policy figure and its sentences, when ``cotsurvival resample`` has run (reports/onpolicy.py draws it)."""
    if not run.part_indices("resample"):
        return
    from ..analysis.onpolicy import OnPolicyResult
    from .onpolicy import save_onpolicy_figure

    result = OnPolicyResult.from_run(run, labels=labels)
    report.figures[ONPOLICY_STEM] = [p for width in widths
                                     for p in save_onpolicy_figure(result, out / f"{ONPOLICY_STEM}_{width}", width,
                                                                   footnote=report.approx_label)]
    report.onpolicy_citations = list(result.citations())


def _text_chains(run: RunDir, chain_index: int | None, chain_ids: list[str] | None) -> list[int] | None:
    """Chains drawn as text: validated before anything is written."""
    if chain_index is not None and chain_ids:
        raise CotSurvivalError("E054", first="--chain", second="--chains/--ids")
    if chain_ids:
        return resolve_chain_ids(run, list(chain_ids))
    if chain_index is None:
        return None
    indices = run.part_indices("tokens")
    if chain_index not in indices:
        raise CotSurvivalError("E051", chain=chain_index, n_chains=len(indices), last=max(indices, default=-1))
    return [int(chain_index)]


def _variants(spec, text_chains: list[int] | None):
    """``(stem, kwargs)`` per drawing of a figure: figure 8 once per chosen chain."""
    if spec.stem != "fig8_chain" or not text_chains:
        return [(spec.stem, {})]
    if len(text_chains) == 1:
        return [(spec.stem, {"chain_index": text_chains[0]})]
    return [(f"{spec.stem}_{i}", {"chain_index": i}) for i in text_chains]


def _draw(spec, data: ReportData, out: Path, stem: str, widths, kwargs) -> tuple[list[Path], list[str]]:
    from matplotlib.text import Text

    paths: list[Path] = []
    texts: list[str] = []
    for width in widths:
        with figure_style():
            fig = spec.draw(data, width, **kwargs)
            if data.approx_label:  # every figure of an approximate run says so
                add_footnote(fig, data.approx_label)
            # Everything but the axes' own tick and axis labels: titles, legends, annotations.
            axis = {id(t) for ax in fig.axes for a in (ax.xaxis, ax.yaxis) for t in a.findobj(Text)}
            texts += [t.get_text() for t in fig.findobj(Text) if id(t) not in axis and t.get_text()]
            paths += save_figure(fig, out / f"{stem}_{width}")
    return paths, texts


def _stats(run: RunDir, run_analysis: bool, labels: str = "rule"):
    """The stored analysis (loaded, or computed and saved now), or ``None`` with the reason."""
    if (run.stats_dir / "stats.json").is_file():
        result = AnalysisResult.load(run)
        source = (result.config or {}).get("labels_source")
        stale = stale_reason(result.counts_.get("fingerprint"), run, source)
        if stale is None:
            return result, _labels_note(run, result, labels)
        if not run_analysis:  # never a stale number silently: refuse, naming the command that updates it
            require_fresh(result.counts_.get("fingerprint"), run, what="stats/stats.json",
                          command=f"cotsurvival analyze {run.path}", labels_source=source)
        # The run changed since: analyse it again with the stored settings, so the page matches the run.
        config = result.config or {}
        kept = {k: config[k] for k in ("n_boot", "seed", "reference", "primary", "min_chains", "min_tokens",
                                       "probe_alpha", "n_folds") if config.get(k) is not None}
        if config.get("levels"):
            kept["levels"] = tuple(config["levels"])
        analyze(run, labels=source or labels, **kept)
        return AnalysisResult.load(run), (f"stats/stats.json was recomputed: the run changed since it was "
                                          f"analysed ({stale}).")
    if not run_analysis:
        return None, f"No statistics yet: run `cotsurvival analyze {run.path}`."

    try:
        # analyze saves stats.json; showing what it saved keeps the page equal to the file.
        analyze(run, labels=labels)
    except CotSurvivalError as exc:
        return None, f"Statistics could not be computed: {exc.one_line()}"
    return AnalysisResult.load(run), None


def _labels_note(run: RunDir, result, labels: str) -> str | None:
    """Why the stored statistics may not match the labels of the token figures, or ``None``."""

    analysed = (result.config or {}).get("labels_source")
    try:
        shown = resolve_source(run, labels)
    except CotSurvivalError:
        shown = None  # the run has no such labels: the token figures say so themselves
    if analysed and shown and analysed != shown:
        return (f"stats/stats.json was computed from the {analysed!r} labels but the token figures show {shown!r}: "
                f"run `cotsurvival analyze {run.path} --labels {labels}` for statistics of the same labels.")
    return None


# ----------------------------------------------------------------------------- page
def _page(data: ReportData, report: Report, widths) -> str:
    css = resources.files("cotsurvival.reports").joinpath("templates/report.css").read_text(encoding="utf-8")
    shown = "two" if "two" in widths else widths[0]
    stems = list(report.quotes)
    titles = {stem: _title(stem) for stem in stems}
    sections = [_figure_html(stem, titles[stem], report, shown) for stem in stems]
    if RECOVERY_STEM in report.figures:
        stems.append(RECOVERY_STEM)
        titles[RECOVERY_STEM] = RECOVERY_TITLE
        sections.append(_recovery_html(report, shown))
    if ONPOLICY_STEM in report.figures:
        stems.append(ONPOLICY_STEM)
        titles[ONPOLICY_STEM] = ONPOLICY_TITLE
        items = "".join(f"<li>{html.escape(s)}</li>" for s in report.onpolicy_citations)
        figure = _figure_html(ONPOLICY_STEM, ONPOLICY_TITLE, report, shown, caption=ONPOLICY_CAPTION)
        sections.append(figure.replace("</section>", f"<h3>Citations (on-policy)</h3><ul>{items}</ul></section>"))
    toc = "".join(f'<li><a href="#{html.escape(stem)}">{html.escape(titles[stem])}</a>'
                  + (" <span class=muted>(omitted)</span>" if stem in report.skipped else "") + "</li>"
                  for stem in stems)
    title = f"cotsurvival report: {data.run.path.name}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data: 'self'; style-src 'unsafe-inline'">
<title>{html.escape(title)}</title><style>{css}</style></head>
<body><main>
<h1>{html.escape(title)}</h1>
{headline_html(data.stats)}
<section id="summary">{run_summary_html(data.run, stats=data.stats)}</section>
<nav><h2>Contents</h2><ol>{toc}<li><a href="#stats">Statistics</a></li><li><a href="#citations">Citations</a></li></ol></nav>
{''.join(sections)}
{_stats_html(data.stats, report.stats_note)}
</main></body></html>
"""


def _spec(stem: str):
    return next(spec for spec in FIGURES if stem == spec.stem or stem.startswith(spec.stem + "_"))


def _title(stem: str) -> str:
    spec = _spec(stem)
    return spec.title if stem == spec.stem else f"{spec.title} (chain {stem.rsplit('_', 1)[1]})"


def _recovery_html(report: Report, width: str) -> str:
    """The recovery figure and its citable sentences (each with its chain-level interval and n chains)."""
    items = "".join(f"<li>{html.escape(s)}</li>" for s in report.recovery_citations)
    figure = _figure_html(RECOVERY_STEM, RECOVERY_TITLE, report, width, caption=RECOVERY_CAPTION)
    return figure.replace("</section>", f"<h3>Citations (answer recovery)</h3><ul>{items}</ul></section>")


def _figure_html(stem: str, title: str, report: Report, width: str, caption: str | None = None) -> str:
    anchor = html.escape(stem)
    if stem in report.skipped:
        return (f'<section id="{anchor}"><h2>{html.escape(title)}</h2>'
                f'<p class="note">Figure omitted: {html.escape(report.skipped[stem])}</p></section>')
    caption = _spec(stem).caption if caption is None else caption
    for note in report.scoring_notes:
        caption = f"{caption} {note}"
    files = report.figures[stem]
    png = next(p for p in files if p.suffix == ".png" and p.stem.endswith(f"_{width}"))
    data_uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
    links = " · ".join(f'<a href="{html.escape(p.name)}">{html.escape(p.name)}</a>' for p in files)
    return (f'<section id="{anchor}"><h2>{html.escape(title)}</h2><figure>'
            f'<img src="{data_uri}" alt="{html.escape(title)}">'
            f"<figcaption>{html.escape(caption)}<br><span class=files>Files: {links}</span></figcaption>"
            f"</figure></section>")


def _stats_html(result, note: str | None) -> str:
    if result is None:
        message = html.escape(note or "No statistics.")
        return (f'<section id="stats"><h2>Statistics</h2><p class="note">{message}</p></section>'
                f'<section id="citations"><h2>Citations</h2><p class="note">{message}</p></section>')
    tables = "".join(table_html(name, table, result) for name, table in result.tables_.items() if not table.empty)
    pretty = json.dumps(result.to_dict(), indent=1, default=str)
    raw = f"<details><summary>stats.json</summary><pre>{html.escape(pretty)}</pre></details>"
    stale = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return (f'<section id="stats"><h2>Statistics</h2>{stale}'
            f'<p class="muted">Every number below is read from stats/stats.json (hover a cell for its place '
            f'there); nothing is recomputed for the report.</p>{notes_html(result)}'
            f'<h3 id="tests">Tests</h3>{tests_html(result.tests_)}{tables or "<p class=note>No tables.</p>"}{raw}</section>'
            f'<section id="citations"><h2>Citations</h2>{citations_html(result)}</section>')
