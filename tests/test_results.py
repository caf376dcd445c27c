"""The one result model: every stage result renders (escaped), converts to a frame, and round-trips.

One parametrized test runs the same checks on every stage's result class: ``_repr_html_`` escapes
text it shows, ``to_frame()`` is a DataFrame, ``save(folder)`` returns the folder, and
``load(folder)`` gives back an equal result (same ``to_dict()`` and the same frame).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cotsurvival
from cotsurvival.results import StageResult, to_jsonable, write_json, write_table
from cotsurvival.testing import synthetic_run

EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    return [synthetic_run(root / f"run{k}", n_chains=4, n_tokens=12, seed=k) for k in range(2)]


_ANALYSES: dict = {}


def _analysis(run):
    """One analysis per run for the whole module (it is the slowest result to make)."""
    if run.path not in _ANALYSES:
        _ANALYSES[run.path] = cotsurvival.analyze(run, n_boot=0, save=False)
    return _ANALYSES[run.path]


def _recovery(run_path):
    from cotsurvival.recovery import COLUMNS, RecoveryResult

    rng = np.random.default_rng(0)
    rows = []
    for chain in range(4):
        for ordering in ("greedy", "random"):
            for ratio in (1.0, 0.5):
                rows.append({"chain_index": chain, "chain_id": f"c{chain}", "ordering": ordering, "keep_ratio": ratio,
                             "n_tokens": 12, "n_kept": int(12 * ratio), "answer_logprob": float(rng.normal(-2, 1)),
                             "answer_tokens": 3, "predicted": "7", "correct": bool(rng.random() < 0.6),
                             "settings": "s"})
    return RecoveryResult(frame=pd.DataFrame(rows, columns=COLUMNS), run=str(run_path), n_boot=50)


def _onpolicy():
    """A small on-policy result from hand-made rows (no model): 4 chains of 4 units, 3 rollouts per cut."""
    import re

    from cotsurvival.analysis.onpolicy import OnPolicyResult

    rng = np.random.default_rng(1)
    reasoning = "We add 3 and 4. That gives 7.\nSo the answer is 7. Check: 7 - 4 = 3."
    pieces = list(re.finditer(r"\s*\S+", reasoning))
    chains, tokens, rollouts, regeneration = [], [], [], []
    for c in range(4):
        chains.append({"chain_index": c, "chain_id": f"c{c}", "reasoning": reasoning})
        steps = rng.permutation(len(pieces)).astype(float)
        for k, m in enumerate(pieces):
            tokens.append({"chain_index": c, "position": k, "text": m.group(), "char_start": m.start(),
                           "char_end": m.end(), "is_whitespace": False, "survival": float(steps[k] / len(pieces)),
                           "deleted_step": steps[k], "category": str(rng.choice(["symbolic_math", "narration"]))})
        for unit in range(5):  # cuts before each of the 4 units and after the last
            for r in range(3):
                rollouts.append({"chain_index": c, "chain_id": f"c{c}", "cut": unit, "unit": unit, "n_units": 4,
                                 "rollout": r, "outcome": str(rng.choice(["correct", "wrong", "no_answer"])),
                                 "answer_logprob": float(rng.normal(-2, 1)), "settings": "s"})
        regeneration.append({"chain_index": c, "chain_id": f"c{c}", "keep_ratio": 0.5,
                             "continuation_words": ["7", "and", "4"], "outcome": "correct", "settings": "s"})
    return OnPolicyResult(rollouts=pd.DataFrame(rollouts), regeneration_rows=pd.DataFrame(regeneration),
                          tokens=pd.DataFrame(tokens), chains=pd.DataFrame(chains), run=EVIL,
                          manifest={"resample": {"rollouts": 3, "temperature": 0.7, "settings": "s"}},
                          config={"min_chains": 6, "n_boot": 50, "seed": 0})


def _make(kind, runs, tmp_path):
    """(result, a text the result shows that must appear escaped, or None)."""
    run = runs[0]
    if kind == "tag":
        from cotsurvival.taxonomy.runs import TagResult

        return TagResult(target=EVIL, source="rule", n_chains=1, n_tokens=3, label_counts={"CONTENT": 3}), EVIL
    if kind == "judge":
        from cotsurvival.taxonomy.judge import JudgeResult

        return JudgeResult(target=EVIL, source="judge:m", n_chains=1, n_tokens=3), EVIL
    if kind == "attention":
        from cotsurvival.stages import AttentionResult

        run.write_part("attention", 0, pd.DataFrame({"chain_index": [0], "position": [0], "surprisal": [1.5]}))
        return AttentionResult(run=str(run.path), model=EVIL, n_chains=1, seconds=0.1), EVIL
    if kind == "view":
        from cotsurvival.stages import ViewResult

        return ViewResult(path=EVIL, n_bytes=10), EVIL
    if kind == "export":
        return cotsurvival.export(run, keep_ratio=0.5, out=tmp_path / "pruned.jsonl"), None
    if kind == "generate":
        from cotsurvival.generation.generate import GenerationResult

        return GenerationResult(accepted=[{"id": "q1", "correct": True}], rejected=[{"id": "q2", "correct": False}],
                                out=Path(EVIL)), EVIL
    if kind == "report":
        from cotsurvival.reports.report import Report

        return Report(index=tmp_path / "index.html", figures={"fig1": [tmp_path / "fig1.png"]},
                      skipped={"fig2": EVIL}), EVIL
    if kind == "analysis":
        return _analysis(run), None
    if kind == "recovery":
        return _recovery(run.path), None
    if kind == "onpolicy":
        return _onpolicy(), EVIL
    if kind == "comparison":
        return cotsurvival.compare([run.path, f"{run.path}:random"], None, n_boot=50, names=["a", EVIL]), EVIL
    if kind == "study":
        from cotsurvival.comparison.study import StudyResult

        return StudyResult(root=tmp_path, index=tmp_path / "index.html", runs={EVIL: tmp_path / "r"},
                           reports={EVIL: tmp_path / "p.html"}, comparisons={}, seconds=1.0,
                           citations={EVIL: ["one sentence"]}), EVIL
    raise AssertionError(kind)


KINDS = ["tag", "judge", "attention", "view", "export", "generate", "report", "analysis", "recovery", "onpolicy",
         "comparison", "study"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_stage_result_renders_converts_and_round_trips(kind, runs, tmp_path):
    result, shown = _make(kind, runs, tmp_path)
    page = result._repr_html_()
    assert isinstance(page, str) and page.strip().startswith("<")
    assert "<script>" not in page
    if shown is not None:
        assert "&lt;script&gt;" in page
    frame = result.to_frame()
    assert isinstance(frame, pd.DataFrame)
    folder = tmp_path / "saved"
    assert result.save(folder) == folder and folder.is_dir()
    again = type(result).load(folder)
    assert again.to_dict() == result.to_dict()
    pd.testing.assert_frame_equal(again.to_frame().reset_index(drop=True), frame.reset_index(drop=True),
                                  check_dtype=False)
    json.dumps(result.to_dict(), allow_nan=False)  # machine-readable: plain JSON, no NaN


def test_analysis_save_then_load_the_same_folder(runs, tmp_path):
    # issue 25 item 6: AnalysisResult.save("out/analysis") then AnalysisResult.load("out/analysis")
    from cotsurvival.analysis import AnalysisResult

    result = _analysis(runs[0])
    folder = result.save(tmp_path / "out" / "analysis")
    back = AnalysisResult.load(tmp_path / "out" / "analysis")
    assert back.run == result.run and back.to_dict() == result.to_dict()
    assert back.primary_ == json.loads((folder / "stats.json").read_text())["primary"]


def test_every_result_class_is_in_the_shared_test():
    """A new stage result must join KINDS above: every StageResult subclass and the four big results."""
    import cotsurvival.comparison.study  # noqa: F401
    import cotsurvival.generation.generate  # noqa: F401
    import cotsurvival.reports.report  # noqa: F401
    import cotsurvival.stages  # noqa: F401
    import cotsurvival.taxonomy.judge  # noqa: F401
    import cotsurvival.taxonomy.runs  # noqa: F401

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    names = {c.__name__ for c in subclasses(StageResult) if c.__module__.startswith("cotsurvival.")}
    covered = {"TagResult", "JudgeResult", "AttentionResult", "ViewResult", "ExportResult", "GenerationResult",
               "Report", "StudyResult"}
    assert names == covered
    # The big results are not StageResults (they carry tables and caches): each is named here with its kind.
    from cotsurvival.analysis import AnalysisResult
    from cotsurvival.analysis.onpolicy import OnPolicyResult
    from cotsurvival.comparison.compare import ComparisonResult
    from cotsurvival.recovery import RecoveryResult

    big = {"analysis": AnalysisResult, "recovery": RecoveryResult, "onpolicy": OnPolicyResult,
           "comparison": ComparisonResult}
    assert set(big) <= set(KINDS)
    for cls in big.values():
        assert all(callable(getattr(cls, m, None)) for m in ("_repr_html_", "to_frame", "to_dict", "save", "load"))


def test_json_cleaner_against_hand_made_cases():
    value = {"a": np.float64("nan"), "b": [np.int64(3), np.bool_(True)], "c": pd.NaT, "d": Path("x/y"),
             "e": pd.DataFrame({"v": [1.5, float("inf")]}), 1: pd.NA, "f": (1, 2)}
    assert to_jsonable(value) == {"a": None, "b": [3, True], "c": None, "d": "x/y", "e": [{"v": 1.5}, {"v": None}],
                                  "1": None, "f": [1, 2]}


def test_json_writer_is_atomic_and_never_writes_nan(tmp_path, monkeypatch):
    path = write_json(tmp_path / "x.json", {"p": math.nan})
    assert json.loads(path.read_text()) == {"p": None}
    path.write_text('{"old": 1}')

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", fail)
    with pytest.raises(Exception):
        write_json(path, {"new": 2})
    assert json.loads(path.read_text()) == {"old": 1}  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary left behind


def test_table_writer_formats(tmp_path):
    table = pd.DataFrame({"name": ["a_b", "c"], "value": [0.123456789, 12345.678], "items": [[1, 2], {"k": 1}]})
    files = write_table(tmp_path, "t", table)
    assert set(files) == {"csv", "md", "tex"}
    back = pd.read_csv(files["csv"])
    assert back["value"].tolist() == table["value"].tolist()  # CSV keeps full precision
    md = files["md"].read_text()
    assert "0.1235" in md and "1.235e+04" in md and "[1, 2]" in md
    assert r"a\_b" in files["tex"].read_text()
    assert write_table(tmp_path, "only", table, formats=("csv",)).keys() == {"csv"}


def test_kaplan_meier_display_draws_the_stored_curves(runs):
    """scikit-learn's Display pattern: from_result(...).plot(ax=None); the same class draws the report and compare."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cotsurvival.reports.figures import KaplanMeierDisplay

    analysis = _analysis(runs[0])
    display = KaplanMeierDisplay.from_result(analysis, level="category").plot()
    km = analysis.tables_["km_category"]
    assert display.groups and set(display.groups) == set(km["group"])
    steps = [line for line in display.ax_.get_lines() if line.get_label() in display.labels.values()]
    assert len(steps) == len(display.groups)
    first = km[km["group"] == display.groups[0]]
    assert steps[0].get_ydata().tolist() == first["survival"].tolist()  # the stored numbers, not recomputed
    fig, ax = plt.subplots()
    assert KaplanMeierDisplay.from_result(analysis).plot(ax=ax).ax_ is ax
    plt.close("all")
