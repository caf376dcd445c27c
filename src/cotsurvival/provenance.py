"""What a stored result was computed from: a fingerprint of the run state it read.

Every stored result (``stats/stats.json``, recovery, comparison, attention features) records
:func:`fingerprint` of the run it read. A reader compares it with the run as it is now
(:func:`stale_reason`): a run continued to a lower keep ratio, re-tagged, or grown by more chains
since makes the stored numbers stale, and the reader recomputes them or refuses with one line naming
the command that updates them (:func:`require_fresh`), never shows them silently.

The fingerprint is cheap to take (file metadata and the manifest, no token tables are read):

``chains``
    SHA-256 of ``chains.parquet`` (which chains, their text and token ids).
``n_chains``
    Chains committed by pruning (parts of ``tokens.parquet``).
``steps``
    SHA-256 of the committed steps per chain (rows of each ``steps.parquet`` part): continuing a run
    to a lower keep ratio changes it.
``labels``
    Per label source, what ``manifest.json`` records of it (chains, taxonomy, when written).
``keep_ratio``
    The keep ratio the run has reached (``manifest.json``).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import pyarrow.parquet as pq

from .errors import CotSurvivalError
from .rundir import RunDir

#: The fingerprint's parts, in the order :func:`stale_reason` names them.
PARTS = ("chains", "n_chains", "steps", "keep_ratio", "labels")


def fingerprint(run: str | os.PathLike | RunDir) -> dict[str, Any]:
    """The state of ``run`` that results are computed from (see the module docstring)."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    manifest = run.read_manifest()
    chains = _sha(run.chains_path.read_bytes()) if run.chains_path.is_file() else None
    indices = run.part_indices("tokens")
    steps = [[i, _rows(run.part_path("steps", i))] for i in indices]
    labels = {str(source): {k: entry.get(k) for k in ("n_chains", "complete", "updated", "taxonomy", "version")
                            if k in entry}
              for source, entry in sorted((manifest.get("labels") or {}).items()) if isinstance(entry, dict)}
    return {"chains": chains, "n_chains": len(indices), "steps": _sha(json.dumps(steps).encode()),
            "n_steps": sum(n for _, n in steps), "keep_ratio": manifest.get("keep_ratio"), "labels": labels}


def stale_reason(stored: dict | None, run: str | os.PathLike | RunDir, labels_source: str | None = None) -> str | None:
    """Why a result that recorded ``stored`` no longer describes ``run``, or ``None`` when it still does.

    ``labels_source``: the one label source the result read (other sources may change freely);
    ``None`` compares every source, ``""`` none (a result that reads no labels, e.g. recovery). A result without a fingerprint (written by an older version) is
    stale: nothing says what it was computed from.
    """
    if not stored:
        return "it records no fingerprint of the run it was computed from"
    now = fingerprint(run)
    changed = []
    if stored.get("chains") != now["chains"]:
        changed.append("its chains changed")
    if stored.get("n_chains") != now["n_chains"]:
        changed.append(f"{_count(stored.get('n_chains'), 'chain')} then, {now['n_chains']} now")
    if stored.get("keep_ratio") != now["keep_ratio"]:
        changed.append(f"keep ratio {stored.get('keep_ratio')} then, {now['keep_ratio']} now")
    if stored.get("steps") != now["steps"] and stored.get("n_chains") == now["n_chains"]:
        changed.append(f"{_count(stored.get('n_steps'), 'committed step')} then, {now['n_steps']} now")
    then_labels, now_labels = stored.get("labels") or {}, now["labels"]
    if labels_source is not None:
        then_labels = {k: v for k, v in then_labels.items() if k == labels_source}
        now_labels = {k: v for k, v in now_labels.items() if k == labels_source}
    if then_labels != now_labels:
        changed.append("its labels were rewritten" if labels_source is None else f"its {labels_source!r} labels were rewritten")
    return "; ".join(changed) or None


def require_fresh(stored: dict | None, run: str | os.PathLike | RunDir, *, what: str, command: str,
                  labels_source: str | None = None) -> None:
    """E150 (one line naming ``command``) when ``stored`` no longer describes ``run``."""
    reason = stale_reason(stored, run, labels_source)
    if reason:
        path = run.path if isinstance(run, RunDir) else run
        raise CotSurvivalError("E150", what=what, run=path, reason=reason, command=command)


def _rows(path) -> int:
    try:
        return int(pq.read_metadata(path).num_rows)
    except (OSError, ValueError, Exception):  # noqa: BLE001 - a missing or unreadable part counts as no steps
        return -1


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _count(n, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
