"""``study``: one TOML file declares the chains, the tagger, the settings and the comparisons of a study.

Every setting is pruned into ``ROOT/<name>/`` with the public stage functions
(:func:`cotsurvival.pruning.prune`, :func:`cotsurvival.taxonomy.tag_run`,
:func:`cotsurvival.analysis.analyze`, :func:`cotsurvival.reports.build_report`), the comparisons are
made with :func:`cotsurvival.comparison.compare`, and ``ROOT/index.html`` links everything::

    ROOT/
      study.json                the resolved study: chains and every setting (what must not change)
      <name>/                   one run directory per setting
      reports/<name>/           its report (index.html, figures)
      comparisons/<name>/       one comparison folder per declared comparison
      index.html

Re-running the same command continues: ``prune`` resumes committed chains, and tagging,
analysis and reports are redone only where their output is missing. A setting whose declaration
changed while it already has results is refused (E124) unless ``overwrite=True``, which deletes that
setting's run, report and the comparisons that use it. The stored copy of every setting is
``ROOT/study.json``.

File format (see ``studies/objectives.toml`` and docs/comparison.md)::

    [chains]
    source = "gsm8k"          # a chains file or the built-in corpus
    shortest = 6              # or: limit = N (first N), ids = ["..."]
    [tagger]
    taxonomy = "path.json"    # optional; default the packaged spec
    [defaults]                # any setting key; each [[settings]] entry overrides
    model = "smollm2-135m"
    [[settings]]
    name = "joint"
    objective = "joint"
    [[comparisons]]
    runs = ["joint", "answer"] # setting names, optionally NAME:ORDERING (e.g. "joint:random")
"""
from __future__ import annotations

import html
import json
import os
import shutil
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..analysis import analyze, load_run
from ..chains import read_chains, shortest_chains
from ..errors import CotSurvivalError
from ..outputs import check_output, is_study_root
from ..reports import build_report
from ..results import StageResult, frame_html, write_json, write_text
from ..rundir import RunDir
from ..taxonomy import load_spec, tag_run
from .compare import compare

RESERVED = {"reports", "comparisons", "study.json", "index.html"}
SETTING_KEYS = {"name", "model", "objective", "keep_ratio", "baselines", "method", "dtype", "device", "backend",
                "seed", "max_batch_tokens"}
# Keys whose change alters results (backend and device do not: the engine is exact on either).
RESULT_KEYS = ("model", "objective", "keep_ratio", "baselines", "method", "dtype", "seed")


@dataclass(frozen=True)
class Setting:
    """One pruning setting of a study (the options of :func:`cotsurvival.pruning.prune`)."""

    name: str
    model: str = "smollm2-135m"
    objective: str = "joint"
    keep_ratio: float = 0.0
    baselines: tuple[str, ...] = ("random",)
    method: str = "auto"
    dtype: str = "auto"
    device: str = "auto"
    backend: str = "local"
    seed: int = 0
    max_batch_tokens: int = 4096

    def result_key(self) -> dict:
        """What must stay the same for stored results to count as this setting's."""
        data = asdict(self)
        return {k: (list(data[k]) if isinstance(data[k], tuple) else data[k]) for k in RESULT_KEYS}


@dataclass
class Study:
    """A parsed study file."""

    path: Path
    chains: dict
    tagger: dict
    settings: list[Setting]
    comparisons: list[dict]
    analysis: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)


@dataclass
class StudyResult(StageResult):
    """What :func:`run_study` wrote: the index page, run directories, reports and comparison folders."""

    title = "cotsurvival study"
    root: Path
    index: Path
    runs: dict[str, Path]
    reports: dict[str, Path]
    comparisons: dict[str, Path]
    seconds: float
    citations: dict[str, list[str]] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """One row per setting: its run directory, report page and number of citable sentences."""
        return pd.DataFrame([{"setting": name, "run": str(path), "report": str(self.reports.get(name, "")),
                              "n_citations": len(self.citations.get(name, []))} for name, path in self.runs.items()],
                            columns=["setting", "run", "report", "n_citations"])

    def _repr_html_(self) -> str:
        return (f"<p><b>cotsurvival study</b> {html.escape(str(self.index))} ({len(self.runs)} settings, "
                f"{len(self.comparisons)} comparisons, {self.seconds:.0f} s)</p>" + frame_html(self.to_frame()))


def load_study(path: str | os.PathLike) -> Study:
    """Read and check a study TOML file (E123 names what is wrong)."""
    path = Path(path)
    if not path.is_file():
        raise CotSurvivalError("E001", path=path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CotSurvivalError("E123", path=path, reason=str(exc)) from None

    def bad(reason: str):
        return CotSurvivalError("E123", path=path, reason=reason)

    unknown = set(data) - {"chains", "tagger", "defaults", "settings", "comparisons", "analysis", "report", "title"}
    if unknown:
        raise bad(f"unknown table(s) {sorted(unknown)}")
    chains = dict(data.get("chains") or {})
    chains.setdefault("source", "gsm8k")
    # Paths in a study file are relative to the file, not to where the command runs (docs/comparison.md).
    chains["source"] = _beside(path, chains["source"])
    if len([k for k in ("shortest", "limit", "ids") if k in chains]) > 1:
        raise bad("[chains] takes one of shortest, limit, ids")
    extra = set(chains) - {"source", "shortest", "limit", "ids", "keep_annotations"}
    if extra:
        raise bad(f"unknown [chains] key(s) {sorted(extra)}")
    defaults = dict(data.get("defaults") or {})
    raw_settings = data.get("settings") or []
    if not isinstance(raw_settings, list) or not raw_settings:
        raise bad("no [[settings]]")
    settings = []
    for entry in raw_settings:
        merged = {**defaults, **entry}
        extra = set(merged) - SETTING_KEYS
        if extra:
            raise bad(f"unknown setting key(s) {sorted(extra)}")
        name = merged.get("name")
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or ":" in name or name.startswith("."):
            raise bad(f"setting name {name!r} must be a non-empty folder name without '/', '\\\\' or ':'")
        if name in RESERVED:
            raise bad(f"setting name {name!r} is reserved")
        baselines = merged.get("baselines", ["random"])
        if isinstance(baselines, str):
            baselines = [b.strip() for b in baselines.split(",") if b.strip()]
        merged["baselines"] = tuple(baselines)
        if "keep_ratio" in merged:
            merged["keep_ratio"] = float(merged["keep_ratio"])
        settings.append(Setting(**merged))
    names = [s.name for s in settings]
    if len(set(names)) != len(names):
        raise bad(f"duplicate setting names in {names}")
    comparisons = []
    for i, entry in enumerate(data.get("comparisons") or []):
        runs = entry.get("runs")
        if not isinstance(runs, list) or len(runs) < 2:
            raise bad(f"comparison {i + 1} needs runs = [at least two setting names]")
        for spec in runs:
            if str(spec).split(":", 1)[0] not in names:
                raise bad(f"comparison {i + 1} names {spec!r}, which is not a setting ({', '.join(names)})")
        name = entry.get("name") or "_vs_".join(str(r).replace(":", "-") for r in runs)
        comparisons.append({"name": name, "runs": [str(r) for r in runs],
                            "keep_ratios": [float(r) for r in entry.get("keep_ratios", [0.5, 0.25])]})
    tagger = dict(data.get("tagger") or {})
    if tagger.get("taxonomy"):
        tagger["taxonomy"] = _beside(path, tagger["taxonomy"])
    return Study(path=path, chains=chains, tagger=tagger, settings=settings,
                 comparisons=comparisons, analysis=dict(data.get("analysis") or {}), report=dict(data.get("report") or {}))


def _beside(study: Path, value) -> str:
    """A relative path in a study file, resolved from the file's folder; built-in names stay as they are."""
    from ..chains import BUILTIN_CORPORA

    text = str(value)
    if text in BUILTIN_CORPORA or Path(text).expanduser().is_absolute():
        return str(Path(text).expanduser()) if text not in BUILTIN_CORPORA else text
    return str((study.parent / text).resolve())


def select_chains(spec: dict) -> list:
    """The study's chains: ``shortest`` N (by reasoning length), the first ``limit``, or the listed ``ids``."""

    corpus = read_chains(spec.get("source", "gsm8k"), keep_annotations=bool(spec.get("keep_annotations", False)))
    chains = list(corpus)
    if "shortest" in spec:
        chains = shortest_chains(int(spec["shortest"]), chains)
    elif "limit" in spec:
        chains = chains[: int(spec["limit"])]
    elif "ids" in spec:
        wanted = [str(i) for i in spec["ids"]]
        by_id = {c.id: c for c in chains}
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise CotSurvivalError("E014", reason=f"chain ids not in {spec.get('source')}: {', '.join(missing[:5])}")
        chains = [by_id[i] for i in wanted]
    if not chains:
        raise CotSurvivalError("E014", reason="the study's chain selection is empty")
    return chains


def run_study(
    study: str | os.PathLike | Study,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    backend: str | None = None,
    ray_address: str | None = None,
    progress: bool = True,
    loaded_models: dict[str, Any] | None = None,
) -> StudyResult:
    """Run (or continue) every setting of a study, compare them and write ``ROOT/index.html``.

    Parameters
    ----------
    study : path or Study
    out : path
        The study root.
    overwrite : bool
        Discard the results of settings whose declaration changed, instead of refusing (E124); also
        write into an ``out`` that is not an earlier study root (refused otherwise, E081).
    backend : {"local", "ray"}, optional
        Overrides every setting's backend (``ray`` passes through to :func:`~cotsurvival.pruning.prune`).
    loaded_models : dict, optional
        Model spec -> ``(model, tokenizer, info)`` already loaded (tests, notebooks).

    Returns
    -------
    StudyResult
    """

    began = time.perf_counter()
    # A study continues in its own root (study.json there); any other non-empty folder is refused.
    check_output(out, inputs=[] if isinstance(study, Study) else [(study, "the study file")], overwrite=overwrite,
                 ours=is_study_root, command="study", folder=True)
    study = study if isinstance(study, Study) else load_study(study)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    chains = select_chains(study.chains)
    chain_key = {"selection": study.chains, "ids": [c.id for c in chains]}
    lock_path = root / "study.json"
    lock = json.loads(lock_path.read_text(encoding="utf-8")) if lock_path.is_file() else {}
    stored = lock.get("settings", {})
    wanted = {s.name: {**s.result_key(), "chains": chain_key, "tagger": study.tagger} for s in study.settings}
    # Refuse (or discard) before any work, so a refused study changes nothing.
    for setting in study.settings:
        run_path = root / setting.name
        old = stored.get(setting.name)
        has_results = RunDir(run_path).exists()
        if has_results and old is not None and old != wanted[setting.name]:
            changed = ", ".join(f"{k}: {old.get(k)!r} -> {v!r}" for k, v in wanted[setting.name].items() if old.get(k) != v)
            if not overwrite:
                raise CotSurvivalError("E124", name=setting.name, path=run_path, changed=changed)
            _discard(root, setting.name, study)
    lock = {"study": str(study.path), "settings": {**stored, **wanted}, "comparisons": study.comparisons}
    write_json(lock_path, lock)

    say = print if progress else (lambda *_: None)
    spec = load_spec(study.tagger.get("taxonomy"))
    loaded_models = dict(loaded_models or {})
    runs, reports, timings = {}, {}, {}
    # Options of analyze a study may set; the chain-level primary test and its minimum support included.
    analysis_options = {"n_boot": int(study.analysis.get("n_boot", 1000)),
                        **{k: study.analysis[k] for k in ("primary", "min_chains", "min_tokens") if k in study.analysis}}
    widths = tuple(study.report.get("widths", ["two"]))
    for number, setting in enumerate(study.settings, 1):
        started = time.perf_counter()
        run_path = root / setting.name
        chosen_backend = backend or setting.backend
        say(f"[setting {number}/{len(study.settings)}] {setting.name}: {setting.model}, objective {setting.objective}, "
            f"keep ratio {setting.keep_ratio}, {len(chains)} chains")
        # imported here, not at the top: pruning brings torch, which reading or comparing runs never needs
        from ..pruning import prune

        loaded = None
        if chosen_backend == "local":
            loaded = loaded_models.get(setting.model)
            if loaded is None:
                from ..models import load_model

                loaded = load_model(setting.model, device=setting.device, dtype=setting.dtype)
                loaded_models[setting.model] = loaded
        run = prune(chains, run_path, model=setting.model, objective=setting.objective, keep_ratio=setting.keep_ratio,
                    baselines=list(setting.baselines), method=setting.method, dtype=setting.dtype,
                    device=setting.device, seed=setting.seed, max_batch_tokens=setting.max_batch_tokens,
                    progress=progress, loaded_model=loaded, backend=chosen_backend, ray_address=ray_address)
        if load_run(run, require_tags=False, baselines=False, attention=False)["category"].isna().any():
            tag_run(run, spec=spec)
        if not (run.stats_dir / "stats.json").is_file():
            analyze(run, **analysis_options)
        report_dir = root / "reports" / setting.name
        if not (report_dir / "index.html").is_file():
            build_report(run, report_dir, widths=widths, run_analysis=False)
        runs[setting.name] = run.path
        reports[setting.name] = report_dir / "index.html"
        timings[setting.name] = round(time.perf_counter() - started, 1)

    comparisons, citations, notes = {}, {}, {}
    for entry in study.comparisons:
        say(f"[compare] {entry['name']}: {' vs '.join(entry['runs'])}")
        specs = [str(root / r) for r in entry["runs"]]
        result = compare(specs, keep_ratios=entry["keep_ratios"], names=entry["runs"])
        folder = root / "comparisons" / entry["name"]
        result.save(folder)
        comparisons[entry["name"]] = folder / "index.html"
        citations[entry["name"]] = list(result.citations_)
        notes[entry["name"]] = list(result.notes)
    index = root / "index.html"
    write_text(index, _index_page(study, root, runs, reports, comparisons, citations, notes, len(chains)))
    seconds = time.perf_counter() - began
    lock["timings_last_invocation"] = {"settings": timings, "total": round(seconds, 1)}
    write_json(lock_path, lock)
    return StudyResult(root=root, index=index, runs=runs, reports=reports, comparisons=comparisons, seconds=seconds,
                       citations=citations)


def _discard(root: Path, name: str, study: Study) -> None:
    """Delete a setting's run and report and every comparison that uses it (``overwrite=True``)."""
    for path in (root / name, root / "reports" / name):
        if path.exists():
            shutil.rmtree(path)
    for entry in study.comparisons:
        if any(r.split(":", 1)[0] == name for r in entry["runs"]) and (root / "comparisons" / entry["name"]).exists():
            shutil.rmtree(root / "comparisons" / entry["name"])


def _index_page(study: Study, root: Path, runs, reports, comparisons, citations, notes, n_chains: int) -> str:
    esc = html.escape

    def link(path: Path) -> str:
        return esc(os.path.relpath(path, root).replace(os.sep, "/"), quote=True)

    rows = []
    for s in study.settings:
        rows.append(f"<tr><td>{esc(s.name)}</td><td>{esc(s.model)}</td><td>{esc(s.objective)}</td>"
                    f"<td>{s.keep_ratio:g}</td><td>{esc(', '.join(s.baselines) or 'none')}</td><td>{esc(s.method)}</td>"
                    f"<td>{esc(s.dtype)}</td><td><a href=\"{link(reports[s.name])}\">report</a></td>"
                    f"<td><code>{esc(s.name)}/</code></td></tr>")
    comp = []
    for name, page in comparisons.items():
        items = "".join(f"<li>{esc(c)}</li>" for c in citations.get(name, []))
        caveats = "".join(f"<li>{esc(n)}</li>" for n in notes.get(name, []))
        comp.append(f"<h3><a href=\"{link(page)}\">{esc(name)}</a></h3><ul>{items}</ul>"
                    + (f"<p>Notes:</p><ul>{caveats}</ul>" if caveats else ""))
    chains = esc(json.dumps(study.chains))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Study {esc(study.path.name)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}}
table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #ddd;padding:.25rem .6rem;text-align:left}}
li{{margin:.3rem 0}}</style></head><body>
<h1>Study {esc(study.path.name)}</h1>
<p>{n_chains} chains ({chains}); tagger: {esc(str(study.tagger.get('taxonomy') or 'packaged taxonomy spec'))}.</p>
<h2>Settings</h2>
<table><tr><th>name</th><th>model</th><th>objective</th><th>keep ratio</th><th>baselines</th><th>method</th>
<th>dtype</th><th>report</th><th>run directory</th></tr>
{''.join(rows)}</table>
<h2>Comparisons</h2>
{''.join(comp) or '<p>none declared</p>'}
</body></html>
"""
