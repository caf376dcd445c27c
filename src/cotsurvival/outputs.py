"""Where a command may write: never over one of its inputs, never over a file it did not make.

Every stage function that writes a file or folder the user names (``prune``, ``tag``,
``tag-eval``, ``analyze``, ``report``, ``view``, ``export``, ``recover``, ``generate``, ``compare``,
``study``) calls :func:`check_output` itself before it does any work, so Python and the command line
refuse the same things, and a typo such as ``export RUN --out chains.jsonl`` (the run's own
source) fails at once with one line instead of destroying data. The rules:

* the output may not be an input of the same command, nor a file or table of an input run
  directory (:data:`cotsurvival.rundir.RUN_ENTRIES`, every table the run's stages write) or lie
  inside one, nor the chains file the run was pruned from (the run could not be resumed without it);
* an existing output is replaced only when it is empty, when the command recognises it as its own
  earlier output (``ours``), or when the user passed ``--overwrite``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterable

from .errors import CotSurvivalError
from .rundir import RUN_ENTRIES  # what no output may replace (the run folder itself may hold outputs)


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def run_inputs(run: str | os.PathLike) -> list[tuple[Path, str]]:
    """The paths an output must not replace when ``run`` is read: its files and its chains source.

    Returns ``(path, role)`` pairs; ``role`` words the refusal ("a file of run R").
    """
    folder = Path(run)
    pairs = [(folder, f"the run directory {folder}")]
    pairs += [(folder / name, f"a file of run {folder}") for name in RUN_ENTRIES]
    manifest_path = folder / "manifest.json"
    try:
        source = json.loads(manifest_path.read_text(encoding="utf-8")).get("chains_source") or {}
    except (OSError, ValueError):
        source = {}
    # New runs record the absolute path; older ones only the path as typed, relative to where
    # prune ran, which is most often where the user still is.
    for key in ("path", "source"):
        value = source.get(key)
        if value and value != "gsm8k" and not str(value).startswith("<"):
            pairs.append((Path(value), f"the chains file run {folder} was pruned from"))
    return pairs


def check_output(
    path: str | os.PathLike,
    *,
    inputs: Iterable[str | os.PathLike | tuple[str | os.PathLike, str]] = (),
    overwrite: bool = False,
    ours: Callable[[Path], bool] | None = None,
    command: str = "",
    folder: bool = False,
) -> Path:
    """Refuse an output path that would destroy data; return it (as given) when it is safe.

    Parameters
    ----------
    path : path
        The output file (or folder, with ``folder=True``).
    inputs : iterable of path or (path, role)
        What the command reads. The output may be none of them and may not lie inside any of them
        that is a folder (except a run directory itself: pass :func:`run_inputs` for a run, which
        protects its files and lets outputs such as ``RUN/viewer.html`` sit beside them).
    overwrite : bool
        Replace an existing output the command does not recognise as its own.
    ours : callable, optional
        ``ours(path) -> bool``: whether an existing output is an earlier output of this command
        (re-running a command replaces its own output without ``--overwrite``).
    command : str
        The command's name, for the message.
    folder : bool
        The output is a folder that the command fills (``report``).

    Raises
    ------
    CotSurvivalError
        E080 (an input), E081 (an existing file or folder the command did not make).
    """
    target = _resolved(path)
    for item in inputs:
        source, role = item if isinstance(item, tuple) else (item, "an input of this command")
        source_path = _resolved(source)
        if target == source_path:
            raise CotSurvivalError("E080", path=path, role=role)
        if role.startswith("the run directory"):
            continue  # outputs may live in a run directory, beside (not over) its files
        # inside a folder input, or inside a run table that does not exist yet (it would later be
        # read as the table and fail to load)
        if not source_path.is_file() and target.is_relative_to(source_path):
            raise CotSurvivalError("E080", path=path, role=f"inside {role} ({source})")
    if not target.exists():
        return Path(path)
    if folder:
        if not target.is_dir():
            raise CotSurvivalError("E081", path=path, what="is a file, not a folder", command=command)
        if overwrite or not any(target.iterdir()) or (ours is not None and ours(target)):
            return Path(path)
        raise CotSurvivalError("E081", path=path, what="is a folder with other files", command=command)
    if target.is_dir():
        raise CotSurvivalError("E081", path=path, what="is a folder", command=command)
    if overwrite or target.stat().st_size == 0 or (ours is not None and ours(target)):
        return Path(path)
    raise CotSurvivalError("E081", path=path, what="exists", command=command)


# ----------------------------------------------------------------------------- recognisers
def _first_json_line(path: Path) -> dict | None:
    try:
        with open(path, "rb") as handle:
            line = handle.readline(1 << 22)
        value = json.loads(line.decode("utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def is_export_file(path: Path) -> bool:
    """An earlier ``cotsurvival export`` output: JSONL whose records carry keep_ratio / n_kept / n_tokens."""
    record = _first_json_line(path)
    return record is not None and {"id", "reasoning", "keep_ratio", "n_kept", "n_tokens"} <= set(record)


def is_spans_file(path: Path) -> bool:
    """An earlier ``cotsurvival tag CHAINS --out`` output: JSONL of ``{id, spans[, reasoning]}``."""
    record = _first_json_line(path)
    return record is not None and {"id", "spans"} <= set(record) <= {"id", "spans", "reasoning"}


def is_generated_file(path: Path) -> bool:
    """An earlier ``cotsurvival generate`` output (accepted or rejected rows carry ``id`` and ``correct``)."""
    record = _first_json_line(path)
    return record is not None and {"id", "correct"} <= set(record)


def _html_title_starts(path: Path, prefix: str) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(8192).decode("utf-8", errors="replace")
    except OSError:
        return False
    return f"<title>{prefix}" in head


def is_viewer_file(path: Path) -> bool:
    """An earlier ``cotsurvival view`` page (its title starts with 'cotsurvival viewer')."""
    return _html_title_starts(path, "cotsurvival viewer")


def is_report_folder(path: Path) -> bool:
    """An earlier ``cotsurvival report`` folder: its index.html is a report page, or it holds only figure files."""
    if _html_title_starts(path / "index.html", "cotsurvival report"):
        return True
    entries = list(path.iterdir())
    return bool(entries) and all(p.is_file() and p.name.startswith("fig") and p.suffix in (".png", ".pdf")
                                 for p in entries)


def is_comparison_folder(path: Path) -> bool:
    """An earlier ``cotsurvival compare`` folder (it holds comparison.json)."""
    return (path / "comparison.json").is_file()


def is_recovery_folder(path: Path) -> bool:
    """An earlier ``cotsurvival recover`` output folder (it holds recovery_rows.parquet)."""
    return (path / "recovery_rows.parquet").is_file()


def is_onpolicy_folder(path: Path) -> bool:
    """An earlier ``cotsurvival resample`` output folder (it holds onpolicy.json or onpolicy_units.csv)."""
    return (path / "onpolicy.json").is_file() or (path / "onpolicy_units.csv").is_file()


def is_study_root(path: Path) -> bool:
    """An earlier ``cotsurvival study`` root (it holds study.json), which ``study`` continues."""
    return (path / "study.json").is_file()
