"""Attention features against direct computations on the tiny model; AUC and ridge against naive versions."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch

from cotsurvival.analysis import attention as attn
from cotsurvival.analysis import compute_attention_features, load_run
from cotsurvival.encoding import encode_chain
from cotsurvival.errors import CotSurvivalError
from cotsurvival.rundir import RunDir
from cotsurvival.testing import EXAMPLE_CHAINS, synthetic_run, tiny_llama


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny):
    model, tokenizer = tiny
    run = RunDir(tmp_path_factory.mktemp("a") / "run")
    rows = []
    for index, chain in enumerate(EXAMPLE_CHAINS):
        enc = encode_chain(chain, tokenizer)
        rows.append({"chain_index": index, "chain_id": chain.id, "question": chain.question,
                     "reasoning": chain.reasoning, "answer": chain.answer, "prefix_ids": enc.prefix_ids,
                     "reasoning_ids": enc.reasoning_ids, "answer_ids": enc.answer_ids, "used_chat_template": True})
    run.path.mkdir(parents=True)
    run.write_chains(pd.DataFrame(rows))
    run.write_manifest({"model": {"spec": "tiny"}, "keep_ratio": 0.0, "n_chains": len(rows)})
    assert compute_attention_features(run, model) == len(rows)
    return run


def naive_features(model, prefix, reasoning, answer):
    """Loop over queries one by one on the returned attention weights."""
    ids = torch.tensor([prefix + reasoning + answer])
    with torch.no_grad():
        out = model(input_ids=ids, output_attentions=True)
    p, r, a = len(prefix), len(reasoning), len(answer)
    rows = []
    for i in range(r):
        j = p + i
        row = {}
        for layer, weights in enumerate(out.attentions):
            w = weights[0].mean(dim=0)
            row[f"attn_answer_L{layer:02d}"] = sum(float(w[q, j]) for q in range(p + r, p + r + a)) / a
            later = [float(w[q, j]) for q in range(j + 1, p + r)]
            row[f"attn_later_L{layer:02d}"] = sum(later) / len(later) if later else 0.0
        logits = out.logits[0, j - 1]
        row["surprisal"] = float(-(logits[ids[0, j]] - torch.logsumexp(logits, dim=-1)))
        rows.append(row)
    return pd.DataFrame(rows)


def test_features_match_naive_loop(tiny_run, tiny):
    model, _ = tiny
    chains = tiny_run.read_chains()
    for chain in chains.itertuples():
        mine = tiny_run.read_part("attention", chain.chain_index)
        ref = naive_features(model, list(chain.prefix_ids), list(chain.reasoning_ids), list(chain.answer_ids))
        assert len(mine) == len(chain.reasoning_ids)
        for column in ref.columns:
            np.testing.assert_allclose(mine[column], ref[column], rtol=1e-5, atol=1e-7, err_msg=column)


def test_layer0_attention_from_q_and_k(tiny_run, tiny):
    """Recompute layer 0's attention by hand from its q/k projections (RoPE, GQA, causal softmax)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    model, _ = tiny
    chain = tiny_run.read_chains().iloc[0]
    prefix, reasoning, answer = (list(chain[c]) for c in ("prefix_ids", "reasoning_ids", "answer_ids"))
    ids = torch.tensor([prefix + reasoning + answer])
    cfg = model.config
    heads, kv, dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
    with torch.no_grad():
        hidden = model.model.embed_tokens(ids)
        layer = model.model.layers[0]
        x = layer.input_layernorm(hidden)
        t = ids.shape[1]
        q = layer.self_attn.q_proj(x).view(1, t, heads, dim).transpose(1, 2)
        k = layer.self_attn.k_proj(x).view(1, t, kv, dim).transpose(1, 2)
        cos, sin = model.model.rotary_emb(hidden, torch.arange(t)[None])
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k = k.repeat_interleave(heads // kv, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(dim)
        scores = scores.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf"))
        weights = scores.softmax(dim=-1)[0].mean(dim=0)
    p, r = len(prefix), len(reasoning)
    expected_answer = weights[p + r:, p:p + r].mean(dim=0).numpy()
    expected_later = np.array([weights[p + i + 1:p + r, p + i].mean().item() if i < r - 1 else 0.0 for i in range(r)])
    mine = tiny_run.read_part("attention", 0)
    np.testing.assert_allclose(mine["attn_answer_L00"], expected_answer, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(mine["attn_later_L00"], expected_later, rtol=1e-4, atol=1e-7)


def test_resumable_and_manifest(tiny_run, tiny):
    assert compute_attention_features(tiny_run, tiny[0]) == 0  # all parts exist
    assert tiny_run.read_manifest()["attention"]["n_layers"] == 2


def test_cli_attention_with_saved_model(tmp_path, tiny_run, tiny):
    import shutil

    from cotsurvival.cli import main

    model, tokenizer = tiny
    folder = tmp_path / "tiny-model"
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    run = tmp_path / "run"
    shutil.copytree(tiny_run.path, run)
    shutil.rmtree(run / "attention.parquet")
    assert main(["attention", str(run), "--model", str(folder), "--dtype", "float32", "--device", "cpu"]) == 0
    again = pd.read_parquet(run / "attention.parquet")
    np.testing.assert_allclose(again["attn_answer_L01"], pd.read_parquet(tiny_run.table_dir("attention"))["attn_answer_L01"],
                               rtol=1e-5)
    RunDir(run).update_manifest(model={"spec": str(tmp_path / "gone")})
    assert main(["attention", str(run), "--overwrite"]) == 2  # the recorded model is missing: one-line error


def test_roc_auc_equals_pairwise_count():
    rng = np.random.default_rng(0)
    labels = rng.random(60) < 0.4
    scores = np.round(rng.random(60), 1)  # ties
    pairs = [(s1 > s0) + 0.5 * (s1 == s0) for s1, s0 in itertools.product(scores[labels], scores[~labels])]
    assert attn.roc_auc(labels, scores) == pytest.approx(np.mean(pairs))
    assert np.isnan(attn.roc_auc(np.ones(5, bool), np.arange(5)))


def test_ridge_closed_form_and_group_folds():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 3 + rng.normal(0, 0.01, 80)
    # alpha -> 0 is ordinary least squares with an intercept.
    ols = np.linalg.lstsq(np.column_stack([np.ones(80), x]), y, rcond=None)[0]
    np.testing.assert_allclose(attn.ridge_fit_predict(x, y, x[:5], alpha=1e-10), np.column_stack([np.ones(5), x[:5]]) @ ols,
                               rtol=1e-6)
    groups = np.repeat(np.arange(10), 8)
    folds = attn.group_folds(groups, 4, seed=0)
    assert all(len(set(folds[groups == g])) == 1 for g in range(10))
    assert set(folds) == {0, 1, 2, 3}


def test_predictors_on_planted_signal(tmp_path):
    run = synthetic_run(tmp_path / "r", n_chains=10, n_tokens=30, baselines=False)
    df = load_run(run)
    rng = np.random.default_rng(0)
    for index in df["chain_index"].unique():
        chain = df[df.chain_index == index]
        n = len(chain)
        signal = chain["survival"].to_numpy()
        frame = pd.DataFrame({"chain_index": index, "chain_id": chain["chain_id"].iloc[0], "position": chain["position"],
                              "surprisal": rng.random(n),
                              "attn_answer_L00": rng.random(n), "attn_answer_L01": signal + rng.normal(0, 0.1, n),
                              "attn_later_L00": rng.random(n), "attn_later_L01": rng.random(n)})
        run.write_part("attention", int(index), frame)
    df = load_run(run)
    result = attn.attention_predictors(df, n_folds=5)
    assert result["best_layer"]["answer"]["layer"] == 1 and result["best_layer"]["answer"]["mean_rho"] > 0.8
    assert result["probe_attention"]["auc"] > 0.9 and result["probe_attention"]["n_chains"] == 10
    assert abs(result["surprisal_raw"]["auc"] - 0.5) < 0.15
    corr = result["correlations"].set_index("feature")
    assert corr.loc["attn_answer_L01", "lower"] > 0.5 and corr.loc["surprisal", "n_chains"] == 10


def test_survived_past_with_censoring():
    df = pd.DataFrame({"survival": [0.2, 0.6, 0.3, 0.7], "censored": [False, False, True, True]})
    out = attn.survived_past(df, 0.5)
    assert out.tolist()[:2] == [False, True] and out.isna().tolist()[2] and out.tolist()[3] is True


def test_synthetic_model_spec_is_refused(tmp_path):
    run = synthetic_run(tmp_path / "s", n_chains=1, n_tokens=4, baselines=False)
    with pytest.raises(CotSurvivalError, match="pass --model"):
        compute_attention_features(run)
