"""The one shape of a stage's result: Jupyter HTML, a DataFrame, and save/load as JSON.

Every stage function (``prune``, ``tag``, ``analyze``, ...) returns an object that

* renders in Jupyter (``_repr_html_``, escaped),
* converts to a DataFrame (``to_frame()``),
* saves to and loads from JSON (``save(path)`` / ``Cls.load(path)``).

:class:`StageResult` gives dataclass results all three; a stage result only declares its fields
(and, where one row is not the natural table, overrides :meth:`StageResult.to_frame`).
"""
from __future__ import annotations

import dataclasses
import html
import json
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd


@dataclasses.dataclass
class StageResult:
    """Base class of stage results (a dataclass: subclasses declare their fields)."""

    title: ClassVar[str] = "result"

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (paths as strings)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def summary(self) -> pd.DataFrame:
        """One row: the scalar fields (what Jupyter shows)."""
        return pd.DataFrame([{k: v for k, v in self.to_dict().items() if not isinstance(v, (dict, list))}])

    def to_frame(self) -> pd.DataFrame:
        """The result as a table; by default :meth:`summary` (subclasses return their natural table)."""
        return self.summary()

    def _repr_html_(self) -> str:
        return f"<p><b>{html.escape(self.title)}</b></p>" + self.summary().to_html(index=False, escape=True)

    def save(self, path: str | Path) -> Path:
        """Write the result as JSON (atomically)."""
        from .rundir import atomic_write_bytes

        path = Path(path)
        payload = {"type": type(self).__name__, **self.to_dict()}
        atomic_write_bytes(path, json.dumps(payload, indent=2, default=str).encode("utf-8"))
        return path

    @classmethod
    def load(cls, path: str | Path):
        """Read a result written by :meth:`save`."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        data.pop("type", None)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def __getitem__(self, key: str) -> Any:
        # Stage functions used to return plain dicts; ``result["n_tokens"]`` keeps working.
        if key not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(key)
        return getattr(self, key)


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, StageResult):
        return value.to_dict()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
