"""The one result model: every stage result renders, converts to a DataFrame, saves and loads.

Every result a stage returns (``prune`` a :class:`~cotsurvival.rundir.RunDir`, ``tag`` a
``TagResult``, ``analyze`` an ``AnalysisResult``, ``recover`` a ``RecoveryResult``, ``compare`` a
``ComparisonResult``, ``study`` a ``StudyResult``, ...) offers

* ``_repr_html_()``: Jupyter HTML, every piece of text escaped;
* ``to_frame()``: its natural table as a DataFrame;
* ``to_dict()``: its JSON-ready content;
* ``save(folder) -> Path`` and ``Cls.load(folder)``: a folder that round-trips.

and every one of them writes through the three helpers here, so there is one JSON cleaner
(:func:`to_jsonable`), one atomic JSON writer (:func:`write_json`) and one table writer
(:func:`write_table`). :class:`StageResult` gives dataclass results all of it; a stage result only
declares its fields (and, where one row is not the natural table, overrides ``to_frame``).
"""
from __future__ import annotations

import dataclasses
import datetime
import html
import json
import math
from pathlib import Path
from typing import Any, ClassVar, Iterable

import numpy as np
import pandas as pd

from .rundir import atomic_write_bytes

#: Significant digits of floats in the Markdown and LaTeX tables (CSV keeps full precision).
TABLE_DIGITS = ".4g"


# ------------------------------------------------------------------------------------- writers
def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: NaN, infinities, NA and NaT become null; paths and dates strings."""
    if isinstance(value, StageResult):
        return value.to_dict()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, pd.DataFrame):
        return to_jsonable(value.to_dict(orient="records"))
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (datetime.datetime, datetime.date, pd.Timestamp)):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, (str, int, float)):
        return value
    return str(value)  # anything else (an enum, a dtype) as its text, as json.dumps(default=str) would


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically (a reader never sees half a file)."""
    path = Path(path)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` (cleaned by :func:`to_jsonable`) as indented JSON, atomically; never NaN."""
    return write_text(path, json.dumps(to_jsonable(data), indent=2, allow_nan=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_table(folder: str | Path, name: str, table: pd.DataFrame,
                formats: Iterable[str] = ("csv", "md", "tex")) -> dict[str, Path]:
    """Write ``table`` as ``folder/name.csv`` (full precision) and, when asked, ``.md`` and ``.tex``
    (floats to :data:`TABLE_DIGITS`; list or dict cells as JSON); every file atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    formats = tuple(formats)
    written = {}
    if "csv" in formats:
        written["csv"] = write_text(folder / f"{name}.csv", table.to_csv(index=False))
    if "md" in formats or "tex" in formats:
        shown = table.copy()
        for column in shown.columns:
            if shown[column].dtype == object:
                shown[column] = shown[column].map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
        if "md" in formats:
            written["md"] = write_text(folder / f"{name}.md",
                                       shown.to_markdown(index=False, floatfmt=TABLE_DIGITS) + "\n")
        if "tex" in formats:  # booktabs rules by default
            written["tex"] = write_text(folder / f"{name}.tex", shown.to_latex(
                index=False, float_format=lambda v: f"{v:{TABLE_DIGITS}}", escape=True))
    return written


def frame_html(frame: pd.DataFrame, digits: str = ".3g") -> str:
    """A DataFrame as an escaped HTML table (what every result's ``_repr_html_`` shows)."""
    return frame.to_html(index=False, escape=True, border=0,
                         float_format=lambda v: "" if pd.isna(v) else f"{v:{digits}}")


# ------------------------------------------------------------------------------------- results
@dataclasses.dataclass
class StageResult:
    """Base class of the small stage results (a dataclass: subclasses declare their fields)."""

    title: ClassVar[str] = "result"
    #: The file :meth:`save` writes into its folder.
    file_name: ClassVar[str] = "result.json"

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (paths as strings)."""
        return {f.name: to_jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def summary(self) -> pd.DataFrame:
        """One row: the scalar fields (what Jupyter shows)."""
        return pd.DataFrame([{k: v for k, v in self.to_dict().items() if not isinstance(v, (dict, list))}])

    def to_frame(self) -> pd.DataFrame:
        """The result as a table; by default :meth:`summary` (subclasses return their natural table)."""
        return self.summary()

    def _repr_html_(self) -> str:
        return f"<p><b>{html.escape(self.title)}</b></p>" + self.summary().to_html(index=False, escape=True)

    def save(self, folder: str | Path) -> Path:
        """Write the result as ``folder/result.json`` (atomically); return the folder.

        A path ending in ``.json`` is taken as the file itself.
        """
        target = _result_file(folder, self.file_name)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_json(target, {"type": type(self).__name__, **self.to_dict()})
        return target.parent if Path(folder).suffix != ".json" else target

    @classmethod
    def load(cls, folder: str | Path):
        """Read a result written by :meth:`save` (its folder, or the JSON file)."""
        data = read_json(_result_file(folder, cls.file_name))
        data.pop("type", None)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def __getitem__(self, key: str) -> Any:
        # Stage functions used to return plain dicts; ``result["n_tokens"]`` keeps working.
        if key not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(key)
        return getattr(self, key)


def _result_file(folder: str | Path, file_name: str) -> Path:
    path = Path(folder)
    return path if path.suffix == ".json" else path / file_name
