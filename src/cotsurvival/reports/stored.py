"""HTML for the stored statistics (``RUN/stats/stats.json``): headline, tests, tables, citations.

Nothing here computes a statistic: every number is read from an
:class:`~cotsurvival.analysis.AnalysisResult` (normally :meth:`AnalysisResult.load`) and printed
in a cell that names where it is stored (``data-src="tables/summary_category/2/median"``), so a
reader (and a test) can trace each number on the page to one value of ``stats.json``. Every text
goes through :func:`html.escape`.
"""
from __future__ import annotations

import html
import math
from typing import Any, Iterable

import numpy as np
import pandas as pd

from .data import format_number

MAX_TABLE_ROWS = 200
#: Fields of stats.json["primary"] shown first, in this order; any other scalar field follows.
PRIMARY_FIELDS = ("estimate", "ci_low", "ci_high", "p_value", "n_chains", "n_tokens", "test")


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def source_text(source: Iterable) -> str:
    """A stats.json path as written in ``data-src``: keys and list indices joined by ``/``."""
    return "/".join(str(part) for part in source)


def number_cell(source: Iterable, value: Any, spec: str = ".4g", tag: str = "td") -> str:
    """One stored number in a cell that names its place in stats.json; missing values print as blank."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"<{tag}></{tag}>"
    text, where = format_number(value, spec), html.escape(source_text(source))
    return f'<{tag} title="stats.json: {where}" class="num" data-src="{where}">{html.escape(text)}</{tag}>'


def text_cell(value: Any, tag: str = "td") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"<{tag}></{tag}>"
    if isinstance(value, (list, tuple)):
        value = ", ".join(map(str, value))
    return f"<{tag}>{html.escape(str(value))}</{tag}>"


def headline_html(result) -> str:
    """``stats.json["primary"]`` (the chain-level headline) and its sentence, or '' when absent."""
    primary = getattr(result, "primary_", None) if result is not None else None
    if not isinstance(primary, dict) or not primary:
        return ""
    # The analysis writes the headline as the first citation when it has a primary result.
    sentence = (f'<p class="headline">{html.escape(str(result.citations_[0]))}</p>' if result.citations_ else "")
    # How the headline moves under other adjustments and where the category sits (stats.json
    # primary.sensitivity and primary.placement, worded by the analysis).
    sentence += "".join(f'<p class="muted sensitivity">{html.escape(str(c))}</p>' for c in result.citations_[1:]
                        if str(c).startswith(("Sensitivity of the primary", "Placement:", "Note: primary result")))
    keys = [k for k in PRIMARY_FIELDS if k in primary] + [k for k in primary if k not in PRIMARY_FIELDS]
    rows = []
    for path, value in _flatten({k: primary[k] for k in keys}, ("primary",)):
        name = " ".join(str(part).replace("_", " ") for part in path[1:])
        cell = number_cell(path, value) if is_number(value) else text_cell(value)
        rows.append(f"<tr><th>{html.escape(name)}</th>{cell}</tr>")
    source = (getattr(result, "config", None) or {}).get("labels_source")
    labels = (f'<p class="muted">Labels analysed: {html.escape(str(source))} '
              f"(stats.json config.labels_source).</p>" if source else "")
    return (f'<section id="headline"><h2>Headline result</h2>{sentence}{labels}'
            f'<table class="cs-primary">{"".join(rows)}</table></section>')


def tests_html(tests: dict) -> str:
    """One row per stored test: its scalar fields as ``name = value`` (nested dicts flattened)."""
    rows = []
    for name, test in tests.items():
        if not isinstance(test, dict):
            continue
        if "note" in test and len(test) == 1:
            rows.append(f"<tr><td>{html.escape(name)}</td><td class=left>not computed: "
                        f"{html.escape(str(test['note']))}</td></tr>")
            continue
        parts = []
        for path, value in _flatten(test, ("tests", name)):
            label = html.escape(".".join(map(str, path[2:])))
            if is_number(value):
                text = format_number(value, ".4g")
                where = html.escape(source_text(path))
                parts.append(f'{label} = <span title="stats.json: {where}" class="num" data-src="{where}">'
                             f"{html.escape(text)}</span>")
            elif value is not None:
                parts.append(f"{label} = {html.escape(str(value))}")
        rows.append(f"<tr><td>{html.escape(name)}</td><td class=left>{'; '.join(parts)}</td></tr>")
    if not rows:
        return '<p class="note">No tests in stats.json.</p>'
    return f'<div class="scroll"><table class="stats tests"><tr><th>test</th><th>result</th></tr>{"".join(rows)}</table></div>'


def _flatten(value: dict, path: tuple):
    for key, item in value.items():
        if isinstance(item, dict):
            yield from _flatten(item, path + (key,))
        elif isinstance(item, list) and item and all(isinstance(v, dict) for v in item):
            for i, entry in enumerate(item):
                yield from _flatten(entry, path + (key, i))
        elif isinstance(item, list):
            yield path + (key,), ", ".join(map(str, item))
        else:
            yield path + (key,), item


def table_html(name: str, table: pd.DataFrame, result) -> str:
    """A stored table, every number in a traceable cell; Cox terms of groups without events are flagged."""
    flags = _no_event_terms(name, result)
    columns = list(table.columns)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns) + ("<th>flag</th>" if flags else "")
    body = []
    for i, row in enumerate(table.head(MAX_TABLE_ROWS).itertuples(index=False)):
        values = dict(zip(columns, row))
        flagged = flags and str(values.get("term")) in flags
        cells = []
        for column in columns:
            value = values[column]
            if flagged and column not in ("term", "n_tokens", "n_chains", "n_events"):
                cells.append("<td>—</td>")  # an estimate for a group with no events means nothing
            elif is_number(value):
                cells.append(number_cell(("tables", name, i, column), value))
            else:
                cells.append(text_cell(value))
        if flags:
            cells.append(f"<td class=left>{html.escape(flags[str(values.get('term'))])}</td>" if flagged else "<td></td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    more = len(table) - MAX_TABLE_ROWS
    tail = f'<p class="muted">{more} more rows in {html.escape(name)}.csv.</p>' if more > 0 else ""
    notes = "".join(f"<li>{html.escape(str(n))}</li>" for n in table.attrs.get("notes", []))
    notes = f'<ul class="muted">{notes}</ul>' if notes else ""
    return (f'<h3 id="table-{html.escape(name)}">{html.escape(name.replace("_", " "))}</h3>'
            f'<div class="scroll"><table class="stats"><tr>{head}</tr>{"".join(body)}</table></div>{tail}{notes}')


def _no_event_terms(name: str, result) -> dict[str, str]:
    """``{term: flag}`` for the Cox terms whose group had no deletion (no events, so no hazard ratio or p)."""
    if not name.startswith("cox_"):
        return {}
    level = name[len("cox_"):]
    summary = result.tables_.get(f"summary_{level}")
    if summary is None or "n_events" not in summary or "group" not in summary:
        return {}
    return {f"{level}[{group}]": "no deletions in this group: hazard ratio and p not estimable"
            for group, events in zip(summary["group"], summary["n_events"]) if events == 0}


def citations_html(result) -> str:
    items = "".join(f"<li>{html.escape(str(c))}</li>" for c in result.citations_)
    return f'<ul class="citations">{items}</ul>' if items else '<p class="note">No citations in stats.json.</p>'


def notes_html(result) -> str:
    items = "".join(f"<li>{html.escape(str(n))}</li>" for n in result.notes_)
    return f'<h3 id="notes">Notes</h3><ul class="muted">{items}</ul>' if items else ""
