"""Stage functions that wrap a lower-level function into the stage shape (attention, view, export).

Every stage is one function ``stage(run, *, ...) -> result``; ``cotsurvival.STAGES`` maps each
stage name to where it lives. Each CLI command calls the function of its name and only prints its
result, so the
Python API and the command line cannot do different things. Each result renders in Jupyter
(``_repr_html_``), converts to a DataFrame (``to_frame()``) and saves/loads (see
:mod:`cotsurvival.results`; a :class:`~cotsurvival.rundir.RunDir` *is* its saved form).

============  ==========================================  =====================================
stage         does                                        returns
============  ==========================================  =====================================
generate      teacher chains by rejection sampling        GenerationResult
prune         greedy survival pruning into a run          RunDir
tag           rule (and judge) labels: labels.parquet     TagResult
attention     attention features: attention.parquet       AttentionResult
analyze       statistics: RUN/stats/                      AnalysisResult
report        figures and index.html                      Report
view          the interactive HTML viewer                 ViewResult
export        pruned chains as JSONL at a keep ratio      ExportResult
recover       answer recovery of pruned chains            RecoveryResult
============  ==========================================  =====================================

``import cotsurvival`` exposes each as ``cotsurvival.<stage>`` (imported on first use).
Adding a stage is one line in ``cotsurvival.STAGES``.
"""
from __future__ import annotations

import dataclasses
import html
import os
import time
from pathlib import Path
from typing import Iterable

import pandas as pd

from .analysis.attention import compute_attention_features
from .outputs import check_output, is_viewer_file, run_inputs
from .pruning.export import export_pruned
from .reports.viewer import build_viewer
from .results import StageResult
from .rundir import RunDir

# ----------------------------------------------------------------------------------- attention
@dataclasses.dataclass
class AttentionResult(StageResult):
    """What ``attention`` wrote: features of ``n_chains`` chains into ``RUN/attention.parquet``."""

    title = "cotsurvival attention"
    run: str
    model: str | None
    n_chains: int
    seconds: float

    def to_frame(self) -> pd.DataFrame:
        """The attention table (one row per reasoning token)."""
        return RunDir(self.run).read_table("attention")


def attention(run: str | os.PathLike | RunDir, *, model: str | None = None, device: str = "auto",
              dtype: str = "auto", overwrite: bool = False, progress: bool = True) -> AttentionResult:
    """Attention received and surprisal per reasoning token (see :func:`cotsurvival.analysis.compute_attention_features`)."""

    started = time.perf_counter()
    count = compute_attention_features(run, model, device=device, dtype=dtype, overwrite=overwrite, progress=progress)
    return AttentionResult(run=str(_path(run)), model=model, n_chains=count, seconds=time.perf_counter() - started)


# ----------------------------------------------------------------------------------- view
@dataclasses.dataclass
class ViewResult(StageResult):
    """The viewer page written by ``view``."""

    title = "cotsurvival view"
    path: str
    n_bytes: int

    def _repr_html_(self) -> str:
        return (f"<p><b>cotsurvival view</b> {html.escape(self.path)} ({self.n_bytes / 1e6:.1f} MB): "
                f"open it in a browser; it works offline.</p>")


def view(run: str | os.PathLike | RunDir, *, out: str | os.PathLike, chains: Iterable[int] | None = None,
         chain_ids: Iterable[str] | None = None, max_chains: int = 50, traces: bool = True,
         labels: str = "rule", overwrite: bool = False) -> ViewResult:
    """One self-contained, offline HTML page to watch a run's chains shrink (see :func:`cotsurvival.reports.build_viewer`).

    ``out`` is never one of the run's files or tables (E080); an existing file is replaced only when
    it is an earlier viewer page, or with ``overwrite`` (E081).
    """

    check_output(out, inputs=run_inputs(_path(run)), overwrite=overwrite, ours=is_viewer_file, command="view")
    path = build_viewer(run, out, chains=chains, chain_ids=chain_ids, max_chains=max_chains, traces=traces,
                        labels=labels)
    return ViewResult(path=str(path), n_bytes=path.stat().st_size)


# ----------------------------------------------------------------------------------- export
@dataclasses.dataclass
class ExportResult(StageResult):
    """The pruned chains written by ``export``."""

    title = "cotsurvival export"
    path: str
    keep_ratio: float
    n_chains: int

    def to_frame(self) -> pd.DataFrame:
        """The exported records (one row per chain)."""
        return pd.read_json(self.path, lines=True)


def export(run: str | os.PathLike | RunDir, *, keep_ratio: float, out: str | os.PathLike,
           overwrite: bool = False) -> ExportResult:
    """Write the pruned chains of a run as JSONL at a keep ratio (see :func:`cotsurvival.pruning.export_pruned`)."""

    count = export_pruned(run, keep_ratio, out, overwrite=overwrite)
    return ExportResult(path=str(out), keep_ratio=keep_ratio, n_chains=count)


def _path(run: str | os.PathLike | RunDir) -> Path:
    return run.path if isinstance(run, RunDir) else Path(run)
