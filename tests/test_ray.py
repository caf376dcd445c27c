"""The Ray backend: same results as the local backend; a killed actor's chain is retried elsewhere."""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from cotsurvival.chains import Chain
from cotsurvival.errors import CotSurvivalError
from cotsurvival.rundir import RunDir
from cotsurvival.testing import EXAMPLE_CHAINS

from cli_helpers import cli, write_jsonl

try:
    import ray
except ImportError:  # the cluster extra is optional
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="ray is not installed (pip install cotsurvival[cluster])")
TABLES = ("tokens", "steps", "traces", "baselines")


def long_chains(copies: int = 2):
    return [Chain(f"{c.id}-x{k}", c.question, " ".join([c.reasoning] * copies), c.answer)
            for k in range(copies) for c in EXAMPLE_CHAINS]


def local_reference(source, out, loaded, keep_ratio, baselines):
    from cotsurvival.pruning import prune

    return prune(source, out, loaded_model=loaded, keep_ratio=keep_ratio, baselines=baselines, progress=False).path


def assert_same(a: Path, b: Path) -> None:
    for table in TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(a / f"{table}.parquet"), pd.read_parquet(b / f"{table}.parquet"),
                                      check_exact=False, atol=1e-5, obj=table)


def test_missing_ray_names_the_extra(tmp_path, monkeypatch, tiny_loaded):
    from cotsurvival.pruning import prune

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(CotSurvivalError) as info:
        prune(EXAMPLE_CHAINS[:1], tmp_path / "run", loaded_model=tiny_loaded, backend="ray", progress=False)
    assert info.value.code == "E070" and "pip install cotsurvival[cluster]" in info.value.one_line()
    assert not (tmp_path / "run").exists()


@needs_ray
def test_cli_ray_backend_starts_a_local_cluster(tmp_path, tiny_dir, tiny_from_dir):
    """No cluster running: the CLI starts a local one, prunes on 2 CPU actors, and matches the local backend."""
    assert not ray.is_initialized()
    source = write_jsonl(tmp_path / "chains.jsonl", EXAMPLE_CHAINS)
    ref = local_reference(source, tmp_path / "ref", tiny_from_dir, 0.5, ["random", "loo"])
    run = tmp_path / "run"
    result = cli("prune", source, "--out", run, "--model", tiny_dir, "--keep-ratio", "0.5", "--baselines", "random,loo",
                 "--backend", "ray", "--workers", "2", "--gpus-per-worker", "0", timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same(ref, run)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["engine"]["backend"] == "ray" and manifest["ray"]["address"] == "local"
    assert manifest["ray"]["workers"] == 2 and manifest["ray"]["retries"] == []
    assert manifest["settings"] == json.loads((ref / "manifest.json").read_text())["settings"]


@pytest.fixture(scope="module")
def local_ray():
    if ray is None:
        pytest.skip("ray is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="error")
    yield
    ray.shutdown()


@needs_ray
def test_ray_same_ranks_as_local_and_resumable_by_local(tmp_path, tiny_dir, tiny_from_dir, local_ray):
    from cotsurvival.pruning import prune

    source = write_jsonl(tmp_path / "chains.jsonl", EXAMPLE_CHAINS)
    ref = local_reference(source, tmp_path / "ref", tiny_from_dir, 0.5, ["random", "loo", "attention"])
    run = prune(source, tmp_path / "run", model=str(tiny_dir), device="cpu", dtype="float32", keep_ratio=0.5,
                baselines=["random", "loo", "attention"], backend="ray", workers=2, gpus_per_worker=0, progress=False)
    assert_same(ref, run.path)
    assert set(run.read_manifest()["ray"]["worker_of_chain"]) == {c.id for c in EXAMPLE_CHAINS}
    # a ray run is an ordinary run directory: the local backend continues it to a lower keep ratio
    # (compared with the local run continued the same way: a continued chain starts the cross-step scorer
    # without its cache, which in float32 rounds differently from an uninterrupted run by ~1e-5)
    prune(source, run.path, loaded_model=tiny_from_dir, keep_ratio=0.3, baselines=["random"], progress=False)
    prune(source, ref, loaded_model=tiny_from_dir, keep_ratio=0.3, baselines=["random"], progress=False)
    assert_same(ref, run.path)
    assert run.read_manifest()["keep_ratio"] == 0.3


@needs_ray
@pytest.mark.parametrize("spec", ["lazy:radius=1,batch=1,refresh=0.5", "topk:0.3"])
def test_ray_approximate_run_equals_local(tmp_path, tiny_dir, tiny_from_dir, local_ray, spec):
    """--approx reaches the actors: the same approximate ranks and manifest record as the local backend."""
    from cotsurvival.pruning import prune

    source = write_jsonl(tmp_path / "chains.jsonl", EXAMPLE_CHAINS)
    ref = prune(source, tmp_path / "ref", loaded_model=tiny_from_dir, approx=spec, progress=False)
    run = prune(source, tmp_path / "run", model=str(tiny_dir), device="cpu", dtype="float32", approx=spec,
                backend="ray", workers=2, gpus_per_worker=0, progress=False)
    for table in ("tokens", "steps", "traces"):
        pd.testing.assert_frame_equal(pd.read_parquet(ref.path / f"{table}.parquet"),
                                      pd.read_parquet(run.path / f"{table}.parquet"), check_exact=False, atol=1e-5)
    local, remote = ref.read_manifest()["engine"], run.read_manifest()["engine"]
    from cotsurvival.pruning.approx import parse_approx

    assert remote["approx"] == local["approx"] and remote["approx"]["spec"] == parse_approx(spec).describe()
    assert remote["token_rows_chains"] == local["token_rows_chains"]


@needs_ray
def test_killed_actor_chain_retried_elsewhere(tmp_path, tiny_dir, tiny_from_dir, local_ray, monkeypatch):
    from cotsurvival.pruning import prune
    from cotsurvival.pruning import run as run_module

    chains = long_chains()
    source = write_jsonl(tmp_path / "chains.jsonl", chains)
    ref = local_reference(source, tmp_path / "ref", tiny_from_dir, 0.3, ["random"])
    commits = []
    real_commit = run_module._commit

    def counting(run, item, index, *args, **kwargs):
        commits.append(index)
        return real_commit(run, item, index, *args, **kwargs)

    monkeypatch.setattr(run_module, "_commit", counting)
    out = tmp_path / "run"
    errors = []

    def driver():
        try:
            prune(source, out, model=str(tiny_dir), device="cpu", dtype="float32", keep_ratio=0.3, baselines=["random"],
                  backend="ray", workers=2, gpus_per_worker=0, progress=False)
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=driver)
    thread.start()
    deadline = time.monotonic() + 120
    while not RunDir(out).has_part("tokens", 0) and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.01)
    names = sorted(n for n in ray.util.list_named_actors() if n.startswith("cotsurvival-prune-"))
    assert len(names) == 2, names
    victim = names[0]
    ray.kill(ray.get_actor(victim), no_restart=True)
    thread.join(timeout=180)
    assert not thread.is_alive() and not errors, errors
    manifest = RunDir(out).read_manifest()
    retried = manifest["ray"]["retries"]
    assert len(RunDir(out).part_indices("tokens")) == len(chains)
    assert retried and all(r["worker"] == victim for r in retried), retried
    for entry in retried:  # the chain the dead actor held was finished by another actor
        assert manifest["ray"]["worker_of_chain"][entry["chain_id"]] != victim
    assert sorted(commits) == list(range(len(chains)))  # each chain committed exactly once
    assert_same(ref, out)


@needs_ray
def test_model_error_on_worker_is_the_local_error(tmp_path, local_ray):
    from cotsurvival.pruning import prune

    missing = tmp_path / "no-such-model"
    with pytest.raises(CotSurvivalError) as info:
        prune(EXAMPLE_CHAINS[:1], tmp_path / "run", model=str(missing), backend="ray", workers=1, gpus_per_worker=0,
              progress=False)
    assert info.value.code == "E005" and str(missing) in info.value.one_line()
    assert not [n for n in ray.util.list_named_actors() if n.startswith("cotsurvival-prune-")]  # pool closed


@needs_ray
def test_ray_replicates_equal_local(tmp_path, tiny_dir, tiny_from_dir, local_ray):
    """--replicates on Ray: each replicate is a job of its own (after its chain's greedy path) and the
    run equals the local backend's, replicate by replicate."""
    from cotsurvival.pruning import prune

    source = write_jsonl(tmp_path / "chains.jsonl", EXAMPLE_CHAINS)
    options = dict(keep_ratio=0.5, replicates=3, perturbation_scale=0.5, progress=False)
    ref = prune(source, tmp_path / "ref", loaded_model=tiny_from_dir, **options)
    run = prune(source, tmp_path / "run", model=str(tiny_dir), device="cpu", dtype="float32", backend="ray",
                workers=2, gpus_per_worker=0, **options)
    for table in ("tokens", "steps", "traces"):
        pd.testing.assert_frame_equal(ref.read_table(table, replicates=True), run.read_table(table, replicates=True),
                                      check_exact=False, atol=1e-5, obj=table)
    assert sorted(run.read_table("tokens", replicates=True)["replicate"].unique()) == [0, 1, 2]
    local, remote = ref.read_manifest(), run.read_manifest()
    assert remote["replicates"] == local["replicates"]
    assert remote["engine"]["replicate_reused_steps"] == local["engine"]["replicate_reused_steps"]
    assert set(remote["ray"]["worker_of_chain"]) == {c.id for c in EXAMPLE_CHAINS}


def test_a_model_that_returned_attentions_can_be_shipped():
    """transformers' output-capturing hooks (installed on a first ``output_attentions=True``) reach a
    ContextVar that no pickler serialises; ``put_loaded_model`` lifts them for the put and puts them back."""
    import cloudpickle
    import torch

    from cotsurvival.pruning.ray_backend import put_loaded_model
    from cotsurvival.testing import tiny_llama

    model, tokenizer = tiny_llama()
    model.config._attn_implementation = "eager"
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        expected = model(ids, output_attentions=True).attentions
    with pytest.raises(Exception, match="ContextVar"):  # the failure this guards against
        cloudpickle.dumps(model)

    class PicklingRay:  # ray.put serialises with cloudpickle
        @staticmethod
        def put(value):
            return cloudpickle.dumps(value)

    shipped = put_loaded_model(PicklingRay, (model, tokenizer, None))
    copy, _, _ = cloudpickle.loads(shipped)
    with torch.no_grad():  # the shipped copy and the original both still return the same attentions
        for got in (copy(ids, output_attentions=True).attentions, model(ids, output_attentions=True).attentions):
            assert len(got) == len(expected) and all(torch.equal(a, b) for a, b in zip(got, expected))
    with pytest.raises(Exception, match="ContextVar"):  # the original's hooks were put back
        cloudpickle.dumps(model)
