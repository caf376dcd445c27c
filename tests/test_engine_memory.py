"""Memory that fits the chain, method refusal before a run directory exists, torch threads."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cotsurvival.chains import Chain
from cotsurvival.encoding import encode_chain
from cotsurvival.errors import CotSurvivalError
from cotsurvival.pruning.crossstep import CrossStepScorer
from cotsurvival.pruning.memory import estimate_chain_bytes, kv_bytes_per_token, parse_memory, plan_chain
from cotsurvival.testing import EXAMPLE_CHAINS, tiny_model
from cotsurvival.threads import usable_cpus

from cli_helpers import assert_one_line_error, cli, write_jsonl


def _long_chain(times: int = 5) -> Chain:
    base = EXAMPLE_CHAINS[0]
    return Chain("long", base.question, "\n".join([base.reasoning] * times), base.answer)


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def test_crossstep_state_matches_the_estimate(tiny):
    """The estimate's retained part (×2 for two generations) against the tensors the scorer really keeps."""
    model, tokenizer = tiny
    encoded = encode_chain(_long_chain(2), tokenizer)
    p, n, a = len(encoded.prefix_ids), len(encoded.reasoning_ids), len(encoded.answer_ids)
    scorer = CrossStepScorer(model, "joint", 4096)
    scorer.score(encoded.prefix_ids, encoded.reasoning_ids, encoded.answer_ids)
    state = scorer._state
    held = _tensor_bytes(state.cache.keys + state.cache.values)
    held += sum(_tensor_bytes(c.keys + c.values) for c in state.candidates)
    one_generation = (p + n + a + n * (n + 1) // 2 + n * a) * kv_bytes_per_token(model)
    assert 0.8 * one_generation <= held <= one_generation
    assert estimate_chain_bytes(model, p, n, a, "crossstep", 4096) >= 2 * held


def test_plan_falls_back_prefix_then_smaller_batches_then_naive():
    model = tiny_model("llama", dtype=torch.float32)
    p, n, a = 60, 300, 8
    cross = estimate_chain_bytes(model, p, n, a, "crossstep", 4096)
    prefix = estimate_chain_bytes(model, p, n, a, "prefix", 4096)
    small = estimate_chain_bytes(model, p, n, a, "prefix", 64)
    naive = estimate_chain_bytes(model, p, n, a, "naive", 64)
    assert cross > prefix > small > naive  # n²/2 cached rows dominate; then batch size
    assert plan_chain(model, p, n, a, "auto", 4096, None).method == "crossstep"
    assert plan_chain(model, p, n, a, "crossstep", 4096, cross).method == "crossstep"
    plan = plan_chain(model, p, n, a, "crossstep", 4096, (cross + prefix) // 2)
    assert (plan.method, plan.max_batch_tokens) == ("prefix", 4096) and "budget" in plan.reason
    plan = plan_chain(model, p, n, a, "crossstep", 4096, (small + prefix) // 2)
    assert plan.method == "prefix" and 64 <= plan.max_batch_tokens < 4096
    assert plan.estimated_bytes <= (small + prefix) // 2
    plan = plan_chain(model, p, n, a, "auto", 4096, (naive + small) // 2)
    assert plan.method == "naive"
    with pytest.raises(CotSurvivalError) as error:
        plan_chain(model, p, n, a, "auto", 4096, naive // 2)
    assert error.value.code == "E102"


def test_length_dependent_rope_beyond_its_context_runs_naive():
    model = tiny_model("llama", rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0},
                       max_position_embeddings=32)
    assert plan_chain(model, 10, 12, 3, "auto", 4096, None).method == "crossstep"
    plan = plan_chain(model, 10, 30, 3, "auto", 4096, None)
    assert plan.method == "naive" and "rope" in plan.reason


def test_long_chain_small_budget_falls_back_and_records_it(tmp_path, tiny_loaded):
    """A long chain that would not fit with cross-step reuse runs prefix reuse, same order; the manifest says so."""
    from cotsurvival.pruning.run import prune

    model, tokenizer, _ = tiny_loaded
    chains = [EXAMPLE_CHAINS[2], _long_chain()]
    sizes = []
    for chain in chains:
        e = encode_chain(chain, tokenizer)
        sizes.append({m: estimate_chain_bytes(model, len(e.prefix_ids), len(e.reasoning_ids), len(e.answer_ids), m,
                                              4096) for m in ("crossstep", "prefix")})
    budget = (sizes[1]["crossstep"] + sizes[1]["prefix"]) // 2
    assert sizes[0]["crossstep"] < budget  # the short chain still fits cross-step reuse
    small = prune(chains, tmp_path / "small", loaded_model=tiny_loaded, keep_ratio=0.93, progress=False,
                  max_memory=budget)
    free = prune(chains, tmp_path / "free", loaded_model=tiny_loaded, keep_ratio=0.93, progress=False)
    plans = small.read_manifest()["engine"]["chains"]
    assert plans[chains[0].id]["method"] == "crossstep" and plans["long"]["method"] == "prefix"
    assert plans["long"]["budget_bytes"] == budget and "budget" in plans["long"]["reason"]
    assert free.read_manifest()["engine"]["chains"]["long"]["method"] == "crossstep"
    a = pd.read_parquet(small.path / "steps.parquet")
    b = pd.read_parquet(free.path / "steps.parquet")
    assert list(a["position_deleted"]) == list(b["position_deleted"])
    np.testing.assert_allclose(a["objective"], b["objective"], atol=1e-4)


@pytest.mark.parametrize("text, size", [("8GB", 8 * 10**9), ("512MiB", 512 * 2**20), ("2e9", 2 * 10**9),
                                        ("1.5 gib", int(1.5 * 2**30)), (1000, 1000)])
def test_parse_memory(text, size):
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["lots", "8XB", "-1GB", "0"])
def test_parse_memory_refuses(text):
    with pytest.raises(CotSurvivalError) as error:
        parse_memory(text)
    assert error.value.code == "E101"


def test_usable_cpus_reads_affinity_and_cgroup_quota(tmp_path, monkeypatch):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    assert usable_cpus(tmp_path) == 6  # no cgroup files: the affinity mask
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == 6
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert usable_cpus(tmp_path) == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    assert usable_cpus(tmp_path) == 1


def test_cli_prefix_on_unsupported_model_one_line_no_run_dir(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from cotsurvival.testing import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), bos_token_id=0, eos_token_id=0, n_embd=32, n_layer=2, n_head=4, n_positions=512))
    folder = tmp_path / "gpt2"
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    chains = write_jsonl(tmp_path / "chains.jsonl", EXAMPLE_CHAINS[:1])
    out = tmp_path / "run"
    result = cli("prune", chains, "--out", out, "--model", folder, "--method", "prefix", "--device", "cpu")
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr, "E100", "GPT2LMHeadModel", "--method naive")
    assert not out.exists()
    bad = cli("prune", chains, "--out", out, "--model", folder, "--max-memory", "lots")
    assert bad.returncode == 2
    assert_one_line_error(bad.stderr, "E101", "lots")
    assert not out.exists()
