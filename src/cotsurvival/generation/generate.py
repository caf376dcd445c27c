"""Teacher chains by rejection sampling: the model answers each question, the first correct sample is kept.

For every question up to ``samples`` replies are sampled at ``temperature`` with the model's chat
template. A reply is split at its answer marker (:func:`~cotsurvival.generation.prompting.split_response`)
and verified against the gold answer (:func:`~cotsurvival.generation.verify.answers_match`); the
first correct reply with a non-empty reasoning becomes the chain ``{id, question, reasoning, answer}``.

Output
------
``out`` (JSONL) holds **accepted questions only**, so it can be fed straight to ``read_chains`` and
``cotsurvival prune``. Each row also records ``gold``, ``attempts`` (1-based index, in drawing order,
of the kept sample: what sequential rejection sampling would have needed), ``samples_drawn``,
``n_correct`` (correct among the samples drawn), ``n_new_tokens``, ``sample_answers`` (the
answer each sample gave, ``null`` when it gave none) and ``generator`` (model spec, temperature,
max_new_tokens, prompt name and hash, seed, samples).

Questions no sample answered correctly go to ``rejected_out`` (default ``<out>.rejected.jsonl``)
with ``correct: false`` and the same bookkeeping, so acceptance rates can be computed and resumed
runs skip them too.

Batching and stopping
---------------------
``batch_size`` counts sequences. When it is at least ``samples``, ``batch_size // samples``
questions share one left-padded batch and all their samples are drawn at once. Otherwise a
question's samples are drawn in rounds of ``batch_size`` and drawing stops at the first round
with a correct sample. A row stops as soon as its answer line is complete, so a model that goes
on writing more ``####`` lines does not hold the batch for ``max_new_tokens`` steps.

Reproducibility: the torch RNG is seeded from ``seed`` and the question ids of each batch, so a
resumed run draws the same samples as an uninterrupted one with the same batch size.
Sampling is pure temperature sampling (``top_k=0``, ``top_p=1``), overriding model defaults.
"""
from __future__ import annotations

import html
import json
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
import torch

from ..errors import CotSurvivalError
from ..models import load_model
from ..outputs import check_output, is_generated_file
from ..progress import make_bar
from ..results import StageResult
from .prompting import Prompt, answer_is_complete, load_prompt, split_response
from .questions import Question, as_questions, read_questions
from .verify import answers_match

SETTING_KEYS = ("model", "temperature", "max_new_tokens", "prompt", "prompt_sha256", "seed", "samples")


@dataclass(frozen=True)
class SampleResult:
    """One sampled reply, split and verified."""

    response: str
    n_new_tokens: int
    reasoning: str | None
    answer: str | None
    predicted: str | None
    correct: bool


@dataclass
class GenerationResult(StageResult):
    """Rows written (or that would be written) for accepted and rejected questions."""

    title = "cotsurvival generate"
    accepted: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    n_resumed: int = 0
    out: Path | None = None
    rejected_out: Path | None = None
    seconds: float = 0.0
    device: str | None = None

    def to_frame(self):
        """One row per question done: the accepted rows then the rejected ones (``accepted`` column)."""

        rows = [dict(r, accepted=True) for r in self.accepted] + [dict(r, accepted=False) for r in self.rejected]
        return pd.DataFrame(rows)

    def _repr_html_(self) -> str:
        return (f"<p><b>cotsurvival generate</b> accepted {len(self.accepted)}/{self.n_questions} questions "
                f"({self.acceptance_rate:.1%}; {self.n_resumed} resumed) in {self.seconds:.0f} s: "
                f"{html.escape(str(self.out))}</p>")

    @property
    def n_questions(self) -> int:
        return len(self.accepted) + len(self.rejected)

    @property
    def acceptance_rate(self) -> float:
        """Accepted questions over all questions done (0.0 when none)."""
        return len(self.accepted) / self.n_questions if self.n_questions else 0.0


def score_response(response: str, gold: str, prompt: Prompt, n_new_tokens: int = 0) -> SampleResult:
    """Split a reply at its answer marker and verify the answer against ``gold``.

    A reply without a marked answer or with empty reasoning is never correct: it could not be
    read back as a chain.
    """
    split = split_response(response, prompt.style)
    if split is None:
        return SampleResult(response, n_new_tokens, None, None, None, False)
    kind = "choice" if prompt.style == "mcq" else "auto"
    correct = bool(split.reasoning) and answers_match(split.predicted, gold, kind=kind)
    return SampleResult(response, n_new_tokens, split.reasoning, split.answer, split.predicted, correct)


def generate(
    questions: str | Path | Iterable,
    *,
    model: str = "smollm2-135m",
    out: str | Path,
    rejected_out: str | Path | None = None,
    samples: int = 10,
    temperature: float = 0.7,
    max_new_tokens: int = 1536,
    prompt: str | Path = "gsm8k",
    batch_size: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
    limit: int | None = None,
    seed: int = 0,
    resume: bool = True,
    overwrite: bool = False,
    trust_remote_code: bool = False,
    allow_unsafe_weights: bool = False,
    progress: bool = True,
) -> GenerationResult:
    """The ``generate`` stage (what ``cotsurvival generate`` runs): load ``model``, then :func:`generate_chains`.

    The questions and the prompt are read before the model loads, so a typo fails fast.
    ``model`` is a spec for :func:`cotsurvival.models.load_model`; see :func:`generate_chains` for
    the other parameters. Neither output may be the questions or the prompt file (E080); with
    ``resume=False`` an existing output that ``generate`` did not write is replaced only with
    ``overwrite`` (E081), since only then can a foreign file be lost.
    """

    inputs = [(p, "an input of this command") for p in (questions, prompt)
              if isinstance(p, (str, os.PathLike)) and Path(p).is_file()]
    default_rejected = Path(out).with_name(Path(out).name.removesuffix(".jsonl") + ".rejected.jsonl")
    for path in (out, rejected_out or default_rejected):
        check_output(path, inputs=inputs, overwrite=overwrite or resume, ours=is_generated_file, command="generate")
    items = read_questions(questions, limit=limit) if isinstance(questions, (str, Path)) else questions
    load_prompt(prompt)
    lm, tokenizer, info = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                                     allow_unsafe_weights=allow_unsafe_weights)
    started = time.perf_counter()
    result = generate_chains(items, lm, tokenizer, samples=samples, temperature=temperature,
                             max_new_tokens=max_new_tokens, prompt=prompt, batch_size=batch_size, seed=seed, out=out,
                             rejected_out=rejected_out, resume=resume, model_spec=info.spec,
                             limit=None if isinstance(questions, (str, Path)) else limit, progress=progress)
    result.seconds = time.perf_counter() - started
    result.device = str(info.device)
    return result


def generate_chains(
    questions: str | Path | Iterable,
    model,
    tokenizer,
    *,
    samples: int = 10,
    temperature: float = 0.7,
    max_new_tokens: int = 1536,
    prompt: str | Path = "gsm8k",
    batch_size: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    rejected_out: str | Path | None = None,
    resume: bool = True,
    model_spec: str | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> GenerationResult:
    """Generate teacher chains by rejection sampling (see the module docstring).

    Parameters
    ----------
    questions : str, Path or iterable
        A source for :func:`read_questions` or :class:`Question` / ``Chain`` / dict items.
    model, tokenizer
        A causal LM and its tokenizer (e.g. from :func:`cotsurvival.models.load_model`).
    samples : int
        Most samples drawn per question.
    temperature : float
        Sampling temperature; ``0`` means greedy decoding and needs ``samples=1``.
    max_new_tokens : int
        Longest reply.
    prompt : str or Path
        ``gsm8k``, ``math``, ``mcq`` or a prompt file.
    batch_size : int, optional
        Sequences per ``generate`` call; defaults to ``samples``.
    seed : int
        Seed for sampling.
    out : str or Path, optional
        JSONL file for accepted chains, appended to and flushed after every question.
    rejected_out : str or Path, optional
        JSONL file for questions never answered correctly; defaults to ``<out>.rejected.jsonl``.
    resume : bool
        Skip questions already in ``out`` / ``rejected_out``; with ``False`` both are started afresh.
    model_spec : str, optional
        Recorded as the generator's model; defaults to the model's ``name_or_path``.
    limit : int, optional
        Only the first ``limit`` questions.
    progress : bool
        Show a progress bar.

    Returns
    -------
    GenerationResult
        Accepted and rejected rows, including those resumed from the output files.
    """
    _check_options(samples, temperature, max_new_tokens, batch_size)
    chosen_prompt = load_prompt(prompt)
    items = read_questions(questions, limit=limit) if isinstance(questions, (str, Path)) else as_questions(questions)
    items = items[:limit] if limit is not None else items
    settings = {
        "model": model_spec or getattr(model, "name_or_path", None) or type(model).__name__,
        "temperature": float(temperature), "max_new_tokens": int(max_new_tokens), "prompt": chosen_prompt.name,
        "prompt_sha256": chosen_prompt.sha256, "seed": int(seed), "samples": int(samples),
    }
    result = GenerationResult()
    writer = _Writer(out, rejected_out, settings, resume)
    result.out, result.rejected_out = writer.out, writer.rejected_out
    done = writer.resume_into(result)
    todo = [q for q in items if q.id not in done]
    result.n_resumed = len(items) - len(todo)
    sampler = _Sampler(model, tokenizer, chosen_prompt, temperature, max_new_tokens)
    batch_size = batch_size or samples
    with _progress(len(items), result.n_resumed, result, progress) as bar:
        for group in _question_groups(todo, max(1, batch_size // samples)):
            for row in _run_group(group, sampler, settings, samples, batch_size, seed):
                writer.write(row)
                (result.accepted if row["correct"] else result.rejected).append(row)
                bar.update(1)
                bar.set_postfix_str(f"accepted {len(result.accepted)}/{result.n_questions} "
                                    f"({result.acceptance_rate:.0%})")
    return result


def _check_options(samples: int, temperature: float, max_new_tokens: int, batch_size: int | None) -> None:
    if samples < 1:
        raise CotSurvivalError("E086", option="samples", rule="at least 1", value=samples)
    if temperature < 0:
        raise CotSurvivalError("E086", option="temperature", rule=">= 0", value=temperature)
    if temperature == 0 and samples > 1:
        raise CotSurvivalError("E089", reason="temperature 0 (greedy) draws identical samples; use samples=1")
    if max_new_tokens < 1:
        raise CotSurvivalError("E086", option="max_new_tokens", rule="at least 1", value=max_new_tokens)
    if batch_size is not None and batch_size < 1:
        raise CotSurvivalError("E086", option="batch_size", rule="at least 1", value=batch_size)


def _question_groups(questions: Sequence[Question], per_batch: int) -> Iterable[list[Question]]:
    for start in range(0, len(questions), per_batch):
        yield list(questions[start:start + per_batch])


def _run_group(group: list[Question], sampler: "_Sampler", settings: dict, samples: int, batch_size: int,
               seed: int) -> Iterable[dict]:
    """Rows for a group of questions: all samples in one batch, or rounds for a single question."""
    if len(group) > 1 or samples <= batch_size:
        _seed_for(seed, [q.id for q in group], 0)
        drawn = sampler.sample(group, samples)
        for question, results in zip(group, drawn):
            yield _row(question, results, settings)
        return
    (question,) = group
    results: list[SampleResult] = []
    for round_index in range((samples + batch_size - 1) // batch_size):
        _seed_for(seed, [question.id], round_index)
        results += sampler.sample([question], min(batch_size, samples - len(results)))[0]
        if any(r.correct for r in results):
            break  # rejection sampling: later rounds are not needed
    yield _row(question, results, settings)


def _seed_for(seed: int, ids: list[str], round_index: int) -> None:
    key = f"{seed}\x00{chr(0).join(ids)}\x00{round_index}".encode("utf-8")
    torch.manual_seed(zlib.crc32(key))


def _row(question: Question, results: list[SampleResult], settings: dict) -> dict:
    first = next((i for i, r in enumerate(results) if r.correct), None)
    base = {"id": question.id, "question": question.question}
    bookkeeping = {
        "gold": question.gold, "correct": first is not None,
        "attempts": (first + 1) if first is not None else len(results), "samples_drawn": len(results),
        "n_correct": sum(r.correct for r in results), "sample_answers": [r.predicted for r in results],
        "generator": dict(settings),
    }
    if first is None:
        return {**base, **bookkeeping}
    kept = results[first]
    return {**base, "reasoning": kept.reasoning, "answer": kept.answer, "n_new_tokens": kept.n_new_tokens,
            **bookkeeping}


# ---------------------------------------------------------------------------------------- sampling

class _Sampler:
    """Draws k replies for each of a few questions in one left-padded ``generate`` call."""

    def __init__(self, model, tokenizer, prompt: Prompt, temperature: float, max_new_tokens: int) -> None:
        self.model, self.tokenizer, self.prompt = model, tokenizer, prompt
        self.temperature, self.max_new_tokens = temperature, max_new_tokens
        self.stop_ids = _stop_token_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]

    def prompt_ids(self, question: Question) -> list[int]:
        text = self.prompt.render(question.question)
        if getattr(self.tokenizer, "chat_template", None):
            rendered = self.tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                          add_generation_prompt=True, tokenize=False)
            return list(self.tokenizer(rendered, add_special_tokens=False)["input_ids"])
        return list(self.tokenizer(text + "\n", add_special_tokens=True)["input_ids"])

    def sample(self, questions: list[Question], k: int) -> list[list[SampleResult]]:
        """``k`` scored samples for each question, in drawing order."""
        from transformers import StoppingCriteriaList

        prompts = [self.prompt_ids(q) for q in questions]
        width = max(len(p) for p in prompts)
        # Left padding: every row's next token follows its own prompt directly.
        input_ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=self.model.device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.model.device)
        sampling = ({"do_sample": True, "temperature": self.temperature, "top_k": 0, "top_p": 1.0}
                    if self.temperature > 0 else {"do_sample": False})
        stop = _AnswerLineStop(self.tokenizer, width, self.prompt.style)
        with torch.no_grad():
            output = self.model.generate(
                input_ids=input_ids, attention_mask=attention, max_new_tokens=self.max_new_tokens,
                num_return_sequences=k, pad_token_id=self.pad_id, eos_token_id=self.stop_ids,
                stopping_criteria=StoppingCriteriaList([stop]), **sampling,
            )
        new_tokens = output[:, width:].tolist()
        results = [self._score(tokens, questions[row // k]) for row, tokens in enumerate(new_tokens)]
        return [results[i * k:(i + 1) * k] for i in range(len(questions))]

    def _score(self, tokens: list[int], question: Question) -> SampleResult:
        cut = next((i for i, t in enumerate(tokens) if t in self.stop_ids), len(tokens))
        text = self.tokenizer.decode(tokens[:cut], skip_special_tokens=True)
        return score_response(text, question.gold, self.prompt, n_new_tokens=cut)


def _stop_token_ids(model, tokenizer) -> list[int]:
    ids: list[int] = []
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        for token_id in (value if isinstance(value, (list, tuple)) else [value]):
            if token_id is not None and token_id not in ids:
                ids.append(int(token_id))
    if not ids:
        raise CotSurvivalError("E005", model=getattr(model.config, "name_or_path", "model"), reason="no EOS token")
    return ids


class _AnswerLineStop:
    """Per-row stopping criterion: a row is done once its answer line has ended.

    Only rows whose newest token holds a newline are decoded, so the check costs little.
    """

    def __init__(self, tokenizer, prompt_width: int, style: str) -> None:
        self.tokenizer, self.prompt_width, self.style = tokenizer, prompt_width, style

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for row in range(input_ids.shape[0]):
            if "\n" not in self.tokenizer.decode(input_ids[row, -1:]):
                continue
            text = self.tokenizer.decode(input_ids[row, self.prompt_width:], skip_special_tokens=True)
            done[row] = answer_is_complete(text, self.style)
        return done


# ---------------------------------------------------------------------------------------- output

class _Writer:
    """Appends finished questions to the output files (flushed per row) and reads them back to resume."""

    def __init__(self, out, rejected_out, settings: dict, resume: bool) -> None:
        self.out = Path(out) if out is not None else None
        if rejected_out is None and self.out is not None:
            rejected_out = self.out.with_name(self.out.name.removesuffix(".jsonl") + ".rejected.jsonl")
        self.rejected_out = Path(rejected_out) if rejected_out is not None else None
        self.settings, self.resume = settings, resume

    def resume_into(self, result: GenerationResult) -> set[str]:
        """Load rows already written (or truncate the files when not resuming); return their ids."""
        done: set[str] = set()
        for path in (self.out, self.rejected_out):
            if path is None:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if not self.resume or not path.exists():
                path.write_text("", encoding="utf-8")
                continue
            for row in self._read(path):
                (result.accepted if row.get("correct") else result.rejected).append(row)
                done.add(str(row["id"]))
        return done

    def _read(self, path: Path) -> list[dict]:
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            # A run killed mid-write leaves a partial last line: drop it, that question is redone.
            data = data[: data.rfind(b"\n") + 1]
            path.write_bytes(data)
        rows = []
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or "id" not in row:
                    raise ValueError("not an object with an 'id'")
            except ValueError as exc:
                raise CotSurvivalError("E066", path=path, line=number, reason=str(exc)) from None
            self._check_settings(path, row.get("generator") or {})
            rows.append(row)
        return rows

    def _check_settings(self, path: Path, recorded: dict) -> None:
        for key in SETTING_KEYS:
            if key in recorded and recorded[key] != self.settings[key]:
                raise CotSurvivalError("E065", path=path, what=key.replace("_", " "), old=recorded[key],
                                       new=self.settings[key])

    def write(self, row: dict) -> None:
        path = self.out if row["correct"] else self.rejected_out
        if path is None:
            return
        try:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise CotSurvivalError("E010", path=path, reason=exc.strerror or str(exc)) from None


def _progress(total: int, initial: int, result: GenerationResult, enabled: bool):
    bar = make_bar(total=total, initial=initial, desc="generate", unit="question", disable=not enabled)
    if initial:
        bar.set_postfix_str(f"accepted {len(result.accepted)}/{result.n_questions} (resumed)")
    return bar
