"""How a result was made: what it was computed from, and how its ranks were scored.

**Fingerprints.** What a stored result was computed from: a fingerprint of the run state it read.

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

**Scoring notes.** Where the way a run was pruned limits what its ranks can support, citations (analysis), figure
captions (reports), comparisons and the viewer say so, all with the sentences of
:func:`scoring_notes`:

``approximation``
    ``prune --approx``: which setting, and its measured fidelity (Kendall τ against exact greedy
    survival, category agreement; against the exact replicate ensemble where measured).
``precision``
    Deletion costs scored in bfloat16 or float16: rounding can switch the greedy path at near-ties.
    With replicates the note quotes the run's *own* measured stability; without, the run's free
    near-tie diagnostic; a run that has neither (made before either existed) quotes the reference
    measurement, naming the model and chains it was made on.
``stability``
    How reproducible the ranks are: with ``prune --replicates K``, the mean Kendall τ between
    replicate paths; without, the near-tie diagnostic (steps whose two cheapest deletions lie within
    the dtype's rounding error of a cost).

Every measured figure quoted here is read from one data file, ``cotsurvival/data/fidelity.json``,
whose rows are BENCHMARKS.md's (``tests/test_provenance.py`` checks them against it). The notes
read only the manifest (a dict), the data file and, when given, a stability summary: no engine,
no torch, so every upper layer may import this module.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
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


# ------------------------------------------------------------------------------------------ scoring notes
HALF_PRECISIONS = ("bfloat16", "float16")
_SOURCE = "bench/approx_fidelity.py, BENCHMARKS.md"


@lru_cache(maxsize=1)
def fidelity_data() -> dict:
    """The measured figures (``cotsurvival/data/fidelity.json``), read once."""
    text = resources.files("cotsurvival").joinpath("data", "fidelity.json").read_text(encoding="utf-8")
    return json.loads(text)


def measured_approximation(spec: str | None) -> dict | None:
    """The measured fidelity of one ``--approx`` setting (canonical spec, as manifests record it), with
    ``chains`` spelled out; None if that setting was not measured."""
    data = fidelity_data()
    for row in data["approximations"]:
        if row["spec"] == spec:
            return {**row, "chains": data["chain_sets"][row["chains"]]}
    return None


def measured_ensemble(spec: str | None) -> dict | None:
    """The fidelity of one setting against the exact replicate ensemble (bench/stability.py), or None.
    Where it was measured on several chain sets, the one of the longest chains (approximations run on long
    chains, and their fidelity changes with length)."""
    rows = [row for row in fidelity_data().get("ensemble", {}).get("approximations", []) if row["spec"] == spec]
    return max(rows, key=lambda row: row.get("max_tokens", 0)) if rows else None


def dtype_name(dtype) -> str:
    """Canonical dtype name (``torch.float16`` and ``"fp16"`` become ``"float16"``)."""
    name = str(dtype).replace("torch.", "")
    return {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "fp64": "float64", "half": "float16",
            "float": "float32", "double": "float64"}.get(name, name)


def half_precision(dtype) -> str | None:
    """``dtype``'s canonical name if it is a half precision (``torch.float16``, ``"bf16"`` …), else None."""
    name = dtype_name(dtype)
    return name if name in HALF_PRECISIONS else None


def cost_error(dtype: str) -> dict | None:
    """Measured rounding error of one deletion cost (nats: ``median``, ``max``) in ``dtype``, or None."""
    return fidelity_data()["cost_error_nats"].get(dtype_name(dtype))


@dataclass(frozen=True)
class ScoringNote:
    """One note on how a run's ranks were scored.

    Attributes
    ----------
    kind : {"approximation", "precision", "stability"}
    text : str
        The full sentence, for citations and captions.
    label : str or None
        A one-line form drawn under figures (approximations only).
    """

    kind: str
    text: str
    label: str | None = None

    def __str__(self) -> str:
        return self.text


def scoring_notes(manifest: dict, stability: dict | None = None) -> list[ScoringNote]:
    """The notes a run's citable outputs carry, in order approximation, precision, stability.

    Parameters
    ----------
    manifest : dict
        The run's ``manifest.json`` (``engine.approx``, ``model.dtype``, ``replicates``,
        ``diagnostics``).
    stability : dict, optional
        The run's measured stability across replicates: ``mean`` (mean over chains of each chain's
        mean pairwise Kendall τ between replicates), ``lo``/``hi`` (its chain-bootstrap CI) and
        ``n_chains``; default ``manifest["stability"]`` when the run recorded one.

    Returns
    -------
    list of ScoringNote
        Empty for an exact float32 run with neither replicates nor diagnostics.
    """
    notes = []
    approx = _approximation_note(manifest)
    if approx is not None:
        notes.append(approx)
    stability = stability if stability is not None else manifest.get("stability")
    replicates = _replicates(manifest)
    own = stability_sentence(stability, replicates)
    own = f"this run's {own}" if own else None
    near_ties = near_tie_sentence(manifest.get("diagnostics"))
    dtype = half_precision((manifest.get("model") or {}).get("dtype"))
    if dtype:
        notes.append(ScoringNote("precision", _precision_text(dtype, own, near_ties, manifest)))
    elif own or near_ties:
        notes.append(ScoringNote("stability", f"Rank stability: {own or near_ties}."))
    return notes


# ------------------------------------------------------------------------------------------ parts
def _replicates(manifest: dict) -> dict | None:
    """``{k, scale}`` of a run with replicate paths (``manifest["replicates"]``, K > 1), else None."""
    record = manifest.get("replicates")
    if not isinstance(record, dict) or int(record.get("k", 1)) < 2:
        return None
    return {"k": int(record["k"]), "scale": record.get("scale_nats")}


def stability_sentence(stability: dict | None, replicates: dict | None = None) -> str | None:
    """The one wording of a run's measured stability, for citations, notes, reprs and the viewer:
    ``ranks reproduced at a mean Kendall tau of … across K paths perturbed by T nats``; None without one.

    ``stability`` is ``stats.json["stability"]`` or its summary
    (:func:`cotsurvival.analysis.stability.stability_summary`: ``tau`` = mean, ci_low, ci_high, n_chains of
    each chain's mean pairwise replicate τ; ``n_replicates``; ``n_chains_below_0.9``) or a plain
    ``{mean, lo, hi, n_chains}``. ``replicates`` is the manifest's record (``k``, ``scale_nats``) or
    ``{k, scale}``; default ``stability["replicates"]``."""
    if not stability:
        return None
    tau = stability.get("tau") if isinstance(stability.get("tau"), dict) else stability
    mean = tau.get("mean")
    if mean is None or mean != mean:
        return None
    lo, hi = tau.get("ci_low", tau.get("lo")), tau.get("ci_high", tau.get("hi"))
    if replicates is None and isinstance(stability.get("replicates"), dict):
        replicates = stability["replicates"]
    replicates = replicates or {}
    k = replicates.get("k", stability.get("n_replicates"))
    scale = replicates.get("scale", replicates.get("scale_nats"))
    ci = f" [95% CI {lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None and lo == lo and hi == hi else ""
    paths = f" across {k} paths" if k else " across replicate paths"
    perturbed = f" perturbed by {scale:g} nats (Gumbel noise on each step's costs)" if scale is not None else ""
    n = tau.get("n_chains")
    chains = f", {n} chain{'' if n == 1 else 's'}" if n else ""
    below = stability.get("n_chains_below_0.9")
    below = f" ({below} below 0.9)" if n and below is not None else ""
    return f"ranks reproduced at a mean Kendall tau of {mean:.2f}{ci}{paths}{perturbed}{chains}{below}"


#: What the near-tie diagnostic says of a run whose engine did not score every candidate at every step.
NO_NEAR_TIE_DIAGNOSTIC = "no near-tie diagnostic (the engine did not score every candidate at every step)"


def near_tie_sentence(diagnostics: dict | None, n_chains: int | None = None, *, suggest_replicates: bool = True) -> str | None:
    """The one wording of the free near-tie diagnostic (``manifest["diagnostics"]``,
    :func:`cotsurvival.pruning.diagnostics.run_summary`), for citations, notes, the CLI and the viewer;
    None when the run has none (:data:`NO_NEAR_TIE_DIAGNOSTIC` says why). ``n_chains`` defaults to the
    diagnostic's own chain count; ``suggest_replicates`` ends it by naming ``prune --replicates``."""
    if not diagnostics or not diagnostics.get("n_steps"):
        return None
    chains = diagnostics.get("chains")
    if n_chains is None:
        n_chains = len(chains) if isinstance(chains, dict) else diagnostics.get("n_chains")
    where = (f" in {diagnostics.get('n_chains_with_near_tie', '?')} of {n_chains} chain{'' if n_chains == 1 else 's'}"
             if n_chains else "")
    smallest = (f"; smallest gap {diagnostics['min_gap']:.2g} nats" if diagnostics.get("min_gap") is not None else "")
    tail = "; prune --replicates K measures how much that moves the ranks" if suggest_replicates else ""
    return (f"{diagnostics['n_near_tie_steps']} of {diagnostics['n_steps']} greedy steps{where} were near-ties "
            f"(two cheapest deletions within {diagnostics['near_tie_threshold']:.2g} nats, the measured rounding error "
            f"of a cost in {diagnostics.get('dtype', 'the run' + chr(39) + 's dtype')}), where the path could have "
            f"gone either way{smallest}{tail}")


def _precision_text(dtype: str, own: str | None, near_ties: str | None, manifest: dict) -> str:
    error = cost_error(dtype)
    rounding = (f" (a cost's rounding error: median up to {error['median']:.2g}, largest {error['max']:.2g} nats)"
                if error else "")
    opening = f"Deletion costs were scored in {dtype}{rounding}, so near-ties can break the other way and switch the greedy path"
    if own:
        return f"{opening}; {own}."
    if near_ties:
        return f"{opening}; {near_ties}."
    # A run with neither replicates nor diagnostics: the reference measurement, saying what it was made on.
    data = fidelity_data()
    reference = data["precision"]
    m = reference["dtypes"][dtype]
    return (f"{opening}: the exact engine in {dtype} agreed with its own float32 order at a mean Kendall tau of "
            f"{m['tau']:.2f} [95% CI {m['lo']:.2f}, {m['hi']:.2f}] on {reference['n_chains']} "
            f"{data['chain_sets'][reference['chains']]} with {data['model']} (category effects kept their sign and "
            f"order); this run's own stability was not measured (prune --replicates K) (BENCHMARKS.md, 'Precision').")


def _approx_parts(manifest: dict) -> tuple[str, str, bool] | None:
    """(what was approximated, the approximate spec, whether ``auto`` chose it), None if exact."""
    record = (manifest.get("engine") or {}).get("approx")
    if not record:
        return None
    spec = record.get("spec", record.get("method"))
    if record.get("method") == "auto":
        long = record.get("long", {}).get("spec")
        what = (f"ranks are exact for chains up to {record.get('exact_max_tokens')} reasoning tokens and "
                f"approximate above ({long})")
        return what, long, True
    return f"ranks are approximate ({spec})", spec, False


def _approximation_note(manifest: dict) -> ScoringNote | None:
    parts = _approx_parts(manifest)
    if parts is None:
        return None
    what, spec, auto = parts
    measured = measured_approximation(spec)
    ensemble = measured_ensemble(spec)
    data = fidelity_data()
    if measured:
        order = "kept" if measured["same_order"] else "did not keep"
        scale = ""
        if measured["chains"] == data["chain_sets"][data["precision"]["chains"]]:
            # For scale: the exact engine itself in float16 against its float32 order, on the same chains.
            scale = (f"; for scale, the exact engine itself run in float16 scored tau "
                     f"{data['precision']['dtypes']['float16']['tau']:.2f} there")
        fidelity = (f"against exact greedy survival this setting's mean Kendall tau was {measured['tau']:.2f} "
                    f"[95% CI {measured['lo']:.2f}, {measured['hi']:.2f}] on {measured['n_chains']} "
                    f"{measured['chains']}, where it kept the sign of {measured['same_sign']} of 4 category effects "
                    f"and {order} the category order{scale} ({_SOURCE})")
    else:
        fidelity = "the fidelity of this setting against exact greedy survival was not measured (see bench/approx_fidelity.py)"
    if ensemble:
        fidelity += (f"; against the mean survival of {ensemble['k']} exact replicate paths (T = {ensemble['scale']:g} "
                     f"nats) its tau was {ensemble['tau']:.2f}, the exact replicates' own {ensemble['own_tau']:.2f} "
                     f"({ensemble['n_chains']} {ensemble['chains']}; bench/stability.py)")
    chosen_by = ((manifest.get("engine") or {}).get("approx") or {}).get("chosen_by") if auto else None
    if chosen_by:  # why auto ran this setting (the ensemble rule, cotsurvival.pruning.approx.auto_spec)
        fidelity += f"; --approx auto: {chosen_by}"
    text = f"Greedy survival was approximated with prune --approx: {what}; {fidelity}."
    short = (f"Kendall τ vs exact {measured['tau']:.2f} [{measured['lo']:.2f}, {measured['hi']:.2f}], "
             f"{measured['n_chains']} chains" if measured else "fidelity not measured")
    where = " above the exact limit" if auto else ""
    label = f"Approximate ranks{where}: prune --approx {spec} ({short}; BENCHMARKS.md)"
    return ScoringNote("approximation", text, label)
