"""On-policy importance: resample each reasoning unit and watch the answer move.

Greedy survival scores text the model would never write itself (off-policy edits). This stage
measures importance *on-policy*, in the manner of Thought Anchors' resampling importance, on the
same chains and tokens as the greedy run:

* the reasoning of each chain is split into units (sentences or lines, the one splitter of
  :mod:`cotsurvival.taxonomy.units`); unit k covers reasoning tokens ``[a_k, b_k)``;
* at every **cut** ``c`` in ``a_0, a_1, ..., a_{U-1}`` and the end of the reasoning, ``--rollouts N``
  continuations are sampled from ``prefix_ids ⊕ reasoning_ids[:c]`` (temperature and top-p as given,
  at most ``max_new_tokens`` new tokens, stopping once a marked answer line ends, as ``generate``
  does). The rollouts at ``a_k`` *resample* unit k (the model writes its own replacement and
  continues); the rollouts at the next cut ``a_{k+1}`` *keep* it. So each cut's rollouts serve twice
  and a chain of U units costs ``(U + 1) · N`` rollouts;
* each rollout is scored twice: by the project's verifier (the answer after ``####`` / in
  ``\\boxed{}`` against the chain's answer: outcome ``correct`` or ``wrong``; a rollout that ends
  without a marked answer is ``truncated`` (it hit the token bound) or ``no_answer`` (it stopped),
  never ``wrong``), and by the teacher-forced ``log p(answer_ids | prefix ⊕ reasoning[:c] ⊕ the
  rollout's own reasoning)`` (the rollout cut where its answer line starts, or whole when it has
  none), the same quantity as ``recover``'s ``answer_logprob``;
* the importance of unit k (:mod:`cotsurvival.analysis.onpolicy`) is *kept minus resampled*: the
  difference in mean answer log-probability, and in the share correct among the rollouts that
  reached an answer, each with a rollout-bootstrap interval; failed rollouts are reported apart.
  Resampled rollouts whose own first unit nearly repeats unit k are no counterfactual and are left
  out (the counterfactual filter of :mod:`cotsurvival.analysis.onpolicy`; ``similarity_threshold``).

Randomness: the rollouts of one cut are drawn in chunks of ``batch_size`` identical prompts, and
chunk j is seeded with ``crc32(seed, chain_id, cut, j)`` just before its ``generate`` call, so a
cut's rollouts do not depend on which other cuts, chains or workers ran (resume and Ray give the
same rows as one local call on the same device; CPU and GPU draw different numbers).

**Regeneration check** (``regeneration_keep_ratios``): at each keep ratio R of the pruned run,
the model continues greedily from ``prefix ⊕ kept reasoning`` (the tokens greedy pruning had not
deleted, as ``recover`` and ``export`` keep them); the continuation and its outcome are stored
and :mod:`cotsurvival.analysis.onpolicy` measures how much of the deleted content, by category,
it writes back before its answer.

Rows go to ``RUN/resample.parquet/`` (one row per cut and rollout) and
``RUN/regeneration.parquet/`` (one row per keep ratio), one part per chain, rewritten atomically
after every cut, so an interrupted call resumes at the next cut of the chain it was on.
"""
from __future__ import annotations

import hashlib
import json
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .errors import CotSurvivalError
from .outputs import check_output, is_onpolicy_folder, run_inputs
from .rundir import RunDir

TABLE = "resample"
REGEN_TABLE = "regeneration"
OUTCOMES = ("correct", "wrong", "truncated", "no_answer")
FAILED = ("truncated", "no_answer")
DEFAULT_REGEN_KEEP_RATIOS = (0.9, 0.7, 0.5, 0.3)
COLUMNS = ["chain_index", "chain_id", "cut", "unit", "n_units", "rollout", "seed", "outcome", "predicted", "correct",
           "answer_logprob", "n_new_tokens", "text", "settings"]
REGEN_COLUMNS = ["chain_index", "chain_id", "keep_ratio", "n_tokens", "n_kept", "continuation_ids",
                 "continuation_words", "outcome",
                 "predicted", "correct", "answer_logprob", "n_new_tokens", "text", "settings"]


def _schemas():
    import pyarrow as pa

    # Explicit types: a part whose rollouts all failed has only nulls in ``predicted``/``correct``,
    # which pyarrow would type ``null`` and a whole-table read could then not combine with other parts.
    rollout = pa.schema([("chain_index", pa.int64()), ("chain_id", pa.string()), ("cut", pa.int64()),
                         ("unit", pa.int64()), ("n_units", pa.int64()), ("rollout", pa.int64()), ("seed", pa.int64()),
                         ("outcome", pa.string()), ("predicted", pa.string()), ("correct", pa.bool_()),
                         ("answer_logprob", pa.float64()), ("n_new_tokens", pa.int64()), ("text", pa.string()),
                         ("settings", pa.string())])
    regen = pa.schema([("chain_index", pa.int64()), ("chain_id", pa.string()), ("keep_ratio", pa.float64()),
                       ("n_tokens", pa.int64()), ("n_kept", pa.int64()), ("continuation_ids", pa.list_(pa.int64())),
                       ("continuation_words", pa.list_(pa.string())), ("outcome", pa.string()),
                       ("predicted", pa.string()), ("correct", pa.bool_()), ("answer_logprob", pa.float64()),
                       ("n_new_tokens", pa.int64()), ("text", pa.string()), ("settings", pa.string())])
    return {TABLE: rollout, REGEN_TABLE: regen}


@dataclass(frozen=True)
class SamplingOptions:
    """How rollouts are drawn (all of it recorded in the manifest and the settings key)."""

    rollouts: int = 8
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0
    max_new_tokens: int = 256
    batch_size: int = 16

    def check(self) -> "SamplingOptions":
        if self.rollouts < 2:
            raise CotSurvivalError("E160", reason="--rollouts must be at least 2 (an interval needs two rollouts per arm)")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise CotSurvivalError("E160", reason="--temperature must be > 0 and --top-p in (0, 1] (resampling samples)")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise CotSurvivalError("E160", reason="--max-new-tokens and --batch-size must be positive")
        return self


# ---------------------------------------------------------------------------------------- stage

def resample(
    run: str | Path | RunDir,
    *,
    rollouts: int = 8,
    temperature: float = 0.7,
    top_p: float = 0.95,
    seed: int = 0,
    max_new_tokens: int = 256,
    batch_size: int = 16,
    chains: Sequence[int] | None = None,
    regeneration_keep_ratios: Sequence[float] | None = DEFAULT_REGEN_KEEP_RATIOS,
    model: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    backend: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    loaded_model=None,
    progress: bool = True,
    trust_remote_code: bool = False,
    allow_unsafe_weights: bool = False,
    out: str | Path | None = None,
    similarity_threshold: float | None = None,
):
    """Resampling importance of every reasoning unit of a pruned run (module docstring).

    Parameters
    ----------
    run : path or RunDir
        A run with ``tokens.parquet`` (``cotsurvival prune``).
    rollouts : int
        Continuations per cut (each unit's kept and resampled arm get ``rollouts`` each).
    temperature, top_p : float
        Sampling settings (recorded).
    seed : int
        Base seed (recorded; see the module docstring for how each chunk is seeded).
    max_new_tokens : int
        Bound on each rollout; a rollout that reaches it without an answer is ``truncated``.
    batch_size : int
        Rollouts per ``generate`` call (part of the seeding, so part of the settings).
    chains : sequence of int, optional
        ``chain_index`` values to resample (default: every pruned chain).
    regeneration_keep_ratios : sequence of float or None
        Keep ratios for the regeneration check (those below the run's reached ratio are skipped);
        ``None`` or empty skips the check.
    backend : ``"local"`` or ``"ray"``
        ``ray`` spreads chains over Ray actors (one model each) as ``prune --backend ray`` does.
    loaded_model : tuple, optional
        ``(model, tokenizer, info)`` already loaded (local backend, or shipped to Ray actors).
    similarity_threshold : float, optional
        Resampled rollouts whose replacement unit is more similar than this to the original unit
        are no counterfactual and leave the importance (:func:`cotsurvival.analysis.onpolicy.unit_similarity`;
        default :data:`cotsurvival.analysis.onpolicy.SIMILARITY_THRESHOLD`, or the run's recorded one).
        Recorded in the manifest; it changes no rollout, so a re-run with another threshold draws nothing.
    out : str or Path, optional
        Also save the figure, tables and citations there (:meth:`OnPolicyResult.save`; paths in
        ``result.files``). Never one of the run's files or tables (E080); an existing folder only
        when it is empty or an earlier resample output (E081). Checked before any work.

    Returns
    -------
    cotsurvival.analysis.onpolicy.OnPolicyResult
        Rollouts, regeneration rows and the side-by-side statistics (``.importance()``, ``.agreement()``, ...).
    """
    from .analysis.onpolicy import SIMILARITY_MEASURE, SIMILARITY_THRESHOLD, OnPolicyResult

    run = run if isinstance(run, RunDir) else RunDir(run)
    manifest = run.require().read_manifest()
    if similarity_threshold is None:
        similarity_threshold = (manifest.get("resample") or {}).get("similarity_threshold", SIMILARITY_THRESHOLD)
    if not 0.0 <= float(similarity_threshold) <= 1.0:
        raise CotSurvivalError("E160", reason=f"--similarity-threshold must be in [0, 1], not {similarity_threshold}")
    if out is not None:
        check_output(out, inputs=run_inputs(run.path), ours=is_onpolicy_folder, command="resample", folder=True)
    options = SamplingOptions(rollouts, temperature, top_p, seed, max_new_tokens, batch_size).check()
    if backend not in ("local", "ray"):
        raise CotSurvivalError("E160", reason=f"--backend must be local or ray, not {backend!r}")
    indices = run.part_indices("tokens")
    if not indices:
        raise CotSurvivalError("E012", path=run.path, what="pruned chains", command="cotsurvival prune")
    if chains is not None:
        missing = sorted(set(int(c) for c in chains) - set(indices))
        if missing:
            raise CotSurvivalError("E160", reason=f"chains {missing} are not pruned in {run.path} (pruned: {indices})")
        indices = sorted(set(int(c) for c in chains))
    ratios = _regen_ratios(regeneration_keep_ratios, manifest)
    table = run.read_chains().set_index("chain_index")
    jobs = [_job(run, i, table.loc[i]) for i in indices]
    spec = model or manifest["model"]["spec"]
    began = time.perf_counter()
    if backend == "ray":
        info, counts = run_on_ray(run, jobs, options, ratios, manifest, spec=spec, loaded_model=loaded_model,
                                  device=device, dtype=dtype, workers=workers, address=ray_address, progress=progress,
                                  trust_remote_code=trust_remote_code, allow_unsafe_weights=allow_unsafe_weights)
    else:
        if loaded_model is None:
            from .models import load_model

            loaded_model = load_model(spec, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                                      allow_unsafe_weights=allow_unsafe_weights)
        worker = ChainResampler(*loaded_model)
        worker.check_tokenizer(jobs[0], run)
        info = loaded_model[2]
        counts = _run_local(run, worker, jobs, options, ratios, manifest, progress)
    seconds = time.perf_counter() - began
    settings = settings_key(info, manifest, options)
    run.update_manifest(resample={
        "model": info.spec, "model_sha256": info.sha256, "dtype": info.dtype, "device": str(info.device),
        "rollouts": options.rollouts, "temperature": options.temperature, "top_p": options.top_p,
        "seed": options.seed, "seeding": "torch.manual_seed(crc32(seed, chain_id, cut, chunk)) per generate call",
        "max_new_tokens": options.max_new_tokens, "batch_size": options.batch_size,
        "splitter": _splitter_version(), "regeneration_keep_ratios": ratios, "settings": settings,
        "similarity_threshold": float(similarity_threshold), "similarity": SIMILARITY_MEASURE,
        "backend": backend, "n_chains": len(indices), "rollouts_last_invocation": counts["rollouts"],
        **({"ray": {"workers": counts["workers"], "retries": counts["retries"]}} if backend == "ray" else {}),
        "seconds_last_invocation": round(seconds, 3),
        "rollouts_per_second_last_invocation": round(counts["rollouts"] / seconds, 3) if counts["rollouts"] else None})
    result = OnPolicyResult.from_run(run, chains=indices)
    if out is not None:
        result.save(out)
    return result


def _splitter_version() -> str:
    from .taxonomy.units import SPLITTER_VERSION

    return SPLITTER_VERSION


def settings_key(info, manifest, options: SamplingOptions) -> str:
    """What a resumed chain's rows must have been made with (else they are redone)."""
    blob = json.dumps([info.spec, info.sha256, info.dtype, manifest.get("settings", {}).get("chains_fingerprint"),
                       options.rollouts, options.temperature, options.top_p, options.seed, options.max_new_tokens,
                       options.batch_size, _splitter_version(), "resample-v1"])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _regen_ratios(keep_ratios, manifest) -> list[float]:
    ratios = sorted({float(r) for r in keep_ratios or ()}, reverse=True)
    for r in ratios:
        if not 0.0 < r < 1.0:
            raise CotSurvivalError("E160", reason=f"regeneration keep ratios must be in (0, 1), not {r}")
    return [r for r in ratios if r >= float(manifest.get("keep_ratio", 0.0))]


@dataclass
class Job:
    """One chain's inputs, small and picklable (shipped to Ray actors)."""

    index: int
    chain_id: str
    reasoning: str
    answer: str
    prefix_ids: list
    reasoning_ids: list
    answer_ids: list
    offsets: list
    deleted_step: np.ndarray
    cuts: list = field(default_factory=list)  # (cut token, unit index) for k = 0..U (U = the end)


def _job(run: RunDir, index: int, chain) -> Job:
    from .taxonomy.units import unit_spans

    tokens = run.read_part("tokens", index, columns=["position", "char_start", "char_end", "deleted_step"])
    tokens = tokens.sort_values("position")
    offsets = list(zip(tokens["char_start"].astype(int), tokens["char_end"].astype(int)))
    spans = unit_spans(offsets, chain["reasoning"])
    cuts = [(first, k) for k, (first, _, _) in enumerate(spans)] + [(len(offsets), len(spans))]
    return Job(int(index), str(chain["chain_id"]), str(chain["reasoning"]), str(chain["answer"]),
               list(chain["prefix_ids"]), list(chain["reasoning_ids"]), list(chain["answer_ids"]), offsets,
               tokens["deleted_step"].to_numpy(dtype="float64", na_value=np.nan), cuts)


# ---------------------------------------------------------------------------------------- local loop

def _read_part(run: RunDir, table: str, index: int, settings: str) -> pd.DataFrame | None:
    if not run.has_part(table, index):
        return None
    try:
        frame = run.read_part(table, index)
    except CotSurvivalError:  # a damaged part only costs its recomputation
        run.part_path(table, index).unlink(missing_ok=True)
        return None
    return frame[frame["settings"] == settings].reset_index(drop=True)


def pending(run: RunDir, job: Job, settings: str, ratios: list[float]) -> tuple[list, list, pd.DataFrame | None,
                                                                                   pd.DataFrame | None]:
    """Cuts and keep ratios of ``job`` not yet on disk with these settings, and the rows that are."""
    old = _read_part(run, TABLE, job.index, settings)
    done = set() if old is None else set(old["cut"].astype(int))
    old_regen = _read_part(run, REGEN_TABLE, job.index, settings) if ratios else None
    done_r = set() if old_regen is None else set(old_regen["keep_ratio"].astype(float))
    return ([c for c in job.cuts if c[0] not in done], [r for r in ratios if r not in done_r], old, old_regen)


def commit(run: RunDir, table: str, index: int, old: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    """Append ``new`` rows to a chain's part (atomic rewrite) and return the part."""
    frame = new if old is None or old.empty else pd.concat([old, new], ignore_index=True)
    key = ["cut", "rollout"] if table == TABLE else ["keep_ratio"]
    frame = frame.sort_values(key, kind="stable").reset_index(drop=True)
    import pyarrow as pa

    frame["correct"] = frame["correct"].astype("boolean")
    run.write_part(table, index, pa.Table.from_pandas(frame, schema=_schemas()[table], preserve_index=False))
    return frame


def _run_local(run, worker: "ChainResampler", jobs, options, ratios, manifest, progress) -> dict:
    from .progress import make_bar
    from .threads import cap_torch_threads

    settings = settings_key(worker.info, manifest, options)
    todo = [(job, *pending(run, job, settings, ratios)) for job in jobs]
    # As prune does: torch threads beyond the CPUs other processes leave idle only wait at every
    # kernel's barrier, and a decode step is all small kernels (BENCHMARKS.md, "Engine reach").
    cap_torch_threads()
    total = sum(len(cuts) + len(rs) for _, cuts, rs, _, _ in todo)
    counts = {"rollouts": 0}
    bar = make_bar(total=total, desc="resample", unit="cut", disable=not progress)
    began = time.perf_counter()
    try:
        for job, cuts, rs, old, old_regen in todo:
            for cut in cuts:
                cap_torch_threads(own_load=torch.get_num_threads())  # the machine's load changes over a run
                new = worker.rollouts_at(job, cut, options, settings)
                old = commit(run, TABLE, job.index, old, new)
                counts["rollouts"] += len(new)
                bar.update(1)
                bar.set_postfix_str(f"{counts['rollouts'] / (time.perf_counter() - began):.2f} rollouts/s")
            if rs:
                commit(run, REGEN_TABLE, job.index, old_regen, worker.regenerate(job, rs, options, settings))
                bar.update(len(rs))
    finally:
        bar.close()
    return counts


# ---------------------------------------------------------------------------------------- the work

class ChainResampler:
    """Draws and scores rollouts for one model (used in-process and inside each Ray actor)."""

    def __init__(self, model, tokenizer, info) -> None:
        from .generation.generate import _stop_token_ids

        self.model, self.tokenizer, self.info = model, tokenizer, info
        self.stop_ids = _stop_token_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]

    def check_tokenizer(self, job: Job, run: RunDir) -> None:
        """The run's token ids must be what this tokenizer makes (else every sequence would be garbage)."""
        ids = self.tokenizer(job.reasoning, add_special_tokens=False)["input_ids"]
        if list(ids) != list(job.reasoning_ids):
            raise CotSurvivalError("E160", reason=f"this model's tokenizer does not reproduce the token ids of "
                                                  f"{run.path} (use the model that pruned the run)")

    # ------------------------------------------------------------------ rollouts
    def rollouts_at(self, job: Job, cut: tuple[int, int], options: SamplingOptions, settings: str) -> pd.DataFrame:
        """``options.rollouts`` scored continuations from ``prefix ⊕ reasoning[:cut]``."""
        position, unit = cut
        prompt = job.prefix_ids + job.reasoning_ids[:position]
        drawn, seeds = [], []
        for chunk, first in enumerate(range(0, options.rollouts, options.batch_size)):
            n = min(options.batch_size, options.rollouts - first)
            chunk_seed = chunk_seed_of(options.seed, job.chain_id, position, chunk)
            drawn += self.sample(prompt, n, options, chunk_seed, _style_of(job.answer))
            seeds += [chunk_seed] * n
        scored = self.score(prompt, drawn, job, options)
        return pd.DataFrame([{"chain_index": job.index, "chain_id": job.chain_id, "cut": int(position), "unit": int(unit),
                              "n_units": len(job.cuts) - 1, "rollout": r, "seed": seeds[r], **scored[r],
                              "settings": settings} for r in range(len(drawn))], columns=COLUMNS)

    @torch.inference_mode()
    def sample(self, prompt: list[int], n: int, options: SamplingOptions, seed: int | None, style: str,
               greedy: bool = False) -> list[list[int]]:
        """``n`` continuations of one prompt (new tokens, cut at the first stop token); seeded just before drawing."""
        from transformers import StoppingCriteriaList

        from .generation.generate import _AnswerLineStop

        device = next(self.model.parameters()).device
        ids = torch.tensor([prompt] * n, device=device)
        sampling = ({"do_sample": False} if greedy else
                    {"do_sample": True, "temperature": options.temperature, "top_p": options.top_p, "top_k": 0})
        if seed is not None:
            torch.manual_seed(seed)
        out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                  max_new_tokens=options.max_new_tokens, pad_token_id=self.pad_id,
                                  eos_token_id=self.stop_ids,
                                  stopping_criteria=StoppingCriteriaList([_AnswerLineStop(self.tokenizer, len(prompt),
                                                                                          style)]),
                                  **sampling)
        rows = []
        for row in out[:, len(prompt):].tolist():
            stop = next((k for k, t in enumerate(row) if t in self.stop_ids), None)
            rows.append(row[:stop] + [self.stop_ids[0]] if stop is not None else row)  # keep one stop: "it ended"
        return rows

    def score(self, prompt: list[int], drawn: list[list[int]], job: Job, options: SamplingOptions) -> list[dict]:
        """Verifier outcome and teacher-forced answer log-probability of each continuation."""
        from .generation.prompting import split_response
        from .generation.questions import gold_from_answer
        from .generation.verify import answers_match
        from .recovery import answer_logprobs

        gold, style = gold_from_answer(job.answer), _style_of(job.answer)
        out, bodies = [], []
        for tokens in drawn:
            ended = bool(tokens) and tokens[-1] in self.stop_ids
            new = tokens[:-1] if ended else tokens
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            split = split_response(text, style)
            if split is not None:
                reasoning = self._tokens_before(new, _line_start(text, style))
                outcome = "correct" if answers_match(split.predicted, gold) else "wrong"
            else:
                reasoning = new
                outcome = "truncated" if not ended and len(new) >= options.max_new_tokens else "no_answer"
            bodies.append(prompt + self._strip_trailing_space(reasoning))
            out.append({"outcome": outcome, "predicted": split.predicted if split is not None else None,
                        "correct": (outcome == "correct") if split is not None else None,
                        "n_new_tokens": len(new), "text": text})
        logprobs = answer_logprobs(self.model, bodies, job.answer_ids, options.batch_size)
        for row, lp in zip(out, logprobs):
            row["answer_logprob"] = float(lp)
        return out

    def _tokens_before(self, tokens: list[int], char: int) -> list[int]:
        """The longest prefix of ``tokens`` whose decoded text ends at or before character ``char``."""
        lo, hi = 0, len(tokens)
        while lo < hi:  # decoded length grows with the prefix: bisect instead of decoding every prefix
            mid = (lo + hi + 1) // 2
            if len(self.tokenizer.decode(tokens[:mid], skip_special_tokens=True)) <= char:
                lo = mid
            else:
                hi = mid - 1
        return tokens[:lo]

    def _strip_trailing_space(self, tokens: list[int]) -> list[int]:
        # The answer ids begin with the separator newline; a rollout's own trailing blank is dropped
        # so that the answer follows its reasoning as in the original chain.
        end = len(tokens)
        while end and not self.tokenizer.decode(tokens[end - 1: end], skip_special_tokens=True).strip():
            end -= 1
        return tokens[:end]

    # ------------------------------------------------------------------ regeneration
    def regenerate(self, job: Job, ratios: list[float], options: SamplingOptions, settings: str) -> pd.DataFrame:
        """Greedy continuation from the pruned reasoning at each keep ratio (one row per ratio)."""
        from .recovery import kept_positions

        rows = []
        for ratio in ratios:
            kept = kept_positions(job.deleted_step, ratio)
            prompt = job.prefix_ids + [job.reasoning_ids[i] for i in kept]
            drawn = self.sample(prompt, 1, options, None, _style_of(job.answer), greedy=True)
            scored = self.score(prompt, drawn, job, options)[0]
            tokens = drawn[0][:-1] if drawn[0] and drawn[0][-1] in self.stop_ids else drawn[0]
            text = scored["text"]
            continuation = self._tokens_before(tokens, _line_start(text, _style_of(job.answer)))
            rows.append({"chain_index": job.index, "chain_id": job.chain_id, "keep_ratio": float(ratio),
                         "n_tokens": len(job.reasoning_ids), "n_kept": len(kept), "continuation_ids": continuation,
                         "continuation_words": [self.tokenizer.decode([t]).strip().lower() for t in continuation],
                         **{k: scored[k] for k in ("outcome", "predicted", "correct", "answer_logprob", "n_new_tokens",
                                                   "text")}, "settings": settings})
        return pd.DataFrame(rows, columns=REGEN_COLUMNS)


def chunk_seed_of(seed: int, chain_id: str, cut: int, chunk: int) -> int:
    """The seed of one ``generate`` call: a function of the run's seed and where the rollouts start."""
    return zlib.crc32(f"{seed}\x00{chain_id}\x00{cut}\x00{chunk}".encode("utf-8"))


def _style_of(answer: str) -> str:
    from .analysis.onpolicy import answer_style

    return answer_style(answer)


def _line_start(text: str, style: str) -> int:
    from .analysis.onpolicy import answer_line_start

    return answer_line_start(text, style)


# ---------------------------------------------------------------------------------------- Ray backend
# The same pattern as ``prune --backend ray`` (cotsurvival.pruning.ray_backend, whose cluster
# connection, error handling and job dispatch this reuses): each actor loads the model once and runs
# ChainResampler on whole chains; the driver alone writes the run directory, a chain's rows as soon
# as they arrive. Rollouts are seeded by cut, not by worker or order of work, so a Ray run holds the
# same rows as a local one on the same kind of device and either backend resumes the other's run. An
# actor that dies (node lost, OOM-killed) is replaced and its chain handed to another actor, up to
# ``max_retries`` times (then E071); nothing of a chain is written until its rows arrive, so nothing
# is lost or written twice. A chain that fails on a live actor fails the call (E162, or the error the
# local backend would raise); committed chains are kept, so re-running resumes.

ACTOR_NAME = "cotsurvival-resample-{run}-{k}"


class _RayWorker:
    """Actor body (wrapped with ``ray.remote`` at start): loads the model once, resamples chains."""

    def __init__(self, spec, loaded, device, dtype, trust_remote_code, allow_unsafe_weights, threads):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.error = None
        try:
            if loaded is None:
                from .models import load_model

                loaded = load_model(spec, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                                    allow_unsafe_weights=allow_unsafe_weights)
            self.worker = ChainResampler(*loaded)
        except CotSurvivalError as exc:  # sent back as (code, fields): the driver raises the same one-line error
            from .pruning.ray_backend import _Failure

            self.error = _Failure(exc.code, exc.fields)

    def info(self):
        return self.error if self.error is not None else self.worker.info

    def chain(self, job, cuts, ratios, options, settings):
        from .pruning.ray_backend import _Failure

        try:
            rollouts = [self.worker.rollouts_at(job, cut, options, settings) for cut in cuts]
            regen = self.worker.regenerate(job, ratios, options, settings) if ratios else None
        except CotSurvivalError as exc:
            return _Failure(exc.code, exc.fields)
        except Exception as exc:  # noqa: BLE001 - any other failure of the chain: one line naming it
            return _Failure("E162", {"chain": job.chain_id, "reason": " ".join(str(exc).split())[:300]})
        return job.index, rollouts, regen


def _submit(actor, job, options, settings):
    """Hand one chain's pending cuts and keep ratios to an actor (the object ref of its rows)."""
    chain, cuts, ratios = job[:3]
    return actor.chain.remote(chain, cuts, ratios, options, settings)


def run_on_ray(run, jobs, options, ratios, manifest, *, spec, loaded_model, device, dtype, workers, address, progress,
               trust_remote_code, allow_unsafe_weights, max_retries: int = 3):
    """Resample ``jobs`` on Ray actors; returns ``(ModelInfo, {"rollouts": n, "retries": [...], "workers": n})``."""
    import os

    from .progress import make_bar
    from .pruning.ray_backend import _connect, _Failure, _import_ray, dispatch, put_loaded_model

    ray = _import_ray()
    owns = False if ray.is_initialized() else _connect(ray, address, workers, 1.0)
    resources = ray.cluster_resources()
    gpus = float(resources.get("GPU", 0))
    per_gpu = 1.0 if gpus >= 1 else 0.0
    if workers is None:
        workers = max(1, int(gpus) if per_gpu else int(resources.get("CPU", 1)))
    remote = ray.remote(num_cpus=1, num_gpus=per_gpu, max_restarts=0)(_RayWorker)
    shipped = put_loaded_model(ray, loaded_model)
    tag = f"{os.getpid()}-{int(time.time() * 1000) % 10**8}"
    actors: dict = {}

    def factory():
        name = ACTOR_NAME.format(run=tag, k=len(actors) + len(retries))
        actors[name] = remote.options(name=name).remote(spec, shipped, device, dtype, trust_remote_code,
                                                        allow_unsafe_weights, 1 if per_gpu == 0 else 0)
        return name

    retries: list = []
    for _ in range(workers):
        factory()
    try:
        infos = ray.get([a.info.remote() for a in actors.values()])
        failed = [i for i in infos if isinstance(i, _Failure)]
        if failed:
            raise failed[0].error()
        info = infos[0]
        settings = settings_key(info, manifest, options)
        queue, total = [], 0
        for job in jobs:
            cuts, rs, old, old_regen = pending(run, job, settings, ratios)
            if cuts or rs:
                queue.append((job, cuts, rs, old, old_regen))
                total += len(cuts) + len(rs)
        counts = {"rollouts": 0, "retries": retries, "workers": workers}
        bar = make_bar(total=total, desc=f"resample (ray, {workers} workers)", unit="cut", disable=not progress)
        began = time.perf_counter()
        try:
            for (job, cuts, rs, old, old_regen), result, _ in dispatch(
                    ray, actors, factory, queue, lambda actor, item: _submit(actor, item, options, settings),
                    key=lambda item: (item[0].index, item[0].chain_id), max_retries=max_retries, retries=retries):
                _, rollouts, regen = result
                for frame in rollouts:
                    old = commit(run, TABLE, job.index, old, frame)
                    counts["rollouts"] += len(frame)
                if regen is not None:
                    commit(run, REGEN_TABLE, job.index, old_regen, regen)
                bar.update(len(cuts) + len(rs))
                bar.set_postfix_str(f"{counts['rollouts'] / (time.perf_counter() - began):.2f} rollouts/s")
        finally:
            bar.close()
    finally:
        for actor in actors.values():
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if owns:
            ray.shutdown()
    return info, counts
