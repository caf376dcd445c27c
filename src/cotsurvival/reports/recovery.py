"""Answer recovery: the figure, the tables and the citable sentences of a :class:`RecoveryResult`.

Takes the result object (``summary()``, ``tests()``, ``orderings``, ...) and never imports
:mod:`cotsurvival.recovery`, so the dependency runs one way (recovery -> reports).

Figure: (a) share of chains whose greedy-decoded answer is right and (b) mean teacher-forced
log P(answer), each against the keep ratio, one line per ordering, with 95% chain-bootstrap bands.
"""
from __future__ import annotations

import json
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
    fig = recovery_figure(result, width)
    if footnote:
        from .style import add_footnote

        add_footnote(fig, footnote)
    return save_figure(fig, stem)


def _pct(value: float) -> str:
    return "n/a" if value is None or np.isnan(value) else f"{100 * value:.1f}%"


def recovery_sentences(result) -> list[str]:
    """One sentence per keep ratio below 1 (greedy vs each baseline), plus the unpruned reference."""
    from ..analysis.citations import support_shortfall, withheld_note

    summary = result.summary()
    tests = result.tests()
    out = []
    row_of = {(r.ordering, r.keep_ratio): r for r in summary.itertuples()}
    full = row_of.get(("greedy", 1.0)) or next((r for r in summary.itertuples() if r.keep_ratio == 1.0), None)
    if full is not None and support_shortfall(full.n_chains):  # one minimum-support rule (analysis.citations)
        out.append(withheld_note(f"unpruned answer accuracy ({full.n_chains} chains)"))
    elif full is not None:
        out.append(f"Unpruned (keep ratio 1.0), the model's greedy-decoded answer was correct in {_pct(full.accuracy)} "
                   f"of chains [95% CI {_pct(full.accuracy_ci_low)}–{_pct(full.accuracy_ci_high)}, chain bootstrap, "
                   f"n = {full.n_chains} chains], mean log P(answer) {full.answer_logprob:.2f} nats.")
    if "greedy" not in result.orderings:
        return out
    for ratio in [r for r in result.keep_ratios if r < 1.0]:
        greedy = row_of.get(("greedy", ratio))
        if greedy is None:
            continue
        for baseline in [o for o in result.orderings if o != "greedy"]:
            other = row_of.get((baseline, ratio))
            if other is None:
                continue
            if support_shortfall(min(greedy.n_chains, other.n_chains)):
                out.append(withheld_note(f"greedy vs {baseline} answer recovery at keep ratio {ratio:g} "
                                         f"({min(greedy.n_chains, other.n_chains)} chains)"))
                continue
            acc = tests[(tests.baseline == baseline) & (tests.keep_ratio == ratio) & (tests.metric == "correct")]
            lp = tests[(tests.baseline == baseline) & (tests.keep_ratio == ratio) & (tests.metric == "answer_logprob")]
            sentence = (f"At keep ratio {ratio:g} the greedy-pruned chains kept the answer recoverable in "
                        f"{_pct(greedy.accuracy)} of chains [95% CI {_pct(greedy.accuracy_ci_low)}–"
                        f"{_pct(greedy.accuracy_ci_high)}, chain bootstrap, n = {greedy.n_chains} chains] versus "
                        f"{_pct(other.accuracy)} [{_pct(other.accuracy_ci_low)}–{_pct(other.accuracy_ci_high)}] "
                        f"for {baseline}")
            if not acc.empty:
                t = acc.iloc[0]
                sentence += (f" (paired difference {100 * t.difference:+.1f} points, sign-flip p = {t.p_value:.3g}, "
                             f"n = {int(t.n_chains)} chains)")
            sentence += (f"; mean log P(answer) {greedy.answer_logprob:.2f} versus {other.answer_logprob:.2f} nats")
            if not lp.empty:
                t = lp.iloc[0]
                sentence += (f" (paired difference {t.difference:+.2f} nats [95% CI {t.ci_low:+.2f} to {t.ci_high:+.2f}], "
                             f"p = {t.p_value:.3g}, Holm p = {t.p_holm:.3g})")
            out.append(sentence + ".")
    return out


def write_recovery_tables(result, folder: Path, figure: bool = True) -> dict[str, Path]:
    """Rows, summary and tests (CSV + Markdown), citations and the figure, into ``folder``."""
    from ..rundir import atomic_write_bytes, atomic_write_parquet

    def write_text(path: Path, text: str) -> None:
        atomic_write_bytes(path, text.encode("utf-8"))

    folder.mkdir(parents=True, exist_ok=True)
    paths = {"rows": folder / "recovery_rows.parquet"}
    atomic_write_parquet(paths["rows"], result.frame)
    for name, table in (("summary", result.summary()), ("tests", result.tests())):
        paths[name] = folder / f"recovery_{name}.csv"
        write_text(paths[name], table.to_csv(index=False))
        write_text(folder / f"recovery_{name}.md", _markdown(table))
    paths["citations"] = folder / "recovery_citations.md"
    write_text(paths["citations"], "# Answer recovery\n\n" + "\n\n".join(f"- {s}" for s in result.citations()) + "\n")
    write_text(folder / "recovery_meta.json", json.dumps({"run": result.run, "n_chains": result.n_chains,
                                                          "orderings": result.orderings,
                                                          "keep_ratios": result.keep_ratios}, indent=2))
    if figure:
        png, _ = save_recovery_figure(result, folder / "fig_recovery")
        paths["figure"] = png
    return paths


def _markdown(table: pd.DataFrame) -> str:
    shown = table.copy()
    for column in shown.columns:
        if shown[column].dtype.kind == "f":
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
    header = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"

