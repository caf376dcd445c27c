"""Checking the arithmetic of the equations the tagger found (``equation_correct``).

Only runs of SYMBOLIC_MATH spans on one line are considered, and only after they are reduced to
digits, ``.``, ``+ - * /``, brackets and ``=`` (money signs, thousands separators and ``%`` are
normalised first). Anything else (words, variables, LaTeX other than ``\\times``, ``\\cdot``,
``\\div``, ``\\frac{a}{b}``) is skipped, so sympy never sees raw text.
"""
from __future__ import annotations

import re
from typing import NamedTuple, Sequence

_ALLOWED = re.compile(r"^[\d.+\-*/() ]+$")
_REPLACEMENTS = [(r"\\times|\\cdot|[x×·⋅]", "*"), (r"\\div|÷", "/"), (r"[−–]", "-"), (r"\\?\$|[€£¥₹]", ""),
                 (r"(?<=\d)\{,\}(?=\d{3})|(?<=\d),(?=\d{3})", ""), (r"\\left|\\right|\\[(\[\])]", " "),
                 (r"\[|\]", " ")]
_FRAC = re.compile(r"\\d?frac\{([^{}]+)\}\{([^{}]+)\}")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*\\?%")


class Equation(NamedTuple):
    """A checked equation: character range in the reasoning, its text, and whether it holds."""

    start: int
    end: int
    text: str
    correct: bool


def find_equations(text: str, spans: Sequence[Sequence]) -> list[Equation]:
    """Equations among the SYMBOLIC_MATH spans of ``text`` and whether their sides agree.

    Sides agree when they are equal to within 1% (reasoning texts round, e.g. ``100/3 = 33.33``).
    """
    equations = []
    for start, end in _math_runs(text, spans):
        expression = text[start:end]
        if "=" not in expression:
            continue
        correct = _check(expression)
        if correct is not None:
            equations.append(Equation(start, end, expression, correct))
    return equations


def _math_runs(text: str, spans: Sequence[Sequence]) -> list[tuple[int, int]]:
    runs: list[list[int]] = []
    for start, end, label in spans:
        if label != "SYMBOLIC_MATH":
            continue
        if runs and text[runs[-1][1]:start].strip(" \t") == "":
            runs[-1][1] = end
        else:
            runs.append([start, end])
    return [(a, b) for a, b in runs]


def _check(expression: str) -> bool | None:
    import sympy

    cleaned = expression
    if cleaned.startswith("<<") and cleaned.endswith(">>"):
        cleaned = cleaned[2:-2]
    cleaned = _FRAC.sub(r"((\1)/(\2))", cleaned)
    cleaned = _PERCENT.sub(r"(\1/100)", cleaned)
    for pattern, replacement in _REPLACEMENTS:
        cleaned = re.sub(pattern, replacement, cleaned)
    sides = [side.strip() for side in cleaned.split("=")]
    if len(sides) < 2 or any(not side or not _ALLOWED.match(side) or "**" in side for side in sides):
        # '**' is refused: a power tower such as 9**9**9 would make sympy compute for minutes.
        return None
    try:
        # Safe: each side holds only digits, '.', '+-*/', brackets and spaces (checked above).
        values = [sympy.nsimplify(sympy.sympify(side, rational=True)) for side in sides]
    except (sympy.SympifyError, SyntaxError, TypeError, ZeroDivisionError, ValueError):
        return None
    if any(not v.is_number or v.has(sympy.zoo, sympy.nan) for v in values):
        return None
    first = float(values[0])
    return all(abs(float(v) - first) <= 0.01 * max(1.0, abs(first)) for v in values[1:])
