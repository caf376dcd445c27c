"""Teacher-chain generation: answer verification, prompts and splitting, questions, rejection sampling."""
from __future__ import annotations

import json
import time
from fractions import Fraction

import pytest
import torch

from cotsurvival import read_chains
from cotsurvival.errors import CotSurvivalError
from cotsurvival.generation import (
    Question, SampleResult, answers_match, generate_chains, gold_from_answer, load_prompt, parse_choice,
    parse_math, parse_number, read_questions, split_response,
)
from cotsurvival.generation import generate as generate_module
from cotsurvival.generation.prompting import answer_is_complete

# ---------------------------------------------------------------------------------------- verification

# (model's answer, gold answer, expected) -- formats seen in GSM8K, MATH and MCQ replies.
VERIFY_TABLE = [
    # GSM8K numbers
    ("18", "18", True),
    ("1,000", "1000", True),
    ("$1,000.00", "1000", True),
    ("\\$18", "18", True),
    ("$18", "18", True),
    ("50%", "50", True),
    ("50\\%", "50", True),
    ("10.0", "10", True),
    ("10.00", "10", True),
    ("3.50", "3.5", True),
    (".5", "0.5", True),
    ("3/4", "0.75", True),
    ("1 1/2", "1.5", True),
    ("-5", "-5", True),
    ("−5", "-5", True),
    ("18 dollars", "18", True),
    ("5 apples.", "5", True),
    ("**18**", "18", True),
    ("1,000,000", "1000000", True),
    ("43,200", "43200", True),
    ("18", "19", False),
    ("-5", "5", False),
    ("0.5", "5", False),
    ("180", "18", False),
    ("1.8", "18", False),
    ("", "18", False),
    ("no idea", "18", False),
    # MATH / LaTeX
    ("\\frac{1}{2}", "0.5", True),
    ("1/2", "\\frac{1}{2}", True),
    ("\\dfrac{1}{2}", "\\frac12", True),
    ("\\sqrt{2}", "\\sqrt2", True),
    ("\\sqrt{8}", "2\\sqrt{2}", True),
    ("2\\pi", "2 \\pi", True),
    ("\\pi \\cdot 2", "2\\pi", True),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}", True),
    ("\\sqrt[3]{8}", "2", True),
    ("x^2+1", "1+x^2", True),
    ("x^2-1", "(x-1)(x+1)", True),
    ("x = 5", "5", True),
    ("10^\\circ", "10", True),
    ("5\\text{ cm}", "5", True),
    ("\\left(3,\\frac{1}{2}\\right)", "(3, 0.5)", True),
    ("1, 2", "2, 1", True),
    ("\\infty", "\\infty", True),
    ("6.28", "2\\pi", False),
    ("0.333", "\\frac{1}{3}", False),
    ("x^2", "x^3", False),
    ("(2, 1)", "(1,2)", False),
    ("\\frac{1}{3}", "\\frac{1}{2}", False),
    ("9^{9^{9}}", "1", False),
    # multiple choice
    ("(B)", "B", True),
    ("B)", "B", True),
    ("b", "B", True),
    ("Answer: b", "B", True),
    ("B. 42", "B", True),
    ("The answer is (C)", "C", True),
    ("\\text{(D)}", "D", True),
    ("C", "B", False),
    ("(A)", "B", False),
    ("42", "B", False),
]


def test_verify_table_is_large_with_both_outcomes():
    assert len(VERIFY_TABLE) >= 40
    assert sum(expected for *_, expected in VERIFY_TABLE) >= 20
    assert sum(not expected for *_, expected in VERIFY_TABLE) >= 15


@pytest.mark.parametrize("predicted,gold,expected", VERIFY_TABLE)
def test_answers_match(predicted, gold, expected):
    assert answers_match(predicted, gold) is expected


def test_parse_number_exact():
    assert parse_number("$1,250.50 dollars") == Fraction(2501, 2)
    assert parse_number("-3/4") == Fraction(-3, 4)
    assert parse_number("It is 12 apples") == 12
    assert parse_number("nothing") is None
    assert parse_number("5/0") is None


def test_parse_choice():
    assert parse_choice("Answer: (c) 42") == "C"
    assert parse_choice("**D**") == "D"
    assert parse_choice("42") is None


@pytest.mark.parametrize("hostile", [
    "__import__('os').system('echo hi')", "x.__class__", "lambda: 1", "\\input{/etc/passwd}", "open('f')",
    "1; import os", "eval(1)", "a.b", "'text'", "none",
])
def test_parse_math_refuses_anything_outside_the_grammar(hostile):
    assert parse_math(hostile) is None


def test_parse_math_refuses_huge_powers_quickly():
    started = time.perf_counter()
    assert parse_math("9^{9^{9}}") is None
    assert parse_math("(10^{100})^{100}") is None
    assert time.perf_counter() - started < 2
    assert parse_math("2^{10}") == 1024


# ---------------------------------------------------------------------------------------- prompts

@pytest.mark.parametrize("name,marker", [("gsm8k", "####"), ("math", "\\boxed"), ("mcq", "Answer:")])
def test_builtin_prompts_ask_for_reasoning_and_a_marked_answer(name, marker):
    prompt = load_prompt(name)
    assert prompt.style == name
    assert "{question}" in prompt.template and marker in prompt.template
    assert "step by step" in prompt.template
    rendered = prompt.render("What is 2+2?")
    assert "What is 2+2?" in rendered and "{question}" not in rendered


def test_prompt_file_style_is_detected(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("Q: {question}\nThink, then write \\boxed{answer}.", encoding="utf-8")
    prompt = load_prompt(path)
    assert prompt.style == "math" and prompt.name == str(path)
    assert prompt.render("1+1?").startswith("Q: 1+1?")


@pytest.mark.parametrize("text,code", [("No placeholder. ####", "E064"), ("{question} say something", "E064")])
def test_bad_prompt_files(tmp_path, text, code):
    path = tmp_path / "p.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CotSurvivalError) as info:
        load_prompt(path)
    assert info.value.code == code


def test_unknown_prompt_name():
    with pytest.raises(CotSurvivalError) as info:
        load_prompt("nope")
    assert info.value.code == "E063"


@pytest.mark.parametrize("style,response,reasoning,answer,predicted", [
    ("gsm8k", "She has 3 + 5 = 8 apples.\n#### 8\n#### 3", "She has 3 + 5 = 8 apples.", "#### 8", "8"),
    ("gsm8k", "Total: 1,000 dollars.\n**#### $1,000**", "Total: 1,000 dollars.", "#### $1,000", "$1,000"),
    ("gsm8k", "Step 1\n####\n#### 4", "Step 1\n####", "#### 4", "4"),
    ("math", "So $x = \\frac{1}{2}$.\nFinal answer: $\\boxed{\\frac{1}{2}}$", "So $x = \\frac{1}{2}$.",
     "Final answer: $\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}"),
    ("mcq", "Option B fits.\nAnswer: (B)", "Option B fits.", "Answer: (B)", "(B)"),
    ("mcq", "It is C.\n**Final answer:** c", "It is C.", "**Final answer:** c", "c"),
])
def test_split_response(style, response, reasoning, answer, predicted):
    split = split_response(response, style)
    assert (split.reasoning, split.answer, split.predicted) == (reasoning, answer, predicted)


def test_split_response_without_marker():
    assert split_response("The answer is 8.", "gsm8k") is None
    assert split_response("So \\boxed{1", "math") is None


def test_answer_is_complete_only_after_the_line_ends():
    assert not answer_is_complete("2+2=4\n#### 4", "gsm8k")
    assert answer_is_complete("2+2=4\n#### 4\n", "gsm8k")
    assert not answer_is_complete("2+2=4\n####\n", "gsm8k")
    assert answer_is_complete("so \\boxed{4}$\n", "math")


# ---------------------------------------------------------------------------------------- questions

def test_builtin_questions_have_numeric_gold():
    questions = read_questions("gsm8k", limit=5)
    chains = read_chains("gsm8k", limit=5)
    assert [q.id for q in questions] == [c.id for c in chains]
    assert [q.gold for q in questions] == [c.answer.removeprefix("#### ") for c in chains]


def test_question_files(tmp_path):
    jsonl = tmp_path / "q.jsonl"
    rows = [{"question": "1+1?", "answer": "2"}, {"id": "nat", "question": "Clips?", "answer": "48/2=24\n#### 72"},
            {"problem": "Half?", "solution": "It is $\\boxed{\\frac{1}{2}}$."},
            {"question": "Pick", "answer": "B", "choices": ["x", "y"]}]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    questions = read_questions(jsonl)
    assert [q.gold for q in questions] == ["2", "72", "\\frac{1}{2}", "B"]
    assert [q.id for q in questions][:2] == ["q-1", "nat"]
    assert questions[3].question.endswith("(A) x\n(B) y")
    csv = tmp_path / "q.csv"
    csv.write_text("question,answer\n\"2, or 3?\",3\n", encoding="utf-8")
    assert read_questions(csv) == [Question("q-2", "2, or 3?", "3")]


def test_question_file_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "answer": "1"}\n{"question": "b"}\n', encoding="utf-8")
    with pytest.raises(CotSurvivalError) as info:
        read_questions(bad)
    assert info.value.code == "E002" and ":2:" in info.value.message
    with pytest.raises(CotSurvivalError) as info:
        read_questions(tmp_path / "missing.jsonl")
    assert info.value.code == "E001"


def test_hub_dataset_without_datasets_package():
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(CotSurvivalError) as info:
            read_questions("openai/gsm8k:main@test")
        assert info.value.code == "E061"
    else:
        pytest.skip("datasets is installed")


def test_gold_from_answer_takes_the_last_box():
    assert gold_from_answer("First \\boxed{1}, then \\boxed{x^{2}}.") == "x^{2}"


# ---------------------------------------------------------------------------------------- generation

QUESTIONS = [Question("q-a", "Tom has 2 apples and gets 3 more. How many?", "5"),
             Question("q-b", "A pen costs $4. What do 3 pens cost?", "12"),
             Question("q-c", "Half of 48?", "24")]


@pytest.fixture(scope="module")
def tiny():
    from cotsurvival.testing import tiny_llama

    return tiny_llama()


@pytest.fixture
def forced(monkeypatch):
    """Make sample number ``accept_at[id]`` (1-based, drawing order) of each question the only correct one."""
    accept_at: dict[str, int | None] = {}
    calls: dict[str, int] = {}
    gold_to_id = {q.gold: q.id for q in QUESTIONS}

    def fake(response, gold, prompt, n_new_tokens=0):
        qid = gold_to_id[gold]
        calls[qid] = calls.get(qid, 0) + 1
        correct = accept_at.get(qid) == calls[qid]
        return SampleResult(response, n_new_tokens, f"reasoning {calls[qid]}", f"#### {gold}",
                            gold if correct else "0", correct)

    monkeypatch.setattr(generate_module, "score_response", fake)
    return accept_at, calls


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def test_bookkeeping_of_rejection_sampling(tiny, forced, tmp_path):
    accept_at, calls = forced
    accept_at.update({"q-a": 3, "q-b": None, "q-c": 1})
    model, tokenizer = tiny
    out = tmp_path / "chains.jsonl"
    result = generate_chains(QUESTIONS, model, tokenizer, samples=4, max_new_tokens=4, seed=7, out=out,
                             model_spec="tiny", progress=False)
    assert calls == {"q-a": 4, "q-b": 4, "q-c": 4}  # one batch: all samples drawn
    accepted = {row["id"]: row for row in _lines(out)}
    rejected = {row["id"]: row for row in _lines(tmp_path / "chains.rejected.jsonl")}
    assert set(accepted) == {"q-a", "q-c"} and set(rejected) == {"q-b"}
    assert (accepted["q-a"]["attempts"], accepted["q-a"]["n_correct"], accepted["q-a"]["samples_drawn"]) == (3, 1, 4)
    assert accepted["q-a"]["reasoning"] == "reasoning 3" and accepted["q-a"]["answer"] == "#### 5"
    assert accepted["q-c"]["attempts"] == 1
    assert rejected["q-b"]["correct"] is False and rejected["q-b"]["attempts"] == 4
    assert rejected["q-b"]["n_correct"] == 0 and "reasoning" not in rejected["q-b"]
    generator = accepted["q-a"]["generator"]
    assert {k: generator[k] for k in ("model", "temperature", "max_new_tokens", "prompt", "seed", "samples")} == {
        "model": "tiny", "temperature": 0.7, "max_new_tokens": 4, "prompt": "gsm8k", "seed": 7, "samples": 4}
    assert result.acceptance_rate == pytest.approx(2 / 3)
    assert [c.id for c in read_chains(out)] == ["q-a", "q-c"]  # the chains file feeds `prune` as is


def test_rounds_stop_at_the_first_correct_sample(tiny, forced, tmp_path):
    accept_at, calls = forced
    accept_at.update({"q-a": 3, "q-b": None})
    model, tokenizer = tiny
    result = generate_chains(QUESTIONS[:2], model, tokenizer, samples=6, batch_size=2, max_new_tokens=3,
                             progress=False)
    row_a, row_b = result.accepted[0], result.rejected[0]
    assert calls == {"q-a": 4, "q-b": 6}
    assert (row_a["attempts"], row_a["samples_drawn"]) == (3, 4)
    assert (row_b["attempts"], row_b["samples_drawn"]) == (6, 6)


def test_several_questions_share_a_left_padded_batch(tiny, tmp_path):
    model, tokenizer = tiny
    calls = []
    original = generate_module._Sampler.sample

    def spy(self, questions, k):
        calls.append(len(questions))
        return original(self, questions, k)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(generate_module._Sampler, "sample", spy)
        result = generate_chains(QUESTIONS, model, tokenizer, samples=2, batch_size=4, max_new_tokens=3,
                                 progress=False)
    assert calls == [2, 1]
    assert [len(row["sample_answers"]) for row in result.rejected] == [2, 2, 2]


def test_resume_skips_done_questions(tiny, forced, tmp_path):
    accept_at, calls = forced
    accept_at.update({"q-a": 1, "q-b": None, "q-c": 2})
    model, tokenizer = tiny
    out = tmp_path / "chains.jsonl"
    generate_chains(QUESTIONS, model, tokenizer, samples=2, max_new_tokens=3, out=out, limit=2, progress=False)
    assert calls == {"q-a": 2, "q-b": 2}
    result = generate_chains(QUESTIONS, model, tokenizer, samples=2, max_new_tokens=3, out=out, progress=False)
    assert calls == {"q-a": 2, "q-b": 2, "q-c": 2}  # only the new question was sampled
    assert result.n_resumed == 2
    assert sorted(r["id"] for r in result.accepted) == ["q-a", "q-c"]
    assert [r["id"] for r in _lines(out)] == ["q-a", "q-c"]
    assert [r["id"] for r in _lines(tmp_path / "chains.rejected.jsonl")] == ["q-b"]


def test_resume_drops_a_partial_last_line_and_checks_settings(tiny, forced, tmp_path):
    accept_at, calls = forced
    accept_at.update({"q-a": 1, "q-b": 1})
    model, tokenizer = tiny
    out = tmp_path / "chains.jsonl"
    generate_chains(QUESTIONS[:1], model, tokenizer, samples=1, max_new_tokens=2, out=out, progress=False)
    with open(out, "a", encoding="utf-8") as handle:
        handle.write('{"id": "q-b", "quest')  # a run killed mid-write
    generate_chains(QUESTIONS[:2], model, tokenizer, samples=1, max_new_tokens=2, out=out, progress=False)
    assert [r["id"] for r in _lines(out)] == ["q-a", "q-b"]
    with pytest.raises(CotSurvivalError) as info:
        generate_chains(QUESTIONS, model, tokenizer, samples=1, temperature=1.0, max_new_tokens=2, out=out,
                        progress=False)
    assert info.value.code == "E065" and "temperature" in info.value.message
    fresh = generate_chains(QUESTIONS[:1], model, tokenizer, samples=1, temperature=1.0, max_new_tokens=2, out=out,
                            resume=False, progress=False)
    # Not resuming starts both files afresh (q-a is now the fake's 2nd call, so it is rejected).
    assert fresh.n_resumed == 0 and _lines(out) == []
    assert [r["id"] for r in _lines(tmp_path / "chains.rejected.jsonl")] == ["q-a"]


def test_sampling_is_reproducible_and_seeded(tiny):
    model, tokenizer = tiny
    sampler = generate_module._Sampler(model, tokenizer, load_prompt("gsm8k"), 0.7, 6)
    texts = []
    for seed in (1, 1, 2):
        generate_module._seed_for(seed, ["q-a"], 0)
        texts.append([r.response for r in sampler.sample(QUESTIONS[:1], 3)[0]])
    assert texts[0] == texts[1] and texts[0] != texts[2]


def test_real_sampler_scores_and_stops(tiny):
    model, tokenizer = tiny
    sampler = generate_module._Sampler(model, tokenizer, load_prompt("gsm8k"), 0.7, 5)
    torch.manual_seed(0)
    (results,) = sampler.sample(QUESTIONS[:1], 3)
    assert len(results) == 3 and all(0 < r.n_new_tokens <= 5 for r in results)
    stop = generate_module._AnswerLineStop(tokenizer, 0, "gsm8k")
    done = torch.tensor([tokenizer("So 5.\n#### 5\n", add_special_tokens=False)["input_ids"]])
    open_line = torch.tensor([tokenizer("So 5.\n#### 5", add_special_tokens=False)["input_ids"]])
    assert stop(done, None).tolist() == [True] and stop(open_line, None).tolist() == [False]


@pytest.mark.parametrize("kwargs, code", [({"samples": 0}, "E086"), ({"temperature": -1}, "E086"),
                                          ({"temperature": 0, "samples": 2}, "E089"),
                                          ({"max_new_tokens": 0}, "E086"), ({"batch_size": 0}, "E086")])
def test_invalid_options(tiny, kwargs, code):
    model, tokenizer = tiny
    with pytest.raises(ValueError) as info:
        generate_chains(QUESTIONS, model, tokenizer, progress=False, **kwargs)
    assert isinstance(info.value, CotSurvivalError) and info.value.code == code


# ---------------------------------------------------------------------------------------- CLI

def test_cli_generate_end_to_end(tiny, tmp_path, capsys):
    from cotsurvival.cli import main

    model, tokenizer = tiny
    model.save_pretrained(tmp_path / "tiny", safe_serialization=True)
    tokenizer.save_pretrained(tmp_path / "tiny")
    out = tmp_path / "chains.jsonl"
    args = ["generate", "gsm8k", "--model", str(tmp_path / "tiny"), "--out", str(out), "--samples", "2",
            "--max-new-tokens", "3", "--limit", "2", "--device", "cpu"]
    assert main(args) == 0
    assert "accepted 0/2" in capsys.readouterr().out
    rows = _lines(tmp_path / "chains.rejected.jsonl")
    assert [r["samples_drawn"] for r in rows] == [2, 2]
    assert rows[0]["generator"]["model"] == str(tmp_path / "tiny")
    assert main(args) == 0
    assert "2 resumed" in capsys.readouterr().out


def test_cli_generate_reports_bad_input(tmp_path, capsys):
    from cotsurvival.cli import main

    assert main(["generate", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "error[E001]" in capsys.readouterr().err
    assert main(["generate", "gsm8k", "--out", str(tmp_path / "o.jsonl"), "--prompt", "nope"]) == 2
    assert "error[E063]" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- SmolLM2

@pytest.mark.integration
def test_smollm2_generates_two_builtin_questions(tmp_path):
    from cotsurvival.models import load_model

    model, tokenizer, info = load_model("smollm2-135m", device="cpu")
    out = tmp_path / "chains.jsonl"
    result = generate_chains("gsm8k", model, tokenizer, samples=2, max_new_tokens=24, limit=2, out=out,
                             model_spec=info.spec, progress=False)
    rows = _lines(out) + _lines(tmp_path / "chains.rejected.jsonl")
    assert sorted(r["id"] for r in rows) == sorted(q.id for q in read_questions("gsm8k", limit=2))
    for row in rows:
        assert row["samples_drawn"] == 2 and len(row["sample_answers"]) == 2
        assert 0 <= row["n_correct"] <= 2 and row["correct"] == (row["n_correct"] > 0)
        assert row["generator"]["model"] == "smollm2-135m" and row["generator"]["max_new_tokens"] == 24
        if row["correct"]:
            assert row["reasoning"] and row["answer"].startswith("####")
    assert result.n_questions == 2
