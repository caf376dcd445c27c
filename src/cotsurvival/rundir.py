"""The run directory: the contract between stages.

Layout (every stage reads and writes only these; see README "The run directory")::

    RUN/
      manifest.json          versions, model, settings, skipped chains, timings
      chains.parquet         one row per chain (ids of prefix / reasoning / answer)
      tokens.parquet/        one row per reasoning token (greedy ranks); written by pruning only
      labels.parquet/        token labels by source (`rule`, `judge:<model>`); see cotsurvival.labels
      steps.parquet/         objective after each greedy step
      traces.parquet/        cost of deleting each remaining token at every step
      baselines.parquet/     ranks under the baseline orderings (`ordering` column)
      attention.parquet/     attention features per reasoning token (`cotsurvival attention`)
      recovery.parquet/      answer recovery per ordering and keep ratio (`cotsurvival recover`)
      resample.parquet/      on-policy rollouts per reasoning unit (`cotsurvival resample`)
      regeneration.parquet/  continuations of pruned chains (`cotsurvival resample`)
      stats/                 written by `cotsurvival analyze`
      checkpoints/           partial state of chains being pruned (removed when a chain commits)

The per-chain tables are Parquet *datasets*: folders with one ``part-NNNNNN.parquet`` file per
chain (NNNNNN = the chain's row in ``chains.parquet``). ``pandas.read_parquet(folder)`` reads a
whole table; a single chain is one small file, so traces are read chain by chain. A part file is
written to a temporary name and renamed, so a crash never leaves a half-written chain.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import CotSurvivalError
from .registry import view

#: The run's per-chain tables (Parquet datasets, one part per chain) and the command that writes each.
TABLE_WRITERS = {
    "tokens": "cotsurvival prune",
    "steps": "cotsurvival prune",
    "traces": "cotsurvival prune",
    "baselines": "cotsurvival prune --baselines random,surprisal,loo,attention",
    "attention": "cotsurvival attention RUN",
    "labels": "cotsurvival tag RUN",
    "recovery": "cotsurvival recover RUN",
    "resample": "cotsurvival resample RUN",
    "regeneration": "cotsurvival resample RUN",
}
PER_CHAIN_TABLES = tuple(TABLE_WRITERS)
#: Everything a run directory holds that belongs to its stages: no user-named output may replace
#: one of these or be written inside one (outputs.run_inputs reads this list).
RUN_ENTRIES = ("manifest.json", "chains.parquet", *(f"{table}.parquet" for table in PER_CHAIN_TABLES),
               "stats", "checkpoints")
# Tables with a ``replicate`` column (``prune --replicates K``): readers see replicate 0, the greedy
# path, unless they ask for every replicate (``replicates=True``), so every reader written for one
# path per chain stays right.
REPLICATED_TABLES = ("tokens", "steps", "traces")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace``.

    The file gets the mode ``open()`` would give it (0666 less the process umask): ``mkstemp``
    creates its temporary file 0600, which would leave a run unreadable to collaborators.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            if hasattr(os, "fchmod"):
                os.fchmod(handle.fileno(), 0o666 & ~current_umask())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise write_error(path, exc) from exc


def write_error(path: Path, exc: OSError) -> CotSurvivalError:
    """The one-line error for a failed write: E082 for permissions, E010 (free space, resume) otherwise."""
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = "read-only file system" if exc.errno == errno.EROFS else "permission denied"
        where = exc.filename if exc.filename and Path(exc.filename) != path else None
        return CotSurvivalError("E082", path=path, reason=f"{reason} ({where})" if where else reason)
    return CotSurvivalError("E010", path=path, reason=exc.strerror or str(exc))


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # os.umask can only be read by setting it; set it straight back
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_UMASK_LOCK = threading.Lock()


def atomic_write_parquet(path: Path, frame: pd.DataFrame | pa.Table) -> None:
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


class RunDir:
    """A run directory on disk.

    Parameters
    ----------
    path : str or Path
        The folder. It need not exist until something is written.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    # ----------------------------------------------------------------- paths
    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def chains_path(self) -> Path:
        return self.path / "chains.parquet"

    @property
    def stats_dir(self) -> Path:
        return self.path / "stats"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint_path(self, chain_index: int, replicate: int = 0) -> Path:
        """Where a chain being pruned keeps its partial state (``checkpoints/part-NNNNNN.npz``; a perturbed
        replicate r: ``part-NNNNNN-rR.npz``)."""
        suffix = f"-r{replicate}" if replicate else ""
        return self.checkpoint_dir / f"part-{chain_index:06d}{suffix}.npz"

    def table_dir(self, table: str) -> Path:
        if table not in PER_CHAIN_TABLES:
            raise ValueError(f"unknown per-chain table {table!r}")
        return self.path / f"{table}.parquet"

    def part_path(self, table: str, chain_index: int) -> Path:
        return self.table_dir(table) / f"part-{chain_index:06d}.parquet"

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def require(self) -> "RunDir":
        if not self.exists():
            raise CotSurvivalError("E007", path=self.path)
        return self

    # --------------------------------------------------------------- Jupyter
    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def _repr_html_(self) -> str:
        """Jupyter: the run at a glance (model, settings, counts, survival by category)."""
        return view("run_html")(self)

    def chain(self, chain_index: int):
        """One chain for display in Jupyter, coloured by category and shaded by survival.

        Parameters
        ----------
        chain_index : int
            Row of the chain in ``chains.parquet``.

        Returns
        -------
        cotsurvival.reports.notebook.ChainView
            Shows as HTML in a notebook; ``str(view.html)`` is the fragment.
        """
        return view("chain_view")(self, chain_index)

    # ------------------------------------------------------------- stage API
    @classmethod
    def load(cls, path: str | os.PathLike) -> "RunDir":
        """Open an existing run directory (E007 if ``path`` is not one); a run is saved as it is written."""
        return cls(path).require()

    def to_frame(self) -> pd.DataFrame:
        """Pruning's per-token table (``tokens.parquet``); ``cotsurvival.load_run(run)`` joins labels and features."""
        return self.read_table("tokens")

    # -------------------------------------------------------------- manifest
    def read_manifest(self) -> dict[str, Any]:
        self.require()
        return json.loads(self.manifest_path.read_text(encoding="utf-8"))

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        data = json.dumps(manifest, indent=2, sort_keys=False, default=str).encode("utf-8")
        atomic_write_bytes(self.manifest_path, data)

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        manifest = self.read_manifest()
        manifest.update(fields)
        self.write_manifest(manifest)
        return manifest

    # ---------------------------------------------------------------- tables
    def write_chains(self, frame: pd.DataFrame) -> None:
        atomic_write_parquet(self.chains_path, frame)

    def read_chains(self) -> pd.DataFrame:
        return _read_parquet(self.chains_path)

    def write_part(self, table: str, chain_index: int, frame: pd.DataFrame | pa.Table) -> None:
        atomic_write_parquet(self.part_path(table, chain_index), frame)

    def has_part(self, table: str, chain_index: int) -> bool:
        return self.part_path(table, chain_index).is_file()

    def part_indices(self, table: str) -> list[int]:
        folder = self.table_dir(table)
        if not folder.is_dir():
            return []
        return sorted(int(p.stem.split("-")[1]) for p in folder.glob("part-*.parquet"))

    def part_columns(self, table: str, chain_index: int) -> set[str]:
        """Column names of one part (from its schema, without reading the data); E008 if unreadable."""
        path = self.part_path(table, chain_index)
        if not path.exists():
            raise CotSurvivalError("E001", path=path)
        try:
            return set(pq.read_schema(path).names)
        except (pa.ArrowException, OSError) as exc:
            raise CotSurvivalError("E008", path=path, reason=_first_line(exc)) from None

    def read_part(self, table: str, chain_index: int, columns: list[str] | None = None, *,
                  replicates: bool = False) -> pd.DataFrame:
        """One chain's rows of ``table``; of ``tokens``, ``steps`` and ``traces`` only replicate 0's
        (the greedy path) unless ``replicates`` is True."""
        only_greedy = table in REPLICATED_TABLES and not replicates
        return _read_parquet(self.part_path(table, chain_index), columns=columns, replicate0=only_greedy)

    def read_table(
        self, table: str, chain_indices: Iterable[int] | None = None, columns: list[str] | None = None, *,
        replicates: bool = False,
    ) -> pd.DataFrame:
        """Concatenate the parts of a per-chain table (all chains, or those given); ``replicates`` as in
        :meth:`read_part`."""
        indices = self.part_indices(table) if chain_indices is None else list(chain_indices)
        if not indices:
            raise CotSurvivalError("E012", path=self.path, what=table, command=TABLE_WRITERS[table])
        frames = [self.read_part(table, i, columns=columns, replicates=replicates) for i in indices]
        return pd.concat(frames, ignore_index=True)


def as_rundir(run: str | os.PathLike | RunDir) -> RunDir:
    """The one way to open a run directory: a :class:`RunDir` for a path or a RunDir; E007 if it is not one."""
    return (run if isinstance(run, RunDir) else RunDir(run)).require()


def _read_parquet(path: Path, columns: list[str] | None = None, replicate0: bool = False) -> pd.DataFrame:
    if not path.exists():
        raise CotSurvivalError("E001", path=path)
    try:
        if not replicate0:
            return pq.read_table(path, columns=columns).to_pandas()
        with pq.ParquetFile(path) as handle:
            if "replicate" not in handle.schema_arrow.names:  # written before replicates: all rows are replicate 0
                return handle.read(columns=columns).to_pandas()
            data = handle.read(columns=None if columns is None else list(dict.fromkeys([*columns, "replicate"])))
        data = data.filter(pc.equal(data["replicate"], 0))
        if columns is not None and "replicate" not in columns:
            data = data.drop_columns(["replicate"])
        return data.to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise CotSurvivalError("E008", path=path, reason=_first_line(exc)) from None


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
