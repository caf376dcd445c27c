"""The report's figures: one function per figure, each ``f(data, width) -> Figure``.

A function raises :class:`~cotsurvival.reports.data.SkipFigure` when the run lacks what it
needs; :func:`~cotsurvival.reports.build_report` turns that into a note in the page. Every
category is drawn in its colour from :func:`~cotsurvival.reports.style.category_colours`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from ..analysis import attention_layers
from ..analysis.dynamics import static_vs_greedy
from ..analysis.dynamics import rank_trajectories
from ..analysis.dynamics import degradation_curves
from ..taxonomy.spec import LEVELS as TAXONOMY_LEVELS
from .data import ReportData, SkipFigure, composition_by_keep_ratio, display_name, token_segments
from .style import COARSE, FINE, WIDTHS, category_colours, order_present, palette_for

LEVELS = tuple(TAXONOMY_LEVELS.items())  # (column, title) of each level, from the taxonomy's registry
ORDERINGS = ("greedy", "random", "surprisal", "loo", "attention", "llmlingua2")
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*")
MAX_POINTS = 600  # points drawn per group: more only blurs into ink


# ----------------------------------------------------------------------------- layout helpers
def _panels(width: str, n: int, height_two: float = 2.5, height_one: float = 2.2, sharey: bool = False):
    """Side by side on two columns, stacked on one column (a 3.3 in panel cannot hold two)."""
    import matplotlib.pyplot as plt

    w = WIDTHS[width]
    if width == "two":
        fig, axes = plt.subplots(1, n, figsize=(w, height_two), layout="constrained", sharey=sharey)
    else:
        fig, axes = plt.subplots(n, 1, figsize=(w, height_one * n), layout="constrained", sharey=sharey)
    return fig, np.atleast_1d(axes)


def _legend_right(ax, handles=None, labels=None, title=None, **kwargs):
    """A legend beside the axes, never over the data."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    return ax.legend(handles, labels, title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                     borderaxespad=0.0, handlelength=1.4, **kwargs)


def _panel_letter(ax, letter: str) -> None:
    ax.set_title(letter, loc="left", fontweight="bold", pad=3)


def _subsample(frame: pd.DataFrame, by: str, n: int, seed: int = 0) -> pd.DataFrame:
    return frame.sample(frac=1.0, random_state=seed).groupby(by, observed=True).head(n)


# ----------------------------------------------------------------------------- stored statistics
def _stored_groups(table: pd.DataFrame, level: str, column: str = "group") -> list[str]:
    canonical = COARSE if level == "category" else FINE
    return order_present(table[column].unique(), canonical)


def _summary_rows(data: ReportData, level: str) -> dict[str, int]:
    """Row number of each group in the stored ``summary_<level>`` table ({} when it is missing)."""
    try:
        summary = data.stored_table(f"summary_{level}")
    except SkipFigure:
        return {}
    return {str(g): i for i, g in enumerate(summary["group"])}


def _below_support(data: ReportData, table: pd.DataFrame, row: int) -> bool:
    """Whether a group has fewer tokens or chains than analyze's minimum support for citing (stats.json config)."""
    config = data.stats.config or {}
    return bool(table["n_tokens"].iloc[row] < config.get("min_tokens", 0)
                or table["n_chains"].iloc[row] < config.get("min_chains", 0))


def _median_text(data: ReportData, level: str, row: int) -> str:
    """``median 0.45 [0.40, 0.52]`` or ``median not reached``, quoted from ``summary_<level>``."""
    table = data.stats.tables_[f"summary_{level}"]
    median = table["median"].iloc[row]
    if pd.isna(median):
        return "median not reached"
    source = ("tables", f"summary_{level}", row)
    text = "median " + data.quote(source + ("median",), float(median), ".2f")
    if _below_support(data, table, row):
        # Too little support to cite (analysis withholds it): no interval, and the figure says why.
        n_tokens, n_chains = int(table["n_tokens"].iloc[row]), int(table["n_chains"].iloc[row])
        return (text + f"\n(n = {data.quote(source + ('n_tokens',), n_tokens, ',d')}, "
                f"{data.quote(source + ('n_chains',), n_chains, ',d')} chains: too few)")
    low, high = table["median_lower"].iloc[row], table["median_upper"].iloc[row]
    if pd.notna(low) or pd.notna(high):
        text += (" [" + (data.quote(source + ("median_lower",), float(low), ".2f") if pd.notna(low) else "n/a") + ", "
                 + (data.quote(source + ("median_upper",), float(high), ".2f") if pd.notna(high) else "not reached")
                 + "]")
    return text


# ----------------------------------------------------------------------------- 1. Kaplan–Meier
@dataclass
class KaplanMeierDisplay:
    """Stored Kaplan–Meier curves with their 95% bands, one per group (scikit-learn's Display pattern).

    Build it from a result (``from_result``) or a stored ``km_*`` table (``from_table``), then
    ``plot(ax=None)`` draws it (on a new figure when ``ax`` is None) and keeps ``ax_`` and
    ``figure_``. The report's figure 1 and the comparison page's per-run panels both draw with it.

    Attributes
    ----------
    curves : DataFrame
        ``group, time, survival, lower, upper`` (a stored ``km_<level>`` table).
    groups : list of str
        Groups drawn, in the taxonomy's order.
    labels : dict
        Group -> legend label (default its display name).
    """

    curves: pd.DataFrame
    groups: list[str]
    labels: dict[str, str]

    @classmethod
    def from_table(cls, curves: pd.DataFrame, level: str = "category",
                   labels: dict[str, str] | None = None) -> "KaplanMeierDisplay":
        groups = _stored_groups(curves, level)
        return cls(curves, groups, {g: (labels or {}).get(g, display_name(g)) for g in groups})

    @classmethod
    def from_result(cls, result, level: str = "category", run: str | None = None) -> "KaplanMeierDisplay":
        """From an ``AnalysisResult`` (its ``km_<level>`` table) or a ``ComparisonResult`` (the curves of ``run``)."""
        tables = getattr(result, "tables_", None)
        if tables is None:  # a ComparisonResult: one km_category table, a ``run`` column naming the view
            curves = result.tables["km_category"]
            curves = curves[curves["run"] == run] if run is not None else curves
        else:
            curves = tables[f"km_{level}"]
        return cls.from_table(curves, level)

    def plot(self, ax=None, *, band_alpha: float = 0.18, median_line: bool = True) -> "KaplanMeierDisplay":
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots()
        colours = palette_for(self.groups)
        for name in self.groups:
            curve = self.curves[self.curves["group"] == name]
            if curve.empty:
                continue
            colour = colours.get(name)
            ax.step(curve["time"], curve["survival"], where="post", color=colour, label=self.labels[name])
            ax.fill_between(curve["time"], curve["lower"], curve["upper"], step="post", color=colour,
                            alpha=band_alpha, linewidth=0)
        if median_line:
            ax.axhline(0.5, color="0.6", linewidth=0.5, linestyle=":", zorder=0)  # where the median is read
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="deletion time (step / N)", ylabel="share of tokens still kept")
        self.ax_, self.figure_ = ax, ax.figure
        return self


def fig_kaplan_meier(data: ReportData, width: str):
    """Stored Kaplan–Meier curves (95% log–log bands) by coarse category and by fine label."""
    data.require_tags()
    tables = {level: data.stored_table(f"km_{level}", "the Kaplan–Meier curves") for level, _ in LEVELS}
    fig, axes = _panels(width, 2, sharey=True)
    for ax, (level, title), letter in zip(axes, LEVELS, "ab"):
        rows = _summary_rows(data, level)
        labels = {}
        for name in _stored_groups(tables[level], level):  # quoted in the order the curves are drawn
            if name in rows:
                n = data.quote(("tables", f"summary_{level}", rows[name], "n_tokens"),
                               int(data.stats.tables_[f"summary_{level}"]["n_tokens"].iloc[rows[name]]), ",d")
                labels[name] = f"{display_name(name)} ({n})"
        KaplanMeierDisplay.from_table(tables[level], level, labels=labels).plot(ax=ax)
        _panel_letter(ax, f"{letter}  by {title}")
        _legend_right(ax, title="tokens (n)")
    axes[1].tick_params(labelleft=True)
    return fig


# ----------------------------------------------------------------------------- 2. survival by category
def fig_survival_by_category(data: ReportData, width: str):
    """Token survival (points; censored hollow) with the stored Kaplan–Meier median and its chain-bootstrap CI."""
    from matplotlib.lines import Line2D

    tokens = data.require_tags()
    tables = {level: data.stored_table(f"summary_{level}", "the medians") for level, _ in LEVELS}
    colours = category_colours()
    fig, axes = _panels(width, 2, height_two=2.7, height_one=2.0)
    rng = np.random.default_rng(0)
    for ax, (level, title), letter in zip(axes, LEVELS, "ab"):
        summary = tables[level]
        groups = _stored_groups(summary, level)
        rows = {str(g): i for i, g in enumerate(summary["group"])}
        ypos = np.arange(len(groups))[::-1]  # first group on top
        for y, g in zip(ypos, groups):
            sub = tokens[tokens[level] == g]
            if len(sub) > MAX_POINTS:
                sub = sub.sample(MAX_POINTS, random_state=0)
            jitter = rng.uniform(-0.22, 0.22, len(sub))
            censored = sub["censored"].to_numpy(bool)
            # Deleted tokens filled, censored ones hollow: a censored time is a lower bound, not a deletion.
            ax.scatter(sub["survival"][~censored], y + jitter[~censored], s=3, color=colours.get(g), alpha=0.5,
                       linewidths=0, zorder=3, rasterized=len(sub) > 200)
            ax.scatter(sub["survival"][censored], y + jitter[censored], s=5, facecolor="none",
                       edgecolor=colours.get(g), alpha=0.6, linewidths=0.5, zorder=3, rasterized=len(sub) > 200)
            row = rows[g]
            median, low, high = (summary[c].iloc[row] for c in ("median", "median_lower", "median_upper"))
            if _below_support(data, summary, row):
                low = high = np.nan  # no interval drawn where analysis withholds the group
            if pd.notna(median):
                ax.errorbar([median], [y], xerr=[[median - low if pd.notna(low) else 0],
                                                 [high - median if pd.notna(high) else 0]],
                            fmt="|", color="black", markersize=9, markeredgewidth=1.4, elinewidth=1.0, capsize=2,
                            zorder=5)
            ax.annotate(_median_text(data, level, row), xy=(1.02, y), xycoords=("axes fraction", "data"),
                        va="center", ha="left", fontsize=6, annotation_clip=False)
        ax.set_yticks(ypos, [display_name(g) for g in groups])
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.6, len(groups) - 0.4), xlabel="normalized survival (step deleted / N)")
        _panel_letter(ax, f"{letter}  by {title}")
    handles = [Line2D([], [], marker="o", linestyle="", markersize=2.5, color="0.4", label="deleted token"),
               Line2D([], [], marker="o", linestyle="", markersize=3, markerfacecolor="none", markeredgecolor="0.4",
                      label="kept when the run stopped"),
               Line2D([], [], marker="|", linestyle="-", markersize=7, color="black",
                      label="Kaplan–Meier median, chain-bootstrap 95% CI")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3 if width == "two" else 1)
    return fig


# ----------------------------------------------------------------------------- 3. composition
def fig_composition(data: ReportData, width: str):
    """Share of each category among the kept tokens as the keep ratio falls (stacked area)."""
    tokens = data.require_tags()
    colours = category_colours()
    fig, axes = _panels(width, 2)
    for ax, (level, title), letter in zip(axes, LEVELS, "ab"):
        groups = data.groups(level)
        shares = composition_by_keep_ratio(tokens, level, groups)
        x = shares.index.to_numpy()
        ax.stackplot(x, shares[groups].to_numpy().T, colors=[colours.get(g) for g in groups],
                     labels=[display_name(g) for g in groups], alpha=0.9, linewidth=0.3, edgecolor="white")
        ax.set(xlim=(1, 0), ylim=(0, 1), xlabel="keep ratio (tokens kept / N)", ylabel="share of kept tokens")
        _panel_letter(ax, f"{letter}  by {title}")
        handles, labels = ax.get_legend_handles_labels()
        _legend_right(ax, handles[::-1], labels[::-1])  # legend order matches the stack, top to bottom
    return fig


# ----------------------------------------------------------------------------- 4. orderings
def fig_orderings(data: ReportData, width: str):
    """Stored median normalized survival per category under the greedy order and each baseline ordering."""
    import matplotlib.pyplot as plt

    if not data.has_baselines:
        raise SkipFigure("the run has no baselines.parquet (prune with `--baselines random,surprisal,loo,attention`).")
    data.require_tags()
    table = data.stored_table("orderings_category", "the ordering comparison")
    colours = category_colours()
    names = list(dict.fromkeys(table["ordering"]))
    orderings = [o for o in ORDERINGS if o in names] + [o for o in names if o not in ORDERINGS]
    groups = _stored_groups(table, "category")
    fig, ax = plt.subplots(figsize=(WIDTHS[width], 0.35 * len(orderings) + 0.9), layout="constrained")
    y = np.arange(len(orderings))[::-1].astype(float)
    # Categories dodge vertically within an ordering, first category on top like the legend.
    offsets = np.linspace(0.3, -0.3, len(groups)) if len(groups) > 1 else [0.0]
    for g, dy, marker in zip(groups, offsets, MARKERS):
        sub = table[table["group"] == g].set_index("ordering")["median"].reindex(orderings)
        ax.plot(sub.to_numpy(float), y + dy, color=colours.get(g), marker=marker, markersize=3.5, linestyle="none",
                label=display_name(g))
    ax.set_yticks(y, orderings)
    ax.axhspan(y[0] - 0.45, y[0] + 0.45, color="0.92", zorder=0)  # greedy is the reference row
    for boundary in y[:-1] - 0.5:
        ax.axhline(boundary, color="0.85", linewidth=0.5, zorder=0)
    ax.set(xlim=(0, 1), ylim=(y[-1] - 0.5, y[0] + 0.5), xlabel="median normalized survival (stats: orderings_category)")
    _legend_right(ax)
    return fig


# ----------------------------------------------------------------------------- 5. rank shift
def fig_rank_shift(data: ReportData, width: str, n_movers: int = 6):
    """Static (step-1 cost) percentile vs deletion percentile, and the rank paths of the biggest movers."""
    tokens = data.require_tags()
    shift = _rank_shift_table(data, tokens)
    if shift.empty:
        raise SkipFigure("no token was deleted, so there are no deletion ranks.")
    colours = category_colours()
    fig, axes = _panels(width, 2, height_two=2.7, height_one=2.3)
    ax = axes[0]
    shown = _subsample(shift, "category", MAX_POINTS)
    for g in data.groups("category"):
        sub = shown[shown["category"] == g]
        ax.scatter(sub["static_pct"], sub["deletion_pct"], s=3, color=colours.get(g), alpha=0.6, linewidths=0,
                   label=display_name(g), rasterized=len(sub) > 200)
    ax.plot([0, 1], [0, 1], color="0.3", linewidth=0.7, linestyle="--", label="no shift")
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="static percentile (step-1 cost rank)",
           ylabel="deletion percentile (greedy)")
    tau = data.stored_test("tau")
    title = "a  static vs dynamic rank"
    if tau is not None and tau.get("n_chains"):
        source = ("tests", "tau")
        title += (f"\nmean Kendall τ = {data.quote(source + ('mean',), tau['mean'], '.2f')}"
                  + (f" [{data.quote(source + ('lower',), tau['lower'], '.2f')}, "
                     f"{data.quote(source + ('upper',), tau['upper'], '.2f')}]" if tau.get("lower") is not None else "")
                  + f", {data.quote(source + ('n_chains',), tau['n_chains'], ',d')} chains")
    _panel_letter(ax, title)
    _legend_right(ax, markerscale=2.5)

    ax = axes[1]
    # Half the movers climbed (kept longer than their static cost says), half fell.
    ranked = shift.sort_values("shift", kind="stable")
    movers = pd.concat([ranked.tail(n_movers - n_movers // 2).iloc[::-1], ranked.head(n_movers // 2)])
    movers = movers[movers["shift"] != 0]
    for (_, row), marker in zip(movers.iterrows(), MARKERS):
        path = _rank_path(data, int(row["chain_index"]), int(row["position"]))
        ax.plot(path["step_frac"], path["pct"], color=colours.get(row["category"]), marker=marker, markersize=2.5,
                markevery=max(len(path) // 6, 1), linewidth=1.0,
                label=f"“{_short(row['text'])}” {row['chain_id']} {'↑' if row['shift'] > 0 else '↓'}")
    ax.set(xlim=(0, 1), ylim=(-0.03, 1.03), xlabel="pruning progress (step / N)",
           ylabel="cost percentile among kept\n(0 = next to go)")
    _panel_letter(ax, "b  biggest rank movers")
    _legend_right(ax, title="token, chain (↑ kept longer\nthan its static rank)")
    return fig


def _rank_shift_table(data: ReportData, tokens: pd.DataFrame) -> pd.DataFrame:
    if not data.run.part_indices("traces"):
        raise SkipFigure("the run has no traces.parquet (written by `cotsurvival prune`).")
    per_token, _ = static_vs_greedy(data.run, tokens)
    shift = per_token.dropna(subset=["static_pct", "greedy_pct"])
    # The same numbers as the stats' rank-shift table; short names for the plot.
    shift = shift.rename(columns={"greedy_pct": "deletion_pct", "rank_shift": "shift"})
    return shift.merge(tokens[["chain_index", "position", "text"]], on=["chain_index", "position"], how="left")


def _rank_path(data: ReportData, chain_index: int, position: int) -> pd.DataFrame:
    ranks = rank_trajectories(data.run, chain_index)
    n = int(ranks.loc[ranks["step"] == 1, "n_remaining"].iloc[0])
    path = ranks[ranks["position"] == position].sort_values("step")
    return path.assign(step_frac=(path["step"] - 1) / n, pct=path["percentile"])


def _short(text: str, limit: int = 10) -> str:
    text = " ".join(str(text).split()) or "␣"
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ----------------------------------------------------------------------------- 6. objective
def fig_objective(data: ReportData, width: str):
    """Objective lost as the chain is pruned: per chain, with the stored pooled mean and CI; and per step."""

    steps = data.steps
    if steps["step"].max() < 1:
        raise SkipFigure("no pruning step was run (every token was kept), so the objective never changed.")
    # Per-chain curves are data (the function analyze calls); the pooled mean and CI are the stored ones.
    per_chain, _ = degradation_curves(data.run)
    per_chain = per_chain.sort_values(["chain_index", "step"])
    per_chain["step_cost"] = -per_chain.groupby("chain_index")["objective"].diff()
    fig, axes = _panels(width, 2, height_two=2.4, height_one=2.0)
    n_chains = per_chain["chain_index"].nunique()
    for ax, column in zip(axes, ("change", "step_cost")):
        for _, chain in per_chain.dropna(subset=[column]).groupby("chain_index", sort=False):
            # A chain with one point (a single step) is a dot, not an invisible line.
            ax.plot(chain["fraction_pruned"], chain[column], color="0.55", alpha=0.45, linewidth=0.5,
                    marker="." if len(chain) < 3 else None, markersize=2, rasterized=True)
        ax.plot([], [], color="0.55", linewidth=0.6, label=f"one chain (n={n_chains:,})")
        ax.set(xlim=(0, 1), xlabel="fraction of reasoning tokens pruned")
    ax = axes[0]
    try:
        pooled = data.stored_table("degradation", "the pooled curve").dropna(subset=["mean_change"])
    except SkipFigure:
        pooled = None
    if pooled is not None and len(pooled):
        ax.fill_between(pooled["fraction_pruned"], pooled["lower"], pooled["upper"], color="black", alpha=0.2,
                        linewidth=0, label="mean over chains (interpolated), 95% t CI")
        ax.plot(pooled["fraction_pruned"], pooled["mean_change"], color="black", linewidth=1.4,
                marker="o" if len(pooled) < 3 else None, markersize=2.5)
    ax.set(ylabel="objective change from step 0 (nats)")
    _panel_letter(ax, "a  cumulative")
    ax.legend(loc="lower left")
    ax = axes[1]
    ax.set(ylabel="objective lost by the step (nats)")
    _panel_letter(ax, "b  per step")
    return fig


# ----------------------------------------------------------------------------- 7. attention
def fig_attention(data: ReportData, width: str):
    """Attention received from the answer vs survival, and the stored per-layer mean per-chain Spearman rho."""

    if not data.has_attention:
        raise SkipFigure("the run has no attention.parquet (run `cotsurvival attention RUN`).")
    tokens = data.require_tags()
    answer = attention_layers(tokens, "answer")
    if not answer:
        raise SkipFigure("attention.parquet has no attn_answer_LXX columns.")
    correlations = data.stored_table("attention_correlations", "the attention correlations")
    colours = category_colours()
    fig, axes = _panels(width, 2, height_two=2.5, height_one=2.1)
    ax = axes[0]
    frame = tokens.assign(attn=tokens[answer].mean(axis=1)).dropna(subset=["attn"])
    shown = _subsample(frame, "category", MAX_POINTS)
    for g in data.groups("category"):
        sub = shown[shown["category"] == g]
        ax.scatter(sub["attn"], sub["survival"], s=3, color=colours.get(g), alpha=0.6, linewidths=0,
                   label=display_name(g), rasterized=len(sub) > 200)
    if (frame["attn"] > 0).all() and frame["attn"].max() / frame["attn"].min() > 30:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide at 6.5 pt
    ax.set(ylim=(-0.02, 1.02), xlabel="attention from answer (mean over layers)", ylabel="normalized survival")
    _panel_letter(ax, "a  attention vs survival")
    _legend_right(ax, markerscale=2.5)

    ax = axes[1]
    best = (data.stored_test("attention_best_layer") or {})
    for kind, name, colour, marker in (("answer", "from answer", "black", "o"), ("later", "from later reasoning", "0.55", "s")):
        rows = correlations[correlations["feature"].astype(str).str.startswith(f"attn_{kind}_L")]
        if rows.empty:
            continue
        layers = rows["feature"].str.rsplit("L", n=1).str[1].astype(int).to_numpy()
        ax.fill_between(layers, rows["lower"].to_numpy(float), rows["upper"].to_numpy(float), color=colour,
                        alpha=0.2, linewidth=0)
        label = name
        if kind in best:
            source = ("tests", "attention_best_layer", kind)
            label += (f"\nbest L{data.quote(source + ('layer',), best[kind]['layer'], ',d')}: "
                      f"ρ = {data.quote(source + ('mean_rho',), best[kind]['mean_rho'], '.2f')}, "
                      f"{data.quote(source + ('n_chains',), best[kind]['n_chains'], ',d')} chains")
        ax.plot(layers, rows["mean_rho"].to_numpy(float), color=colour, marker=marker, markersize=3, label=label)
    ax.axhline(0, color="0.3", linewidth=0.6, linestyle=":")
    # ρ lies in [-1, 1]; a t-interval over few chains can reach past that, so the axis stops there.
    ax.set(xlabel="layer", ylabel="mean per-chain Spearman ρ\nwith survival", ylim=(-1.05, 1.05))
    ax.xaxis.get_major_locator().set_params(integer=True)
    _panel_letter(ax, "b  per layer (95% t CI over chains)")
    ax.legend(loc="best", fontsize=6, handlelength=1.4)
    return fig


# ----------------------------------------------------------------------------- 8. chain text
def fig_chain_text(data: ReportData, width: str, chain_index: int | None = None, max_chars: int | None = None):
    """One chain as text: background colour = category, opacity = survival (faint = deleted early)."""
    import matplotlib.pyplot as plt

    tokens = data.require_tags()
    if chain_index is None:
        chain_index = pick_chain(tokens)
    chain = tokens[tokens["chain_index"] == chain_index].sort_values("position")
    if chain.empty:
        raise SkipFigure(f"chain {chain_index} has no tokens.")
    row = data.chains[data.chains["chain_index"] == chain_index].iloc[0]
    offsets = data.run.read_part("tokens", chain_index, columns=["position", "char_start", "char_end"])
    chain = chain.merge(offsets, on="position", how="left")
    segments, _ = token_segments(row["reasoning"], chain)
    colours = category_colours()
    font_pt = 6.5 if width == "one" else 7.5
    char_w, line_h, margin = 0.602 * font_pt / 72, 1.6 * font_pt / 72, 0.1  # DejaVu Sans Mono advance: 0.602 em
    cols = int((WIDTHS[width] - 2 * margin) / char_w)
    max_chars = max_chars or cols * (24 if width == "one" else 18)
    layout, truncated = _wrap_tokens(segments, chain, cols, max_chars)
    n_lines = max((r for _, r, *_ in layout), default=0) + 1
    key_h = 0.48
    height = 2 * margin + n_lines * line_h + key_h
    fig = plt.figure(figsize=(WIDTHS[width], height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set(xlim=(0, WIDTHS[width]), ylim=(height, 0))  # inches, y downwards like text
    ax.axis("off")
    for text, line, col, category, survival in layout:
        _token_box(ax, margin + col * char_w, margin + line * line_h, text, colours.get(category, "#BBBBBB"),
                   0.12 + 0.78 * float(survival), char_w, line_h, font_pt)
    note = f"{row['chain_id']} · {len(chain)} tokens" + (" · truncated" if truncated else "")
    _chain_key(ax, data.groups("category"), colours, margin, height - key_h + 0.06, note)
    return fig


def _token_box(ax, x, y, text, colour, alpha, char_w, line_h, font_pt):
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Rectangle

    core = text.lstrip()
    x += (len(text) - len(core)) * char_w  # the leading space stays unboxed, so tokens stay apart
    ax.add_patch(Rectangle((x, y + 0.1 * line_h), len(core) * char_w, 0.84 * line_h, linewidth=0,
                           facecolor=colour, alpha=alpha))
    # Text colour from the blended background's luminance keeps dark, solid boxes readable.
    blended = [alpha * c + (1 - alpha) for c in to_rgb(colour)]
    luminance = 0.2126 * blended[0] + 0.7152 * blended[1] + 0.0722 * blended[2]
    ax.text(x, y + 0.55 * line_h, core, family="DejaVu Sans Mono", parse_math=False, fontsize=font_pt, va="center", ha="left",
            color="white" if luminance < 0.45 else "black")


def _chain_key(ax, categories, colours, x0, y, note):
    """Category swatches, an opacity scale and the chain's name, on three short lines."""
    from matplotlib.patches import Rectangle

    size, char_w = 0.09, 0.602 * 6 / 72
    x = x0
    for category in categories:
        ax.add_patch(Rectangle((x, y), size, size, facecolor=colours.get(category, "#BBBBBB"), alpha=0.9, linewidth=0))
        label = display_name(category)
        ax.text(x + size + 0.04, y + size / 2, label, fontsize=6, va="center", family="DejaVu Sans Mono", parse_math=False)
        x += size + 0.04 + len(label) * char_w + 0.12
    y += 0.14
    ax.text(x0, y + size / 2, "opacity: deleted first", fontsize=6, va="center", family="DejaVu Sans Mono", parse_math=False)
    x = x0 + len("opacity: deleted first ") * char_w
    for k, alpha in enumerate(np.linspace(0.12, 0.9, 5)):
        ax.add_patch(Rectangle((x + k * size, y), size, size, facecolor="0.25", alpha=alpha, linewidth=0))
    x += 5 * size + char_w
    ax.text(x, y + size / 2, "kept longest", fontsize=6, va="center", family="DejaVu Sans Mono", parse_math=False)
    ax.text(x0, y + 0.14 + size / 2, note, fontsize=6, va="center", family="DejaVu Sans Mono", parse_math=False, color="0.35")


def pick_chain(tokens: pd.DataFrame) -> int:
    """A representative chain: the one whose length is closest to the median."""
    lengths = tokens.groupby("chain_index")["n_tokens"].first()
    return int((lengths - lengths.median()).abs().sort_values(kind="stable").index[0])


def _wrap_tokens(segments: list[str], chain: pd.DataFrame, cols: int, max_chars: int):
    """Place token texts on a monospace grid: ``(text, line, col, category, survival)`` per piece."""
    layout, line, col, used = [], 0, 0, 0
    for segment, token in zip(segments, chain.itertuples()):
        for k, piece in enumerate(segment.replace("\t", " ").split("\n")):
            if k:  # a newline inside the token
                line, col = line + 1, 0
            if not piece:
                continue
            if col and col + len(piece.rstrip()) > cols:
                line, col = line + 1, 0
                piece = piece.lstrip() or piece
            piece = piece[:cols]
            layout.append((piece, line, col, token.category, token.survival))
            col += len(piece)
            used += len(piece)
        if used >= max_chars:
            return layout, True
    return layout, False


# ----------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class FigureSpec:
    """A report figure: file stem, title, caption and drawing function."""

    stem: str
    title: str
    caption: str
    draw: Callable


FIGURES = (
    FigureSpec("fig1_kaplan_meier", "Kaplan–Meier survival by category",
               "Share of tokens still kept as greedy pruning proceeds (time = deletion step / N), with 95% "
               "log–log Greenwood bands; tokens kept when the run stopped are right-censored. Curves, counts and "
               "medians are the stored km_* and summary_* tables of stats.json.", fig_kaplan_meier),
    FigureSpec("fig2_survival_by_category", "Normalized survival by category",
               "Dots: tokens (filled: deleted at that time; hollow: still kept when the run stopped, so their "
               f"survival is at least that; at most {MAX_POINTS} drawn per group). Bars: the stored Kaplan–Meier "
               "median with its chain-bootstrap 95% CI (summary_* in stats.json).", fig_survival_by_category),
    FigureSpec("fig3_composition", "Composition of the kept chain",
               "Share of each category among the tokens still kept at each keep ratio, averaged over chains "
               "(each chain weighs the same). Descriptive: no test is drawn from it.", fig_composition),
    FigureSpec("fig4_orderings", "Greedy vs baseline orderings",
               "Median normalized survival per category under each ordering, from the stored orderings_category "
               "table (censored survivors tied at the run's end); its tests are in the Statistics section.",
               fig_orderings),
    FigureSpec("fig5_rank_shift", "Static vs dynamic importance",
               "(a) Percentile of a token's step-1 (leave-one-out) cost vs its greedy deletion percentile; "
               "off the diagonal, importance changed as neighbours went; τ is the stored mean per-chain Kendall τ. "
               "(b) Cost percentile among the kept tokens at every step, for the tokens whose rank moved most.",
               fig_rank_shift),
    FigureSpec("fig6_objective", "Objective degradation",
               "(a) Objective relative to the unpruned chain and (b) objective lost by each greedy step, vs the "
               "fraction of reasoning tokens pruned: thin lines per chain; black the stored mean over chains with "
               "its 95% t-interval (degradation table).", fig_objective),
    FigureSpec("fig7_attention", "Attention and survival",
               "(a) Attention a token receives from the answer (mean over layers and heads) vs its survival. "
               "(b) Mean over chains of the per-chain Spearman ρ between attention at each layer and survival, "
               "with its 95% t-interval (stored attention_correlations table).", fig_attention),
    FigureSpec("fig8_chain", "A chain, coloured by category",
               "Token background: category colour; opacity: normalized survival (faint = deleted early, "
               "solid = kept longest).", fig_chain_text),
)
