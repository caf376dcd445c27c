"""The labels table: token labels by source, kept apart from pruning's tokens table.

``RUN/labels.parquet/`` holds one part per chain (written atomically like the other per-chain
tables) with one row per reasoning token *and label source*::

    chain_index, chain_id, position, label, category, source, taxonomy, taxonomy_version,
    equation_correct (rule), judge_fallback, judge_reason (judge), unit (rule)

``unit`` is the token's reasoning unit (sentence or line) from the one splitter,
:func:`cotsurvival.taxonomy.units.token_units`, the same units ``resample`` cuts at and the viewer marks.

``source`` is ``"rule"`` (``cotsurvival tag RUN``) or ``"judge:<model>"`` (``tag RUN --judge
MODEL``). Several sources coexist: writing one source replaces only its own rows of a part, so
pruning (which rewrites ``tokens.parquet``), re-tagging and judging never drop each other's labels.
``manifest.json`` records each source under ``labels``.

Runs written by cotsurvival 0.1.0 kept ``label``/``category`` (and ``judge_*``) columns inside
``tokens.parquet``; :func:`read_labels` still reads them, as the sources ``rule`` and
``judge:<manifest judge model>``, for any chain whose labels part lacks that source.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable

import pandas as pd

from .errors import CotSurvivalError
from .rundir import RunDir

TABLE = "labels"
RULE = "rule"
JUDGE_PREFIX = "judge:"
#: Columns of a labels part, in order; the optional ones are null where they do not apply.
COLUMNS = ("chain_index", "chain_id", "position", "label", "category", "source", "taxonomy", "taxonomy_version",
           "equation_correct", "judge_fallback", "judge_reason", "unit")
#: Source-specific columns a reader may ask for besides label and category.
EXTRA_COLUMNS = ("equation_correct", "judge_fallback", "judge_reason")
_LEGACY_JUDGE = {"label": "judge_label", "category": "judge_category", "judge_fallback": "judge_fallback",
                 "judge_reason": "judge_reason"}


def judge_source(model: str) -> str:
    """The source name of an LLM judge's labels."""
    return f"{JUDGE_PREFIX}{model}"


# --------------------------------------------------------------------------------------- writing
def write_labels(run: RunDir, chain_index: int, frame: pd.DataFrame, source: str, taxonomy: dict) -> None:
    """Store one chain's labels from ``source``, replacing only that source's earlier rows.

    Parameters
    ----------
    frame : DataFrame
        ``chain_index, chain_id, position, label, category`` and any of :data:`EXTRA_COLUMNS`.
    taxonomy : dict
        The spec's ``manifest_entry()`` (``name``, ``version``).
    """
    rows = frame.copy()
    rows["source"] = source
    rows["taxonomy"] = str(taxonomy.get("name"))
    rows["taxonomy_version"] = str(taxonomy.get("version"))
    parts = [_conform(rows)]
    stored = _stored_part(run, chain_index)
    if stored is not None and (stored["source"] != source).any():
        parts.insert(0, _conform(stored[stored["source"] != source]))
    merged = pd.concat(parts, ignore_index=True).sort_values(["source", "position"], kind="stable")
    run.write_part(TABLE, chain_index, _conform(merged))


def record_source(run: RunDir, source: str, complete: bool = True, **info: Any) -> dict:
    """Record ``source`` under ``manifest["labels"]`` with what is true of the stored parts now.

    A stage records its source with ``complete=False`` before it writes labels and with
    ``complete=True`` when it is done, so an interrupted stage leaves ``complete: false`` (and
    ``n_chains`` as of its start) rather than no trace of the labels it wrote.
    """
    indices = chains_with_source(run, source)
    entry = dict(info)
    entry.update(n_chains=len(indices), complete=complete,
                 updated=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    manifest = run.read_manifest()
    labels = dict(manifest.get("labels") or {})
    labels[source] = entry
    return run.update_manifest(labels=labels)


def _conform(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for column in COLUMNS:
        if column not in out.columns:
            out[column] = None
    out["chain_index"] = out["chain_index"].astype("int64")
    out["position"] = out["position"].astype("int64")
    for column in ("chain_id", "label", "category", "source", "taxonomy", "taxonomy_version", "judge_reason"):
        out[column] = out[column].astype("object")
    for column in ("equation_correct", "judge_fallback"):
        out[column] = out[column].astype("boolean")
    out["unit"] = out["unit"].astype("Int64")
    return out[list(COLUMNS)]


def _stored_part(run: RunDir, chain_index: int) -> pd.DataFrame | None:
    return run.read_part(TABLE, chain_index) if run.has_part(TABLE, chain_index) else None


# --------------------------------------------------------------------------------------- reading
def stored_sources(run: RunDir) -> list[str]:
    """Every label source present in the run (labels table, manifest, or a 0.1.0 tokens table)."""
    sources = dict.fromkeys((run.read_manifest().get("labels") or {}).keys())
    parts = run.part_indices(TABLE)
    if parts:  # the first part also names sources a manifest may lack (labels written by hand or by tests)
        sources.update(dict.fromkeys(run.read_part(TABLE, parts[0], columns=["source"])["source"].unique()))
    sources.update(dict.fromkeys(_legacy_sources(run)))
    return [s for s in sources if s]


def resolve_source(run: RunDir, labels: str) -> str:
    """The stored source ``labels`` names: ``"rule"``, ``"judge"`` (the only judge) or an exact source.

    Raises E015 when no such source is stored and E016 when ``"judge"`` is ambiguous.
    """
    present = stored_sources(run)
    if labels in present:
        return labels
    if labels == "judge":
        judges = [s for s in present if s.startswith(JUDGE_PREFIX)]
        if len(judges) == 1:
            return judges[0]
        if len(judges) > 1:
            raise CotSurvivalError("E016", path=run.path, sources=", ".join(judges))
    raise CotSurvivalError("E015", path=run.path, source=labels, present=", ".join(present) or "none",
                           command=f"cotsurvival tag {run.path}" + (" --judge MODEL" if labels.startswith("judge") else ""))


def chains_with_source(run: RunDir, source: str) -> list[int]:
    """Chains whose labels part (or 0.1.0 tokens part) holds ``source``."""
    found = []
    for index in run.part_indices("tokens"):
        part = _stored_part(run, index)
        if (part is not None and (part["source"] == source).any()) or _legacy_part(run, index, source) is not None:
            found.append(index)
    return found


def read_labels(run: RunDir, source: str, chain_indices: Iterable[int] | None = None,
                extra: bool = False) -> pd.DataFrame:
    """Labels of one source: ``chain_index, chain_id, position, label, category`` (+ extras).

    Chains without labels from ``source`` contribute no rows; the caller decides whether that is an
    error (``load_run`` names the untagged chains). ``source`` must be exact (see :func:`resolve_source`).
    """
    indices = run.part_indices("tokens") if chain_indices is None else list(chain_indices)
    columns = ["chain_index", "chain_id", "position", "label", "category", "taxonomy", "taxonomy_version"]
    columns += list(EXTRA_COLUMNS) if extra else []
    frames = []
    for index in indices:
        part = _stored_part(run, index)
        rows = part[part["source"] == source] if part is not None else None
        if rows is None or rows.empty:
            rows = _legacy_part(run, index, source)
        if rows is not None and len(rows):
            frames.append(rows[columns])
    if not frames:
        return _conform(pd.DataFrame(columns=list(COLUMNS)))[columns]
    return pd.concat(frames, ignore_index=True)


def already_labelled(run: RunDir, source: str, taxonomy: dict, what: str) -> set[int]:
    """Chains holding ``source`` labels; E017 if any came from another taxonomy (name or version)."""
    done = chains_with_source(run, source)
    if not done:
        return set()
    stored = read_labels(run, source, done)
    pairs = set(zip(stored["taxonomy"].astype(str), stored["taxonomy_version"].astype(str)))
    wanted = (str(taxonomy.get("name")), str(taxonomy.get("version")))
    if pairs != {wanted}:
        old = ", ".join(f"{name} {version}" for name, version in sorted(pairs))
        raise CotSurvivalError("E017", path=run.path, what=what, old=old, new=" ".join(wanted))
    return set(done)


# --------------------------------------------------------------------------------------- 0.1.0 layout
def _legacy_sources(run: RunDir) -> list[str]:
    indices = run.part_indices("tokens")
    if not indices:
        return []
    names = run.part_columns("tokens", indices[0])
    found = [RULE] if "label" in names else []
    if "judge_label" in names:
        found.append(judge_source(_legacy_judge_model(run)))
    return found


def _legacy_judge_model(run: RunDir) -> str:
    return str((run.read_manifest().get("judge") or {}).get("model") or "unknown")


def _legacy_part(run: RunDir, index: int, source: str) -> pd.DataFrame | None:
    """A 0.1.0 tokens part's labels of ``source`` in the labels-table shape, or None."""
    if not run.has_part("tokens", index):
        return None
    names = run.part_columns("tokens", index)
    if source == RULE and "label" in names:
        mapping = {"label": "label", "category": "category", "equation_correct": "equation_correct"}
    elif source.startswith(JUDGE_PREFIX) and "judge_label" in names and source == judge_source(_legacy_judge_model(run)):
        mapping = _LEGACY_JUDGE
    else:
        return None
    wanted = ["chain_index", "chain_id", "position"] + [c for c in mapping.values() if c in names]
    tokens = run.read_part("tokens", index, columns=wanted)
    rows = tokens[["chain_index", "chain_id", "position"]].copy()
    for target, column in mapping.items():
        rows[target] = tokens[column] if column in tokens.columns else None
    rows = rows[rows["label"].notna()]
    if rows.empty:
        return None
    taxonomy = run.read_manifest().get("taxonomy") or {}
    rows["source"], rows["taxonomy"], rows["taxonomy_version"] = source, taxonomy.get("name"), taxonomy.get("version")
    return _conform(rows)
