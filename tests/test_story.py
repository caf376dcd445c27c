"""One story across commands: stored results know what they were computed from, options are checked at
the edge, skipped chains are named, and every statistic has one definition."""
from __future__ import annotations

import json

import pytest

from cotsurvival.errors import CotSurvivalError


# ------------------------------------------------------------------ results know what they were computed from
def test_report_after_a_continued_run_never_shows_the_stale_statistics(tmp_path, tiny_loaded):
    import cotsurvival
    from cotsurvival.analysis import AnalysisResult
    from cotsurvival.testing import EXAMPLE_CHAINS
    from cotsurvival.pruning import prune

    out = tmp_path / "run"
    prune(EXAMPLE_CHAINS[:2], out, loaded_model=tiny_loaded, keep_ratio=0.5, progress=False)
    cotsurvival.tag(out, progress=False)
    half = cotsurvival.analyze(out, n_boot=0, primary="symbolic_math")
    assert half.counts_["n_censored"] > 0
    assert half.stale() is None and "Stale" not in half._repr_html_()
    prune(EXAMPLE_CHAINS[:2], out, loaded_model=tiny_loaded, keep_ratio=0.0, progress=False)
    assert "keep ratio 0.5 then, 0.0 now" in half.stale() and "Stale" in half._repr_html_()   # the notebook view

    # --no-analyze: refuse with one line naming the command that updates the statistics
    with pytest.raises(CotSurvivalError) as refused:
        cotsurvival.report(out, tmp_path / "refused", widths=("one",), run_analysis=False)
    assert refused.value.code == "E150" and f"cotsurvival analyze {out}" in refused.value.one_line()
    assert "keep ratio 0.5 then, 0.0 now" in refused.value.one_line()

    # default: recomputed with the stored settings, and the page says so
    report = cotsurvival.report(out, tmp_path / "report", widths=("one",))
    assert "recomputed" in report.stats_note
    fresh = AnalysisResult.load(out)
    assert fresh.counts_["n_censored"] == 0 and fresh.counts_["keep_ratio"] == 0.0   # oracle: a full ranking
    assert fresh.config["n_boot"] == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert "not reached" not in page.split("cs-categories")[1].split("</table>")[0]

    # the notebook's run summary: the stored table only while it matches the run
    from cotsurvival.reports.notebook import run_summary_html

    assert "from stats/stats.json" in run_summary_html(out)
    prune(EXAMPLE_CHAINS[:3], tmp_path / "other", loaded_model=tiny_loaded, keep_ratio=0.5, progress=False)
    cotsurvival.tag(tmp_path / "other", progress=False)
    cotsurvival.analyze(tmp_path / "other", n_boot=0)
    cotsurvival.tag(tmp_path / "other", progress=False, overwrite=True)   # re-tagged: the labels were rewritten
    assert "from stats/stats.json" not in run_summary_html(tmp_path / "other")


# ------------------------------------------------------------------ answers without a marker
def test_final_answer_rule():
    from cotsurvival.generation.verify import NO_FINAL_ANSWER, answers_match, final_answer

    assert final_answer("24 + 48 = 72\n#### 72") == ("72", "marker")
    assert final_answer("so \\boxed{\\frac{1}{2}}") == ("\\frac{1}{2}", "boxed")
    assert final_answer(" $1,000 ") == ("$1,000", "bare")
    assert final_answer("(B)") == ("(B)", "bare")
    assert final_answer("So the answer is 6 apples.", gold="6") == ("6", "last_number")
    assert final_answer("So the answer is 6 apples.") == (None, NO_FINAL_ANSWER)   # no numeric gold: no guessing
    assert final_answer("three bolts") == (None, NO_FINAL_ANSWER)
    value, _ = final_answer("She earned 0.2 x 50 = $10.00.", gold="10")
    assert answers_match(value, "10")


def test_recover_scores_answers_without_a_marker_and_excludes_prose_answers(tmp_path, tiny_loaded, monkeypatch):
    import cotsurvival.recovery as recovery
    from cotsurvival.chains import Chain
    from cotsurvival.pruning import prune
    from cotsurvival.testing import EXAMPLE_CHAINS

    bare = [Chain(c.id, c.question, c.reasoning, c.answer.removeprefix("#### ")) for c in EXAMPLE_CHAINS]
    prose = Chain("ex-4", EXAMPLE_CHAINS[2].question, EXAMPLE_CHAINS[2].reasoning, "three bolts in all")
    run = prune([*bare, prose], tmp_path / "run", loaded_model=tiny_loaded, keep_ratio=0.5, progress=False)
    golds = {"Natalia": "72", "Weng": "10", "robe": "3"}

    def right_in_prose(model, tokenizer, prompts, *args, **kwargs):   # a model that answers right, in words
        texts = [tokenizer.decode(p) for p in prompts]
        return [f"So the answer is {next(g for k, g in golds.items() if k in t)}." for t in texts]

    monkeypatch.setattr(recovery, "greedy_answer_lines", right_in_prose)
    result = recovery.recover(run, keep_ratios=(0.5,), loaded_model=tiny_loaded, progress=False)
    scored = result.scored
    assert set(scored["chain_id"]) == {"ex-1", "ex-2", "ex-3"} and scored["correct"].all()
    summary = result.summary()
    unpruned = summary[(summary.ordering == "greedy") & (summary.keep_ratio == 1.0)].iloc[0]
    assert unpruned["accuracy"] == 1.0 and unpruned["n_chains"] == 3
    reasons = result.exclusions()
    assert list(reasons.values()) == [{"n_chains": 1, "chain_ids": ["ex-4"]}]
    assert "no #### marker" in next(iter(reasons))
    manifest = run.read_manifest()
    assert manifest["recovery"]["excluded"] == reasons and manifest["recovery"]["fingerprint"]["n_chains"] == 4


# ------------------------------------------------------------------ every option checked at the edge
@pytest.fixture(scope="module")
def tagged_run(tmp_path_factory):
    from cotsurvival.testing import synthetic_run

    return synthetic_run(tmp_path_factory.mktemp("edge") / "run", n_chains=3, n_tokens=12, keep_ratio=0.5)


def test_analyze_primary_typo_is_one_line_with_did_you_mean(tagged_run):
    from cli_helpers import assert_one_line_error, cli

    done = cli("analyze", tagged_run.path, "--primary", "maths", "--n-boot", "0")
    assert done.returncode == 2, done.stdout + done.stderr
    assert_one_line_error(done.stderr, "E151", "'maths'", "did you mean 'symbolic_math'", "narration")
    assert not (tagged_run.path / "stats").exists()   # nothing computed, nothing written


def test_export_keep_ratio_outside_0_1_is_refused(tagged_run, tmp_path):
    from cli_helpers import assert_one_line_error, cli

    out = tmp_path / "pruned.jsonl"
    done = cli("export", tagged_run.path, "--keep-ratio", "1.5", "--out", out)
    assert done.returncode == 2, done.stdout + done.stderr
    assert_one_line_error(done.stderr, "E152", "--keep-ratio 1.5", "[0, 1]")
    assert not out.exists()


@pytest.mark.parametrize("call, code, needle", [
    (lambda run: __import__("cotsurvival").analyze(run, reference="narative", save=False), "E151", "did you mean 'narration'"),
    (lambda run: __import__("cotsurvival").analyze(run, n_boot=-1, save=False), "E152", "--n-boot -1"),
])
def test_api_options_checked_before_work(tagged_run, call, code, needle):
    with pytest.raises(CotSurvivalError) as caught:
        call(tagged_run)
    assert caught.value.code == code and needle in caught.value.one_line()


def test_power_and_compare_ratios_checked(tagged_run, tmp_path):
    from cli_helpers import assert_one_line_error, cli

    done = cli("power", tagged_run.path, "--alpha", "1.2")
    assert done.returncode == 2 and assert_one_line_error(done.stderr, "E152", "--alpha 1.2")
    done = cli("power", tagged_run.path, "--primary", "gramar")
    assert done.returncode == 2 and assert_one_line_error(done.stderr, "E151", "did you mean 'grammar'")
    done = cli("compare", tagged_run.path, tagged_run.path, "--out", tmp_path / "cmp", "--keep-ratios", "0.5,-0.2")
    assert done.returncode == 2 and assert_one_line_error(done.stderr, "E152", "--keep-ratios -0.2")


# ------------------------------------------------------------------ skipped chains are named; honest output
def _chains_file(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


GOOD = {"id": "good-1", "question": "Tom has 3 apples and buys 2 more. How many?", "reasoning": "3 + 2 = 5 apples.",
        "answer": "#### 5"}


def test_all_skipped_file_lists_every_reason_with_chain_ids(tmp_path, tiny_dir):
    from cli_helpers import assert_one_line_error, cli

    bad = _chains_file(tmp_path / "bad.jsonl", [
        {"id": "no-answer-1", "question": "q", "reasoning": "r"},
        {"id": "no-answer-2", "question": "q", "reasoning": "r"},
        {"id": "empty-1", "question": "q", "reasoning": "", "answer": "#### 1"}])
    done = cli("prune", bad, "--out", tmp_path / "run", "--model", tiny_dir, "--on-error", "skip")
    assert done.returncode == 2, done.stdout + done.stderr
    line = assert_one_line_error(done.stderr, "E014", "every chain was skipped")
    assert "see the reasons above" not in line
    # oracle: the three records above, two reasons; each id named under its reason with its count
    assert "2 chains:" in line and "no-answer-1 (line 1), no-answer-2 (line 2)" in line and "1 chain:" in line and "empty-1" in line


def test_mixed_file_shows_skip_reasons_plural_and_resume(tmp_path, tiny_dir):
    from cli_helpers import cli

    mixed = _chains_file(tmp_path / "mixed.jsonl", [GOOD, {"id": "no-answer", "question": "q", "reasoning": "r"}])
    run = tmp_path / "run"
    done = cli("prune", mixed, "--out", run, "--model", tiny_dir, "--on-error", "skip", "--keep-ratio", "0.5")
    assert done.returncode == 0, done.stderr
    assert "skipped 1 of 2 chains:" in done.stderr and "no-answer" in done.stderr
    assert "pruned 1 chain into" in done.stdout and "1 chains" not in done.stdout
    first = json.loads((run / "manifest.json").read_text())["timings"]

    done = cli("prune", mixed, "--out", run, "--model", tiny_dir, "--on-error", "skip")   # continue to 0
    assert done.returncode == 0, done.stderr
    assert "continuing" in done.stderr and "0 of 1 chain already done" in done.stderr
    assert "resumed: 0 already done" in done.stdout
    timings = json.loads((run / "manifest.json").read_text())["timings"]
    assert timings["invocations"] == 2
    assert timings["prune_seconds_total"] == pytest.approx(
        first["prune_seconds_last_invocation"] + timings["prune_seconds_last_invocation"], abs=2e-3)
    assert "\r" not in done.stderr   # not a terminal: plain lines, no carriage-return redraws


# ------------------------------------------------------------------ quiet, honest output
def test_native_stderr_noise_is_captured_and_summarised_in_a_note(tagged_run, monkeypatch, capfd):
    import importlib
    import os

    import cotsurvival

    analyze_module = importlib.import_module("cotsurvival.analysis.analyze")

    real = analyze_module._dynamics

    def noisy(result, run, table):   # what OpenBLAS's xerbla does: write to fd 2 from native code
        os.write(2, b" ** On entry to DLASCL parameter number  4 had an illegal value\n" * 3)
        return real(result, run, table)

    monkeypatch.setattr(analyze_module, "_dynamics", noisy)
    capfd.readouterr()
    result = cotsurvival.analyze(tagged_run, n_boot=0, save=False)
    assert "DLASCL" not in capfd.readouterr().err
    [note] = [n for n in result.notes_ if "DLASCL" in n]
    assert "3 message line(s)" in note and "degenerate" in note


def test_degradation_table_names_its_sign_and_interpolation(tagged_run):
    import numpy as np

    from cotsurvival.analysis.dynamics import degradation_curves

    per_chain, pooled = degradation_curves(tagged_run, grid=3)
    assert "mean_drop" not in pooled and {"mean_change", "median_change"} <= set(pooled.columns)
    assert "interpolated" in pooled.attrs["notes"][0] and "minus" in pooled.attrs["notes"][0]
    # oracle: a chain's change is its objective minus its unpruned objective (sign kept, not flipped)
    steps = tagged_run.read_part("steps", 0)
    np.testing.assert_allclose(per_chain[per_chain.chain_index == 0]["change"],
                               steps["objective"] - steps["objective"].iloc[0])


# ------------------------------------------------------------------ one name, one number
def test_mean_normalized_survival_is_one_number_in_analyze_compare_and_report(tmp_path):
    import numpy as np
    import pandas as pd

    import cotsurvival
    from cotsurvival.analysis import load_run
    from cotsurvival.comparison import compare
    from cotsurvival.reports.notebook import run_summary_html
    from cotsurvival.testing import synthetic_run

    run = synthetic_run(tmp_path / "run", n_chains=6, n_tokens=14, keep_ratio=0.0, seed=3)
    analysis = cotsurvival.analyze(run, n_boot=200, seed=5)
    compared = compare([run.path, f"{run.path}:random"], tmp_path / "cmp", n_boot=200, seed=5)

    # oracle: by hand, the mean over chains of each chain's mean survival of the category's tokens
    tokens = load_run(run)
    tokens = tokens[tokens["n_tokens"] > 1]
    by_hand = tokens.groupby(["category", "chain_index"])["survival"].mean().groupby("category").mean()

    summary = analysis.tables_["summary_category"].set_index("group")
    mine = compared.tables["category_survival"]
    mine = mine[mine["run"] == mine["run"].iloc[0]].set_index("category")
    for category, expected in by_hand.items():
        assert summary.loc[category, "mean"] == pytest.approx(expected, abs=1e-12)
        assert mine.loc[category, "mean_survival"] == pytest.approx(expected, abs=1e-12)
        # same definition, same resamples: the interval is the same too
        assert summary.loc[category, "mean_lower"] == pytest.approx(mine.loc[category, "ci_low"], abs=1e-12)
        assert summary.loc[category, "mean_upper"] == pytest.approx(mine.loc[category, "ci_high"], abs=1e-12)
    # the token-pooled mean is a different number here (chains of unequal category mix), so the check can fail
    pooled = tokens.groupby("category")["survival"].mean()
    assert not np.allclose(pooled.sort_index().to_numpy(), by_hand.sort_index().to_numpy())
    # the report and the notebook quote the stored table, and citations.md its numbers
    page = run_summary_html(run)
    first = by_hand.sort_index().index[0]
    assert f"{summary.loc[first, 'mean']:.3f}" in page
    assert any(f"{summary.loc[first, 'mean']:.2f}" in c for c in analysis.citations_ if "Mean normalized" in c) or \
        not any("Mean normalized" in c for c in analysis.citations_)
    assert isinstance(mine, pd.DataFrame)
    # the stored comparison knows what it was computed from
    assert compared.stale() == {}
    cotsurvival.tag(run, progress=False, overwrite=True)
    assert "labels were rewritten" in compared.stale()[str(run.path)] and "Stale" in compared._repr_html_()


# ------------------------------------------------------------------ users' field names; one annotation rule
THEIRS = [{"uid": "u-1", "problem": "Natalia sold 48 clips in April and half as many in May. How many in all?",
           "rationale": "She sold 48/2 = <<48/2=24>>24 clips in May.\nSo 48+24 = <<48+24=72>>72 clips.", "final": "72"},
          {"uid": "u-2", "problem": "Weng earns $12 an hour. How much for 50 minutes?",
           "rationale": "12/60 = $0.2 per minute, so 0.2 x 50 = $10.", "final": "#### 10"}]
FIELDS = "question=problem,reasoning=rationale,answer=final,id=uid"


def test_fields_map_a_users_names_in_python_and_errors_name_the_mapping(tmp_path):
    from cotsurvival.chains import read_chains

    path = _chains_file(tmp_path / "theirs.jsonl", THEIRS)
    corpus = read_chains(path, fields=FIELDS)
    assert [c.id for c in corpus] == ["u-1", "u-2"] and corpus[0].answer == "72"
    assert corpus[0].reasoning == "She sold 48/2 = 24 clips in May.\nSo 48+24 = 72 clips."   # annotations stripped
    assert corpus.n_annotations_stripped == 1
    same = read_chains(path, fields={"question": "problem", "reasoning": "rationale", "answer": "final", "id": "uid"})
    assert [c.to_dict() for c in same] == [c.to_dict() for c in corpus]
    with pytest.raises(CotSurvivalError) as caught:
        read_chains(path, fields="questoin=problem")
    assert caught.value.code == "E153" and "did you mean 'question'" in caught.value.one_line()
    with pytest.raises(CotSurvivalError) as caught:
        read_chains(path, fields="question=prompt")
    assert "missing field 'prompt' (--fields maps it to question" in caught.value.one_line()


def test_prune_and_tag_read_a_file_by_one_rule_so_offsets_agree(tmp_path, tiny_loaded):
    from cotsurvival.pruning import prune
    from cotsurvival.taxonomy.tagger import write_spans

    path = _chains_file(tmp_path / "theirs.jsonl", THEIRS)
    run = prune(path, tmp_path / "run", loaded_model=tiny_loaded, keep_ratio=0.5, progress=False, fields=FIELDS)
    pruned = dict(zip(run.read_chains()["chain_id"], run.read_chains()["reasoning"]))
    write_spans(path, tmp_path / "spans.jsonl", fields=FIELDS)
    spans = {r["id"]: r for r in map(json.loads, (tmp_path / "spans.jsonl").read_text().splitlines())}
    assert {k: v["reasoning"] for k, v in spans.items()} == pruned        # the same text, so the same offsets
    assert "<<" not in pruned["u-1"]
    write_spans(path, tmp_path / "kept.jsonl", fields=FIELDS, keep_annotations=True)
    kept = {r["id"]: r["reasoning"] for r in map(json.loads, (tmp_path / "kept.jsonl").read_text().splitlines())}
    assert kept["u-1"] == THEIRS[0]["rationale"]


def test_study_source_resolves_from_the_toml_file_not_the_working_directory(tmp_path, monkeypatch):
    from cotsurvival.comparison.study import load_study, select_chains

    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    _chains_file(folder / "data" / "theirs.jsonl", [GOOD])
    (folder / "study.toml").write_text('[chains]\nsource = "data/theirs.jsonl"\n\n[[settings]]\nname = "a"\n')
    monkeypatch.chdir(tmp_path)                     # not the study's folder
    study = load_study(folder / "study.toml")
    assert study.chains["source"] == str((folder / "data" / "theirs.jsonl").resolve())
    assert [c.id for c in select_chains(study.chains)] == ["good-1"]
    assert load_study_builtin(tmp_path).chains["source"] == "gsm8k"


def load_study_builtin(tmp_path):
    from cotsurvival.comparison.study import load_study

    (tmp_path / "b.toml").write_text('[chains]\nsource = "gsm8k"\nlimit = 1\n\n[[settings]]\nname = "a"\n')
    return load_study(tmp_path / "b.toml")
