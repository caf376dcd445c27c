"""What the report needs from a run, read once and cached.

Per-token data comes from :mod:`cotsurvival.analysis` (the joined token table); every statistic a
figure prints comes from the stored analysis (``RUN/stats/stats.json``), so the figure, the table
and the sentence of a paper quote one number.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from ..analysis import AnalysisResult
from ..analysis import load_run
from ..errors import CotSurvivalError
from ..provenance import scoring_notes
from ..rundir import RunDir, as_rundir
from .style import COARSE, FINE, order_present


_LOAD = object()  # ReportData's default: read stats.json lazily


class SkipFigure(Exception):
    """A figure cannot be drawn from this run; the message says why (shown in the page)."""


@dataclass(frozen=True)
class Quote:
    """A number a figure or the page prints, and where it is stored.

    ``source`` is the path of the value in ``stats.json`` (keys and list indices), e.g.
    ``("tables", "summary_category", 2, "median")``; ``text`` is how it was printed.
    """

    source: tuple
    value: object
    text: str


def format_number(value, spec: str = ".3g") -> str:
    """How the report prints a stored number: ``spec`` for floats, thousands separators for integers."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)) or (isinstance(value, float) and spec == ",d"):
        return f"{int(value):,}"
    return f"{float(value):{spec}}"


class ReportData:
    """Lazy, cached access to a run's tables and its stored statistics, for the report figures.

    Figures draw per-token data from the run and print statistics only from the stored
    :class:`~cotsurvival.analysis.AnalysisResult` (``RUN/stats/stats.json``), recording each
    number they print as a :class:`Quote` so a test can check it against ``stats.json``.

    Parameters
    ----------
    run : str, PathLike or RunDir
        The run directory.
    stats : AnalysisResult or None, optional
        The stored statistics; ``None`` means there are none. Default: read
        ``RUN/stats/stats.json`` when first needed.
    """

    def __init__(self, run: str | os.PathLike | RunDir, stats=_LOAD, labels: str = "rule") -> None:
        self.run = as_rundir(run)
        self.labels = labels
        if stats is not _LOAD:
            self.__dict__["stats"] = stats  # pre-fills the cached property
        self.quotes: list[Quote] = []

    # ---------------------------------------------------------------- how the ranks were scored
    @cached_property
    def scoring_notes(self) -> list:
        """The run's :func:`~cotsurvival.provenance.scoring_notes` (approximation, precision, stability):
        every caption carries their sentences."""
        stability = getattr(self.stats, "stability_", None)
        return scoring_notes(self.run.read_manifest(), stability=stability)

    @cached_property
    def approx_label(self) -> str | None:
        """The one-line form of an approximate run's note, drawn under every figure (None when exact)."""
        return next((n.label for n in self.scoring_notes if n.label), None)

    # ---------------------------------------------------------------- stored statistics
    @cached_property
    def stats(self):
        """The stored :class:`~cotsurvival.analysis.AnalysisResult`, or ``None`` when not analysed."""

        try:
            return AnalysisResult.load(self.run)
        except CotSurvivalError:
            return None

    def stored_table(self, name: str, what: str = "this figure") -> pd.DataFrame:
        """A stored result table (row order as in ``stats.json``), or :class:`SkipFigure` saying why not."""
        if self.stats is None:
            raise SkipFigure(f"no statistics yet: run `cotsurvival analyze {self.run.path}` for {what}.")
        table = self.stats.tables_.get(name)
        if table is None or table.empty:
            note = (self.stats.tests_.get(name) or {}).get("note")
            raise SkipFigure(f"stats.json has no {name!r} table" + (f" ({note})" if note else "") + ".")
        return table.reset_index(drop=True)

    def stored_test(self, name: str) -> dict | None:
        """A stored test (``stats.json["tests"][name]``), or ``None`` when absent or not computed."""
        test = (self.stats.tests_.get(name) if self.stats is not None else None) or None
        return None if test is None or "note" in test else test

    def quote(self, source: tuple, value, spec: str = ".3g") -> str:
        """Print a stored number and record where it came from (see :class:`Quote`)."""
        text = format_number(value, spec)
        self.quotes.append(Quote(tuple(source), value, text))
        return text

    # ---------------------------------------------------------------- tables
    @cached_property
    def manifest(self) -> dict:
        return self.run.read_manifest()

    @cached_property
    def tokens(self) -> pd.DataFrame:
        """The joined token table (``analysis.load_run``; labels may be missing)."""

        return load_run(self.run, labels=self.labels, require_tags=False)

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


def resolve_chain_ids(run: RunDir, ids: list[str]) -> list[int]:
    """``chain_index`` of each chain id, in the order given; E053 names the ids the run lacks."""
    chains = run.read_chains()
    index_of = dict(zip(chains["chain_id"].astype(str), chains["chain_index"].astype(int)))
    missing = [i for i in ids if i not in index_of]
    if missing:
        known = list(index_of)
        raise CotSurvivalError("E053", ids=", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""),
                               n_chains=len(known), examples=", ".join(known[:3]) + (" ..." if len(known) > 3 else ""))
    return [index_of[i] for i in ids]


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
