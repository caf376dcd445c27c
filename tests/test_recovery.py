"""Answer recovery against independent computations.

Oracles: ``model(input_ids)`` log-softmax on one unpadded sequence built here from the run's
tables (teacher forcing), a token-by-token argmax loop (greedy decoding), the pruning objective
``steps.parquet`` step 0 of a run pruned with ``objective="answer"`` (keep ratio 1), and the
verifier. The tiny random Llama in float64 keeps both sides within rounding.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from cotsurvival.errors import CotSurvivalError
from cotsurvival.models import ModelInfo
from cotsurvival.testing import EXAMPLE_CHAINS

RATIOS = (0.9, 0.5, 0.3)


@pytest.fixture(scope="module")
def loaded64(tiny64):
    model, tokenizer = tiny64
    return model, tokenizer, ModelInfo("tiny-llama-64", "in-code", None, None, "llama", "float64", "cpu", 0, 512)


@pytest.fixture(scope="module")
def answer_run(loaded64, tmp_path_factory):
    from cotsurvival.pruning import prune

    return prune(EXAMPLE_CHAINS, tmp_path_factory.mktemp("rec") / "run", loaded_model=loaded64, objective="answer",
                 keep_ratio=0.3, baselines=["random", "surprisal"], progress=False)


def direct_logprob(model, sequence, n_body):
    with torch.no_grad():
        logits = model(torch.tensor([sequence])).logits[0]
    logp = torch.log_softmax(logits.double(), -1)
    return sum(float(logp[j - 1, sequence[j]]) for j in range(n_body, len(sequence)))


def direct_greedy(model, tokenizer, prompt, max_new_tokens):
    ids = list(prompt)
    stop = {tokenizer.eos_token_id}
    new = []
    for _ in range(max_new_tokens):
        with torch.no_grad():
            token = int(model(torch.tensor([ids])).logits[0, -1].argmax())
        if token in stop:
            break
        ids.append(token)
        new.append(token)
        text = tokenizer.decode(new, skip_special_tokens=True)
        if text.strip() and "\n" in text.lstrip():
            break
    text = tokenizer.decode(new, skip_special_tokens=True)
    return next((line for line in text.split("\n") if line.strip()), "")


def test_one_chain_equals_direct_computation(answer_run, loaded64):
    from cotsurvival.generation.questions import gold_from_answer
    from cotsurvival.generation.verify import answers_match
    from cotsurvival.recovery import recover

    model, tokenizer, _ = loaded64
    result = recover(answer_run, keep_ratios=RATIOS, loaded_model=loaded64, batch_size=4, max_new_tokens=6,
                     progress=False)
    chain = answer_run.read_chains().iloc[0]
    tokens = answer_run.read_part("tokens", 0).sort_values("position")
    baselines = answer_run.read_part("baselines", 0)
    n = len(tokens)
    rows = result.frame[result.frame["chain_index"] == 0]
    assert len(rows) == 3 * (len(RATIOS) + 1)
    # The cue for "#### 72" is the separator newline and "####" (hand-checked on the tiny tokenizer).
    answer_ids = list(chain["answer_ids"])
    assert tokenizer.decode(answer_ids) == "\n#### 72"
    for row in rows.itertuples():
        steps = (tokens["deleted_step"] if row.ordering == "greedy" else
                 baselines[baselines.ordering == row.ordering].sort_values("position")["deleted_step"])
        n_deleted = n - math.floor(n * row.keep_ratio)
        # Independent of kept_positions(): the first n_deleted tokens of the deletion order go.
        order = [int(p) for _, p in sorted((int(s), i) for i, s in enumerate(steps) if pd.notna(s))]
        gone = set(order[:n_deleted])
        kept = [i for i in range(n) if i not in gone]
        assert row.n_kept == len(kept) == n - n_deleted
        body = list(chain["prefix_ids"]) + [chain["reasoning_ids"][i] for i in kept]
        expected = direct_logprob(model, body + answer_ids, len(body))
        assert row.answer_logprob == pytest.approx(expected, rel=1e-9, abs=1e-9)
        cue = [i for i in answer_ids if tokenizer.decode([i]).strip() in ("", "####")][:2]
        assert tokenizer.decode(cue) == "\n####"
        line = direct_greedy(model, tokenizer, body + cue, 6)
        assert row.predicted == ("####" + line).strip()
        assert row.correct == answers_match(gold_from_answer(row.predicted), "72")


def test_keep_ratio_one_equals_the_pruning_objective(answer_run, loaded64):
    from cotsurvival.recovery import recover

    result = recover(answer_run, keep_ratios=RATIOS, loaded_model=loaded64, progress=False)
    steps = pd.read_parquet(answer_run.path / "steps.parquet")
    objective0 = steps[steps.step == 0].set_index("chain_index")["objective"]
    full = result.frame[result.frame.keep_ratio == 1.0]
    assert set(full.ordering) == {"greedy", "random", "surprisal"}
    for row in full.itertuples():
        assert row.answer_logprob == pytest.approx(objective0[row.chain_index], rel=1e-9)
        assert row.n_kept == row.n_tokens
    # And greedy's own objective after its deletions is the teacher-forced log P(answer) at that ratio.
    greedy = result.frame[(result.frame.ordering == "greedy") & (result.frame.keep_ratio == 0.5)]
    for row in greedy.itertuples():
        n_deleted = row.n_tokens - math.floor(row.n_tokens * 0.5)
        objective = steps[(steps.chain_index == row.chain_index) & (steps.step == n_deleted)]["objective"].item()
        assert row.answer_logprob == pytest.approx(objective, rel=1e-9)


def test_resume_skips_written_chains_and_adds_missing_ratios(answer_run, loaded64, monkeypatch):
    import cotsurvival.recovery as recovery

    first = recovery.recover(answer_run, keep_ratios=RATIOS, loaded_model=loaded64, progress=False)
    calls = []
    original = recovery._recover_chain

    def counting(run, index, chain, todo, *args, **kwargs):
        calls.append((index, list(todo)))
        return original(run, index, chain, todo, *args, **kwargs)

    monkeypatch.setattr(recovery, "_recover_chain", counting)
    again = recovery.recover(answer_run, keep_ratios=RATIOS, loaded_model=loaded64, progress=False)
    assert calls == []
    pd.testing.assert_frame_equal(first.frame.reset_index(drop=True), again.frame.reset_index(drop=True))
    # A new ratio computes only that ratio, for every chain and ordering, and keeps the old rows.
    more = recovery.recover(answer_run, keep_ratios=(*RATIOS, 0.7), loaded_model=loaded64, progress=False)
    assert sorted(i for i, _ in calls) == [0, 1, 2]
    assert all(sorted({r for _, r in todo}) == [0.7] for _, todo in calls)
    assert len(more.frame) == len(first.frame) + 3 * 3
    on_disk = pd.read_parquet(answer_run.path / "recovery.parquet")
    assert len(on_disk) == len(more.frame)
    # A deleted part is recomputed alone and gives the same rows.
    calls.clear()
    (answer_run.path / "recovery.parquet" / "part-000001.parquet").unlink()
    redone = recovery.recover(answer_run, keep_ratios=(*RATIOS, 0.7), loaded_model=loaded64, progress=False)
    assert [i for i, _ in calls] == [1]
    key = ["chain_index", "ordering", "keep_ratio"]
    pd.testing.assert_frame_equal(more.frame.sort_values(key).reset_index(drop=True),
                                  redone.frame.sort_values(key).reset_index(drop=True))


def test_result_summary_tests_save_load(answer_run, loaded64, tmp_path):
    from cotsurvival.analysis.inference import bootstrap_ci
    from cotsurvival.recovery import RecoveryResult, recover

    result = recover(answer_run, keep_ratios=RATIOS, loaded_model=loaded64, progress=False)
    summary = result.summary()
    row = summary[(summary.ordering == "random") & (summary.keep_ratio == 0.5)].iloc[0]
    sub = result.frame[(result.frame.ordering == "random") & (result.frame.keep_ratio == 0.5)]
    assert row.n_chains == 3
    assert row.answer_logprob == pytest.approx(sub.answer_logprob.mean())
    assert row.answer_logprob_ci_low == pytest.approx(bootstrap_ci(sub.answer_logprob)["ci_low"])
    tests = result.tests()
    t = tests[(tests.baseline == "random") & (tests.keep_ratio == 0.5) & (tests.metric == "answer_logprob")].iloc[0]
    g = result.frame[(result.frame.ordering == "greedy") & (result.frame.keep_ratio == 0.5)].sort_values("chain_index")
    r = sub.sort_values("chain_index")
    assert t.difference == pytest.approx((g.answer_logprob.to_numpy() - r.answer_logprob.to_numpy()).mean())
    assert t.n_chains == 3 and t.exact
    sentences = result.citations()
    # 3 chains: withheld under the one minimum-support rule of every citations.md (analysis.citations)
    assert any(s.startswith("Note: withheld (below the minimum support of 6 chains") and "greedy vs random" in s
               and "(3 chains)" in s for s in sentences)
    assert not any(s.startswith("At keep ratio") for s in sentences)
    html = result._repr_html_()
    assert "<table" in html and "Answer recovery" in html
    assert result.save(tmp_path / "out") == tmp_path / "out"
    assert result.files["figure"].stat().st_size > 10_000
    back = RecoveryResult.load(tmp_path / "out")
    pd.testing.assert_frame_equal(back.frame, result.frame)
    from_run = RecoveryResult.load(answer_run.path)
    assert len(from_run.frame) >= len(result.frame)


def test_user_errors(answer_run, loaded64):
    from cotsurvival.recovery import recover

    with pytest.raises(CotSurvivalError) as info:
        recover(answer_run, orderings=["greedy", "llmlingua2"], loaded_model=loaded64, progress=False)
    assert info.value.code == "E134" and "llmlingua2" in info.value.one_line()
    with pytest.raises(CotSurvivalError) as info:
        recover(answer_run, keep_ratios=[0.2], loaded_model=loaded64, progress=False)
    assert info.value.code == "E135"
    with pytest.raises(CotSurvivalError) as info:
        recover(answer_run, keep_ratios=[1.5], loaded_model=loaded64, progress=False)
    assert info.value.code == "E133"


def test_cli_recover(tiny_dir, tmp_path):
    from cli_helpers import assert_one_line_error, cli, write_jsonl

    chains = write_jsonl(tmp_path / "chains.jsonl", EXAMPLE_CHAINS[:2])
    run = tmp_path / "run"
    done = cli("prune", chains, "--out", run, "--model", tiny_dir, "--keep-ratio", "0.5", "--baselines", "random",
               timeout=600)
    assert done.returncode == 0, done.stderr
    done = cli("recover", run, "--keep-ratios", "0.9,0.5", "--max-new-tokens", "4", timeout=600)
    assert done.returncode == 0, done.stderr
    assert (run / "recovery" / "fig_recovery.png").is_file()
    frame = pd.read_parquet(run / "recovery.parquet")
    assert len(frame) == 2 * 2 * 3
    assert {"chain_id", "ordering", "keep_ratio", "answer_logprob", "correct"} <= set(frame.columns)
    bad = cli("recover", run, "--keep-ratios", "0.3", timeout=300)
    assert bad.returncode == 2
    assert_one_line_error(bad.stderr, "E135", "0.3")


def test_decoded_answer_line_is_checked_with_the_verifier(answer_run, loaded64, monkeypatch, tmp_path):
    import shutil

    import cotsurvival.recovery as recovery

    run = tmp_path / "copy"
    shutil.copytree(answer_run.path, run, ignore=shutil.ignore_patterns("recovery.parquet"))
    # The model "answers" right for chain ex-1 (gold 72: " 72.00 clips" is the same number), wrong otherwise.
    monkeypatch.setattr(recovery, "greedy_answer_lines",
                        lambda model, tok, prompts, *a, **k: [" 72.00 clips" if len(p) > 0 and i % 2 == 0 else " 7"
                                                              for i, p in enumerate(prompts)])
    result = recovery.recover(run, keep_ratios=(0.5,), loaded_model=loaded64, progress=False)
    frame = result.frame
    assert set(frame[frame.predicted == "#### 72.00 clips"].chain_id) >= {"ex-1"}
    assert frame[frame.predicted == "#### 72.00 clips"].correct.groupby(frame.chain_id).all().to_dict().get("ex-1")
    assert not frame[(frame.chain_id != "ex-1") & (frame.predicted == "#### 72.00 clips")].correct.any()
    assert not frame[frame.predicted == "#### 7"].correct.any()
