"""Judge a tagger against gold annotations: precision, recall, F1, confusion, accuracy and kappa.

Two weightings answer two questions:

* **character-weighted**: every non-whitespace character of a reasoning is one unit, so a long
  LaTeX expression weighs more than a comma. This matches how a sub-word token takes the label
  that covers most of its characters.
* **count-weighted**: every gold span is one unit; its predicted label is the majority predicted
  label over its non-whitespace characters (ties: the taxonomy's overlap order). This is the
  annotator's view: "how many words did the tagger get right".

Both are computed for the fine labels and for the coarse categories, overall and per ``style``
and ``split`` of the gold records.

Examples
--------
>>> gold = [{"id": "a", "reasoning": "So 2+3", "spans": [[0, 2, "META_DISCOURSE"], [3, 6, "SYMBOLIC_MATH"]]}]
>>> report = evaluate_spans(gold, {"a": [(0, 2, "META_DISCOURSE"), (3, 6, "SYMBOLIC_MATH")]})
>>> report.scores().accuracy
1.0
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pandas as pd

from .. import taxonomy
from ..errors import CotSurvivalError
from ..outputs import check_output
from .agreement import kappa_from_table
from .spec import CATEGORY_OF_LABEL, OVERLAP_ORDER, SHORT_NAMES
from .spec import load_spec

#: Fallback when a taxonomy spec cannot be loaded: the packaged spec's labels in overlap order.
FINE_LABELS = OVERLAP_ORDER  # the packaged spec's labels, in its overlap order
#: Fallback fine label -> coarse category (the packaged spec's).
COARSE_OF = dict(CATEGORY_OF_LABEL)
#: Predicted label of a character no predicted span covers.
UNLABELLED = "<none>"
BUILTIN_GOLD = "builtin"
GOLD_FILE = "gold-v1.jsonl"
LEVELS = ("fine", "coarse")
WEIGHTINGS = ("char", "count")


@dataclass(frozen=True)
class LabelScheme:
    """Labels, their overlap order and their coarse categories (taken from a taxonomy spec)."""

    labels: tuple[str, ...]
    category_of: Mapping[str, str]

    @classmethod
    def from_spec(cls, spec: object | None = None) -> "LabelScheme":
        """Read the scheme from a ``TaxonomySpec``; without one, the packaged spec or the fallback."""
        if spec is None:
            try:
                from .spec import load_spec

                spec = load_spec()
            except (ImportError, CotSurvivalError):
                return cls(FINE_LABELS, dict(COARSE_OF))
        order = tuple(getattr(spec, "overlap_order", ()) or getattr(spec, "labels"))
        return cls(order, dict(spec.category_of))

    @property
    def categories(self) -> tuple[str, ...]:
        """Coarse categories in the order their first fine label appears."""
        return tuple(dict.fromkeys(self.category_of[label] for label in self.labels))

    def coarse(self, label: str) -> str:
        # Unknown or missing predicted labels stay visible as themselves.
        return self.category_of.get(label, label)


@dataclass(frozen=True)
class Scores:
    """Agreement of gold and predicted labels on one set of units.

    Attributes
    ----------
    level : {"fine", "coarse"}
    weighting : {"char", "count"}
    confusion : pandas.DataFrame
        Unit counts; rows are gold labels, columns predicted labels (same order, square).
    """

    level: str
    weighting: str
    confusion: pd.DataFrame

    @property
    def n(self) -> int:
        """Number of units."""
        return int(self.confusion.to_numpy().sum())

    @property
    def accuracy(self) -> float:
        """Share of units whose predicted label equals the gold label."""
        return _ratio(float(pd.Series(self.confusion.to_numpy().diagonal()).sum()), self.n)

    @property
    def kappa(self) -> float:
        """Cohen's kappa of the confusion table (NaN where undefined; see :func:`.agreement.kappa_from_table`)."""

        return kappa_from_table(self.confusion)

    @property
    def per_label(self) -> pd.DataFrame:
        """Precision, recall, F1 and support (gold units) per label; NaN where undefined."""
        table = self.confusion
        hits = pd.Series(table.to_numpy().diagonal(), index=table.index, dtype=float)
        support = table.sum(axis=1).astype(float)
        predicted = table.sum(axis=0).astype(float)
        precision = hits / predicted.where(predicted > 0)
        recall = hits / support.where(support > 0)
        f1 = 2 * precision * recall / (precision + recall)
        # As sklearn's zero_division=0: a label never predicted, or never right, has F1 0 (not NaN).
        f1 = f1.where(~((precision == 0) | (recall == 0)), 0.0)
        frame = pd.DataFrame({"precision": precision, "recall": recall, "f1": f1,
                              "support": support.astype(int), "predicted": predicted.astype(int)})
        frame.index.name = "label"
        return frame

    @property
    def macro_f1(self) -> float:
        """Mean F1 over labels with gold support."""
        scores = self.per_label
        return float(scores.loc[scores["support"] > 0, "f1"].fillna(0.0).mean())

    def top_confusions(self, k: int = 10) -> pd.DataFrame:
        """The ``k`` largest off-diagonal cells: ``gold, predicted, n, share_of_gold``."""
        long = self.confusion.stack().rename("n").reset_index()
        long.columns = ["gold", "predicted", "n"]
        long = long[(long["gold"] != long["predicted"]) & (long["n"] > 0)]
        support = self.confusion.sum(axis=1)
        long["share_of_gold"] = long["n"] / long["gold"].map(support)
        return long.sort_values(["n", "gold", "predicted"], ascending=[False, True, True]).head(k).reset_index(drop=True)

    def to_dict(self) -> dict:
        """JSON-able numbers (NaN becomes ``None``)."""
        per_label = {
            label: {key: _json_number(value) for key, value in row.items()}
            for label, row in self.per_label.to_dict(orient="index").items()
        }
        return {
            "n": self.n, "accuracy": _json_number(self.accuracy), "kappa": _json_number(self.kappa),
            "macro_f1": _json_number(self.macro_f1), "per_label": per_label,
            "confusion": {"labels": list(self.confusion.index), "counts": self.confusion.to_numpy().tolist()},
        }


@dataclass
class EvalReport:
    """Scores of a tagger on gold records, overall and per style and split.

    Attributes
    ----------
    groups : dict
        Group name (``"all"``, ``"style=verbose"``, ``"split=heldout"``) -> ``{(level, weighting): Scores}``.
    n_chains : dict
        Group name -> number of chains in it.
    uncovered_chars : int
        Non-whitespace gold characters that no predicted span covered (scored as ``<none>``).
    """

    groups: dict[str, dict[tuple[str, str], Scores]]
    n_chains: dict[str, int]
    uncovered_chars: int = 0
    labels: tuple[str, ...] = field(default=FINE_LABELS)

    def scores(self, group: str = "all", level: str = "fine", weighting: str = "char") -> Scores:
        """One confusion table and its metrics."""
        return self.groups[group][(level, weighting)]

    def summary(self) -> pd.DataFrame:
        """One row per group, level and weighting: ``n_chains, n, accuracy, kappa, macro_f1``."""
        rows = [
            {"group": group, "level": level, "weighting": weighting, "n_chains": self.n_chains[group],
             "n": s.n, "accuracy": s.accuracy, "kappa": s.kappa, "macro_f1": s.macro_f1}
            for group, table in self.groups.items() for (level, weighting), s in table.items()
        ]
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        """Every number, JSON-able."""
        return {
            "labels": list(self.labels),
            "uncovered_chars": self.uncovered_chars,
            "groups": {
                group: {"n_chains": self.n_chains[group],
                        **{f"{level}/{weighting}": s.to_dict() for (level, weighting), s in table.items()}}
                for group, table in self.groups.items()
            },
        }

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    def to_text(self, top: int = 10) -> str:
        """A plain-text rendering: summary table, per-label scores, confusions, top confusions."""
        blocks = ["== summary: accuracy / Cohen's kappa ==", _format_summary(self.summary())]
        if self.uncovered_chars:
            blocks.append(f"note: {self.uncovered_chars} gold characters had no predicted label ({UNLABELLED})")
        for weighting in WEIGHTINGS:
            f1 = pd.DataFrame({group: self.scores(group, "fine", weighting).per_label["f1"] for group in self.groups})
            blocks += [f"== F1 per fine label and group, {weighting}-weighted ==", f1.to_string(float_format=lambda x: f"{x:.3f}")]
        for level in LEVELS:
            for weighting in WEIGHTINGS:
                s = self.scores("all", level, weighting)
                blocks += [
                    f"== all chains: {level} labels, {weighting}-weighted ==",
                    s.per_label.to_string(float_format=lambda x: f"{x:.3f}"),
                    "confusion (rows gold, columns predicted):",
                    s.confusion.rename(columns=_short).to_string(),
                    f"top confusions:\n{s.top_confusions(top).to_string(index=False, float_format=lambda x: f'{x:.3f}')}",
                ]
        return "\n\n".join(blocks)

    def __str__(self) -> str:
        return self.to_text()


def evaluate_spans(
    gold_records: Iterable[Mapping],
    predicted_spans_by_id: Mapping[str, Sequence],
    spec: object | None = None,
) -> EvalReport:
    """Compare predicted label spans with gold spans.

    Parameters
    ----------
    gold_records : iterable of dict
        Gold records: ``id``, ``reasoning``, ``spans`` (``[start, end, LABEL]``), optionally
        ``style`` and ``split`` (grouped as ``"unknown"`` when absent).
    predicted_spans_by_id : mapping
        Chain id -> predicted spans, each ``(start, end, label)`` or an object with ``start``,
        ``end`` and ``label`` attributes. Characters no span covers count as ``"<none>"``.
    spec : TaxonomySpec, optional
        Supplies the labels, the overlap order and the coarse categories; the packaged spec when
        omitted (or, if it cannot be loaded, :data:`FINE_LABELS` and :data:`COARSE_OF`).

    Returns
    -------
    EvalReport

    Raises
    ------
    CotSurvivalError
        ``E031`` if a gold record has no predictions, ``E032`` if a predicted span is out of range.
    """
    scheme = spec if isinstance(spec, LabelScheme) else LabelScheme.from_spec(spec)
    records = list(gold_records)
    units, uncovered = [], 0
    for record in records:
        if record["id"] not in predicted_spans_by_id:
            raise CotSurvivalError("E031", chain_id=record["id"])
        chain_units, missing = _chain_units(record, predicted_spans_by_id[record["id"]], scheme)
        units.append(chain_units)
        uncovered += missing
    table = pd.concat(units, ignore_index=True) if units else _empty_units()
    groups, n_chains = {}, {}
    for name, mask in _group_masks(table):
        groups[name] = _group_scores(table[mask], scheme)
        n_chains[name] = int(table.loc[mask, "chain_id"].nunique())
    return EvalReport(groups=groups, n_chains=n_chains, uncovered_chars=uncovered, labels=scheme.labels)


def read_gold(path: str | Path = BUILTIN_GOLD, labels: Iterable[str] = FINE_LABELS) -> list[dict]:
    """Read and validate a gold file (``"builtin"``: the packaged ``gold-v1.jsonl``).

    Raises
    ------
    CotSurvivalError
        ``E001`` if the file is missing, ``E030`` naming file and line for a bad record.
    """
    resolved = Path(str(resources.files("cotsurvival.taxonomy") / "data" / GOLD_FILE)) if str(path) == BUILTIN_GOLD else Path(path)
    if not resolved.is_file():
        raise CotSurvivalError("E001", path=resolved)
    records, seen = [], set()
    with open(resolved, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                validate_gold_record(record, labels)
                if record["id"] in seen:
                    raise ValueError(f"duplicate id {record['id']!r}")
            except (ValueError, TypeError, KeyError) as exc:
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc).strip("'\"")
                raise CotSurvivalError("E030", path=resolved, line=number, reason=reason) from None
            seen.add(record["id"])
            records.append(record)
    return records


def validate_gold_record(record: object, labels: Iterable[str] = FINE_LABELS) -> None:
    """Raise ``ValueError`` unless the record follows the gold format.

    Spans must be in range, sorted, non-overlapping, start and end on non-whitespace, carry a
    known label, and together cover every non-whitespace character of ``reasoning``.
    """
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    for key in ("id", "reasoning", "spans"):
        if key not in record:
            raise ValueError(f"missing field '{key}'")
    text, known, previous_end = record["reasoning"], set(labels), 0
    if not isinstance(text, str):
        raise ValueError("field 'reasoning' must be a string")
    for span in record["spans"]:
        if not (isinstance(span, list) and len(span) == 3 and all(isinstance(v, int) for v in span[:2])):
            raise ValueError(f"span {span!r} is not [start, end, LABEL]")
        start, end, label = span
        if label not in known:
            raise ValueError(f"span {span!r}: unknown label {label!r}")
        if not previous_end <= start < end <= len(text):
            raise ValueError(f"span {span!r} is out of range, empty, unsorted or overlapping")
        if text[previous_end:start].strip():
            raise ValueError(f"characters {previous_end}..{start} ({text[previous_end:start].strip()[:20]!r}) have no gold label")
        previous_end = end
    if text[previous_end:].strip():
        raise ValueError(f"characters from {previous_end} ({text[previous_end:].strip()[:20]!r}) have no gold label")


def evaluate_tagger(gold: str | Path = BUILTIN_GOLD, taxonomy: str | Path | None = None, *,
                    out: str | Path | None = None) -> EvalReport:
    """Tag every gold reasoning with the rule tagger (given its question) and score it.

    Parameters
    ----------
    gold : str or Path
        A gold JSONL file, or ``"builtin"`` for the packaged gold set.
    taxonomy : str or Path, optional
        A taxonomy spec file; the packaged spec when omitted.
    out : str or Path, optional
        Also write every metric to this JSON file (never over the gold file or the spec).

    Returns
    -------
    EvalReport
    """

    if out is not None:
        inputs = [p for p in (gold, taxonomy) if p and Path(p).is_file()]
        check_output(out, inputs=inputs, overwrite=True, command="tag-eval")
    spec = load_spec(taxonomy)
    records = read_gold(gold, labels=spec.labels)
    report = evaluate_spans(records, tag_records(records, spec), spec=spec)
    if out is not None:
        report.to_json(out)
    return report


def tag_records(records: Sequence[Mapping], spec: object | None = None) -> dict[str, list]:
    """Predicted spans of each record's reasoning, by id (``tag_many`` when the tagger has it)."""
    import inspect

    tagger = getattr(taxonomy, "tag_many", None)
    batched = tagger is not None
    tagger = tagger or taxonomy.tag
    # Pass the spec only to a tagger that takes one, so a user --taxonomy is honoured.
    kwargs = {"spec": spec} if spec is not None and "spec" in inspect.signature(tagger).parameters else {}
    texts = [r["reasoning"] for r in records]
    questions = [r.get("question") for r in records]
    if batched:
        spans = list(tagger(texts, questions, **kwargs))
    else:
        spans = [tagger(text, question, **kwargs) for text, question in zip(texts, questions)]
    return {r["id"]: s for r, s in zip(records, spans)}


# ------------------------------------------------------------------------------------- internals
def _chain_units(record: Mapping, predicted: Sequence, scheme: LabelScheme) -> tuple[pd.DataFrame, int]:
    """Char- and count-weighted units of one chain: ``weighting, gold, pred`` plus chain fields."""
    text = record["reasoning"]
    pred = _predicted_chars(text, predicted, scheme, record["id"])
    rows = []
    for start, end, label in record["spans"]:
        chars = [pred[i] for i in range(start, end) if not text[i].isspace()]
        rows += [("char", label, p) for p in chars]
        rows.append(("count", label, _majority(chars, scheme)))
    frame = pd.DataFrame(rows, columns=["weighting", "gold", "pred"])
    frame["chain_id"] = record["id"]
    frame["style"] = record.get("style", "unknown")
    frame["split"] = record.get("split", "unknown")
    uncovered = int(((frame["weighting"] == "char") & (frame["pred"] == UNLABELLED)).sum())
    return frame, uncovered


def _predicted_chars(text: str, spans: Sequence, scheme: LabelScheme, chain_id: str) -> list[str]:
    labels = [UNLABELLED] * len(text)
    rank = {label: i for i, label in enumerate(scheme.labels)}
    parsed = [_as_triple(span) for span in spans]
    # Where predicted spans overlap, the label earlier in the overlap order wins: paint it last.
    for start, end, label in sorted(parsed, key=lambda s: -rank.get(s[2], len(rank))):
        if not 0 <= start <= end <= len(text):
            raise CotSurvivalError("E032", chain_id=chain_id, span=(start, end, label), length=len(text))
        labels[start:end] = [label] * (end - start)
    return labels


def _as_triple(span: object) -> tuple[int, int, str]:
    if hasattr(span, "label"):
        return int(span.start), int(span.end), str(span.label)
    start, end, label = span[:3]
    return int(start), int(end), str(label)


def _majority(chars: list[str], scheme: LabelScheme) -> str:
    counts = Counter(chars)
    rank = {label: i for i, label in enumerate(scheme.labels)}
    # Most characters wins; ties go to the label earlier in the overlap order, <none> last.
    return min(counts, key=lambda label: (-counts[label], rank.get(label, len(rank) + (label == UNLABELLED))))


def _group_masks(table: pd.DataFrame):
    yield "all", pd.Series(True, index=table.index)
    for column in ("style", "split"):
        for value in sorted(table[column].unique()):
            yield f"{column}={value}", table[column] == value


def _group_scores(units: pd.DataFrame, scheme: LabelScheme) -> dict[tuple[str, str], Scores]:
    out = {}
    for weighting in WEIGHTINGS:
        part = units[units["weighting"] == weighting]
        for level in LEVELS:
            if level == "fine":
                gold, pred, order = part["gold"], part["pred"], list(scheme.labels)
            else:
                gold, pred, order = part["gold"].map(scheme.coarse), part["pred"].map(scheme.coarse), list(scheme.categories)
            out[(level, weighting)] = Scores(level, weighting, _confusion(gold, pred, order))
    return out


def _confusion(gold: pd.Series, pred: pd.Series, order: list[str]) -> pd.DataFrame:
    """Square crosstab over the known labels plus any extra predicted ones (e.g. ``<none>``)."""
    extra = sorted((set(gold) | set(pred)) - set(order))
    labels = order + extra
    table = pd.crosstab(pd.Categorical(gold, categories=labels), pd.Categorical(pred, categories=labels), dropna=False)
    table = table.reindex(index=labels, columns=labels, fill_value=0)
    table.index.name, table.columns.name = "gold", "predicted"
    return table.astype(int)


def _empty_units() -> pd.DataFrame:
    return pd.DataFrame(columns=["weighting", "gold", "pred", "chain_id", "style", "split"])


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def _json_number(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        value = value.item()
        return None if isinstance(value, float) and math.isnan(value) else value
    return value


def _short(label: str) -> str:
    return SHORT_NAMES.get(label, label)


def _format_summary(summary: pd.DataFrame) -> str:
    """One line per group; each cell ``accuracy / kappa`` for a level and weighting."""
    cells = summary.assign(
        cell=[f"{a:.3f} / {k:.3f}" for a, k in zip(summary["accuracy"], summary["kappa"])],
        column=summary["level"] + " " + summary["weighting"],
    )
    wide = cells.pivot(index="group", columns="column", values="cell").reindex(
        index=list(dict.fromkeys(summary["group"])), columns=[f"{l} {w}" for l in LEVELS for w in WEIGHTINGS])
    wide.insert(0, "chains", summary.drop_duplicates("group").set_index("group")["n_chains"])
    wide.columns.name, wide.index.name = None, None
    return wide.to_string()
