"""labels.parquet: labels by source, kept through continuation, resume and re-runs; 0.1.0 runs still read."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from cotsurvival.errors import CotSurvivalError
from cotsurvival.labels import read_labels, write_labels
from cotsurvival.rundir import RunDir
from cotsurvival.testing import EXAMPLE_CHAINS, synthetic_run

from test_judge import _Handler, server  # noqa: F401  (server: the endpoint fixture)


@pytest.fixture
def judge_url(server):
    """The fake OpenAI-compatible endpoint of test_judge.py, answering validly."""
    _Handler.script = ["valid"]
    return server[1]


def _invoke(*args):
    from click.testing import CliRunner

    from cotsurvival.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_prune_tag_judge_continue_keeps_every_label(tmp_path, tiny_dir, judge_url):
    """Done-when of issue 12: prune 0.9 -> tag -> judge -> prune 0.5; both sources label every token."""
    from cotsurvival.analysis import load_run
    from cotsurvival.taxonomy import load_spec, project_spans, tag

    chains = tmp_path / "chains.jsonl"
    chains.write_text("".join(json.dumps({"id": c.id, "question": c.question, "reasoning": c.reasoning,
                                          "answer": c.answer}) + "\n" for c in EXAMPLE_CHAINS[:2]))
    run = RunDir(tmp_path / "run")
    _invoke("prune", chains, "--out", run.path, "--model", tiny_dir, "--keep-ratio", 0.9)
    _invoke("tag", run.path)
    _invoke("tag", run.path, "--judge", "canned", "--judge-url", judge_url)
    before = run.read_table("tokens")
    _invoke("prune", chains, "--out", run.path, "--model", tiny_dir, "--keep-ratio", 0.5)
    tokens = run.read_table("tokens")
    assert tokens["deleted_step"].notna().sum() > before["deleted_step"].notna().sum()  # it did continue
    assert not {"label", "category", "judge_label"} & set(tokens.columns)  # tokens stays pruning's

    # Oracles: the rule labels are the tagger's spans projected onto the tokens (computed here, independently);
    # the judge's are the fake endpoint's rule (digits -> SYMBOLIC_MATH, else CONTENT; whitespace not asked).
    spec = load_spec()
    rows = run.read_chains().set_index("chain_index")
    for index, part in tokens.groupby("chain_index"):
        part = part.sort_values("position")
        text = rows.at[index, "reasoning"]
        spans = tag(text, rows.at[index, "question"])
        expected_rule = project_spans(spans, list(zip(part["char_start"], part["char_end"])), text)
        stored = run.read_part("labels", index)
        assert sorted(set(stored["source"])) == ["judge:canned", "rule"]
        rule = stored[stored["source"] == "rule"].sort_values("position")
        judge = stored[stored["source"] == "judge:canned"].sort_values("position")
        assert rule["position"].tolist() == judge["position"].tolist() == part["position"].tolist()
        assert rule["label"].tolist() == expected_rule
        expected_judge = [spec.whitespace_label if ws else ("SYMBOLIC_MATH" if any(c.isdigit() for c in t) else "CONTENT")
                          for t, ws in zip(part["text"], part["is_whitespace"])]
        assert judge["label"].tolist() == expected_judge
        assert (judge["taxonomy_version"] == spec.version).all() and not judge["judge_fallback"].any()

    manifest = run.read_manifest()
    assert manifest["keep_ratio"] == 0.5
    assert manifest["labels"]["rule"]["n_chains"] == 2 == manifest["labels"]["judge:canned"]["n_chains"]
    assert manifest["labels"]["rule"]["taxonomy"]["version"] == spec.version
    assert manifest["labels"]["judge:canned"]["model"] == "canned"
    assert manifest["taxonomy"]["version"] == spec.version

    rule_table = load_run(run, labels="rule")
    judge_table = load_run(run, labels="judge")
    assert rule_table.attrs["labels_source"] == "rule" and judge_table.attrs["labels_source"] == "judge:canned"
    assert len(rule_table) == len(judge_table) == len(tokens)
    assert rule_table["category"].notna().all() and judge_table["category"].notna().all()
    assert (judge_table["label"] != rule_table["label"]).any()  # two sources, not one copied

    # Re-running tag (and judge) resumes: nothing is re-asked, nothing is dropped.
    n_requests = len(_Handler.requests)
    _invoke("tag", run.path, "--judge", "canned", "--judge-url", judge_url)
    assert len(_Handler.requests) == n_requests
    assert len(run.read_table("labels")) == 2 * len(tokens)

    # analyze, report and view work on the result and say which labels they used.
    from cotsurvival.analysis import analyze
    from cotsurvival.reports import build_report, build_viewer

    result = analyze(run, n_boot=0, mixed=False, labels="judge")
    stats = json.loads((run.stats_dir / "stats.json").read_text())
    assert stats["config"]["labels_source"] == "judge:canned" == result.config["labels_source"]
    report = build_report(run, tmp_path / "report", widths=("one",), run_analysis=False)
    assert report.index.is_file()
    page = build_viewer(run, tmp_path / "view.html")
    assert "SYMBOLIC_MATH" in page.read_text() and "labels rule" in page.read_text()


def test_legacy_010_layout_is_still_read(tmp_path):
    """A run written by 0.1.0 (labels and judge_* columns inside tokens.parquet) loads as before."""
    from cotsurvival.analysis import load_run
    from cotsurvival.taxonomy import tag_run

    legacy = synthetic_run(tmp_path / "old", n_chains=3, n_tokens=12, baselines=False, labels_layout="0.1.0")
    modern = synthetic_run(tmp_path / "new", n_chains=3, n_tokens=12, baselines=False)
    assert not legacy.part_indices("labels") and "label" in legacy.read_part("tokens", 0).columns
    old, new = load_run(legacy), load_run(modern)
    pd.testing.assert_frame_equal(old, new)  # same seed: the same truth, read from either layout
    assert old.attrs["labels_source"] == "rule"

    # 0.1.0 judge columns are the source judge:<manifest judge model>
    for index in legacy.part_indices("tokens"):
        part = legacy.read_part("tokens", index)
        part["judge_label"] = "CONTENT"
        part["judge_category"] = "content"
        part["judge_fallback"] = False
        part["judge_reason"] = "old"
        legacy.write_part("tokens", index, part)
    legacy.update_manifest(judge={"model": "old-judge"})
    judged = load_run(legacy, labels="judge")
    assert judged.attrs["labels_source"] == "judge:old-judge" and (judged["label"] == "CONTENT").all()

    # re-tagging with the packaged spec (another taxonomy than the synthetic one) is refused, then allowed
    with pytest.raises(CotSurvivalError) as info:
        tag_run(legacy)
    assert info.value.code == "E017" and "synthetic 0" in info.value.message
    tag_run(legacy, overwrite=True)
    assert set(legacy.read_part("labels", 0)["source"]) == {"rule"}
    assert load_run(legacy)["label"].notna().all()
    assert "label" in legacy.read_part("tokens", 0).columns  # the old columns are left as they were


def test_retagging_with_another_taxonomy_version_is_refused(tmp_path):
    from cotsurvival.cli import main
    from cotsurvival.taxonomy import load_spec, tag_run
    from cotsurvival.taxonomy.spec import default_spec_path

    run = synthetic_run(tmp_path / "run", n_chains=2, n_tokens=10, tagged=False, baselines=False)
    tag_run(run)
    data = json.loads(default_spec_path().read_text())
    data["version"] = "99"
    other = tmp_path / "taxonomy-v99.json"
    other.write_text(json.dumps(data))
    with pytest.raises(CotSurvivalError) as info:
        tag_run(run, spec=load_spec(other))
    assert info.value.code == "E017" and "99" in info.value.message
    assert main(["tag", str(run.path), "--taxonomy", str(other)]) == 2
    assert set(read_labels(run, "rule")["taxonomy_version"]) == {load_spec().version}  # nothing changed
    assert main(["tag", str(run.path), "--taxonomy", str(other), "--overwrite"]) == 0
    assert set(read_labels(run, "rule")["taxonomy_version"]) == {"99"}
    assert run.read_manifest()["labels"]["rule"]["taxonomy"]["version"] == "99"


def test_sources_are_named_and_never_mixed(tmp_path):
    from cotsurvival.analysis import load_run

    run = synthetic_run(tmp_path / "run", n_chains=2, n_tokens=10, baselines=False)
    with pytest.raises(CotSurvivalError) as info:
        load_run(run, labels="judge")
    assert info.value.code == "E015" and "rule" in info.value.message
    with pytest.raises(CotSurvivalError) as info:  # asked for by name: never silently "untagged"
        load_run(run, labels="judge", require_tags=False)
    assert info.value.code == "E015"
    untagged = synthetic_run(tmp_path / "untagged", n_chains=1, n_tokens=6, tagged=False, baselines=False)
    table = load_run(untagged, require_tags=False)
    assert table["label"].isna().all() and table.attrs["labels_source"] is None

    # two judges: "judge" is ambiguous, each exact source works
    for model in ("a", "b"):
        for index in run.part_indices("tokens"):
            rows = run.read_part("tokens", index)[["chain_index", "chain_id", "position"]].assign(
                label=model.upper(), category=model)
            write_labels(run, index, rows, f"judge:{model}", {"name": "t", "version": "1"})
    with pytest.raises(CotSurvivalError) as info:
        load_run(run, labels="judge")
    assert info.value.code == "E016"
    assert (load_run(run, labels="judge:b")["label"] == "B").all()
    assert len(run.read_part("labels", 0)) == 3 * len(run.read_part("tokens", 0))  # rule, a and b coexist

    # a judge source present on one chain only: the other chain is named as untagged, not filled from elsewhere
    part = run.read_part("labels", 1)
    run.write_part("labels", 1, part[part["source"] != "judge:a"])
    with pytest.raises(CotSurvivalError) as info:
        load_run(run, labels="judge:a")
    assert info.value.code == "E040" and "1 chains" in info.value.message

    # labels of another chain (a stale part) are refused
    part = run.read_part("labels", 0)
    part["chain_id"] = "someone-else"
    run.write_part("labels", 0, part)
    with pytest.raises(CotSurvivalError) as info:
        load_run(run)
    assert info.value.code == "E018"


def test_an_interrupted_judge_resumes_and_the_manifest_says_so(tmp_path):
    from cotsurvival.taxonomy import tag_run
    from cotsurvival.taxonomy.judge import judge_run

    class Flaky:
        """Labels every token CONTENT; fails on its second chain (a crash mid-run)."""

        name = "flaky"

        def __init__(self, fail_on):
            self.calls, self.fail_on = 0, fail_on

        def complete(self, messages):
            self.calls += 1
            if self.calls == self.fail_on:
                raise KeyboardInterrupt
            import re

            numbers = re.findall(r"^(\d+)\t", messages[-1]["content"], flags=re.MULTILINE)
            return json.dumps({"labels": [{"i": int(i), "label": "CONTENT"} for i in numbers]})

    run = synthetic_run(tmp_path / "run", n_chains=3, n_tokens=8, tagged=False, baselines=False)
    tag_run(run)
    with pytest.raises(KeyboardInterrupt):
        judge_run(run, Flaky(fail_on=2))
    entry = run.read_manifest()["labels"]["judge:flaky"]
    assert entry["complete"] is False and set(run.read_part("labels", 0)["source"]) == {"rule", "judge:flaky"}
    client = Flaky(fail_on=0)
    result = judge_run(run, client)
    assert result.n_skipped == 1 and result.n_chains == 2 and client.calls == 2  # chain 0 is not asked again
    entry = run.read_manifest()["labels"]["judge:flaky"]
    assert entry["complete"] is True and entry["n_chains"] == 3 and entry["n_fallback"] == 0
