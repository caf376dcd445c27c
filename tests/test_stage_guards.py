"""Every stage function refuses, from Python exactly as from the CLI, to write over an input or a run table.

The guard lives inside each stage (``cotsurvival.outputs.check_output`` with the run's own table
registry, ``cotsurvival.rundir.RUN_ENTRIES``), so a notebook user gets the same one-line refusal
as the command line, before any work, and the run's tables still load afterwards.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

import cotsurvival
from cotsurvival.cli import main
from cotsurvival.errors import CotSurvivalError
from cotsurvival.rundir import PER_CHAIN_TABLES, RUN_ENTRIES, RunDir
from cotsurvival.testing import EXAMPLE_CHAINS, synthetic_run

from cli_helpers import assert_one_line_error, write_jsonl


@pytest.fixture(scope="module")
def run_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("guards") / "run"
    synthetic_run(path, n_chains=3, n_tokens=12)
    return path


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by relative path -> sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(call, *, code: str = "E080", untouched: Path) -> CotSurvivalError:
    """``call()`` raises ``code`` and leaves every file under ``untouched`` as it was."""
    before = snapshot(untouched)
    with pytest.raises(CotSurvivalError) as info:
        call()
    assert info.value.code == code, info.value
    assert isinstance(info.value, ValueError if code == "E080" else FileExistsError)
    assert snapshot(untouched) == before
    return info.value


def test_registry_covers_every_table_of_a_run():
    # labels.parquet and recovery.parquet were missing from the old hand-written list
    assert {"labels.parquet", "recovery.parquet", "tokens.parquet", "manifest.json", "chains.parquet",
            "stats", "checkpoints"} <= set(RUN_ENTRIES)
    assert {f"{t}.parquet" for t in PER_CHAIN_TABLES} <= set(RUN_ENTRIES)


# ------------------------------------------------------------------------------- one per stage
def test_prune_refuses_its_own_chains_file(tmp_path, tiny_loaded):
    source = write_jsonl(tmp_path / "c.jsonl", EXAMPLE_CHAINS[:1])
    refused(lambda: cotsurvival.prune(source, source, loaded_model=tiny_loaded, progress=False), untouched=tmp_path)


def test_tag_refuses_to_write_spans_over_its_chains(tmp_path):
    source = write_jsonl(tmp_path / "c.jsonl", EXAMPLE_CHAINS[:1])
    refused(lambda: cotsurvival.tag(source, out=source, progress=False), untouched=tmp_path)


def test_tag_eval_refuses_to_write_over_its_gold_file(tmp_path):
    from cotsurvival.taxonomy.evaluate import evaluate_tagger

    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps({"id": "g1", "reasoning": "3 + 4 = 7", "spans": [[0, 9, "EQUATION"]]}) + "\n")
    refused(lambda: evaluate_tagger(gold, out=gold), untouched=tmp_path)


def test_attention_has_no_user_named_output():
    # attention writes only RUN/attention.parquet through RunDir; there is no path to misdirect
    import inspect

    assert "out" not in inspect.signature(cotsurvival.attention).parameters


@pytest.mark.parametrize("target", ["tokens.parquet", "labels.parquet/x", "manifest.json"])
def test_analyze_refuses_run_tables(run_path, target):
    refused(lambda: cotsurvival.analyze(run_path, run_path / target, n_boot=0), untouched=run_path)


def test_report_refuses_a_folder_inside_labels(run_path):
    refused(lambda: cotsurvival.report(run_path, run_path / "labels.parquet" / "x"), untouched=run_path)


def test_view_refuses_a_labels_part(run_path):
    refused(lambda: cotsurvival.view(run_path, out=run_path / "labels.parquet" / "part-000000.parquet"),
            untouched=run_path)


def test_export_refuses_the_chains_table(run_path):
    refused(lambda: cotsurvival.export(run_path, keep_ratio=0.5, out=run_path / "chains.parquet"), untouched=run_path)


def test_recover_refuses_the_tokens_table_before_loading_a_model(run_path):
    # no model is given: the refusal must come first
    refused(lambda: cotsurvival.recover(run_path, out=run_path / "tokens.parquet", model="no/such-model"),
            untouched=run_path)


@pytest.mark.parametrize("target", ["tokens.parquet", "labels.parquet/x", "resample.parquet"])
def test_resample_refuses_run_tables_before_loading_a_model(run_path, target):
    from cotsurvival.resampling import resample

    # no model is given: the refusal must come before any model or rollout
    refused(lambda: resample(run_path, out=run_path / target, model="no/such-model", progress=False),
            untouched=run_path)


def test_resample_refuses_a_foreign_folder(run_path, tmp_path):
    from cotsurvival.resampling import resample

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    refused(lambda: resample(run_path, out=mine, model="no/such-model", progress=False), code="E081",
            untouched=tmp_path)


def test_generate_refuses_to_write_over_its_questions(tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    refused(lambda: cotsurvival.generate(questions, model="no/such-model", out=questions), untouched=tmp_path)


def test_compare_refuses_a_table_of_a_compared_run(run_path, tmp_path):
    other = synthetic_run(tmp_path / "other", n_chains=3, n_tokens=12).path
    refused(lambda: cotsurvival.compare([run_path, other], run_path / "tokens.parquet"), untouched=run_path)


def test_study_refuses_to_write_over_its_study_file(tmp_path):
    from cotsurvival.comparison import run_study

    study = tmp_path / "s.toml"
    study.write_text('[settings.a]\nsource = "gsm8k"\n')
    refused(lambda: run_study(study, study), untouched=tmp_path)


def test_existing_foreign_output_needs_overwrite(run_path, tmp_path):
    page = tmp_path / "page.html"
    page.write_text("<html>mine</html>")
    refused(lambda: cotsurvival.view(run_path, out=page), code="E081", untouched=tmp_path)


# ------------------------------------------------------------------- the three reproduced cases
@pytest.mark.parametrize("argv", [
    ("view", "{run}", "--out", "{run}/labels.parquet/part-0.parquet"),
    ("report", "{run}", "--out", "{run}/labels.parquet/x"),
    ("recover", "{run}", "--out", "{run}/tokens.parquet"),
    ("resample", "{run}", "--out", "{run}/tokens.parquet"),
])
def test_cli_cases_that_used_to_break_a_run(capsys, run_path, argv):
    before = snapshot(run_path)
    code = main([a.format(run=run_path) for a in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert_one_line_error(err, "E080", "Refusing to write")
    assert snapshot(run_path) == before
    for table in ("tokens", "labels"):  # the run's tables still load with pandas
        assert len(pd.read_parquet(run_path / f"{table}.parquet")) > 0


# ------------------------------------------------------------------- recovery's own table
def test_recovery_reports_an_unreadable_part_and_keeps_it(tmp_path):
    from cotsurvival.recovery import RecoveryResult, _read_part

    run = synthetic_run(tmp_path / "run", n_chains=2, n_tokens=8)
    damaged = run.part_path("recovery", 0)
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"not parquet")
    with pytest.raises(CotSurvivalError) as info:
        _read_part(run, 0)
    assert info.value.code == "E008" and str(damaged) in info.value.message
    with pytest.raises(CotSurvivalError, match="E008"):
        RecoveryResult.load(run.path)
    assert damaged.read_bytes() == b"not parquet"  # reported, never deleted
    assert _read_part(run, 1) is None


def test_recovery_part_is_written_through_rundir(tmp_path):
    run = synthetic_run(tmp_path / "run", n_chains=1, n_tokens=8)
    frame = pd.DataFrame({"chain_index": [0], "ordering": ["greedy"], "keep_ratio": [1.0]})
    run.write_part("recovery", 0, frame)
    assert run.part_indices("recovery") == [0]
    pd.testing.assert_frame_equal(RunDir(run.path).read_table("recovery"), frame)
