"""Prompts that ask for step-by-step reasoning and a marked final answer, and splitting the reply.

Three prompts ship with the package (``generation/prompts/*.txt``):

========  =====================================  =================================
name      final answer marker                    verified as
========  =====================================  =================================
gsm8k     a last line ``#### <number>``          a number (exact)
math      ``Final answer: $\\boxed{...}$``       LaTeX, by symbolic equivalence
mcq       a last line ``Answer: <letter>``       a multiple-choice letter
========  =====================================  =================================

A prompt file of one's own is plain text in which ``{question}`` is replaced by the question
(literally, so LaTeX braces need no escaping). Its answer style is read from the text: it must
mention ``####``, ``\\boxed`` or ``Answer:``.

A reply is split at the *first* line that carries the marker: the text before it is the
reasoning, that line is the answer, and anything after it is dropped (generation stops there
anyway, see :mod:`cotsurvival.generation.generate`).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from ..errors import CotSurvivalError

AnswerStyle = Literal["gsm8k", "math", "mcq"]
BUILTIN_PROMPTS = ("gsm8k", "math", "mcq")
PLACEHOLDER = "{question}"

_GSM8K_LINE = re.compile(r"^[ \t*>]*####[ \t]*(?P<answer>[^\n]*?)[ \t*]*$", re.MULTILINE)
_MCQ_LINE = re.compile(r"^[ \t*>#]*(?:final[ \t]+)?answer[ \t*]*(?:is)?[ \t]*[:=][ \t*]*(?P<answer>[^\n]*?)[ \t*]*$",
                       re.MULTILINE | re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


@dataclass(frozen=True)
class Prompt:
    """A user-message template and the answer style it asks for."""

    name: str
    template: str
    style: AnswerStyle

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.template.encode("utf-8")).hexdigest()

    def render(self, question: str) -> str:
        """The user message for ``question``."""
        return self.template.replace(PLACEHOLDER, question.strip())


@dataclass(frozen=True)
class SplitResponse:
    """A reply cut at its answer marker."""

    reasoning: str
    answer: str  # the answer line, as a chain's ``answer`` field (``#### 18``)
    predicted: str  # just the answer value (``18``), what is verified


def load_prompt(prompt: str | Path = "gsm8k") -> Prompt:
    """A built-in prompt by name (``gsm8k``, ``math``, ``mcq``) or a prompt file.

    Raises
    ------
    CotSurvivalError
        E063 when the prompt is neither; E064 when a file lacks ``{question}`` or an answer marker.
    """
    name = str(prompt)
    if name in BUILTIN_PROMPTS:
        text = resources.files("cotsurvival.generation").joinpath("prompts", f"{name}.txt").read_text("utf-8")
        return Prompt(name=name, template=text, style=name)  # type: ignore[arg-type]
    path = Path(name).expanduser()
    if not path.is_file():
        raise CotSurvivalError("E063", prompt=name, choices=", ".join(BUILTIN_PROMPTS))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise CotSurvivalError("E064", path=path, reason="not UTF-8 text") from None
    if PLACEHOLDER not in text:
        raise CotSurvivalError("E064", path=path, reason="it has no {question} placeholder")
    return Prompt(name=str(path), template=text, style=detect_style(text, path))


def detect_style(text: str, path: Path | str = "<prompt>") -> AnswerStyle:
    """The answer style a prompt asks for, from the marker it mentions."""
    if "####" in text:
        return "gsm8k"
    if _BOXED.search(text):
        return "math"
    if re.search(r"answer\s*:", text, re.IGNORECASE):
        return "mcq"
    raise CotSurvivalError("E064", path=path, reason="it asks for no final-answer marker (####, \\boxed{} or Answer:)")


def split_response(response: str, style: AnswerStyle) -> SplitResponse | None:
    """Split a reply into reasoning and answer at the first marked answer, or ``None`` if none.

    >>> split_response("2 + 3 = 5\\n#### 5\\n#### 6", "gsm8k")
    SplitResponse(reasoning='2 + 3 = 5', answer='#### 5', predicted='5')
    """
    found = find_answer(response, style)
    if found is None:
        return None
    line_start, line_end, predicted = found
    answer_line = response[line_start:line_end].strip()
    if style == "gsm8k":
        answer_line = "#### " + predicted
    return SplitResponse(reasoning=response[:line_start].strip(), answer=answer_line, predicted=predicted)


def find_answer(text: str, style: AnswerStyle) -> tuple[int, int, str] | None:
    """``(line_start, line_end, value)`` of the first non-empty marked answer in ``text``."""
    if style == "math":
        return _find_boxed(text)
    pattern = _GSM8K_LINE if style == "gsm8k" else _MCQ_LINE
    for match in pattern.finditer(text):
        if match["answer"].strip():
            return match.start(), match.end(), match["answer"].strip()
    return None


def answer_is_complete(text: str, style: AnswerStyle) -> bool:
    """Whether ``text`` holds a marked answer whose line has ended (so generation can stop)."""
    found = find_answer(text, style)
    return found is not None and text[found[1]:].startswith("\n")


def _find_boxed(text: str) -> tuple[int, int, str] | None:
    for match in _BOXED.finditer(text):
        content_end = _closing_brace(text, match.end())
        if content_end is None:
            return None
        content = text[match.end():content_end].strip()
        if not content:
            continue
        line_start = text.rfind("\n", 0, match.start()) + 1
        line_end = text.find("\n", content_end)
        return line_start, len(text) if line_end < 0 else line_end, content
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` in ``text``."""
    found = None
    for match in _BOXED.finditer(text):
        end = _closing_brace(text, match.end())
        if end is not None and text[match.end():end].strip():
            found = text[match.end():end].strip()
    return found


def _closing_brace(text: str, start: int) -> int | None:
    depth = 1
    for index in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return index
    return None
