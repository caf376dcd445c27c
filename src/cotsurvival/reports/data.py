"""What the report needs from a run, read once and cached.

Built on :mod:`cotsurvival.analysis` (the joined token table, Kaplan–Meier, orderings) so the
figures show exactly the numbers the statistics report.
"""
from __future__ import annotations

import os
from functools import cached_property

import numpy as np
import pandas as pd

from ..errors import CotSurvivalError
from ..rundir import RunDir, as_rundir
from .style import COARSE, FINE, order_present


class SkipFigure(Exception):
    """A figure cannot be drawn from this run; the message says why (shown in the page)."""


class ReportData:
    """Lazy, cached access to a run's tables for the report figures.

    Parameters
    ----------
    run : str, PathLike or RunDir
        The run directory.
    """

    def __init__(self, run: str | os.PathLike | RunDir) -> None:
        self.run = as_rundir(run)

    # ---------------------------------------------------------------- tables
    @cached_property
    def manifest(self) -> dict:
        return self.run.read_manifest()

    @cached_property
    def tokens(self) -> pd.DataFrame:
        """The joined token table (``analysis.load_run``; labels may be missing)."""
        from ..analysis import load_run

        return load_run(self.run, require_tags=False)

    @cached_property
    def tagged(self) -> bool:
        return bool(self.tokens["category"].notna().any())

    @cached_property
    def chains(self) -> pd.DataFrame:
        return self.run.read_chains()

    @cached_property
    def steps(self) -> pd.DataFrame:
        return self._table("steps")

    @cached_property
    def has_baselines(self) -> bool:
        return bool(self.run.part_indices("baselines"))

    @cached_property
    def has_attention(self) -> bool:
        return bool(self.run.part_indices("attention"))

    def _table(self, name: str) -> pd.DataFrame:
        try:
            return self.run.read_table(name)
        except CotSurvivalError as exc:
            raise SkipFigure(exc.message) from None

    # -------------------------------------------------------------- helpers
    def require_tags(self) -> pd.DataFrame:
        """The tagged tokens, or :class:`SkipFigure` when ``cotsurvival tag`` has not run."""
        if not self.tagged:
            raise SkipFigure("tokens have no categories yet; run `cotsurvival tag RUN` first.")
        return self.tokens.dropna(subset=["category"])

    def groups(self, level: str) -> list[str]:
        """Coarse categories (``level="category"``) or fine labels (``"label"``) present, in canonical order."""
        canonical = COARSE if level == "category" else FINE
        return order_present(self.require_tags()[level].unique(), canonical)


def display_name(name: str) -> str:
    """Human name of a category or label: ``META_DISCOURSE`` -> ``meta-discourse``."""
    special = {"META_DISCOURSE": "meta-discourse", "symbolic_math": "symbolic math"}
    return special.get(name, str(name).replace("_", " ").lower())


def composition_by_keep_ratio(tokens: pd.DataFrame, level: str, groups: list[str], n_grid: int = 101) -> pd.DataFrame:
    """Share of each group among the tokens still kept, as the keep ratio falls.

    Each chain weighs the same: shares are computed per chain, then averaged over the chains
    that reached that keep ratio (a run stopped early drops out past its last step).

    Returns
    -------
    pandas.DataFrame
        Index ``keep_ratio`` (descending), one column per group, plus ``n_chains``.
    """
    grid = np.linspace(1.0, 0.0, n_grid)
    sums = np.zeros((n_grid, len(groups)))
    counts = np.zeros(n_grid)
    for _, chain in tokens.groupby("chain_index", sort=False):
        n = int(chain["n_tokens"].iloc[0])
        deleted = chain["deleted_step"].astype("Float64").fillna(np.inf).to_numpy(float)
        # Survivors of a stopped run carry survival = steps_run / N.
        censored = chain["censored"].to_numpy(bool)
        steps_run = int(round(chain["survival"].to_numpy(float)[censored][0] * n)) if censored.any() else n
        member = np.stack([(chain[level] == g).to_numpy() for g in groups], axis=1)
        for i, ratio in enumerate(grid):
            kept = int(round(ratio * n))
            k = n - kept
            if kept < 1 or k > steps_run:
                continue
            alive = deleted > k
            sums[i] += member[alive].sum(axis=0) / alive.sum()
            counts[i] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = sums / counts[:, None]
    frame = pd.DataFrame(shares, columns=groups, index=pd.Index(grid, name="keep_ratio"))
    frame["n_chains"] = counts.astype(int)
    return frame[frame["n_chains"] > 0]


def chain_means(frame: pd.DataFrame, by: list[str], value: str = "survival") -> pd.DataFrame:
    """Mean of ``value`` per chain within ``by`` groups (the chain is the unit of replication)."""
    return frame.groupby(["chain_index"] + by, observed=True)[value].mean().reset_index()


def mean_ci(values: pd.Series, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and t-based confidence interval of ``values`` (half-width 0 for one value)."""
    from scipy import stats

    values = values.dropna().to_numpy(float)
    mean = float(values.mean()) if len(values) else float("nan")
    if len(values) < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


def token_segments(reasoning: str, chain_tokens: pd.DataFrame) -> tuple[list[str], str]:
    """The text each token shows when a chain is rendered, and the text after the last token.

    A token shows the reasoning from the end of the previous token to its own end, so the
    whitespace before it comes and goes with it; tokens whose offsets are missing or overlap
    (bytes of one character split over tokens) fall back to their ``text``.

    Parameters
    ----------
    reasoning : str
        The chain's reasoning text.
    chain_tokens : pandas.DataFrame
        The chain's tokens, sorted by ``position``, with ``text``, ``char_start``, ``char_end``.

    Returns
    -------
    (list of str, str)
    """
    segments, previous = [], 0
    reasoning = reasoning or ""
    starts = chain_tokens["char_start"] if "char_start" in chain_tokens else [None] * len(chain_tokens)
    ends = chain_tokens["char_end"] if "char_end" in chain_tokens else [None] * len(chain_tokens)
    for text, start, end in zip(chain_tokens["text"], starts, ends):
        if pd.notna(start) and pd.notna(end) and previous <= int(start) <= int(end) <= len(reasoning) and end > previous:
            segments.append(reasoning[previous:int(end)])
            previous = int(end)
        else:
            segments.append("" if text is None else str(text))
    return segments, reasoning[previous:]
