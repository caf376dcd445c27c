"""The taxonomy as data: labels, coarse categories, overlap order, lexicons and colours.

The packaged spec (``data/taxonomy-v1.json``) implements the annotation guideline. Users may pass
their own file (``--taxonomy PATH``), e.g. with extended lexicons or other colours; it must keep
the seven fine labels the rule tagger emits.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Mapping

from ..errors import CotSurvivalError
from ..registry import Registry

DEFAULT_SPEC_NAME = "taxonomy-v1.json"


def _packaged_names() -> dict:
    # The label and category names, read from the packaged spec file itself (a few ms), so that no
    # module keeps its own copy of the lists. The full validated spec is load_spec().
    data = json.loads((resources.files("cotsurvival.taxonomy") / "data" / DEFAULT_SPEC_NAME).read_text(encoding="utf-8"))
    return {"labels": tuple(entry["name"] for entry in data["labels"]),
            "overlap_order": tuple(data["overlap_order"]),
            "categories": tuple(entry["name"] for entry in data["categories"]),
            "category_of": {entry["name"]: entry["category"] for entry in data["labels"]},
            "short": {entry["name"]: entry.get("short", entry["name"]) for entry in data["labels"]}}


_PACKAGED = _packaged_names()
#: The fine labels of the packaged spec (the ones the rule tagger emits; a user spec must keep them).
FINE_LABELS: tuple[str, ...] = _PACKAGED["labels"]
#: The packaged spec's coarse categories, in its order.
CATEGORIES: tuple[str, ...] = _PACKAGED["categories"]
#: Fine label -> coarse category in the packaged spec.
CATEGORY_OF_LABEL: dict[str, str] = _PACKAGED["category_of"]
#: The two levels of the taxonomy, as label columns of a run (``--level``): name -> meaning.
LEVELS = Registry("--level", {"category": "coarse category", "label": "fine label"})
#: The packaged spec's overlap order (first wins) of the fine labels.
OVERLAP_ORDER: tuple[str, ...] = _PACKAGED["overlap_order"]
#: Fine label -> short name (``SYMBOLIC_MATH`` -> ``SymbMath``) in the packaged spec.
SHORT_NAMES: dict[str, str] = _PACKAGED["short"]
#: Lexicons the rule tagger reads; a user spec must provide each (possibly empty).
REQUIRED_LEXICONS = (
    "operation_words", "number_words", "ordinal_words", "discourse_markers", "planning_verbs",
    "subject_planning_verbs", "meta_nouns", "authorial_pronouns", "reader_pronouns", "coref_pronouns",
    "demonstratives", "relative_pronouns", "anaphoric_heads", "abstract_nouns", "entity_nouns", "months_and_days",
    "per_nouns", "grammar_adverbs", "latex_text_commands", "latex_arg_commands", "code_keywords",
)
_COLOUR = re.compile(r"^#[0-9A-Fa-f]{6}$")


@dataclass(frozen=True, eq=False)  # hashed by identity: specs are cached per file
class TaxonomySpec:
    """A validated taxonomy.

    Attributes
    ----------
    name, version : str
        Recorded in a run's manifest by ``tag``.
    labels : tuple of str
        Fine labels, in the order of the spec file.
    short_names : dict
        Fine label -> short name (``SYMBOLIC_MATH`` -> ``SymbMath``).
    category_of : dict
        Fine label -> coarse category.
    categories : tuple of str
        Coarse categories, in the order of the spec file.
    overlap_order : tuple of str
        When a unit fits several labels, the first in this order wins; also breaks projection ties.
    label_colours, category_colours : dict
        Hex colours for the reports.
    lexicons : dict of str -> frozenset
        Lower-cased word lists the rules consult.
    whitespace_label : str
        Label of whitespace-only tokens.
    decisions : tuple of str
        The hard-case decisions the rules implement (documentation).
    path : str
        Where the spec was read from.
    """

    name: str
    version: str
    labels: tuple[str, ...]
    short_names: Mapping[str, str]
    category_of: Mapping[str, str]
    categories: tuple[str, ...]
    overlap_order: tuple[str, ...]
    label_colours: Mapping[str, str]
    category_colours: Mapping[str, str]
    lexicons: Mapping[str, frozenset]
    whitespace_label: str = "FUNCTION"
    decisions: tuple[str, ...] = ()
    path: str = ""
    description: str = ""
    label_descriptions: Mapping[str, str] = field(default_factory=dict)
    _rank: Mapping[str, int] = field(default_factory=dict, repr=False, compare=False)

    def category(self, label: str) -> str:
        """Coarse category of a fine label."""
        return self.category_of[label]

    def rank(self, label: str) -> int:
        """Position of ``label`` in the overlap order (0 wins)."""
        return self._rank[label]

    def short(self, label: str) -> str:
        return self.short_names[label]

    def lexicon(self, name: str) -> frozenset:
        return self.lexicons[name]

    def manifest_entry(self) -> dict:
        """What ``tag`` records under ``taxonomy`` in manifest.json."""
        return {"name": self.name, "version": self.version, "path": self.path}


def default_spec_path() -> Path:
    """Path of the packaged spec file."""
    return Path(str(resources.files("cotsurvival.taxonomy") / "data" / DEFAULT_SPEC_NAME))


_CACHE: dict[str, TaxonomySpec] = {}


def load_spec(path: str | Path | None = None) -> TaxonomySpec:
    """Read and validate a taxonomy spec.

    Parameters
    ----------
    path : str or Path, optional
        A JSON spec file; the packaged ``taxonomy-v1.json`` when omitted.

    Returns
    -------
    TaxonomySpec

    Raises
    ------
    CotSurvivalError
        ``E001`` if the file is missing, ``E013`` if it is not a valid spec.
    """
    resolved = Path(path).expanduser() if path is not None else default_spec_path()
    key = str(resolved.resolve()) if resolved.exists() else str(resolved)
    if key in _CACHE:
        return _CACHE[key]
    if not resolved.is_file():
        raise CotSurvivalError("E001", path=resolved)
    try:
        data = json.loads(resolved.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CotSurvivalError("E013", path=resolved, reason=f"not JSON ({exc})") from None
    spec = spec_from_dict(data, path=str(resolved))
    _CACHE[key] = spec
    return spec


def spec_from_dict(data: object, path: str = "<dict>") -> TaxonomySpec:
    """Validate a parsed spec (see :func:`load_spec`)."""

    def fail(reason: str) -> CotSurvivalError:
        return CotSurvivalError("E013", path=path, reason=reason)

    if not isinstance(data, dict):
        raise fail("the top level must be a JSON object")
    for key in ("name", "version", "labels", "categories", "overlap_order", "lexicons"):
        if key not in data:
            raise fail(f"missing key '{key}'")
    if not isinstance(data["name"], str) or not isinstance(data["version"], (str, int, float)):
        raise fail("'name' must be a string and 'version' a string or number")
    categories, category_colours = _parse_categories(data["categories"], fail)
    labels, short, category_of, colours = _parse_labels(data["labels"], categories, fail)
    descriptions = {item["name"]: str(item.get("description", "")) for item in data["labels"]}
    order = data["overlap_order"]
    if not isinstance(order, list) or sorted(order) != sorted(labels):
        raise fail("'overlap_order' must list every fine label exactly once")
    lexicons = _parse_lexicons(data["lexicons"], fail)
    whitespace = data.get("whitespace_label", "FUNCTION")
    if whitespace not in labels:
        raise fail(f"'whitespace_label' {whitespace!r} is not a fine label")
    return TaxonomySpec(
        name=data["name"], version=str(data["version"]), labels=labels, short_names=short, category_of=category_of,
        categories=categories, overlap_order=tuple(order), label_colours=colours, category_colours=category_colours,
        lexicons=lexicons, whitespace_label=whitespace, decisions=tuple(data.get("decisions", ())), path=path,
        description=str(data.get("description", "")), label_descriptions=descriptions, _rank={label: i for i, label in enumerate(order)},
    )


def _parse_categories(raw, fail) -> tuple[tuple[str, ...], dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise fail("'categories' must be a non-empty list of {name, colour}")
    names, colours = [], {}
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise fail("each category needs a 'name'")
        if item["name"] in colours:
            raise fail(f"category {item['name']!r} listed twice")
        colours[item["name"]] = _colour(item.get("colour"), f"category {item['name']!r}", fail)
        names.append(item["name"])
    return tuple(names), colours


def _parse_labels(raw, categories, fail):
    if not isinstance(raw, list):
        raise fail("'labels' must be a list of {name, short, category, colour}")
    labels, short, category_of, colours = [], {}, {}, {}
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise fail("each label needs a 'name'")
        name = item["name"]
        if name in category_of:
            raise fail(f"label {name!r} listed twice")
        if item.get("category") not in categories:
            raise fail(f"label {name!r} has category {item.get('category')!r}, not one of {list(categories)}")
        labels.append(name)
        short[name] = str(item.get("short", name))
        category_of[name] = item["category"]
        colours[name] = _colour(item.get("colour"), f"label {name!r}", fail)
    missing = [label for label in FINE_LABELS if label not in category_of]
    if missing:
        raise fail(f"the rule tagger needs the fine labels {missing}")
    return tuple(labels), short, category_of, colours


def _parse_lexicons(raw, fail) -> dict[str, frozenset]:
    if not isinstance(raw, dict):
        raise fail("'lexicons' must be an object of word lists")
    missing = [name for name in REQUIRED_LEXICONS if name not in raw]
    if missing:
        raise fail(f"missing lexicons {missing}")
    lexicons = {}
    for name, words in raw.items():
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise fail(f"lexicon {name!r} must be a list of strings")
        # Commands and code keywords are case-sensitive; word lists are matched lower-cased.
        keep_case = name in ("latex_text_commands", "latex_arg_commands", "code_keywords", "meta_text_frames")
        lexicons[name] = frozenset(words if keep_case else (w.lower() for w in words))
    return lexicons


def _colour(value, what, fail) -> str:
    if not isinstance(value, str) or not _COLOUR.match(value):
        raise fail(f"{what} needs a colour like '#0072B2', got {value!r}")
    return value
