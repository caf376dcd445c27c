"""Build ``gold-v1.jsonl`` from the hand-written annotation source ``annotations.txt``.

Source format: one block per chain::

    @chain id=human-0056 style=human split=dev annotations=stripped
    @source test.jsonl line 57
    @question
    <question, one line>
    @reasoning
    <reasoning, verbatim, any number of lines>
    @labels
    It/G costs/C him/R $14/S ... «7 + 7 = 14»/S

In ``@labels`` every whitespace-separated item is ``UNIT/CODE`` (split at the last ``/``, so
``48/2/S`` is the unit ``48/2``); ``«...»/CODE`` is one unit that contains whitespace. Units are
found by scanning forward in the reasoning; only whitespace may lie between two units, so the
spans cover every non-whitespace character exactly once. Adjacent SYMBOLIC_MATH units on one line
with only spaces between them are merged into one span: a whole expression is one gold unit.

Codes (the study's short names): S SymbMath, V VerbalMath, E EntName, R CoRef, M MetaDisc,
C Content, G Grammar (FUNCTION).

Usage: ``python tools/gold/build_gold.py [annotations.txt] [out.jsonl]``
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parents[1] / "src" / "cotsurvival" / "taxonomy" / "data" / "gold-v1.jsonl"
CODES = {
    "S": "SYMBOLIC_MATH", "V": "VERBAL_MATH", "E": "ENTITY_NAME", "R": "COREFERENCE",
    "M": "META_DISCOURSE", "C": "CONTENT", "G": "FUNCTION",
}
_ITEM = re.compile(r"«(.+?)»/([A-Z])(?=\s|$)|(\S+)/([A-Z])(?=\s|$)|(\S+)", re.S)


def parse_blocks(text: str) -> list[dict]:
    """Split the source into chain blocks with their header fields and sections."""
    blocks = []
    for chunk in re.split(r"^@chain ", text, flags=re.M)[1:]:
        header, _, body = chunk.partition("\n")
        block = dict(part.split("=", 1) for part in header.split())
        sections = re.split(r"^@(source|question|reasoning|labels)[ \n]", body, flags=re.M)
        for name, value in zip(sections[1::2], sections[2::2]):
            block[name] = value
        block["source"] = block["source"].strip()
        block["question"] = block["question"].strip()
        block["reasoning"] = block["reasoning"].rstrip("\n")
        blocks.append(block)
    return blocks


def parse_labels(labels: str, chain_id: str) -> list[tuple[str, str]]:
    """``UNIT/CODE`` items in order."""
    units = []
    for match in _ITEM.finditer(labels):
        if match.group(5) is not None:
            raise ValueError(f"{chain_id}: item without /CODE: {match.group(5)!r}")
        unit, code = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
        if code not in CODES:
            raise ValueError(f"{chain_id}: unknown code {code!r} on {unit!r}")
        units.append((unit, CODES[code]))
    return units


def align(reasoning: str, units: list[tuple[str, str]], chain_id: str) -> list[list]:
    """Offsets of each unit, scanning forward; only whitespace may be skipped."""
    spans, pos = [], 0
    for unit, label in units:
        pattern = r"\s+".join(re.escape(piece) for piece in unit.split())
        match = re.compile(pattern).match(reasoning, _skip_space(reasoning, pos))
        if match is None:
            context = reasoning[pos : pos + 40]
            raise ValueError(f"{chain_id}: unit {unit!r} not found at offset {pos} (text there: {context!r})")
        spans.append([match.start(), match.end(), label])
        pos = match.end()
    if reasoning[pos:].strip():
        raise ValueError(f"{chain_id}: unlabelled text at the end: {reasoning[pos:pos + 40]!r}")
    return spans


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def merge_expressions(reasoning: str, spans: list[list]) -> list[list]:
    """Join neighbouring SYMBOLIC_MATH units separated only by spaces or tabs (one expression)."""
    merged: list[list] = []
    for span in spans:
        if merged and span[2] == merged[-1][2] == "SYMBOLIC_MATH":
            gap = reasoning[merged[-1][1] : span[0]]
            if gap.strip(" \t") == "":
                merged[-1][1] = span[1]
                continue
        merged.append(list(span))
    return merged


def check_cover(reasoning: str, spans: list[list], chain_id: str) -> None:
    """Every non-whitespace character in exactly one span, no overlap, no span edge on whitespace."""
    owner = [0] * len(reasoning)
    for start, end, _ in spans:
        assert 0 <= start < end <= len(reasoning), (chain_id, start, end)
        assert not reasoning[start].isspace() and not reasoning[end - 1].isspace(), (chain_id, start, end)
        for i in range(start, end):
            owner[i] += 1
    for i, ch in enumerate(reasoning):
        assert owner[i] <= 1, f"{chain_id}: overlap at {i}"
        assert ch.isspace() or owner[i] == 1, f"{chain_id}: character {i} {ch!r} not covered"


def build(source: Path, out: Path) -> list[dict]:
    records = []
    for block in parse_blocks(source.read_text(encoding="utf-8")):
        chain_id = block["id"]
        units = parse_labels(block["labels"], chain_id)
        spans = merge_expressions(block["reasoning"], align(block["reasoning"], units, chain_id))
        check_cover(block["reasoning"], spans, chain_id)
        records.append({
            "id": chain_id, "question": block["question"], "reasoning": block["reasoning"],
            "spans": spans, "style": block["style"], "split": block["split"],
            "source": block["source"], "calculator_annotations": block["annotations"],
        })
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)), "duplicate ids"
    with open(out, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return records


if __name__ == "__main__":
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "annotations.txt"
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_OUT
    dst.parent.mkdir(parents=True, exist_ok=True)
    done = build(src, dst)
    n_units = sum(len(r["spans"]) for r in done)
    print(f"wrote {dst}: {len(done)} chains, {n_units} spans")
