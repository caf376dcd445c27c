"""Fault injection, tried for real: kill -9 mid-run and mid-chain, disk full, corrupt Parquet parts.

Run alone with ``pytest -m faults``. Every test checks an outcome (identical results after resume,
intact committed chains, a one-line error naming the file), not only that nothing crashed.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cotsurvival.chains import Chain
from cotsurvival.errors import CheckpointWarning, CotSurvivalError
from cotsurvival.rundir import RunDir
from cotsurvival.testing import EXAMPLE_CHAINS, synthetic_run

from cli_helpers import assert_one_line_error, cli, popen_cli, write_jsonl

pytestmark = pytest.mark.faults
TABLES = ("tokens", "steps", "traces")


def doubled(chains, copies=2):
    """Longer chains (reasoning repeated) so a run lasts long enough to be killed in the middle."""
    return [Chain(f"{c.id}-x{k}", c.question, " ".join([c.reasoning] * copies), c.answer)
            for k in range(copies) for c in chains]


def reference(chains_file, out, loaded, keep_ratio, baselines=()):
    from cotsurvival.pruning import prune

    return prune(chains_file, out, loaded_model=loaded, keep_ratio=keep_ratio, baselines=list(baselines),
                 progress=False)


def assert_same_run(a: Path, b: Path, tables=TABLES) -> None:
    for table in tables:
        left = pd.read_parquet(Path(a) / f"{table}.parquet")
        right = pd.read_parquet(Path(b) / f"{table}.parquet")
        pd.testing.assert_frame_equal(left, right, check_exact=False, atol=1e-5, obj=table)


def assert_complete(run: Path, n_chains: int) -> None:
    rd = RunDir(run)
    for table in TABLES:
        assert rd.part_indices(table) == list(range(n_chains)), table
    leftovers = list(rd.checkpoint_dir.glob("*")) if rd.checkpoint_dir.is_dir() else []
    assert leftovers == [], leftovers


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended (rc {proc.returncode}) before the kill point:\n{err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the kill point")
        time.sleep(0.002)


def kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


# ----------------------------------------------------------------------------- kill -9 between chains
def test_kill9_mid_run_then_same_command_resumes(tmp_path, tiny_dir, tiny_from_dir):
    chains = doubled(EXAMPLE_CHAINS)
    source = write_jsonl(tmp_path / "chains.jsonl", chains)
    ref = reference(source, tmp_path / "ref", tiny_from_dir, 0.5, ["random", "loo"]).path
    run = tmp_path / "run"
    args = ["prune", source, "--out", run, "--model", tiny_dir, "--keep-ratio", "0.5", "--baselines", "random,loo"]
    proc = popen_cli(*args)
    wait_for(lambda: RunDir(run).has_part("tokens", 0), proc)
    kill9(proc)
    committed = RunDir(run).part_indices("tokens")
    assert 1 <= len(committed) < len(chains), f"kill landed after the run ended ({committed})"
    for index in committed:  # what was committed before the kill is whole and readable
        for table in (*TABLES, "baselines"):
            assert len(RunDir(run).read_part(table, index)) > 0
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    assert_complete(run, len(chains))
    assert_same_run(ref, run, (*TABLES, "baselines"))
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["keep_ratio"] == 0.5 and manifest["n_chains"] == len(chains)
    assert sorted(manifest["timings"]["chains"]) != []


# ----------------------------------------------------------------------------- kill -9 inside a long chain
def test_kill9_mid_chain_resumes_from_checkpoint(tmp_path, tiny_dir, monkeypatch):
    """float64: resumed from a checkpoint, the cross-step scorer starts without its cache, and in float32 that
    rounds differently (costs differ by up to ~3e-5, same order); in float64 the results are identical."""
    from cotsurvival.models import load_model
    from cotsurvival.pruning import run as run_module
    from cotsurvival.pruning.tables import load_checkpoint

    tiny64 = load_model(str(tiny_dir), device="cpu", dtype="float64")

    chains = [Chain("long", EXAMPLE_CHAINS[2].question, " ".join([EXAMPLE_CHAINS[2].reasoning] * 2),
                    EXAMPLE_CHAINS[2].answer)]
    source = write_jsonl(tmp_path / "chains.jsonl", chains)
    ref = reference(source, tmp_path / "ref", tiny64, 0.2).path
    run = tmp_path / "run"
    checkpoint = run / "checkpoints" / "part-000000.npz"

    def steps_checkpointed() -> int:
        try:
            return load_checkpoint(checkpoint).n_steps
        except Exception:  # not written yet, or replaced while being read
            return 0

    proc = popen_cli("prune", source, "--out", run, "--model", tiny_dir, "--keep-ratio", "0.2", "--dtype", "float64",
                     prelude="import cotsurvival.pruning.run as r; r.CHECKPOINT_SECONDS = 0")
    wait_for(lambda: steps_checkpointed() >= 5, proc)
    kill9(proc)
    assert not RunDir(run).has_part("tokens", 0), "the chain finished before the kill"
    saved = load_checkpoint(checkpoint)
    assert saved.n_steps >= 5

    starts = []
    real_load = run_module.load_checkpoint
    monkeypatch.setattr(run_module, "load_checkpoint", lambda path: starts.append(real_load(path)) or starts[-1])
    monkeypatch.setattr(run_module, "CHECKPOINT_SECONDS", 0)
    reference(source, run, tiny64, 0.2)
    assert len(starts) == 1 and starts[0].n_steps >= saved.n_steps  # continued, not restarted
    assert_complete(run, 1)
    assert_same_run(ref, run)


def test_unreadable_checkpoint_is_discarded(tmp_path, tiny_from_dir):
    """A damaged checkpoint is only a cache: the chain restarts, with a warning, and ends the same."""
    source = write_jsonl(tmp_path / "chains.jsonl", EXAMPLE_CHAINS[:2])
    ref = reference(source, tmp_path / "ref", tiny_from_dir, 0.5).path
    run = tmp_path / "run"
    reference(source, run, tiny_from_dir, 0.5)
    for table in TABLES:
        (run / f"{table}.parquet" / "part-000001.parquet").unlink()
    (run / "checkpoints").mkdir(exist_ok=True)
    (run / "checkpoints" / "part-000001.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.warns(CheckpointWarning, match="part-000001.npz"):
        reference(source, run, tiny_from_dir, 0.5)
    assert_complete(run, 2)
    assert_same_run(ref, run)


# ----------------------------------------------------------------------------- disk full
class DiskFull:
    """``os.replace`` into the run directory fails with ENOSPC after ``allowed`` successful writes."""

    def __init__(self, folder: Path, allowed: int) -> None:
        self.folder, self.allowed, self.count, self.real = Path(folder).resolve(), allowed, 0, os.replace

    def __call__(self, src, dst, *args, **kwargs):
        if Path(dst).resolve().is_relative_to(self.folder):
            self.count += 1
            if self.count > self.allowed:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return self.real(src, dst, *args, **kwargs)


def committed_after(writes: list[Path], allowed: int) -> int:
    """Chains whose tokens part (the commit marker) lies among the first ``allowed`` atomic writes."""
    return sum(1 for dst in writes[:allowed] if dst.parent.name == "tokens.parquet")


# The order of atomic writes (chains.parquet, manifest updates, then steps/traces/tokens per chain, ...)
# is taken from an uninterrupted run of the same command, so the test follows the writer's real sequence.
@pytest.mark.parametrize("allowed", [0, 1, 3, 6, 11])
def test_disk_full_stops_cleanly_then_resumes(tmp_path, tiny_dir, tiny_from_dir, monkeypatch, capsys, allowed):
    from cotsurvival.cli import main

    source = write_jsonl(tmp_path / "chains.jsonl", EXAMPLE_CHAINS)
    ref = reference(source, tmp_path / "ref", tiny_from_dir, 0.5).path
    probe, writes, real_replace = (tmp_path / "probe").resolve(), [], os.replace

    def logged(src, dst, *args, **kwargs):
        if Path(dst).resolve().is_relative_to(probe):
            writes.append(Path(dst).resolve())
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", logged)
    assert main(["prune", str(source), "--out", str(probe), "--model", str(tiny_dir), "--keep-ratio", "0.5"]) == 0
    monkeypatch.setattr(os, "replace", real_replace)
    capsys.readouterr()
    run = tmp_path / "run"
    argv = ["prune", str(source), "--out", str(run), "--model", str(tiny_dir), "--keep-ratio", "0.5"]
    full = DiskFull(run, allowed)
    monkeypatch.setattr(os, "replace", full)
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error[")]
    assert len(errors) == 1 and errors[0].startswith(f"error[E010]: Cannot write to {run}")
    assert "No space left on device" in errors[0] and "re-run the same command to resume" in errors[0]
    # committed chains are whole and readable; nothing half-written is left behind
    rd = RunDir(run)
    committed = rd.part_indices("tokens")
    assert committed == list(range(len(committed)))
    assert len(committed) == committed_after(writes, allowed)
    for index in committed:
        for table in TABLES:
            pd.testing.assert_frame_equal(rd.read_part(table, index), RunDir(ref).read_part(table, index),
                                          check_exact=False, atol=1e-5)
    assert not list(run.rglob("*.tmp")) if run.exists() else True
    monkeypatch.setattr(os, "replace", full.real)  # space freed
    assert main(argv) == 0
    assert_complete(run, 3)
    assert_same_run(ref, run)
    assert json.loads((run / "manifest.json").read_text())["keep_ratio"] == 0.5


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 2 MiB tmpfs (root only); skipped where mounting is not permitted."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_real_full_filesystem(tmp_path, tiny_from_dir, small_tmpfs):
    """A real ENOSPC from a full tmpfs: E010, chain 0 intact, then the same call resumes after space is freed."""
    source = write_jsonl(tmp_path / "chains.jsonl", EXAMPLE_CHAINS)
    ref = reference(source, tmp_path / "ref", tiny_from_dir, 0.5).path
    page = 4096
    pages = lambda p: -(-p.stat().st_size // page)  # noqa: E731
    needed = (pages(ref / "chains.parquet") + 2 * pages(ref / "manifest.json")
              + sum(pages(ref / f"{t}.parquet" / "part-000000.parquet") for t in TABLES) + 1)
    filler = small_tmpfs / "filler"
    free = os.statvfs(small_tmpfs).f_bavail * page
    filler.write_bytes(b"\0" * (free - needed * page))
    run = small_tmpfs / "run"
    with pytest.raises(CotSurvivalError) as info:
        reference(source, run, tiny_from_dir, 0.5)
    assert info.value.code == "E010" and "No space left on device" in info.value.one_line()
    committed = RunDir(run).part_indices("tokens")
    assert 1 <= len(committed) < 3
    for index in committed:
        for table in TABLES:
            assert len(RunDir(run).read_part(table, index)) > 0
    assert not list(run.rglob("*.tmp"))
    filler.unlink()
    reference(source, run, tiny_from_dir, 0.5)
    assert_complete(run, 3)
    assert_same_run(ref, run)


# ----------------------------------------------------------------------------- corrupt Parquet parts
def corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    else:  # a valid-looking footer magic with garbage before it
        path.write_bytes(b"PAR1" + np.random.default_rng(1).bytes(200) + b"PAR1")


@pytest.mark.parametrize("how", ["truncate", "garbage", "magic"])
def test_corrupt_part_named_by_read_part(tmp_path, how):
    run = synthetic_run(tmp_path / "run", n_chains=4, n_tokens=12)
    intact = run.read_part("tokens", 1)
    bad = run.part_path("tokens", 2)
    corrupt(bad, how)
    for call in (lambda: run.read_part("tokens", 2), lambda: run.read_table("tokens")):
        with pytest.raises(CotSurvivalError) as info:
            call()
        assert info.value.code == "E008" and str(bad) in info.value.one_line()
    pd.testing.assert_frame_equal(run.read_part("tokens", 1), intact)  # the other parts still read


@pytest.mark.parametrize("table", ["tokens"])
def test_corrupt_part_named_by_load_run(tmp_path, table):
    from cotsurvival.analysis import load_run

    run = synthetic_run(tmp_path / "run", n_chains=4, n_tokens=12)
    bad = run.part_path(table, 2)
    corrupt(bad, "truncate")
    with pytest.raises(CotSurvivalError) as info:
        load_run(run)
    assert info.value.code == "E008" and str(bad) in info.value.one_line()


def test_corrupt_traces_part_cli_analyze_names_it(tmp_path):
    """analyze turns an unreadable traces part into a note naming the file; the survival statistics still run."""
    run = synthetic_run(tmp_path / "run", n_chains=4, n_tokens=12)
    bad = run.part_path("traces", 1)
    corrupt(bad, "truncate")
    result = cli("analyze", run.path, "--n-boot", "0", "--no-mixed")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert f"note: dynamics: {bad}: cannot read Parquet file" in result.stdout
    stats = json.loads((run.path / "stats" / "stats.json").read_text())
    assert str(bad) in stats["tests"]["tau"]["note"]
    assert "tau_per_chain" not in stats["tables"] and stats["tables"]["km_category"]


def test_corrupt_tokens_part_cli_analyze(tmp_path):
    run = synthetic_run(tmp_path / "run", n_chains=4, n_tokens=12)
    bad = run.part_path("tokens", 1)
    corrupt(bad, "truncate")
    result = cli("analyze", run.path, "--n-boot", "0", "--no-mixed")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "E008", str(bad), "Delete it and re-run")


def test_corrupt_part_on_resume_then_delete_and_rerun(tmp_path, tiny_from_dir):
    source = write_jsonl(tmp_path / "chains.jsonl", EXAMPLE_CHAINS)
    ref = reference(source, tmp_path / "ref", tiny_from_dir, 0.5).path
    run = reference(source, tmp_path / "run", tiny_from_dir, 0.5)
    bad = run.part_path("tokens", 1)
    corrupt(bad, "truncate")
    with pytest.raises(CotSurvivalError) as info:
        reference(source, run.path, tiny_from_dir, 0.5)
    assert info.value.code == "E008" and str(bad) in info.value.one_line()
    bad.unlink()  # what the message says to do
    reference(source, run.path, tiny_from_dir, 0.5)
    assert_complete(run.path, 3)
    assert_same_run(ref, run.path)


@pytest.mark.parametrize("table", ["steps", "traces"])
def test_deleted_part_is_rewritten_on_rerun(tmp_path, tiny_from_dir, table):
    """E008 says "delete it and re-run the stage that writes it": that must work for every table of prune."""
    source = write_jsonl(tmp_path / "chains.jsonl", EXAMPLE_CHAINS)
    ref = reference(source, tmp_path / "ref", tiny_from_dir, 0.5).path
    run = reference(source, tmp_path / "run", tiny_from_dir, 0.5)
    corrupt(run.part_path(table, 2), "garbage")
    with pytest.raises(CotSurvivalError, match="E008"):
        pd.concat([run.read_part(table, i) for i in range(3)])
    run.part_path(table, 2).unlink()
    reference(source, run.path, tiny_from_dir, 0.5)
    assert_complete(run.path, 3)
    assert_same_run(ref, run.path)


def test_corrupt_part_when_continuing_to_lower_ratio(tmp_path, tiny_from_dir):
    source = write_jsonl(tmp_path / "chains.jsonl", EXAMPLE_CHAINS[:2])
    run = reference(source, tmp_path / "run", tiny_from_dir, 0.7)
    bad = run.part_path("traces", 0)
    corrupt(bad, "magic")
    with pytest.raises(CotSurvivalError) as info:
        reference(source, run.path, tiny_from_dir, 0.4)
    assert info.value.code == "E008" and str(bad) in info.value.one_line()
