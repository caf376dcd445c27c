"""Spans over the caller's text: `tag CHAINS --out SPANS` and `tag-eval GOLD` index `reasoning` exactly as given."""
from __future__ import annotations

import json

from test_taxonomy import check_coverage

# GSM8K calculator annotations, markdown (bold, a list, inline code) and LaTeX, as a user's file holds them.
REASONING = ("She has 23 + 16 = <<23+16=39>>39 apples.\n"
             "**Step 2:** Then $\\frac{39}{3} = 13$ each,\n"
             "- so `x*2` gives <<13*2=26>>26 pears.")
# Hand-labelled material (found in REASONING by str.index, not by the tagger) and the label the
# guideline gives it: calculator annotations and LaTeX math are SYMBOLIC_MATH, markdown marks FUNCTION.
EXPECTED = [("<<23+16=39>>", "SYMBOLIC_MATH"), ("39 apples", None), ("apples", "ENTITY_NAME"), ("**", "FUNCTION"),
            ("$\\frac{39}{3} = 13$", "SYMBOLIC_MATH"), ("<<13*2=26>>", "SYMBOLIC_MATH"), ("pears", "ENTITY_NAME")]


def _spans_of(out):
    return {line["id"]: line for line in map(json.loads, out.read_text(encoding="utf-8").splitlines())}


def test_tag_chains_file_offsets_index_the_reasoning_as_given(tmp_path):
    from click.testing import CliRunner

    from cotsurvival.cli import cli

    chains = tmp_path / "chains.jsonl"
    records = [{"id": "given", "question": "Fruit?", "reasoning": REASONING, "answer": "#### 26"},
               # GSM8K's native form: the worked solution in `answer`, no reasoning field
               {"id": "native", "question": "Fruit?", "answer": REASONING + "\n#### 26"}]
    chains.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    out = tmp_path / "spans.jsonl"
    result = CliRunner().invoke(cli, ["tag", str(chains), "--out", str(out), "--keep-annotations"])
    assert result.exit_code == 0, result.output
    lines = _spans_of(out)
    for chain_id in ("given", "native"):
        line = lines[chain_id]
        assert line["reasoning"] == REASONING  # the text the offsets index, unchanged
        spans = [tuple(s) for s in line["spans"]]
        check_coverage(REASONING, spans)  # every non-blank character of the caller's text, exactly once
        by_text = {}
        for start, end, label in spans:
            by_text.setdefault(REASONING[start:end], set()).add(label)
        for material, label in EXPECTED:
            start = REASONING.index(material)
            inside = [s for s in spans if s[0] < start + len(material) and s[1] > start]
            # the material is covered by spans that begin and end exactly on it (nothing shifted) ...
            assert inside[0][0] == start and inside[-1][1] == start + len(material), (material, inside)
            if label:  # ... and carry the guideline's label
                assert {s[2] for s in inside} == {label}, (material, inside)


def test_tag_eval_with_a_user_gold_file_holding_annotations(tmp_path):
    """A hand-labelled gold file over the raw text (annotations kept): the tagger is scored on the same offsets."""
    from cotsurvival.taxonomy.evaluate import evaluate_tagger

    text = "She has 23 + 16 = <<23+16=39>>39 apples."
    words = [("She", "COREFERENCE"), ("has", "CONTENT"), ("23 + 16 = <<23+16=39>>39", "SYMBOLIC_MATH"),
             ("apples", "ENTITY_NAME"), (".", "FUNCTION")]
    spans, position = [], 0
    for word, label in words:
        start = text.index(word, position)
        spans.append([start, start + len(word), label])
        position = start + len(word)
    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps({"id": "g", "question": "Apples?", "reasoning": text, "spans": spans}) + "\n")
    report = evaluate_tagger(gold)
    scores = report.scores(level="fine", weighting="char")
    # Every character agrees: had the tagger seen the text without "<<23+16=39>>", its spans after
    # the annotation would be 12 characters off and "apples" would not line up.
    assert scores.n == sum(1 for ch in text if not ch.isspace())
    assert scores.accuracy == 1.0
