"""``prune``: greedy survival pruning of many chains into a run directory, resumable.

Each chain is committed on its own: its steps, traces and baselines parts are written first and
its tokens part last, so a chain counts as done exactly when ``tokens.parquet/part-N`` exists.
A chain in progress checkpoints its steps (``checkpoints/part-N.npz``) every few seconds; a run
re-started with the same command continues where it stopped and ends with the same results as
an uninterrupted run, because every step depends only on the set of tokens still alive.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import time
import warnings
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from .._version import __version__
from ..chains import BUILTIN_CORPORA, ON_ERROR, Chain, ChainCorpus, read_chains, skip_summary
from ..encoding import EncodedChain, encode_chain
from ..errors import CheckpointWarning, CotSurvivalError
from ..models import scoring_dtype, warn_if_imprecise
from ..outputs import check_output
from ..progress import make_bar
from ..rundir import RunDir
from ..threads import cap_torch_threads
from .approx import approx_record, parse_approx
from .baselines import BASELINES, answer_attention, baseline_orders, orders_to_frame
from .engine import DEFAULT_PERTURBATION_SCALE, ChainTrace, Perturbation, greedy_prune, n_deletions
from .llmlingua import classifier_for_run
from .memory import memory_budget, parse_memory, plan_chain
from .methods import SCORERS, make_scorer
from .ray_backend import RayPool
from .registry import BACKENDS, OBJECTIVES
from .tables import (load_checkpoint, save_checkpoint, steps_frame, tokens_frame, trace_from_tables, traces_frame,
                     with_replicate)

CHECKPOINT_SECONDS = 20.0
# The exact scoring methods (--method) and their scorer classes' names, as manifests record them.
_SCORER_NAMES = {name: cls.__name__ for name, cls in SCORERS.items()}


@dataclass(frozen=True)
class PruneSettings:
    """Every setting that changes a run's numbers: all must match for a run to be resumed or continued.

    Compared in this order, so a refusal names the first cause (a different tokenizer also changes
    the chains' ids, but the message should say "tokenizer"). Runs made before a field existed do
    not record it; it is not compared for them.
    """

    model: str
    model_sha256: str | None
    dtype: str
    scoring: str
    objective: str
    tokenizer: str
    keep_annotations: bool
    seed: int
    chains_fingerprint: str


# The exact scorers compute the same greedy order and costs (up to float rounding: tested against a
# naive full recompute), so a run may be continued with another of them (e.g. --method prefix to
# use less memory); any other scorer (an approximation) changes results and must match.
EXACT_SCORERS = {name: "exact" for name in _SCORER_NAMES.values()}

# How each setting is named to the user, and the option that sets it.
_SETTING_NAMES = {
    "model": ("model", "--model"), "model_sha256": ("model weights (sha256)", "--model"),
    "dtype": ("dtype", "--dtype"), "scoring": ("scoring method", "--method"),
    "objective": ("objective", "--objective"), "tokenizer": ("tokenizer / chat template (fingerprint)", "--model"),
    "keep_annotations": ("keep annotations", "--keep-annotations"), "seed": ("seed", "--seed"),
}


def scoring_setting(scorer_name: str) -> str:
    """What a scorer means for the results: ``exact`` for the exact greedy scorers, else its name."""
    return EXACT_SCORERS.get(scorer_name, scorer_name)


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of what turns a chain into ids: tokenizer class, vocabulary size, special tokens,
    chat template, and the ids of a probe text (digits, spaces, punctuation, a newline)."""
    probe = "Question: 12 apples cost $3.50 each, so 12 * 3.5 = 42.\nAnswer: #### 42  é"
    parts = {
        "class": type(tokenizer).__name__, "size": len(tokenizer),
        "special": {k: str(v) for k, v in sorted(getattr(tokenizer, "special_tokens_map", {}).items())},
        "template": getattr(tokenizer, "chat_template", None),
        "probe": list(tokenizer(probe, add_special_tokens=True)["input_ids"]),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def chains_fingerprint(encoded: Sequence[EncodedChain]) -> str:
    digest = hashlib.sha256()
    for item in encoded:
        digest.update(json.dumps([item.chain.id, item.prefix_ids, item.reasoning_ids, item.answer_ids]).encode())
    return digest.hexdigest()


def prune(
    chains: str | Path | Iterable[Chain],
    out: str | Path,
    *,
    model: str = "smollm2-135m",
    objective: str = "joint",
    keep_ratio: float = 0.0,
    max_batch_tokens: int = 4096,
    method: str = "auto",
    baselines: Sequence[str] = (),
    device: str = "auto",
    dtype: str = "auto",
    limit: int | None = None,
    ids: Sequence[str] | None = None,
    on_error: str | None = None,
    keep_annotations: bool = False,
    seed: int = 0,
    progress: bool = True,
    trust_remote_code: bool = False,
    allow_unsafe_weights: bool = False,
    loaded_model=None,
    backend: str = "local",
    ray_address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    max_memory: str | int | None = None,
    llmlingua_model: str | None = None,
    llmlingua_framing: str | None = None,
    approx: str | None = None,
    replicates: int = 1,
    perturbation_scale: float | None = None,
    fields: str | dict | None = None,
) -> RunDir:
    """Prune chains greedily and write (or resume, or continue) a run directory.

    Parameters
    ----------
    chains : path, ``"gsm8k"`` or iterable of Chain
    out : path
        The run directory. An existing one is resumed (same model, objective and chains) or
        continued to a lower ``keep_ratio``.
    model : str
        Model spec (see :func:`cotsurvival.models.load_model`).
    objective : {"joint", "answer"}
        ``joint`` = Σ log p over kept reasoning and answer tokens; ``answer`` = over answer tokens.
    keep_ratio : float
        Stop after ``N − floor(N·R)`` deletions; 0 ranks every token.
    max_batch_tokens : int
        Token rows per forward batch (halved automatically on CUDA out-of-memory).
    method : {"auto", "prefix", "naive"}
        Scoring method; ``auto`` uses prefix reuse when the architecture supports it.
    baselines : sequence of str
        Any of ``random``, ``surprisal``, ``loo``, ``attention``.
    limit : int, optional
        Only the first N valid chains (after ``ids``).
    ids : sequence of str, optional
        Only the chains with these ids (E085 names any the source lacks).
    on_error : {None, "fail", "skip"}
        Bad input lines fail unless ``"skip"``; chains the model cannot take (too long, empty
        answer) are skipped unless ``"fail"``. Every skip is recorded in the manifest.
    loaded_model : tuple, optional
        ``(model, tokenizer, ModelInfo)`` already loaded (notebooks, benchmarks). With the Ray
        backend it is shipped to every actor (small models only).
    backend : {"local", "ray"}
        ``ray``: one actor per GPU (or CPU slot) loads the model and prunes chains; this process
        commits them (see :mod:`cotsurvival.pruning.ray_backend`). Needs ``pip install cotsurvival[cluster]``.
    ray_address : str, optional
        Ray cluster to join (default ``$RAY_ADDRESS``, a running local cluster, else a new local one).
    workers : int, optional
        Actors to start (default: one per GPU, or one per CPU without GPUs).
    gpus_per_worker : float, optional
        GPUs each actor reserves (default 1 when the cluster has GPUs, else 0).
    max_memory : str or int, optional
        Memory a chain may use beyond the weights (``"8GB"``, ``"512MiB"``, bytes); default what the
        device has free. A chain whose method would not fit runs with the one that does (cross-step
        reuse, then prefix reuse, then smaller batches, then naive); the manifest records the
        choice per chain under ``engine.chains`` (see :mod:`cotsurvival.pruning.memory`).
    llmlingua_model : str, optional
        LLMLingua-2 classifier for the ``llmlingua2`` baseline (hub id or directory; default
        ``microsoft/llmlingua-2-xlm-roberta-large-meetingbank``, or the one the run already used).
    llmlingua_framing : {"package", "trained"}, optional
        How ``llmlingua2`` frames each classifier chunk: ``"package"`` (``[CLS]``/``[SEP]``, which an
        XLM-RoBERTa tokenizer reads as ``<unk>``: what the ``llmlingua`` package runs) or
        ``"trained"`` (``<s>``/``</s>``, as the classifier was trained). Default: the run's, else
        ``"package"`` (see :mod:`cotsurvival.pruning.llmlingua`).
    approx : str, optional
        Approximate greedy survival for long chains (see :mod:`cotsurvival.pruning.approx`):
        ``"auto"``, ``"topk:0.1,window=64"``, ...; recorded in the manifest as ``engine.approx``.
        None (the default) is the exact definition; exact runs of chains over 2,000 reasoning
        tokens are refused with a message naming ``--approx``.
    replicates : int, default 1
        K paths per chain: replicate 0 is the greedy path, replicates 1..K-1 perturb each step's
        costs with Gumbel noise of scale ``perturbation_scale`` (see
        :mod:`cotsurvival.pruning.engine`), seeded by ``seed``. Every table gets a ``replicate``
        column; readers see replicate 0 unless they ask for all (``RunDir.read_part(...,
        replicates=True)``, :func:`cotsurvival.load_run` summarises them per token). Each replicate
        commits on its own (resumable), reuses the greedy path's costs while its deleted set equals
        that path's, and runs in parallel on the Ray backend. A run is never reduced: re-running
        with more replicates adds them.
    perturbation_scale : float, optional
        T in nats (default :data:`~cotsurvival.pruning.engine.DEFAULT_PERTURBATION_SCALE`, or the
        run's own); 0 makes every replicate the greedy path.

    Returns
    -------
    RunDir
    """
    _check_options(objective, keep_ratio, baselines, on_error, max_batch_tokens)
    max_memory_bytes = parse_memory(max_memory)
    start_backend = BACKENDS.resolve(backend)

    # --approx is parsed before any model is loaded, so a bad spec fails fast.
    approx_spec = parse_approx(approx)
    _check_replicates(replicates, perturbation_scale, approx_spec)
    dtype = scoring_dtype(dtype)  # auto: float32 on every device (half precision switches greedy paths)
    _check_out(out, chains)
    corpus = _as_corpus(chains, on_error, keep_annotations, limit, ids, fields)
    selection = {"limit": limit, "ids": list(ids) if ids is not None else None}
    if fields:
        from ..chains import parse_fields

        selection["fields"] = parse_fields(fields)
    pool, lm, tokenizer, info = start_backend(
        model=model, loaded_model=loaded_model, device=device, dtype=dtype, method=method, objective=objective,
        max_batch_tokens=max_batch_tokens, trust_remote_code=trust_remote_code,
        allow_unsafe_weights=allow_unsafe_weights, address=ray_address, workers=workers,
        gpus_per_worker=gpus_per_worker)
    warn_if_imprecise(info.dtype)
    try:
        return _prune_encoded(corpus, out, lm, tokenizer, info, pool, objective=objective, keep_ratio=keep_ratio,
                              max_batch_tokens=max_batch_tokens, method=method, baselines=baselines,
                              on_error=on_error, keep_annotations=keep_annotations, seed=seed, progress=progress,
                              selection=selection, max_memory=max_memory_bytes,
                              llmlingua=dict(spec=llmlingua_model, device=device, allow_unsafe_weights=allow_unsafe_weights,
                                             framing=llmlingua_framing),
                              approx=approx_spec, replicates=replicates, perturbation_scale=perturbation_scale)
    finally:
        if pool is not None:
            pool.close()


def _prune_encoded(corpus, out, lm, tokenizer, info, pool, *, objective, keep_ratio, max_batch_tokens, method,
                   baselines, on_error, keep_annotations, seed, progress, selection=None, max_memory=None,
                   llmlingua=None, approx=None, replicates=1, perturbation_scale=None) -> RunDir:
    """Encode, open the run, prune what is not committed yet (here, or on the Ray ``pool``), commit."""
    started = time.perf_counter()
    encoded, skipped = _encode_all(corpus, tokenizer, info.max_positions, on_error)
    if not encoded:
        if not skipped:
            raise CotSurvivalError("E014", reason="the input is empty")
        raise CotSurvivalError("E014", reason=f"every chain was skipped: {'; '.join(skip_summary(skipped))}")
    if skipped:  # never only in manifest.json: per reason a count and a few chain ids, on stderr
        print(f"skipped {len(skipped)} of {len(skipped) + len(encoded)} chains:", file=sys.stderr)
        for line in skip_summary(skipped):
            print(f"  {line}", file=sys.stderr)
    if pool is None:
        # before the run directory exists: an unsupported method must not leave one behind (E100, E088)
        scorer_name = type(make_scorer(lm, method=method, objective=objective,
                                       max_batch_tokens=max_batch_tokens)).__name__
    else:
        scorer_name = pool.scorer_name
    if approx is None:  # approx: an exact run of a very long chain is refused, naming --approx
        from .approx import check_exact_feasible

        for item in encoded:
            check_exact_feasible(len(item.reasoning_ids), item.chain.id)
    run = RunDir(out)
    scoring = scoring_setting(scorer_name)
    if approx is not None:  # an approximation changes the deletion order: resuming must use the same one
        scoring = approx_setting(approx)
    settings = PruneSettings(info.spec, info.sha256, info.dtype, scoring, objective,
                             tokenizer_fingerprint(tokenizer), bool(keep_annotations), int(seed),
                             chains_fingerprint(encoded))
    folder_existed, run_existed = run.path.exists(), run.exists()
    try:
        manifest = _open_run(run, settings, info, encoded, skipped, corpus, keep_ratio, baselines, seed,
                             method, max_batch_tokens, keep_annotations, selection or {}, scorer_name)
        return _prune_open(run, manifest, encoded, lm, pool, scorer_name, started, resumed=run_existed,
                           objective=objective,
                           method=method, keep_ratio=keep_ratio, max_batch_tokens=max_batch_tokens,
                           max_memory=max_memory, baselines=baselines, seed=seed, progress=progress,
                           llmlingua=llmlingua, approx=approx,
                           replicates=_replicates_record(run, manifest, replicates, perturbation_scale, seed))
    except BaseException:
        if not run_existed:
            _discard_if_empty(run, folder_existed)
        raise


def _prune_open(run, manifest, encoded, lm, pool, scorer_name, started, *, objective, method, keep_ratio,
                max_batch_tokens, max_memory, baselines, seed, progress, llmlingua=None, approx=None,
                replicates=None, resumed=False) -> RunDir:
    if approx is not None and "approx" not in manifest.get("engine", {}):
        # Recorded before any chain is committed: an interrupted approximate run says so too.
        from .approx import approx_record

        manifest["engine"] = {**manifest.get("engine", {}), "approx": approx_record(approx)}
        manifest = run.update_manifest(engine=manifest["engine"])
    replicates = replicates or {"k": 1}
    if replicates["k"] > 1 or "replicates" in manifest:  # recorded before any replicate commits
        manifest = run.update_manifest(replicates=replicates)
    perturbations = [None] + [Perturbation(replicates["scale_nats"], int(seed), r) for r in range(1, replicates["k"])]
    target_ratio = min(keep_ratio, manifest["keep_ratio"])
    names = list(dict.fromkeys(list(manifest.get("baselines", [])) + list(baselines)))
    chain_seconds = dict(manifest.get("timings", {}).get("chains", {}))
    chain_rows = dict(manifest.get("engine", {}).get("token_rows_chains", {}))
    bar = make_bar(total=len(encoded), desc="chains", unit="chain", disable=not progress)
    todo = []  # (index, item, wanted, replicates to prune: 0 first when the greedy path needs work)
    for index, item in enumerate(encoded):
        wanted = n_deletions(len(item.reasoning_ids), target_ratio)
        done = _committed_replicates(run, index)
        needed = [r for r in range(len(perturbations)) if done.get(r, -1) < wanted]
        if 0 not in needed and not _has_baselines(run, index, names):
            needed.insert(0, 0)
        if not needed:
            bar.update(1)
            continue
        todo.append((index, item, wanted, needed))
    n_done_before = len(encoded) - len(todo)
    if resumed and progress:  # a resumed run says so, and what it found done
        action = "continuing" if target_ratio < manifest["keep_ratio"] else "resuming"
        bar.write(f"{action} {run.path}: {n_done_before} of {_plural(len(encoded), 'chain')} already done"
                  + (f", {len(todo)} to prune" if todo else ""), file=sys.stderr)
    rep_rows = dict(manifest.get("engine", {}).get("replicate_token_rows", {}))
    rep_reused = dict(manifest.get("engine", {}).get("replicate_reused_steps", {}))

    def replicate_done(item: EncodedChain, trace: ChainTrace) -> None:
        """Token rows and reused steps of a perturbed replicate (``engine.replicate_*``, keyed
        ``chain_id/r``), written before it commits."""
        key = f"{item.chain.id}/{trace.replicate}"
        rep_rows[key], rep_reused[key] = int(trace.token_rows), int(trace.reused_steps)
        engine = dict(run.read_manifest().get("engine", {}))
        engine.update(replicate_token_rows=dict(rep_rows), replicate_reused_steps=dict(rep_reused))
        run.update_manifest(engine=engine)

    def committed(item: EncodedChain, trace: ChainTrace | None) -> None:
        """A chain is complete; ``trace`` is its greedy path when this invocation pruned it."""
        if trace is not None:
            chain_seconds[item.chain.id] = round(trace.seconds, 3)
            chain_rows[item.chain.id] = int(trace.token_rows)
            if pool is not None:  # workers finish in any order: name the chain that just finished, as such
                bar.set_postfix_str(f"finished {item.chain.id} in {trace.seconds:.1f}s")
        bar.update(1)

    # Every scorer that produced a committed chain (the exact ones may differ between invocations), recorded
    # before this invocation commits anything, so the manifest stays true of every chain even if it is killed.
    methods = list(manifest.get("engine", {}).get("methods", []))

    def record_method(name: str) -> None:
        nonlocal methods, manifest
        if name not in methods:
            methods = sorted([*methods, name])
            manifest = run.update_manifest(engine=dict(manifest.get("engine", {}), methods=methods))

    if todo and pool is not None:
        record_method(scorer_name)
    chain_plans = dict(manifest.get("engine", {}).get("chains", {}))
    extra = {}
    llmlingua = llmlingua or {}
    try:  # the bar is closed (ending its line) before any error message is printed
        classifier = classifier_for_run(run, manifest, names, llmlingua.get("spec"), needed=bool(todo),
                                        device=llmlingua.get("device", "auto"),
                                        allow_unsafe_weights=llmlingua.get("allow_unsafe_weights", False),
                                        framing=llmlingua.get("framing"))
        if pool is None:
            cap_torch_threads()
            budget = memory_budget(next(lm.parameters()).device, max_memory)
            scorers: dict[tuple[str, int], object] = {}
            for index, item, wanted, needed in todo:
                plan = plan_chain(lm, len(item.prefix_ids), len(item.reasoning_ids), len(item.answer_ids), method,
                                  max_batch_tokens, budget)
                key = (plan.method, plan.max_batch_tokens)
                if key not in scorers:
                    scorers.clear()  # one scorer alive at a time: a cross-step scorer holds a chain's state
                    scorers[key] = make_scorer(lm, method=plan.method, objective=objective,
                                               max_batch_tokens=plan.max_batch_tokens)
                scorer = scorers[key]
                bar.set_postfix_str(f"chain {item.chain.id}")  # the chain being pruned now, not the last one
                # Recorded before the commit, so the manifest stays true of every committed chain if killed.
                record_method(type(scorer).__name__)
                chain_plans[item.chain.id] = plan.to_dict()
                cap_torch_threads(own_load=torch.get_num_threads())  # the machine's load changes over a run
                greedy = pruned = None
                for replicate in needed:
                    if replicate == 0:
                        greedy = pruned = trace = _prune_one(run, scorer, item, index, wanted, progress, approx)
                        attention = answer_attention(lm, item) if "attention" in names else None
                        # The chain's plan and its token rows in one manifest write, still before the commit.
                        manifest = _record_rows(run, item, trace, chain_rows, chains=chain_plans, max_memory=max_memory)
                        _commit(run, item, index, trace, names, seed, attention, classifier)
                        continue
                    greedy = greedy or _start_trace(run, item, index)
                    trace = _prune_one(run, scorer, item, index, wanted, progress, perturbation=perturbations[replicate],
                                       reuse=greedy)
                    replicate_done(item, trace)
                    _commit(run, item, index, trace, (), seed)
                committed(item, pruned)
            planned = sorted({p["method"] for p in chain_plans.values()})
            scorer_name = ", ".join(_SCORER_NAMES[m] for m in planned) if planned else scorer_name
        else:
            # Replicate 0 of a chain first; its perturbed replicates follow once it is in (they reuse its
            # costs), each a job of its own, so replicates of one chain run on several actors at once.
            later = {index: needed[1:] if needed[0] == 0 else needed for index, _, _, needed in todo}
            pending = {index: len(needed) for index, _, _, needed in todo}
            greedy_of: dict[int, ChainTrace] = {}

            def replicate_jobs(index, item, wanted, greedy):
                return [(index, item, wanted, perturbations[r], greedy) for r in later.pop(index, [])]

            jobs = []
            for index, item, wanted, needed in todo:
                if needed[0] == 0:
                    jobs.append((index, item, wanted))
                else:  # the greedy path is committed: its replicates can start now
                    jobs.extend(replicate_jobs(index, item, wanted, _start_trace(run, item, index)))

            def follow_up(job, trace):
                return replicate_jobs(job[0], job[1], job[2], trace) if len(job) == 3 else []

            for index, item, trace, attention, _ in pool.run(jobs, start_of=lambda i, it, r=0: _start_trace(run, it, i, r),
                                                             attention="attention" in names, approx=approx,
                                                             follow_up=follow_up):
                if trace.replicate == 0:
                    _record_rows(run, item, trace, chain_rows)
                    _commit(run, item, index, trace, names, seed, attention, classifier)
                    greedy_of[index] = trace
                else:
                    replicate_done(item, trace)
                    _commit(run, item, index, trace, (), seed)
                pending[index] -= 1
                if pending[index] == 0:
                    committed(item, greedy_of.pop(index, None))
            extra["ray"] = pool.summary()
    finally:
        bar.close()
    timings = dict(manifest.get("timings", {}))
    this_invocation = round(time.perf_counter() - started, 3)
    timings["prune_seconds_last_invocation"] = this_invocation
    # Every invocation's time adds up (a resumed run's manifest keeps the time of the earlier ones).
    timings["prune_seconds_total"] = round(float(timings.get("prune_seconds_total", 0.0)) + this_invocation, 3)
    timings["invocations"] = int(timings.get("invocations", 0)) + 1
    timings["last_invocation"] = {"resumed": bool(resumed), "chains_already_done": n_done_before,
                                  "chains_pruned": len(todo)}
    timings["chains"] = chain_seconds
    engine = {"method": scorer_name, "methods": methods, "max_batch_tokens": max_batch_tokens,
              "backend": "local" if pool is None else "ray", **_engine_approx(manifest, approx, chain_rows)}
    if rep_rows:
        engine.update(replicate_token_rows=rep_rows, replicate_reused_steps=rep_reused)
    extra["diagnostics"] = _diagnostics(run, manifest)
    if pool is None:  # per chain: method, batch budget, estimated bytes, budget, why
        engine.update(chains=chain_plans, max_memory=max_memory)
    run.update_manifest(keep_ratio=target_ratio, baselines=names, timings=timings, updated=_now(), engine=engine, **extra)
    return run


def _check_replicates(replicates, scale, approx_spec) -> None:
    if isinstance(replicates, bool) or not isinstance(replicates, (int, np.integer)) or replicates < 1:
        raise CotSurvivalError("E140", reason=f"--replicates must be a whole number >= 1, not {replicates!r}")
    if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale >= 0):
        raise CotSurvivalError("E140", reason=f"--perturbation-scale must be a number of nats >= 0, not {scale!r}")
    if replicates > 1 and approx_spec is not None:
        raise CotSurvivalError("E141")


def _replicates_record(run: RunDir, manifest: dict, replicates: int, scale: float | None, seed: int) -> dict:
    """The manifest's ``replicates``: K (never fewer than the run has), the perturbation and its seeds.

    E083 when the run's replicates were made with another scale."""
    from .engine import PERTURBATIONS

    previous = manifest.get("replicates") or {}
    if previous.get("k", 1) > 1 and scale is not None and float(scale) != previous["scale_nats"]:
        raise CotSurvivalError("E083", path=run.path, what="perturbation scale (nats)", old=repr(previous["scale_nats"]),
                               new=repr(float(scale)),
                               hint=f"Re-run with --perturbation-scale {previous['scale_nats']}, or use a new --out directory.")
    if previous.get("k", 1) > 1:
        scale = previous["scale_nats"]
    scale = float(DEFAULT_PERTURBATION_SCALE if scale is None else scale)
    return {"k": max(int(replicates), int(previous.get("k", 1))), "perturbation": "gumbel",
            "meaning": PERTURBATIONS["gumbel"], "scale_nats": scale, "seed": int(seed),
            "noise": "replicate r >= 1, step s: numpy.random.default_rng([seed, r, s, chain_key]).gumbel(size=alive), "
                     "chain_key = first 8 bytes of sha256(chain_id) >> 1; replicate 0 is the unperturbed greedy path"}


def _diagnostics(run: RunDir, manifest: dict) -> dict:
    """The manifest's ``diagnostics``: near-tie steps of the greedy paths (:mod:`.diagnostics`)."""
    from .diagnostics import run_summary, threshold_record

    record = threshold_record((manifest.get("model") or {}).get("dtype", "float32"))
    frames = []
    for index in run.part_indices("tokens"):
        names = run.part_columns("tokens", index)
        if "deletion_gap" in names:
            frames.append(run.read_part("tokens", index, columns=["chain_id", "deleted_step", "deletion_gap"]))
    if not frames:
        return {**record, "n_steps": 0}
    summary = run_summary(pd.concat(frames, ignore_index=True), record["near_tie_threshold"])
    return {**record, **summary}


def _record_rows(run: RunDir, item: EncodedChain, trace: ChainTrace, chain_rows: dict, **engine_fields) -> dict:
    """``engine.token_rows`` (and any other ``engine`` fields given) written before the chain commits, so
    an interrupted run keeps the count; returns the updated manifest."""
    chain_rows[item.chain.id] = int(trace.token_rows)
    engine = dict(run.read_manifest().get("engine", {}))
    engine.update(token_rows=int(sum(chain_rows.values())), token_rows_chains=dict(chain_rows), **engine_fields)
    return run.update_manifest(engine=engine)


def _engine_approx(manifest: dict, approx, chain_rows: dict) -> dict:
    """``engine.approx`` as recorded when the run was opened (None when exact) and ``engine.token_rows``
    (decoder rows, all chains).

    A run is never continued with another approximation (``settings.scoring`` differs: E083)."""
    return {"approx": (manifest.get("engine") or {}).get("approx"), "token_rows": int(sum(chain_rows.values())),
            "token_rows_chains": chain_rows}


def approx_setting(approx) -> str:
    """``settings.scoring`` of an approximate run: its canonical spec (the parameters are recorded once, in
    ``engine.approx``)."""
    return f"approx {approx.describe()}"


def _legacy_scoring(value):
    """Runs made before ``settings.scoring`` held the canonical spec stored the JSON of ``engine.approx``."""
    if isinstance(value, str) and value.startswith("approx {"):
        try:
            return f"approx {json.loads(value[len('approx '):])['spec']}"
        except (ValueError, KeyError):
            return value
    return value


def _discard_if_empty(run: RunDir, folder_existed: bool) -> None:
    """Remove what a failed first invocation created when no chain was committed and nothing checkpointed.

    A failure before any chain commits (an unsupported method, a full disk, an interrupt in the first
    chain without a checkpoint) would otherwise leave a run directory that holds no results.
    """

    if run.part_indices("tokens") or (run.checkpoint_dir.is_dir() and any(run.checkpoint_dir.iterdir())):
        return
    if not folder_existed:
        shutil.rmtree(run.path, ignore_errors=True)
        return
    for path in (run.manifest_path, run.chains_path):
        path.unlink(missing_ok=True)
    for folder in [run.checkpoint_dir, *(run.path / f"{t}.parquet" for t in ("tokens", "steps", "traces", "baselines"))]:
        try:
            folder.rmdir()  # only when empty
        except OSError:
            pass


@BACKENDS.register("local")
def _local_backend(*, model, loaded_model, device, dtype, trust_remote_code, allow_unsafe_weights, **_ray_options):
    """This process: load the model here (no pool)."""
    if loaded_model is None:
        from ..models import load_model

        loaded_model = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                                  allow_unsafe_weights=allow_unsafe_weights)
    lm, tokenizer, info = loaded_model
    return None, lm, tokenizer, info


@BACKENDS.register("ray")
def _ray_backend(**options):
    """A pool of Ray actors; the model loads in each (ray is an optional dependency, imported here)."""

    pool = RayPool.start(**options)
    return pool, None, pool.tokenizer, pool.info


def _check_out(out, chains) -> None:
    """The run directory may not be a file, nor the chains file it is pruned from."""

    if isinstance(chains, (str, Path)) and str(chains) not in BUILTIN_CORPORA:
        check_output(out, inputs=[(chains, "the chains file this command reads")], folder=True, overwrite=True,
                     command="prune")
    target = Path(out)
    if target.exists() and not target.is_dir():
        raise CotSurvivalError("E081", path=out, what="is a file, not a run directory", command="prune")


def _check_options(objective, keep_ratio, baselines, on_error, max_batch_tokens) -> None:
    OBJECTIVES.check(objective)
    if not 0.0 <= keep_ratio < 1.0:
        raise CotSurvivalError("E086", option="--keep-ratio", rule="in [0, 1)", value=keep_ratio)
    for name in baselines:
        BASELINES.check(name)
    if on_error is not None:
        ON_ERROR.check(on_error)
    if max_batch_tokens < 1:
        raise CotSurvivalError("E086", option="--max-batch-tokens", rule="at least 1", value=max_batch_tokens)


def _as_corpus(chains, on_error, keep_annotations, limit, ids=None, fields=None) -> ChainCorpus:
    if isinstance(chains, (str, Path)):
        corpus = read_chains(chains, on_error="skip" if on_error == "skip" else "fail",
                             keep_annotations=keep_annotations, limit=limit, ids=ids, fields=fields)
        if corpus.n_annotations_stripped and str(chains) not in BUILTIN_CORPORA:  # the one annotation rule, said out loud
            print(f"stripped <<...>> calculator annotations from {corpus.n_annotations_stripped} chain"
                  f"{'' if corpus.n_annotations_stripped == 1 else 's'} (--keep-annotations keeps them)",
                  file=sys.stderr)
        return corpus
    if limit is not None and limit < 1:
        raise CotSurvivalError("E086", option="--limit", rule="at least 1", value=limit)
    items = list(chains)
    if ids is not None:
        known = {c.id for c in items}
        missing = [i for i in ids if i not in known]
        if missing:
            from ..chains import _raise_unknown_ids

            _raise_unknown_ids(missing, [c.id for c in items], "<python>")
        items = [c for c in items if c.id in set(ids)]
    return ChainCorpus(source="<python>", chains=items[:limit] if limit else items)


def _encode_all(corpus, tokenizer, max_positions, on_error):
    skipped = [{"source": s.source, "line": s.line, "chain_id": s.chain_id, "reason": s.reason} for s in corpus.skipped]
    encoded = []
    lines = corpus.lines if len(corpus.lines) == len(corpus.chains) else [None] * len(corpus.chains)
    for chain, line in zip(corpus, lines):
        item = encode_chain(chain, tokenizer)
        reason = None
        if not item.reasoning_ids:
            reason = "reasoning tokenizes to nothing"
        elif len(tokenizer(chain.answer, add_special_tokens=False)["input_ids"]) == 0:
            reason = "answer tokenizes to nothing"
        elif not item.prefix_ids:
            reason = "empty prompt: the first reasoning token has no context"
        elif max_positions and item.n_tokens > max_positions:
            reason = f"{item.n_tokens} tokens exceed the model's context of {max_positions}"
        if reason is None:
            encoded.append(item)
            continue
        if on_error == "fail":
            raise CotSurvivalError("E002", path=corpus.source, line=chain.id if line is None else line,
                                   reason=f"chain {chain.id!r}: {reason}")
        skipped.append({"source": corpus.source, "line": line, "chain_id": chain.id, "reason": reason})
    return encoded, skipped


def _open_run(run, settings, info, encoded, skipped, corpus, keep_ratio, baselines, seed, method,
              max_batch_tokens, keep_annotations, selection, scorer_name) -> dict:
    if run.exists():
        manifest = run.read_manifest()
        _check_same_settings(run, manifest, settings, encoded, selection)
        return manifest
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_chains(pd.DataFrame([{
        "chain_index": i, "chain_id": e.chain.id, "question": e.chain.question, "reasoning": e.chain.reasoning,
        "answer": e.chain.answer, "prefix_ids": e.prefix_ids, "reasoning_ids": e.reasoning_ids,
        "answer_ids": e.answer_ids, "used_chat_template": e.used_chat_template} for i, e in enumerate(encoded)]))
    source = {"source": corpus.source, "keep_annotations": keep_annotations, **selection}
    if corpus.source not in BUILTIN_CORPORA and not corpus.source.startswith("<") and Path(corpus.source).is_file():
        source["path"] = str(Path(corpus.source).resolve())  # so outputs can refuse to overwrite it from anywhere
    manifest = {
        "cotsurvival_version": __version__, "created": _now(), "updated": _now(), "model": info.to_dict(),
        "objective": settings.objective, "keep_ratio": keep_ratio, "seed": seed,
        "chains_source": source,
        "n_chains": len(encoded), "skipped": skipped,
        "engine": {"method": method, "methods": [scorer_name], "max_batch_tokens": max_batch_tokens},
        "baselines": list(baselines),
        "taxonomy": None, "timings": {}, "settings": settings.__dict__,
    }
    run.write_manifest(manifest)
    return manifest


def _check_same_settings(run: RunDir, manifest: dict, settings: PruneSettings, encoded, selection: dict) -> None:
    """Refuse to resume or continue with any setting that changes the numbers, naming it and the run's value."""
    previous = manifest.get("settings", {})
    for key, (name, option) in _SETTING_NAMES.items():
        if key not in previous:
            continue  # a run made before this setting was recorded
        old, new = previous[key], getattr(settings, key)
        if key == "scoring":
            old = _legacy_scoring(old)
        if old != new:
            if option == "--keep-annotations":
                hint = f"Re-run {'with' if old else 'without'} --keep-annotations, or use a new --out directory."
            elif key in ("model_sha256", "tokenizer"):
                hint = "The model's files changed since the run was made; use the same files, or a new --out directory."
            elif key == "scoring":
                hint = (f"Re-run with --method {'crossstep, prefix or naive' if old == 'exact' else old}, "
                        f"or use a new --out directory.")
            else:
                hint = f"Re-run with {option} {old}, or use a new --out directory."
            raise CotSurvivalError("E083", path=run.path, what=name, old=repr(old), new=repr(new), hint=hint)
    if previous.get("chains_fingerprint") != settings.chains_fingerprint:
        raise CotSurvivalError("E084", path=run.path, detail=_chains_difference(run, encoded),
                               hint=_selection_hint(manifest.get("chains_source", {}), selection))


def _chains_difference(run: RunDir, encoded) -> str:
    """Which chains were added, dropped or changed between the run and this command."""
    try:
        old = run.read_chains()
    except CotSurvivalError:
        return "chains.parquet is unreadable"
    old_ids = [str(i) for i in old["chain_id"]]
    new_ids = [e.chain.id for e in encoded]

    def listed(ids):
        return ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")

    parts = [f"the run has {len(old_ids)} chains, this command selects {len(new_ids)}"]
    added = [i for i in new_ids if i not in set(old_ids)]
    dropped = [i for i in old_ids if i not in set(new_ids)]
    if added:
        parts.append(f"added: {listed(added)}")
    if dropped:
        parts.append(f"dropped: {listed(dropped)}")
    if not added and not dropped:
        by_id = old.set_index("chain_id")
        changed = [e.chain.id for e in encoded
                   if (by_id.loc[e.chain.id, "question"], by_id.loc[e.chain.id, "reasoning"], by_id.loc[e.chain.id, "answer"])
                   != (e.chain.question, e.chain.reasoning, e.chain.answer)]
        if changed:
            parts.append(f"text changed: {listed(changed)}")
        elif old_ids != new_ids:
            parts.append("the same chains in another order")
        else:
            parts.append("the same texts tokenize differently")
    return "; ".join(parts)


def _selection_hint(source: dict, selection: dict) -> str:
    was = []
    if source.get("limit") is not None:
        was.append(f"--limit {source['limit']}")
    if source.get("ids"):
        was.append(f"--chains {','.join(source['ids'])}")
    now = []
    if selection.get("limit") is not None:
        now.append(f"--limit {selection['limit']}")
    if selection.get("ids"):
        now.append(f"--chains {','.join(selection['ids'])}")
    if ("limit" in source or "ids" in source) and was == now:
        return "The selection is the same, so the chains themselves changed; re-run with the run's chains, or use a new --out directory."
    if "limit" in source or "ids" in source:
        made = " ".join(was) or "no --limit and no --chains/--ids (every chain)"
        return (f"The run was made with {made}; this command has {' '.join(now) or 'neither'}. "
                f"Re-run with the run's selection, or use a new --out directory.")
    return "Re-run with the run's chains (same file, --limit and --chains/--ids), or use a new --out directory."


def _committed_steps(run: RunDir, index: int) -> int:
    # tokens is the commit marker; a steps or traces part deleted since (E008 tells users to delete a
    # corrupt part and re-run) makes the chain count as not done, so it is pruned and written again.
    if not (run.has_part("tokens", index) and run.has_part("steps", index) and run.has_part("traces", index)):
        return -1
    tokens = run.read_part("tokens", index, columns=["deleted_step"])
    return int(tokens["deleted_step"].notna().sum())


def _has_baselines(run: RunDir, index: int, names) -> bool:
    if not names:
        return True
    if not run.has_part("baselines", index):
        return False
    present = set(run.read_part("baselines", index, columns=["ordering"])["ordering"])
    return set(names) <= present


def _prune_one(run: RunDir, scorer, item: EncodedChain, index: int, wanted: int, progress: bool,
               approx=None, perturbation: Perturbation | None = None, reuse: ChainTrace | None = None) -> ChainTrace:
    replicate = perturbation.replicate if perturbation is not None else 0
    checkpoint = run.checkpoint_path(index, replicate)
    start = _start_trace(run, item, index, replicate)
    label = f"  {item.chain.id}" + (f" r{replicate}" if replicate else "")
    bar = make_bar(total=wanted, initial=start.n_steps if start else 0, desc=label, unit="step",
                   leave=False, disable=not progress)
    last_save = [time.perf_counter()]

    def on_step(trace: ChainTrace) -> None:
        bar.update(1)
        alive = len(trace.step_positions[-1])
        bar.set_postfix(cand_per_s=f"{alive / max(1e-9, time.perf_counter() - on_step.t):.0f}")
        on_step.t = time.perf_counter()
        if time.perf_counter() - last_save[0] > CHECKPOINT_SECONDS and trace.n_steps < wanted:
            save_checkpoint(checkpoint, trace)
            last_save[0] = time.perf_counter()

    on_step.t = time.perf_counter()
    try:
        return greedy_prune(scorer, item, wanted, start=start, on_step=on_step, approx=approx,
                            perturbation=perturbation, reuse=reuse)
    finally:
        bar.close()


def _start_trace(run: RunDir, item: EncodedChain, index: int, replicate: int = 0) -> ChainTrace | None:
    """Where a replicate's pruning starts: its checkpoint, its committed tables (a lower keep ratio), or nothing."""
    checkpoint = run.checkpoint_path(index, replicate)
    start = None
    if checkpoint.is_file():
        try:
            start = load_checkpoint(checkpoint)
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            # A checkpoint only saves time: a damaged one is dropped and the chain starts over.
            warnings.warn(f"ignoring unreadable checkpoint {checkpoint} ({type(exc).__name__}: {exc}); "
                          f"chain {item.chain.id!r} starts over", CheckpointWarning, stacklevel=2)
            checkpoint.unlink(missing_ok=True)
    if start is None and replicate in _committed_replicates(run, index):
        def rows(table, columns=None):
            frame = run.read_part(table, index, columns=columns, replicates=True)
            return frame[frame["replicate"] == replicate] if "replicate" in frame else frame

        static = rows("tokens", ["static_logprob", "replicate"])["static_logprob"].to_numpy()
        start = trace_from_tables(rows("steps"), rows("traces"), static, replicate)
    return start


def _committed_replicates(run: RunDir, index: int) -> dict[int, int]:
    """Committed replicates of a chain and the steps each reached (tokens is the commit marker)."""
    if _committed_steps(run, index) < 0:
        return {}
    names = run.part_columns("tokens", index)
    tokens = run.read_part("tokens", index, columns=["deleted_step"] + (["replicate"] if "replicate" in names else []),
                           replicates=True)
    if "replicate" not in tokens:
        return {0: int(tokens["deleted_step"].notna().sum())}
    return {int(r): int(g["deleted_step"].notna().sum()) for r, g in tokens.groupby("replicate")}


def _commit(run: RunDir, item: EncodedChain, index: int, trace: ChainTrace, names, seed,
            attention: np.ndarray | None = None, classifier=None) -> None:
    """Write one finished replicate of a chain (steps, traces, baselines, then tokens: the commit marker),
    beside the chain's other committed replicates."""
    def merged(table, frame, sort):
        old = run.read_part(table, index, replicates=True) if run.has_part(table, index) else None
        return with_replicate(old, frame, sort)

    run.write_part("steps", index, merged("steps", steps_frame(item, trace, index), ["step"]))
    run.write_part("traces", index, merged("traces", traces_frame(item, trace, index), ["step", "position"]))
    if names:
        keep_probs = classifier.keep_probs(item.chain.reasoning, item.offsets) if classifier is not None else None
        orders = baseline_orders(trace, names=names, seed=seed, chain_index=index, attention=attention,
                                 keep_probs=keep_probs)
        run.write_part("baselines", index, orders_to_frame(orders, len(item.reasoning_ids), trace.n_steps,
                                                           index, item.chain.id))
    # the commit marker: last
    run.write_part("tokens", index, merged("tokens", tokens_frame(item, trace, index), ["position"]))
    run.checkpoint_path(index, trace.replicate).unlink(missing_ok=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
