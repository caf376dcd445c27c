"""cotsurvival study: settings pruned, tagged, analysed, reported and compared from one TOML file."""
from __future__ import annotations

import json

import pytest

from cotsurvival.comparison import load_study, run_study
from cotsurvival.errors import CotSurvivalError

CHAINS = [
    {"id": "s1", "question": "How many clips?", "reasoning": "Natalia sold 48/2 = 24 clips in May.", "answer": "#### 24"},
    {"id": "s2", "question": "How much?", "reasoning": "Weng earns 12/60 = $0.2 per minute.", "answer": "#### 0.2"},
    {"id": "s3", "question": "How many bolts?", "reasoning": "It takes 2/2 = 1 bolt of white fiber.", "answer": "#### 1"},
    {"id": "s4", "question": "Long one?", "reasoning": "This chain is not selected because limit is three.", "answer": "#### 9"},
]

STUDY = """
[chains]
source = "{chains}"
limit = 3

[defaults]
model = "{model}"
baselines = ["random"]
dtype = "float32"
device = "cpu"

[[settings]]
name = "joint"
objective = "joint"

[[settings]]
name = "answer"
objective = "{answer_objective}"

[[comparisons]]
runs = ["joint", "answer"]
keep_ratios = [0.5]

[[comparisons]]
name = "joint_vs_random"
runs = ["joint", "joint:random"]

[analysis]
n_boot = 100
primary = "grammar"

[report]
widths = ["two"]
"""


def _write_study(tmp_path, tiny_dir, answer_objective="answer", name="study.toml"):
    chains = tmp_path / "chains.jsonl"
    chains.write_text("\n".join(json.dumps(c) for c in CHAINS) + "\n")
    path = tmp_path / name
    path.write_text(STUDY.format(chains=chains.as_posix(), model=tiny_dir.as_posix(), answer_objective=answer_objective))
    return path


def _mtimes(root):
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns
            for name in ("joint", "answer") for p in (root / name).rglob("*.parquet") if p.is_file()}


def test_study_runs_resumes_and_refuses_a_changed_setting(tmp_path, tiny_dir, tiny_from_dir):
    from cli_helpers import cli

    study = _write_study(tmp_path, tiny_dir)
    root = tmp_path / "root"
    loaded = {str(tiny_dir.as_posix()): tiny_from_dir}
    result = run_study(study, root, progress=False, loaded_models=loaded)
    # Every setting pruned (3 chains), tagged, analysed and reported; every comparison written.
    for name, objective in (("joint", "joint"), ("answer", "answer")):
        manifest = json.loads((root / name / "manifest.json").read_text())
        assert manifest["objective"] == objective and manifest["n_chains"] == 3 and manifest["taxonomy"]
        assert (root / name / "stats" / "stats.json").is_file()
        stats = json.loads((root / name / "stats" / "stats.json").read_text())
        assert stats["config"]["primary"] == "grammar"  # the study's [analysis] options reach analyze
        assert (root / "reports" / name / "index.html").is_file()
    data = json.loads((root / "comparisons" / "joint_vs_answer" / "comparison.json").read_text())
    pair = data["pairs"][0]
    assert (pair["a"], pair["b"], pair["n_chains"], pair["units"]) == ("joint", "answer", 3, "token")
    assert pair["objective_a"] == "joint objective" and pair["objective_b"] == "answer objective"
    random_pair = json.loads((root / "comparisons" / "joint_vs_random" / "comparison.json").read_text())["pairs"][0]
    assert random_pair["b"] == "joint:random" and random_pair["objective_b"] == "random ordering"
    index = (root / "index.html").read_text()
    for link in ("reports/joint/index.html", "reports/answer/index.html", "comparisons/joint_vs_answer/index.html",
                 "comparisons/joint_vs_random/index.html"):
        assert f'href="{link}"' in index
    assert result.citations["joint_vs_answer"] and "answer objective" in index

    # Re-running the same study continues: nothing already computed is written again.
    before = _mtimes(root)
    stats_before = (root / "joint" / "stats" / "stats.json").stat().st_mtime_ns
    run_study(study, root, progress=False, loaded_models=loaded)
    assert _mtimes(root) == before
    assert (root / "joint" / "stats" / "stats.json").stat().st_mtime_ns == stats_before

    # A changed setting with results is refused, in Python and on the command line, and nothing is touched.
    changed = _write_study(tmp_path, tiny_dir, answer_objective="joint", name="changed.toml")
    with pytest.raises(CotSurvivalError) as err:
        run_study(changed, root, progress=False, loaded_models=loaded)
    assert err.value.code == "E124" and "objective" in err.value.message
    done = cli("study", changed, "--out", root)
    assert done.returncode == 2 and done.stderr.startswith("error[E124]") and "Traceback" not in done.stderr
    assert _mtimes(root) == before
    assert json.loads((root / "answer" / "manifest.json").read_text())["objective"] == "answer"

    # --overwrite discards that setting's results (only) and redoes it.
    run_study(changed, root, overwrite=True, progress=False, loaded_models=loaded)
    assert json.loads((root / "answer" / "manifest.json").read_text())["objective"] == "joint"
    assert all(_mtimes(root)[k] == v for k, v in before.items() if k.startswith("joint/"))
    pair = json.loads((root / "comparisons" / "joint_vs_answer" / "comparison.json").read_text())["pairs"][0]
    assert pair["kendall_tau"]["mean"] == pytest.approx(1.0)      # same model, same objective: same order


@pytest.mark.parametrize("text, fragment", [
    ("[[settings]]\nname = 'a'\n[[settings]]\nname = 'a'\n", "duplicate"),
    ("[[settings]]\nname = 'a'\nfoo = 1\n", "unknown setting key"),
    ("[[settings]]\nname = 'a'\n[[comparisons]]\nruns = ['a', 'b']\n", "not a setting"),
    ("[[settings]]\nname = 'reports'\n", "reserved"),
    ("[chains]\nshortest = 2\nlimit = 3\n[[settings]]\nname = 'a'\n", "one of"),
    ("[[settings]\nname = 'a'\n", "invalid study file"),
    ("title = 'x'\n", "no [[settings]]"),
])
def test_bad_study_files_are_user_errors(tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(CotSurvivalError) as err:
        load_study(path)
    assert err.value.code == "E123" and fragment in err.value.message


def test_shipped_objectives_study_parses():
    from pathlib import Path

    study = load_study(Path(__file__).parents[1] / "studies" / "objectives.toml")
    assert [s.objective for s in study.settings] == ["joint", "answer"]
    assert {s.model for s in study.settings} == {"smollm2-135m"}
    assert study.chains == {"source": "gsm8k", "shortest": 6}


def study_and_foreign_folder(tmp_path):
    """A study whose chains file is missing, and a folder holding someone else's file."""
    study = tmp_path / "s.toml"
    study.write_text("[chains]\nsource = 'missing.jsonl'\n[[settings]]\nname = 'a'\n")
    foreign = tmp_path / "data"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep me")
    return study, foreign


def test_cli_study_out_is_guarded(tmp_path):
    """study --out refuses a folder of other files (E081) before any work; --overwrite lets it through."""
    from cli_helpers import assert_one_line_error, cli

    study, foreign = study_and_foreign_folder(tmp_path)
    done = cli("study", study, "--out", foreign)
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "E081", "study", "--overwrite")
    assert sorted(p.name for p in foreign.iterdir()) == ["mine.txt"]
    # With --overwrite the guard lets it through, and the study itself fails on its missing chains file.
    done = cli("study", study, "--out", foreign, "--overwrite")
    assert done.returncode == 2 and "E081" not in done.stderr and "Traceback" not in done.stderr
    # An earlier study root (study.json) is continued without --overwrite: the guard does not refuse it.
    own = tmp_path / "own"
    own.mkdir()
    (own / "study.json").write_text("{}")
    done = cli("study", study, "--out", own)
    assert done.returncode == 2 and "E081" not in done.stderr and "E080" not in done.stderr


def test_python_run_study_out_is_guarded_like_the_cli(tmp_path):
    from cotsurvival.comparison import run_study

    study, foreign = study_and_foreign_folder(tmp_path)
    with pytest.raises(CotSurvivalError) as refused:
        run_study(study, foreign, progress=False)
    assert refused.value.code == "E081" and sorted(p.name for p in foreign.iterdir()) == ["mine.txt"]
    with pytest.raises(CotSurvivalError) as failed:  # let through: the study then fails on its chains file
        run_study(study, foreign, overwrite=True, progress=False)
    assert failed.value.code != "E081"
