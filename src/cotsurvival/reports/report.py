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

from ..errors import CotSurvivalError
from ..results import StageResult
from ..rundir import RunDir
from .data import ReportData, SkipFigure
from .figures import FIGURES
from .style import WIDTHS, figure_style

MAX_TABLE_ROWS = 200


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
        Why the statistics section is missing, if it is.
    """

    index: Path
    figures: dict[str, list[Path]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    stats_note: str | None = None

    title = "cotsurvival report"

    def to_frame(self) -> pd.DataFrame:
        """One row per figure: its files, or why it was skipped."""
        rows = [{"figure": stem, "files": [str(p) for p in paths], "skipped": None} for stem, paths in self.figures.items()]
        rows += [{"figure": stem, "files": [], "skipped": reason} for stem, reason in self.skipped.items()]
        return pd.DataFrame(rows, columns=["figure", "files", "skipped"])


def build_report(
    run: str | os.PathLike | RunDir,
    out: str | os.PathLike,
    *,
    widths: tuple[str, ...] = ("one", "two"),
    chain_index: int | None = None,
    run_analysis: bool = True,
) -> Report:
    """Draw the report figures of a run and write ``OUT/index.html``.

    Parameters
    ----------
    run : str, PathLike or RunDir
        The run directory.
    out : str or PathLike
        Output folder (created). Figures go to ``OUT/<stem>_<width>.{png,pdf}``.
    widths : tuple of {"one", "two"}, default both
        Layouts to draw: one column (3.3 in) and/or two columns (6.9 in).
    chain_index : int, optional
        The chain drawn as text (figure 8); default the chain of median length.
    run_analysis : bool, default True
        When ``RUN/stats/`` is missing, call :func:`cotsurvival.analysis.analyze` to write it.

    Returns
    -------
    Report
    """
    bad = [w for w in widths if w not in WIDTHS]
    if bad or not widths:
        raise CotSurvivalError("E050", value=", ".join(bad) or "(none)", allowed=", ".join(WIDTHS))
    data = ReportData(run)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = Report(index=out / "index.html")
    for spec in FIGURES:
        kwargs = {"chain_index": chain_index} if spec.stem == "fig8_chain" and chain_index is not None else {}
        try:
            report.figures[spec.stem] = _draw(spec, data, out, widths, kwargs)
        except SkipFigure as exc:
            report.skipped[spec.stem] = str(exc)
    stats_dir, report.stats_note = _ensure_stats(data.run, run_analysis)
    page = _page(data, report, stats_dir, widths)
    report.index.write_text(page, encoding="utf-8")
    return report


def _draw(spec, data: ReportData, out: Path, widths, kwargs) -> list[Path]:
    from .style import save_figure

    paths: list[Path] = []
    for width in widths:
        with figure_style():
            fig = spec.draw(data, width, **kwargs)
            paths += save_figure(fig, out / f"{spec.stem}_{width}")
    return paths


def _ensure_stats(run: RunDir, run_analysis: bool) -> tuple[Path | None, str | None]:
    if (run.stats_dir / "stats.json").is_file():
        return run.stats_dir, None
    if not run_analysis:
        return None, "No statistics yet: run `cotsurvival analyze RUN`."
    try:
        from ..analysis import analyze
    except ImportError:
        return None, "No statistics yet, and this installation has no `analyze`; run `cotsurvival analyze RUN`."
    try:
        analyze(run)
    except CotSurvivalError as exc:
        return None, f"Statistics could not be computed: {exc.one_line()}"
    return (run.stats_dir, None) if run.stats_dir.is_dir() else (None, "`analyze` wrote no stats/ folder.")


# ----------------------------------------------------------------------------- page
def _page(data: ReportData, report: Report, stats_dir: Path | None, widths) -> str:
    from .notebook import run_summary_html

    css = resources.files("cotsurvival.reports").joinpath("templates/report.css").read_text(encoding="utf-8")
    shown = "two" if "two" in widths else widths[0]
    sections = [_figure_html(spec, report, shown) for spec in FIGURES]
    toc = "".join(f'<li><a href="#{spec.stem}">{html.escape(spec.title)}</a>'
                  + (" <span class=muted>(omitted)</span>" if spec.stem in report.skipped else "") + "</li>"
                  for spec in FIGURES)
    title = f"cotsurvival report: {data.run.path.name}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data: 'self'; style-src 'unsafe-inline'">
<title>{html.escape(title)}</title><style>{css}</style></head>
<body><main>
<h1>{html.escape(title)}</h1>
{run_summary_html(data.run)}
<nav><h2>Contents</h2><ol>{toc}<li><a href="#stats">Statistics</a></li><li><a href="#citations">Citations</a></li></ol></nav>
{''.join(sections)}
{_stats_html(stats_dir, report.stats_note)}
</main></body></html>
"""


def _figure_html(spec, report: Report, width: str) -> str:
    anchor = html.escape(spec.stem)
    if spec.stem in report.skipped:
        return (f'<section id="{anchor}"><h2>{html.escape(spec.title)}</h2>'
                f'<p class="note">Figure omitted: {html.escape(report.skipped[spec.stem])}</p></section>')
    files = report.figures[spec.stem]
    png = next(p for p in files if p.suffix == ".png" and p.stem.endswith(f"_{width}"))
    data_uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
    links = " · ".join(f'<a href="{html.escape(p.name)}">{html.escape(p.name)}</a>' for p in files)
    return (f'<section id="{anchor}"><h2>{html.escape(spec.title)}</h2><figure>'
            f'<img src="{data_uri}" alt="{html.escape(spec.title)}">'
            f"<figcaption>{html.escape(spec.caption)}<br><span class=files>Files: {links}</span></figcaption>"
            f"</figure></section>")


def _stats_html(stats_dir: Path | None, note: str | None) -> str:
    if stats_dir is None:
        message = html.escape(note or "No statistics.")
        return (f'<section id="stats"><h2>Statistics</h2><p class="note">{message}</p></section>'
                f'<section id="citations"><h2>Citations</h2><p class="note">{message}</p></section>')
    tables = []
    for path in sorted(stats_dir.glob("*.csv")):
        frame = pd.read_csv(path)
        more = len(frame) - MAX_TABLE_ROWS
        body = frame.head(MAX_TABLE_ROWS).to_html(index=False, escape=True, border=0, na_rep="",
                                                  float_format=lambda v: f"{v:.4g}", classes="stats")
        tail = f'<p class="muted">{more} more rows in {html.escape(path.name)}.</p>' if more > 0 else ""
        tables.append(f'<h3 id="table-{html.escape(path.stem)}">{html.escape(path.stem.replace("_", " "))}</h3>'
                      f'<div class="scroll">{body}</div>{tail}')
    stats_json = stats_dir / "stats.json"
    raw = ""
    if stats_json.is_file():
        pretty = json.dumps(json.loads(stats_json.read_text(encoding="utf-8")), indent=1, default=str)
        raw = f"<details><summary>stats.json</summary><pre>{html.escape(pretty)}</pre></details>"
    citations = stats_dir / "citations.md"
    cite = (f"<pre class=wrap>{html.escape(citations.read_text(encoding='utf-8'))}</pre>" if citations.is_file()
            else '<p class="note">No citations.md in stats/.</p>')
    return (f'<section id="stats"><h2>Statistics</h2>{"".join(tables) or "<p class=note>No tables.</p>"}{raw}</section>'
            f'<section id="citations"><h2>Citations</h2>{cite}</section>')
