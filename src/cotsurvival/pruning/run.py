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
import time
import warnings
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .._version import __version__
from ..chains import Chain, ChainCorpus, read_chains
from ..encoding import EncodedChain, encode_chain
from ..errors import CotSurvivalError
from ..rundir import RunDir
from .baselines import BASELINES, answer_attention, baseline_orders, orders_to_frame
from .engine import ChainTrace, greedy_prune, n_deletions
from .methods import make_scorer
from .registry import OBJECTIVES
from .tables import load_checkpoint, save_checkpoint, steps_frame, tokens_frame, trace_from_tables, traces_frame

CHECKPOINT_SECONDS = 20.0


@dataclass(frozen=True)
class PruneSettings:
    """What must match for a run directory to be resumed or continued."""

    model: str
    model_sha256: str | None
    objective: str
    chains_fingerprint: str


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

    Returns
    -------
    RunDir
    """
    _check_options(objective, keep_ratio, baselines, on_error, max_batch_tokens)
    if backend not in ("local", "ray"):
        raise CotSurvivalError("E009", reason=f"--backend must be 'local' or 'ray', not {backend!r}")
    corpus = _as_corpus(chains, on_error, keep_annotations, limit)
    pool = None
    if backend == "ray":
        from .ray_backend import RayPool

        pool = RayPool.start(model=model, loaded_model=loaded_model, device=device, dtype=dtype, method=method,
                             objective=objective, max_batch_tokens=max_batch_tokens,
                             trust_remote_code=trust_remote_code, allow_unsafe_weights=allow_unsafe_weights,
                             address=ray_address, workers=workers, gpus_per_worker=gpus_per_worker)
        lm, tokenizer, info = None, pool.tokenizer, pool.info
    else:
        if loaded_model is None:
            from ..models import load_model

            loaded_model = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                                      allow_unsafe_weights=allow_unsafe_weights)
        lm, tokenizer, info = loaded_model
    try:
        return _prune_encoded(corpus, out, lm, tokenizer, info, pool, objective=objective, keep_ratio=keep_ratio,
                              max_batch_tokens=max_batch_tokens, method=method, baselines=baselines,
                              on_error=on_error, keep_annotations=keep_annotations, seed=seed, progress=progress)
    finally:
        if pool is not None:
            pool.close()


def _prune_encoded(corpus, out, lm, tokenizer, info, pool, *, objective, keep_ratio, max_batch_tokens, method,
                   baselines, on_error, keep_annotations, seed, progress) -> RunDir:
    """Encode, open the run, prune what is not committed yet (here, or on the Ray ``pool``), commit."""
    started = time.perf_counter()
    encoded, skipped = _encode_all(corpus, tokenizer, info.max_positions, on_error)
    if not encoded:
        raise CotSurvivalError("E014", reason="every chain was skipped (see the reasons above)" if skipped else "the input is empty")
    run = RunDir(out)
    settings = PruneSettings(info.spec, info.sha256, objective, chains_fingerprint(encoded))
    manifest = _open_run(run, settings, info, encoded, skipped, corpus, keep_ratio, baselines, seed,
                         method, max_batch_tokens, keep_annotations)
    target_ratio = min(keep_ratio, manifest["keep_ratio"])
    names = list(dict.fromkeys(list(manifest.get("baselines", [])) + list(baselines)))
    chain_seconds = dict(manifest.get("timings", {}).get("chains", {}))
    bar = tqdm(total=len(encoded), desc="chains", unit="chain", disable=not progress, dynamic_ncols=True)
    todo = []
    for index, item in enumerate(encoded):
        wanted = n_deletions(len(item.reasoning_ids), target_ratio)
        if _committed_steps(run, index) >= wanted and _has_baselines(run, index, names):
            bar.update(1)
            continue
        todo.append((index, item, wanted))

    def committed(item: EncodedChain, trace: ChainTrace) -> None:
        chain_seconds[item.chain.id] = round(trace.seconds, 3)
        bar.update(1)
        bar.set_postfix(last=f"{trace.seconds:.1f}s")

    extra = {}
    try:  # the bar is closed (ending its line) before any error message is printed
        if pool is None:
            scorer = make_scorer(lm, method=method, objective=objective, max_batch_tokens=max_batch_tokens)
            scorer_name = type(scorer).__name__
            for index, item, wanted in todo:
                trace = _prune_one(run, scorer, item, index, wanted, progress)
                attention = answer_attention(lm, item) if "attention" in names else None
                _commit(run, item, index, trace, names, seed, attention)
                committed(item, trace)
        else:
            scorer_name = pool.scorer_name
            for index, item, trace, attention, _ in pool.run(todo, start_of=lambda i, it: _start_trace(run, it, i),
                                                             attention="attention" in names):
                _commit(run, item, index, trace, names, seed, attention)
                committed(item, trace)
            extra["ray"] = pool.summary()
    finally:
        bar.close()
    timings = dict(manifest.get("timings", {}))
    timings["prune_seconds_last_invocation"] = round(time.perf_counter() - started, 3)
    timings["chains"] = chain_seconds
    run.update_manifest(keep_ratio=target_ratio, baselines=names, timings=timings, updated=_now(),
                        engine={"method": scorer_name, "max_batch_tokens": max_batch_tokens,
                                "backend": "local" if pool is None else "ray"}, **extra)
    return run


def _check_options(objective, keep_ratio, baselines, on_error, max_batch_tokens) -> None:
    if objective not in OBJECTIVES:
        raise CotSurvivalError("E009", reason=f"--objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
    if not 0.0 <= keep_ratio < 1.0:
        raise CotSurvivalError("E009", reason=f"--keep-ratio must be in [0, 1), not {keep_ratio}")
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise CotSurvivalError("E009", reason=f"unknown baseline {unknown[0]!r}; choose from {', '.join(BASELINES)}")
    if on_error not in (None, "fail", "skip"):
        raise CotSurvivalError("E009", reason=f"--on-error must be 'fail' or 'skip', not {on_error!r}")
    if max_batch_tokens < 1:
        raise CotSurvivalError("E009", reason="--max-batch-tokens must be positive")


def _as_corpus(chains, on_error, keep_annotations, limit) -> ChainCorpus:
    if isinstance(chains, (str, Path)):
        return read_chains(chains, on_error="skip" if on_error == "skip" else "fail",
                           keep_annotations=keep_annotations, limit=limit)
    items = list(chains)
    return ChainCorpus(source="<python>", chains=items[:limit] if limit else items)


def _encode_all(corpus, tokenizer, max_positions, on_error):
    skipped = [{"source": s.source, "line": s.line, "chain_id": None, "reason": s.reason} for s in corpus.skipped]
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
              max_batch_tokens, keep_annotations) -> dict:
    if run.exists():
        manifest = run.read_manifest()
        previous = manifest.get("settings", {})
        for key in ("model", "model_sha256", "objective", "chains_fingerprint"):
            if previous.get(key) != getattr(settings, key):
                what = "set of chains" if key == "chains_fingerprint" else key.replace("_", " ")
                raise CotSurvivalError("E006", path=run.path, what=what, old=previous.get(key),
                                       new=getattr(settings, key))
        return manifest
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_chains(pd.DataFrame([{
        "chain_index": i, "chain_id": e.chain.id, "question": e.chain.question, "reasoning": e.chain.reasoning,
        "answer": e.chain.answer, "prefix_ids": e.prefix_ids, "reasoning_ids": e.reasoning_ids,
        "answer_ids": e.answer_ids, "used_chat_template": e.used_chat_template} for i, e in enumerate(encoded)]))
    manifest = {
        "cotsurvival_version": __version__, "created": _now(), "updated": _now(), "model": info.to_dict(),
        "objective": settings.objective, "keep_ratio": keep_ratio, "seed": seed,
        "chains_source": {"source": corpus.source, "keep_annotations": keep_annotations},
        "n_chains": len(encoded), "skipped": skipped,
        "engine": {"method": method, "max_batch_tokens": max_batch_tokens}, "baselines": list(baselines),
        "taxonomy": None, "timings": {}, "settings": settings.__dict__,
    }
    run.write_manifest(manifest)
    return manifest


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


def _prune_one(run: RunDir, scorer, item: EncodedChain, index: int, wanted: int, progress: bool) -> ChainTrace:
    checkpoint = run.checkpoint_path(index)
    start = _start_trace(run, item, index)
    bar = tqdm(total=wanted, initial=start.n_steps if start else 0, desc=f"  {item.chain.id}", unit="step",
               leave=False, disable=not progress, dynamic_ncols=True)
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
        return greedy_prune(scorer, item, wanted, start=start, on_step=on_step)
    finally:
        bar.close()


def _start_trace(run: RunDir, item: EncodedChain, index: int) -> ChainTrace | None:
    """Where a chain's pruning starts: its checkpoint, its committed tables (a lower keep ratio), or nothing."""
    checkpoint = run.checkpoint_path(index)
    start = None
    if checkpoint.is_file():
        try:
            start = load_checkpoint(checkpoint)
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            # A checkpoint only saves time: a damaged one is dropped and the chain starts over.
            warnings.warn(f"ignoring unreadable checkpoint {checkpoint} ({type(exc).__name__}: {exc}); "
                          f"chain {item.chain.id!r} starts over", stacklevel=2)
            checkpoint.unlink(missing_ok=True)
    if start is None and all(run.has_part(t, index) for t in ("tokens", "steps", "traces")):
        static = run.read_part("tokens", index, columns=["static_logprob"])["static_logprob"].to_numpy()
        start = trace_from_tables(run.read_part("steps", index), run.read_part("traces", index), static)
    return start


def _commit(run: RunDir, item: EncodedChain, index: int, trace: ChainTrace, names, seed,
            attention: np.ndarray | None = None) -> None:
    """Write one finished chain (steps, traces, baselines, then tokens: the commit marker)."""
    run.write_part("steps", index, steps_frame(item, trace, index))
    run.write_part("traces", index, traces_frame(item, trace, index))
    if names:
        orders = baseline_orders(trace, names=names, seed=seed, chain_index=index, attention=attention)
        run.write_part("baselines", index, orders_to_frame(orders, len(item.reasoning_ids), trace.n_steps,
                                                           index, item.chain.id))
    run.write_part("tokens", index, tokens_frame(item, trace, index))  # the commit marker: last
    run.checkpoint_path(index).unlink(missing_ok=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
