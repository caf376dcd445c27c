"""Reading the questions to generate chains for, each with its gold answer.

Accepted sources
----------------
* the built-in corpus ``"gsm8k"`` (gold = the number after ``####``);
* JSONL / JSON / CSV / Parquet files with ``question`` and ``answer`` columns (``id`` optional;
  ``problem``/``solution`` as in MATH are read too). The answer may be the bare gold value
  (``18``, ``\\frac{1}{2}``, ``B``) or a worked solution ending in ``#### n`` (GSM8K's native
  files) or containing ``\\boxed{...}`` (MATH): the gold is then the value after the last
  ``####`` or inside the last ``\\boxed{}``. A ``choices``/``options`` list is appended to the
  question as ``(A) ... (B) ...`` lines;
* otherwise, a Hugging Face dataset ``NAME[:CONFIG][@SPLIT]`` (split ``test`` by default), which
  needs the ``datasets`` package and network access or a populated cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from ..chains import BUILTIN_CORPORA, _records_from_file, read_chains
from ..errors import ChainInputError, CotSurvivalError
from .prompting import last_boxed

_FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
_QUESTION_KEYS = ("question", "problem")
_ANSWER_KEYS = ("answer", "solution")


@dataclass(frozen=True)
class Question:
    """A question and the gold answer a sample must match."""

    id: str
    question: str
    gold: str


def gold_from_answer(answer: str) -> str:
    """The gold value in an answer field: after the last ``####``, inside the last ``\\boxed{}``, or all of it.

    >>> gold_from_answer("She has 5+3=8.\\n#### 8")
    '8'
    """
    text = str(answer).strip()
    if "####" in text:
        return text.rsplit("####", 1)[1].strip()
    boxed = last_boxed(text)
    return boxed if boxed is not None else text


def read_questions(source: str | Path, *, limit: int | None = None) -> list[Question]:
    """Read questions and gold answers from a file, the built-in corpus or a Hugging Face dataset.

    Parameters
    ----------
    source : str or Path
        See the module docstring.
    limit : int, optional
        Keep the first ``limit`` questions.

    Returns
    -------
    list of Question
    """
    name = str(source)
    if name in BUILTIN_CORPORA:
        questions = [Question(c.id, c.question, gold_from_answer(c.answer)) for c in read_chains(name, limit=limit)]
    elif Path(name).expanduser().is_file():
        questions = list(_file_questions(Path(name).expanduser(), limit))
    elif Path(name).suffix.lower() in _FILE_SUFFIXES or name.startswith((".", "/", "~")):
        raise ChainInputError("E001", path=name)
    else:
        questions = list(_hub_questions(name, limit))
    if not questions:
        raise CotSurvivalError("E060", source=name, reason="no questions in it")
    return questions


def as_questions(items: Iterable) -> list[Question]:
    """Questions from :class:`Question`, :class:`~cotsurvival.chains.Chain` objects or ``{question, answer}`` dicts."""
    questions = []
    for index, item in enumerate(items):
        if isinstance(item, Question):
            questions.append(item)
        elif isinstance(item, dict):
            questions.append(_question_from_record(item, index + 1, "question"))
        elif hasattr(item, "question") and hasattr(item, "answer"):
            questions.append(Question(str(getattr(item, "id", f"question-{index + 1}")), item.question,
                                      gold_from_answer(item.answer)))
        else:
            raise CotSurvivalError("E060", source="<questions>", reason=f"item {index} is a {type(item).__name__}")
    return questions


def _file_questions(path: Path, limit: int | None) -> Iterator[Question]:
    seen: set[str] = set()
    count = 0
    for line, record in _records_from_file(path):
        try:
            if isinstance(record, Exception):
                raise record
            question = _question_from_record(record, line, path.stem)
            if question.id in seen:
                raise ValueError(f"duplicate id {question.id!r}")
        except (ValueError, TypeError, KeyError) as exc:
            raise ChainInputError("E002", path=path, line=line, reason=str(exc).strip("'\"")) from None
        seen.add(question.id)
        yield question
        count += 1
        if limit is not None and count >= limit:
            return


def _question_from_record(record: object, line: int, stem: str) -> Question:
    if not isinstance(record, dict):
        raise TypeError(f"expected an object with 'question' and 'answer', got {type(record).__name__}")
    question = next((record[k] for k in _QUESTION_KEYS if record.get(k) is not None), None)
    answer = next((record[k] for k in _ANSWER_KEYS if record.get(k) is not None), None)
    if not isinstance(question, str) or not question.strip():
        raise KeyError("missing field 'question'")
    if answer is None or not str(answer).strip():
        raise KeyError("missing field 'answer'")
    choices = record.get("choices") or record.get("options")
    if isinstance(choices, (list, tuple)) and choices:
        letters = "ABCDEFGHIJ"
        question = question.rstrip() + "\n" + "\n".join(f"({letters[i]}) {c}" for i, c in enumerate(choices[:10]))
    gold = gold_from_answer(str(answer))
    raw_id = record.get("id")
    return Question(f"{stem}-{line}" if raw_id in (None, "") else str(raw_id), question, gold)


def _hub_questions(name: str, limit: int | None) -> Iterator[Question]:
    try:
        import datasets
    except ImportError:
        raise CotSurvivalError("E061", source=name) from None
    dataset_name, _, split = name.partition("@")
    dataset_name, _, config = dataset_name.partition(":")
    try:
        rows = datasets.load_dataset(dataset_name, config or None, split=split or "test")
    except Exception as exc:  # datasets raises many unrelated types (connection, missing config, ...)
        raise CotSurvivalError("E062", source=name, reason=" ".join(str(exc).split())[:200]) from None
    stem = dataset_name.replace("/", "-")
    for index, row in enumerate(rows):
        if limit is not None and index >= limit:
            return
        try:
            yield _question_from_record(dict(row), index + 1, stem)
        except (ValueError, TypeError, KeyError) as exc:
            raise CotSurvivalError("E060", source=name, reason=f"row {index}: {str(exc).strip(chr(39))}") from None
