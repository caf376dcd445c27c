"""Options checked at the edge: every stage validates what it is asked before it computes anything.

A typo or an impossible value is one line (``error[E151]`` / ``error[E152]``, exit 2 on the command
line) with a "did you mean", never a run that quietly computes something else.
"""
from __future__ import annotations

import difflib
import math
from typing import Iterable

from .errors import CotSurvivalError


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """``' (did you mean 'symbolic_math'?)'`` for the closest choice, or ``''``."""
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
    if not close:  # a word of a name ("maths" for symbolic_math) is a near miss too
        words = {w: c for c in choices for w in c.split("_")}
        close = [words[w] for w in difflib.get_close_matches(str(value), list(words), n=1, cutoff=0.6)]
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_choice(what: str, value: str, choices: Iterable[str]) -> str:
    """``value`` when it is one of ``choices``, else E151 naming them and the closest."""
    choices = list(dict.fromkeys(map(str, choices)))
    if str(value) not in choices:
        raise CotSurvivalError("E151", what=what, value=value, suggestion=did_you_mean(value, choices),
                               available=", ".join(choices) or "none")
    return value


def check_ratio(option: str, value: float, *, low_open: bool = False, high_open: bool = False) -> float:
    """``value`` when it is a number in [0, 1] (open at either end when asked), else E152."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CotSurvivalError("E152", option=option, value=repr(value), reason="not a number") from None
    bad = (not math.isfinite(number) or number < 0.0 or number > 1.0 or (low_open and number == 0.0)
           or (high_open and number == 1.0))
    if bad:
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise CotSurvivalError("E152", option=option, value=value, reason=f"a ratio must be in {interval}")
    return number


def check_positive(option: str, value: int | float, *, allow_zero: bool = False) -> None:
    """E152 unless ``value`` is positive (or zero, when allowed)."""
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise CotSurvivalError("E152", option=option, value=value,
                               reason="must be 0 or more" if allow_zero else "must be positive")


def known_categories(manifest: dict, present: Iterable[str] = ()) -> list[str]:
    """The categories a contrast may name: the run's taxonomy (manifest, else the packaged spec) and any present."""
    from .taxonomy.spec import CATEGORIES

    recorded = (manifest.get("taxonomy") or {}).get("categories") or list(CATEGORIES)
    return list(dict.fromkeys([*map(str, recorded), *map(str, present)]))


def check_contrast(option: str, contrast: str | Iterable[str], manifest: dict, present: Iterable[str] = ()) -> None:
    """Every category a contrast names must be one the taxonomy defines (E151 with "did you mean")."""
    names = [contrast] if isinstance(contrast, str) else list(contrast)
    known = known_categories(manifest, present)
    for name in names:
        check_choice(f"{option} category", name, known)
