"""Splitting a reasoning text into units (sentences or steps), and mapping model tokens onto them.

One splitter for every place that needs reasoning units (on-policy resampling, per-unit survival):

* a unit ends at a **line break** (chains of thought put one step per line), or
* at **sentence-final punctuation** (``.``, ``!``, ``?``, optionally followed by closing quotes or
  brackets) that is followed by whitespace and then by something other than a lower-case letter
  (so ``e.g. the`` and ``3.5`` do not split, ``... = 24 clips. Natalia`` does);
* a unit is the character range from its first to its last non-whitespace character; whitespace
  between units belongs to none, so every non-whitespace character is in exactly one unit.

It is a regular expression rather than spaCy's parser because resampling cuts the model's own
token sequence at unit boundaries: the cut must be reproducible from the text alone, fast, and
independent of a parser model's version.

>>> [text for _, _, text in split_units("So 48/2 = 24 clips. Then 3.5 more.\\nThus 72.")]
['So 48/2 = 24 clips.', 'Then 3.5 more.', 'Thus 72.']
"""
from __future__ import annotations

import re
from typing import NamedTuple, Sequence

import numpy as np

#: Bumped whenever the rule changes: it is part of the settings a resumed resampling must match.
SPLITTER_VERSION = "units-v1"
_BREAK = re.compile(r"\n|(?<=[.!?])(?P<close>[\"')\]]*)[ \t]+(?=[^a-z\s])")


class Unit(NamedTuple):
    """A unit of a reasoning text: ``text == reasoning[start:end]`` (end exclusive)."""

    start: int
    end: int
    text: str


def split_units(reasoning: str) -> list[Unit]:
    """The units of ``reasoning`` in order (see the module docstring)."""
    units, begin = [], 0
    for match in _BREAK.finditer(reasoning):
        _append(units, reasoning, begin, match.start() + len(match["close"] or ""))
        begin = match.end()
    _append(units, reasoning, begin, len(reasoning))
    return units


def _append(units: list[Unit], text: str, begin: int, end: int) -> None:
    piece = text[begin:end]
    stripped = piece.strip()
    if stripped:
        start = begin + (len(piece) - len(piece.lstrip()))
        units.append(Unit(start, start + len(stripped), stripped))


def token_units(offsets: Sequence[tuple[int, int]], units: Sequence[Unit]) -> np.ndarray:
    """The unit of each token (``-1`` for a whitespace-only token before the first unit).

    A token belongs to the unit holding its last non-whitespace character, or, for a whitespace
    token, the unit before it; a token like `` Then`` (space then word) so joins the unit it opens.
    Tokens of one unit are therefore contiguous, and cutting the token sequence before a unit's
    first token keeps exactly the units before it.
    """
    starts = np.array([u.start for u in units], dtype=np.int64)
    out = np.full(len(offsets), -1, dtype=np.int64)
    for i, (a, b) in enumerate(offsets):
        out[i] = int(np.searchsorted(starts, max(int(b) - 1, int(a)), side="right")) - 1
    # A whitespace token between units ends after the previous unit's start: it stays with that unit.
    return np.maximum.accumulate(out) if len(out) else out


def unit_spans(offsets: Sequence[tuple[int, int]], reasoning: str) -> list[tuple[int, int, Unit]]:
    """``(first_token, end_token, unit)`` for every unit that holds at least one token."""
    units = split_units(reasoning)
    of = token_units(offsets, units)
    spans = []
    for k, unit in enumerate(units):
        where = np.nonzero(of == k)[0]
        if len(where):
            spans.append((int(where[0]), int(where[-1]) + 1, unit))
    return spans
