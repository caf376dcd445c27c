"""The stage API: each stage's result renders in Jupyter, converts to a DataFrame, saves and loads."""
from __future__ import annotations

import json

import pandas as pd

import cotsurvival
from cotsurvival.testing import synthetic_run


def _round_trip(result, tmp_path):
    path = result.save(tmp_path / f"{type(result).__name__}.json")
    again = type(result).load(path)
    assert again.to_dict() == result.to_dict()
    assert json.loads(path.read_text())["type"] == type(result).__name__
    return again


def test_stage_results_render_convert_save_and_load(tmp_path):
    run = synthetic_run(tmp_path / "run", n_chains=2, n_tokens=10, keep_ratio=0.5, tagged=False, baselines=False)
    tagged = cotsurvival.tag(run, progress=False)
    frame = tagged.to_frame()
    # oracle: the per-label counts equal a count over the stored labels
    stored = pd.read_parquet(run.table_dir("labels"))["label"].value_counts()
    assert dict(zip(frame["label"], frame["n_tokens"])) == stored.to_dict()
    assert "cotsurvival tag" in tagged._repr_html_() and tagged["n_tokens"] == len(run.read_table("tokens"))
    _round_trip(tagged, tmp_path)

    exported = cotsurvival.export(run, keep_ratio=0.5, out=tmp_path / "pruned.jsonl")
    assert len(exported.to_frame()) == exported.n_chains == 2
    _round_trip(exported, tmp_path)

    viewed = cotsurvival.view(run, out=tmp_path / "view.html")
    assert viewed.n_bytes == (tmp_path / "view.html").stat().st_size and "view.html" in viewed._repr_html_()
    _round_trip(viewed, tmp_path)

    report = cotsurvival.report(run, tmp_path / "report", widths=("one",), run_analysis=False)
    table = report.to_frame()
    assert set(table["figure"]) == set(report.figures) | set(report.skipped)
    assert "<table" in report._repr_html_()
    _round_trip(report, tmp_path)

    analysis = cotsurvival.analyze(run, n_boot=0, mixed=False, save=False)
    tests = analysis.to_frame()
    assert set(tests["test"]) == set(analysis.tests_) and "labels" in analysis._repr_html_()
    assert analysis.config["labels_source"] == "rule"

    loaded = cotsurvival.RunDir.load(run.path)
    assert len(loaded.to_frame()) == len(run.read_table("tokens"))


def test_html_of_a_result_is_escaped(tmp_path):
    from cotsurvival.stages import ExportResult

    page = ExportResult(path="<script>alert(1)</script>", keep_ratio=0.5, n_chains=1)._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_tag_cli_rejects_out_for_a_run(tmp_path):
    from cotsurvival.cli import main

    run = synthetic_run(tmp_path / "run", n_chains=1, n_tokens=6, tagged=False, baselines=False)
    assert main(["tag", str(run.path), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert not run.part_indices("labels")


def test_import_is_light():
    """`import cotsurvival` loads no heavy library (stages are imported on first use)."""
    import subprocess
    import sys

    code = "import sys, cotsurvival; print(sorted(m for m in ('torch', 'pandas', 'spacy', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
