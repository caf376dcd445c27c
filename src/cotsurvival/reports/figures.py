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

from .data import (ReportData, SkipFigure, chain_means, composition_by_keep_ratio, display_name, mean_ci,
                   token_segments)
from .style import WIDTHS, category_colours

LEVELS = (("category", "coarse category"), ("label", "fine label"))
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


# ----------------------------------------------------------------------------- 1. Kaplan–Meier
def fig_kaplan_meier(data: ReportData, width: str):
    """Kaplan–Meier curves (95% log–log bands) by coarse category and by fine label."""
    from ..analysis import kaplan_meier

    tokens = data.require_tags()
    colours = category_colours()
    fig, axes = _panels(width, 2, sharey=True)
    for ax, (level, title), letter in zip(axes, LEVELS, "ab"):
        curves = kaplan_meier(tokens, group=level)
        counts = tokens[level].value_counts()
        for name in data.groups(level):
            curve = curves[curves["group"] == name]
            colour = colours.get(name)
            ax.step(curve["time"], curve["survival"], where="post", color=colour,
                    label=f"{display_name(name)} ({counts[name]:,})")
            ax.fill_between(curve["time"], curve["lower"], curve["upper"], step="post", color=colour,
                            alpha=0.18, linewidth=0)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="deletion time (step / N)", ylabel="share of tokens still kept")
        _panel_letter(ax, f"{letter}  by {title}")
        _legend_right(ax, title="tokens (n)")
    axes[1].tick_params(labelleft=True)
    return fig


# ----------------------------------------------------------------------------- 2. survival by category
def fig_survival_by_category(data: ReportData, width: str):
    """Normalized survival per token (box + points) with the chain-level means overlaid."""
    from matplotlib.lines import Line2D

    tokens = data.require_tags()
    colours = category_colours()
    fig, axes = _panels(width, 2, height_two=2.7, height_one=2.0)
    rng = np.random.default_rng(0)
    for ax, (level, title), letter in zip(axes, LEVELS, "ab"):
        groups = data.groups(level)
        boxes = [tokens.loc[tokens[level] == g, "survival"].to_numpy() for g in groups]
        ypos = np.arange(len(groups))[::-1]  # first group on top
        parts = ax.boxplot(boxes, positions=ypos, orientation="horizontal", widths=0.6, showfliers=False,
                           patch_artist=True, medianprops={"color": "black", "linewidth": 1.0},
                           whiskerprops={"linewidth": 0.7}, capprops={"linewidth": 0.7})
        for patch, g in zip(parts["boxes"], groups):
            patch.set(facecolor=colours.get(g), alpha=0.35, edgecolor="0.2", linewidth=0.7)
        means = chain_means(tokens, [level])
        for y, g, values in zip(ypos, groups, boxes):
            if len(values) > MAX_POINTS:
                values = rng.choice(values, MAX_POINTS, replace=False)
            # Tokens jittered just below the box centre, chain means just above: both stay visible.
            ax.scatter(values, y - 0.12 + rng.uniform(-0.1, 0.1, len(values)), s=2, color=colours.get(g),
                       alpha=0.5, linewidths=0, zorder=3, rasterized=len(values) > 200)
            chain_values = means.loc[means[level] == g, "survival"].to_numpy()
            ax.scatter(chain_values, y + 0.17 + rng.uniform(-0.06, 0.06, len(chain_values)), s=11, marker="D",
                       facecolor=colours.get(g), edgecolor="black", linewidths=0.5, zorder=4)
        ax.set_yticks(ypos, [display_name(g) for g in groups])
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.6, len(groups) - 0.4), xlabel="normalized survival (step deleted / N)")
        _panel_letter(ax, f"{letter}  by {title}")
    handles = [Line2D([], [], marker="o", linestyle="", markersize=2.5, color="0.4", label="token"),
               Line2D([], [], marker="D", linestyle="", markersize=3.5, markerfacecolor="0.7",
                      markeredgecolor="black", markeredgewidth=0.5, label="chain mean")]
    fig.legend(handles=handles, loc="outside lower center", ncols=2)
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
    """Mean normalized survival per category under the greedy order and each baseline ordering."""
    from ..analysis import orderings_long

    if not data.has_baselines:
        raise SkipFigure("the run has no baselines.parquet (prune with `--baselines random,surprisal,loo,attention`).")
    long = orderings_long(data.require_tags())
    orderings = [o for o in ORDERINGS if o in long["ordering"].cat.categories]
    orderings += [o for o in long["ordering"].cat.categories if o not in orderings]
    colours = category_colours()
    fig, axes = _panels(width, 2, height_two=2.6, height_one=2.3)
    y = np.arange(len(orderings))[::-1]  # greedy on top
    for ax, (level, title), letter in zip(axes, LEVELS, "ab"):
        groups = data.groups(level)
        per_chain = chain_means(long, ["ordering", level])
        # Categories dodge vertically within an ordering, first category on top like the legend.
        offsets = np.linspace(0.3, -0.3, len(groups)) if len(groups) > 1 else [0.0]
        for g, dy, marker in zip(groups, offsets, MARKERS):
            rows = [mean_ci(per_chain.loc[(per_chain["ordering"] == o) & (per_chain[level] == g), "survival"])
                    for o in orderings]
            mean, low, high = (np.array(v) for v in zip(*rows))
            ax.errorbar(mean, y + dy, xerr=[mean - low, high - mean], color=colours.get(g), marker=marker,
                        markersize=3, linestyle="none", elinewidth=0.8, capsize=0, label=display_name(g))
        ax.set_yticks(y, orderings)
        ax.axhspan(y[0] - 0.45, y[0] + 0.45, color="0.92", zorder=0)  # greedy is the reference row
        for boundary in y[:-1] - 0.5:
            ax.axhline(boundary, color="0.85", linewidth=0.5, zorder=0)
        ax.set(xlim=(0, 1), ylim=(y[-1] - 0.5, y[0] + 0.5),
               xlabel="mean normalized survival (chain means, 95% CI)")
        _panel_letter(ax, f"{letter}  by {title}")
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
    _panel_letter(ax, "a  static vs dynamic rank")
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
                label=f"“{_short(row['text'])}” {row['chain_id']} ({row['shift']:+.2f})")
    ax.set(xlim=(0, 1), ylim=(-0.03, 1.03), xlabel="pruning progress (step / N)",
           ylabel="cost percentile among kept\n(0 = next to go)")
    _panel_letter(ax, "b  biggest rank movers")
    _legend_right(ax, title="token, chain (shift)")
    return fig


def _rank_shift_table(data: ReportData, tokens: pd.DataFrame) -> pd.DataFrame:
    from ..analysis.dynamics import static_vs_greedy

    if not data.run.part_indices("traces"):
        raise SkipFigure("the run has no traces.parquet (written by `cotsurvival prune`).")
    per_token, _ = static_vs_greedy(data.run, tokens)
    shift = per_token.dropna(subset=["static_pct", "greedy_pct"])
    # The same numbers as the stats' rank-shift table; short names for the plot.
    shift = shift.rename(columns={"greedy_pct": "deletion_pct", "rank_shift": "shift"})
    return shift.merge(tokens[["chain_index", "position", "text"]], on=["chain_index", "position"], how="left")


def _rank_path(data: ReportData, chain_index: int, position: int) -> pd.DataFrame:
    from ..analysis.dynamics import rank_trajectories

    ranks = rank_trajectories(data.run, chain_index)
    n = int(ranks.loc[ranks["step"] == 1, "n_remaining"].iloc[0])
    path = ranks[ranks["position"] == position].sort_values("step")
    return path.assign(step_frac=(path["step"] - 1) / n, pct=path["percentile"])


def _short(text: str, limit: int = 10) -> str:
    text = " ".join(str(text).split()) or "␣"
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ----------------------------------------------------------------------------- 6. objective
def fig_objective(data: ReportData, width: str):
    """Objective lost as the chain is pruned: per chain and pooled, cumulative and per step."""
    from ..analysis.dynamics import degradation_curves

    steps = data.steps
    if steps["step"].max() < 1:
        raise SkipFigure("no pruning step was run.")
    per_chain, pooled = degradation_curves(data.run, grid=101)
    per_chain = per_chain.sort_values(["chain_index", "step"])
    per_chain["step_cost"] = -per_chain.groupby("chain_index")["objective"].diff()
    fig, axes = _panels(width, 2, height_two=2.4, height_one=2.0)
    n_chains = per_chain["chain_index"].nunique()
    for ax, column in zip(axes, ("drop", "step_cost")):
        for _, chain in per_chain.dropna(subset=[column]).groupby("chain_index", sort=False):
            ax.plot(chain["fraction_pruned"], chain[column], color="0.55", alpha=0.35, linewidth=0.5, rasterized=True)
        ax.plot([], [], color="0.55", linewidth=0.6, label=f"one chain (n={n_chains})")
        ax.set(xlim=(0, 1), xlabel="fraction of reasoning tokens pruned")
    ax = axes[0]
    pooled = pooled.dropna(subset=["mean_drop"])
    ax.fill_between(pooled["fraction_pruned"], pooled["lower"], pooled["upper"], color="black", alpha=0.2,
                    linewidth=0, label="pooled mean, 95% CI")
    ax.plot(pooled["fraction_pruned"], pooled["mean_drop"], color="black", linewidth=1.4)
    ax.set(ylabel="objective change from step 0 (nats)")
    _panel_letter(ax, "a  cumulative")
    ax.legend(loc="lower left")
    ax = axes[1]
    # Per-step costs are noisy; a pooled median with its IQR on a common grid shows the trend.
    pooled_step = _pooled_quantiles(per_chain.dropna(subset=["step_cost"]), "step_cost")
    ax.fill_between(pooled_step.index, pooled_step[0.25], pooled_step[0.75], color="black", alpha=0.2, linewidth=0,
                    label="pooled IQR")
    ax.plot(pooled_step.index, pooled_step[0.5], color="black", linewidth=1.4, label="pooled median")
    ax.set(ylabel="objective lost by the step (nats)")
    _panel_letter(ax, "b  per step")
    ax.legend(loc="upper left")
    return fig


def _pooled_quantiles(frame: pd.DataFrame, column: str, n_grid: int = 101) -> pd.DataFrame:
    grid = np.linspace(0, 1, n_grid)
    curves = []
    for _, chain in frame.groupby("chain_index", sort=False):
        x = chain["fraction_pruned"].to_numpy(float)
        inside = grid[(grid >= x.min()) & (grid <= x.max())]
        curves.append(pd.Series(np.interp(inside, x, chain[column].to_numpy(float)), index=inside))
    return pd.concat(curves, axis=1).quantile([0.25, 0.5, 0.75], axis=1).T.sort_index()


# ----------------------------------------------------------------------------- 7. attention
def fig_attention(data: ReportData, width: str):
    """Attention received from the answer vs survival, and per-layer Spearman rho with survival."""
    from scipy import stats

    from ..analysis import attention_layers

    if not data.has_attention:
        raise SkipFigure("the run has no attention.parquet (run `cotsurvival attention RUN`).")
    tokens = data.require_tags()
    answer, later = attention_layers(tokens, "answer"), attention_layers(tokens, "later")
    if not answer:
        raise SkipFigure("attention.parquet has no attn_answer_LXX columns.")
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
    rho = stats.spearmanr(frame["attn"], frame["survival"]).statistic
    ax.set(ylim=(-0.02, 1.02), xlabel="attention from answer (mean over layers)", ylabel="normalized survival")
    _panel_letter(ax, f"a  attention vs survival (ρ = {rho:.2f})")
    _legend_right(ax, markerscale=2.5)

    ax = axes[1]
    for columns, name, colour, marker in ((answer, "from answer", "black", "o"), (later, "from later reasoning", "0.55", "s")):
        if not columns:
            continue
        layers = [int(c.rsplit("L", 1)[1]) for c in columns]
        rhos = [stats.spearmanr(tokens[c], tokens["survival"], nan_policy="omit").statistic for c in columns]
        half = 1.96 / np.sqrt(max(tokens[columns[0]].notna().sum() - 3, 1))  # Fisher z, pooled tokens
        ax.fill_between(layers, np.tanh(np.arctanh(rhos) - half), np.tanh(np.arctanh(rhos) + half), color=colour,
                        alpha=0.2, linewidth=0)
        ax.plot(layers, rhos, color=colour, marker=marker, markersize=3, label=name)
    ax.axhline(0, color="0.3", linewidth=0.6, linestyle=":")
    ax.set(xlabel="layer", ylabel="Spearman ρ with survival")
    ax.xaxis.get_major_locator().set_params(integer=True)
    _panel_letter(ax, "b  per layer (95% CI)")
    _legend_right(ax)
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
               "log–log Greenwood bands. Tokens kept when the run stopped are right-censored.", fig_kaplan_meier),
    FigureSpec("fig2_survival_by_category", "Normalized survival by category",
               "Boxes: token survival (step deleted / N; censored tokens sit at the run's last step). Dots: "
               f"tokens (at most {MAX_POINTS} drawn per group). Diamonds: one chain's mean.", fig_survival_by_category),
    FigureSpec("fig3_composition", "Composition of the kept chain",
               "Share of each category among the tokens still kept at each keep ratio, averaged over chains "
               "(each chain weighs the same).", fig_composition),
    FigureSpec("fig4_orderings", "Greedy vs baseline orderings",
               "Mean normalized survival per category under each ordering; points are means of chain means "
               "with 95% t-intervals over chains.", fig_orderings),
    FigureSpec("fig5_rank_shift", "Static vs dynamic importance",
               "(a) Percentile of a token's step-1 (leave-one-out) cost vs its greedy deletion percentile; "
               "off the diagonal, importance changed as neighbours went. (b) Cost percentile among the kept "
               "tokens at every step, for the tokens whose rank moved most.", fig_rank_shift),
    FigureSpec("fig6_objective", "Objective degradation",
               "(a) Objective relative to the unpruned chain and (b) objective lost by each greedy step, vs the "
               "fraction of reasoning tokens pruned: thin lines per chain, black the pooled median and IQR.",
               fig_objective),
    FigureSpec("fig7_attention", "Attention and survival",
               "(a) Attention a token receives from the answer (mean over layers and heads) vs its survival. "
               "(b) Spearman ρ between attention at each layer and survival over all tokens.", fig_attention),
    FigureSpec("fig8_chain", "A chain, coloured by category",
               "Token background: category colour; opacity: normalized survival (faint = deleted early, "
               "solid = kept longest).", fig_chain_text),
)
