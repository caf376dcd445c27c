"""Reports and the viewer state and use the label source: stats.json config.labels_source, --labels.

Oracle: the judge labels written here by hand (every token 'narration' / CONTENT), which differ
from the synthetic run's true rule labels, and the rule labels read straight from labels.parquet.
"""
from __future__ import annotations

import json
import re

import pytest

from cotsurvival.analysis import analyze
from cotsurvival.cli import main
from cotsurvival.provenance import fingerprint
from cotsurvival.reports import build_report, build_viewer, run_summary_html
from cotsurvival.reports.data import ReportData
from cotsurvival.testing import synthetic_run

JUDGE = "judge:canned"


def _add_judge_labels(run):
    from cotsurvival.labels import record_source, write_labels

    taxonomy = {"name": "test-judge", "version": "0"}
    for index in run.part_indices("tokens"):
        part = run.read_part("tokens", index)
        frame = part[["chain_index", "chain_id", "position"]].assign(label="CONTENT", category="narration")
        write_labels(run, index, frame, JUDGE, taxonomy)
    record_source(run, JUDGE, kind="test judge", model="canned", taxonomy=taxonomy)
    return run


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    root = tmp_path_factory.mktemp("judged")
    run = _add_judge_labels(synthetic_run(root / "run", n_chains=4, n_tokens=12, seed=5))
    analyze(run, n_boot=0, labels="judge")
    return run


def _viewer_data(path):
    page = path.read_text(encoding="utf-8")
    return json.loads(re.search(r'<script type="application/json" id="cs-data">(.*?)</script>', page, re.S).group(1))


def test_report_and_summary_state_the_analysed_label_source(judged, tmp_path):
    assert json.loads((judged.stats_dir / "stats.json").read_text())["config"]["labels_source"] == JUDGE
    result = build_report(judged, tmp_path / "rep", widths=("one",), labels="judge")
    page = result.index.read_text(encoding="utf-8")
    assert re.search(r"<th>labels analysed</th><td>judge:canned \(stats.json config.labels_source\)</td>", page)
    assert result.stats_note is None
    assert "judge:canned" in judged._repr_html_() and "labels analysed" in run_summary_html(judged)
    # The token figures use the asked-for labels: the judge's, not the rule's.
    assert set(ReportData(judged, labels="judge").tokens["category"]) == {"narration"}
    rule = ReportData(judged).tokens
    assert rule.attrs["labels_source"] == "rule" and rule["category"].nunique() > 1
    # Token figures on other labels than the statistics: the page says so.
    other = build_report(judged, tmp_path / "rep-rule", widths=("one",))
    assert other.stats_note and "'judge:canned'" in other.stats_note and "'rule'" in other.stats_note
    assert "--labels rule" in other.stats_note


def test_viewer_shows_the_chosen_labels(judged, tmp_path):
    from cotsurvival.labels import read_labels

    data = _viewer_data(build_viewer(judged, tmp_path / "judge.html", labels="judge"))
    assert "labels judge:canned" in data["run"]["note"]
    assert all(set(c["category"]) == {"narration"} for c in data["chains"])
    data = _viewer_data(build_viewer(judged, tmp_path / "rule.html"))
    assert "labels rule" in data["run"]["note"]
    for chain in data["chains"]:
        stored = read_labels(judged, "rule", [chain["index"]]).sort_values("position")
        assert chain["category"] == stored["category"].tolist()


def test_cli_labels_option(judged, tmp_path, capsys):
    assert main(["view", str(judged.path), "--out", str(tmp_path / "v.html"), "--labels", "judge"]) == 0
    assert all(set(c["category"]) == {"narration"} for c in _viewer_data(tmp_path / "v.html")["chains"])
    assert main(["report", str(judged.path), "--out", str(tmp_path / "r"), "--width", "one", "--labels", "judge"]) == 0
    assert "judge:canned" in (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    capsys.readouterr()
    assert main(["view", str(judged.path), "--out", str(tmp_path / "x.html"), "--labels", "judge:other"]) == 2
    assert "error[E015]" in capsys.readouterr().err


# ----------------------------------------------------------------------------- answer recovery in the report
def _write_recovery(run, correct_at_half):
    """Hand-made recovery.parquet/: unpruned all right; at keep ratio 0.5 greedy right per ``correct_at_half``,
    random never right."""
    import pandas as pd

    for index in run.part_indices("tokens"):
        tokens = run.read_part("tokens", index)
        chain_id, n = str(tokens["chain_id"].iloc[0]), len(tokens)
        rows = [("greedy", 1.0, True, -0.5), ("random", 1.0, True, -0.5),
                ("greedy", 0.5, correct_at_half[index], -1.0), ("random", 0.5, False, -3.0)]
        frame = pd.DataFrame([{"chain_index": index, "chain_id": chain_id, "ordering": o, "keep_ratio": r,
                               "n_tokens": n, "n_kept": n if r == 1.0 else n // 2, "answer_logprob": lp,
                               "answer_tokens": 2, "predicted": "#### 1", "correct": c, "settings": "test"}
                              for o, r, c, lp in rows])
        folder = run.path / "recovery.parquet"
        folder.mkdir(exist_ok=True)
        frame.to_parquet(folder / f"part-{index:06d}.parquet", index=False)
    # as `recover` does: the rows say which state of the run they describe (else the report leaves them out as stale)
    run.update_manifest(recovery={"fingerprint": fingerprint(run)})


def test_report_includes_recovery_figure_and_citations(tmp_path):
    # 8 chains: recovery sentences rest on at least the minimum support of every citations.md (6 chains)
    run = synthetic_run(tmp_path / "run", n_chains=8, n_tokens=12, seed=2)
    analyze(run, n_boot=0)
    _write_recovery(run, {0: True, 1: True, 2: True, 3: False, 4: True, 5: True, 6: True, 7: False})
    result = build_report(run, tmp_path / "rep", widths=("one", "two"))
    assert sorted(p.name for p in result.figures["fig_recovery"]) == [
        "fig_recovery_one.pdf", "fig_recovery_one.png", "fig_recovery_two.pdf", "fig_recovery_two.png"]
    assert "fig_recovery" not in result.skipped
    page = result.index.read_text(encoding="utf-8")
    assert '<section id="fig_recovery">' in page and 'href="#fig_recovery"' in page
    # Hand-worked: unpruned every chain right (100.0%); at 0.5 greedy 6 of 8 (75.0%), random 0 of 8 (0.0%).
    unpruned = [c for c in result.recovery_citations if c.startswith("Unpruned")]
    assert len(unpruned) == 1 and "100.0%" in unpruned[0] and "n = 8 chains" in unpruned[0]
    half = [c for c in result.recovery_citations if c.startswith("At keep ratio 0.5")]
    assert len(half) == 1 and "in 75.0% of chains" in half[0] and "versus 0.0%" in half[0] and "random" in half[0]
    assert all(html_escape(c) in page for c in result.recovery_citations)


def test_report_without_recovery_adds_nothing(tmp_path):
    run = synthetic_run(tmp_path / "run", n_chains=3, n_tokens=10, seed=1)
    result = build_report(run, tmp_path / "rep", widths=("one",), run_analysis=False)
    assert "fig_recovery" not in result.figures and "fig_recovery" not in result.skipped
    assert result.recovery_citations == [] and "fig_recovery" not in result.index.read_text(encoding="utf-8")


def html_escape(text):
    import html

    return html.escape(text)
