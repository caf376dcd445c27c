"""The greedy engine against the naive oracle, and its run-directory bookkeeping."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cotsurvival.encoding import encode_chain
from cotsurvival.pruning.engine import greedy_prune, n_deletions
from cotsurvival.pruning.crossstep import CrossStepScorer
from cotsurvival.pruning.scoring import NaiveScorer, PrefixReuseScorer
from cotsurvival.testing import EXAMPLE_CHAINS, pruned_sequences

from naive_greedy import naive_greedy


@pytest.mark.parametrize("scorer_class", [PrefixReuseScorer, CrossStepScorer])
@pytest.mark.parametrize("objective", ["joint", "answer"])
@pytest.mark.parametrize("batch", [7, 4096])
def test_engine_matches_naive_oracle_float64(tiny64, scorer_class, objective, batch):
    model, tokenizer = tiny64
    encoded = encode_chain(EXAMPLE_CHAINS[1], tokenizer)
    steps = 12
    oracle_order, oracle_scores = naive_greedy(model, encoded.prefix_ids, encoded.reasoning_ids,
                                               encoded.answer_ids, steps, objective)
    trace = greedy_prune(scorer_class(model, objective, max_batch_tokens=batch), encoded, steps)
    assert pruned_sequences(encoded.reasoning_ids, trace.order) == pruned_sequences(encoded.reasoning_ids, oracle_order)
    # Every candidate's cost at every step, not only the winner's.
    for step, scores in enumerate(oracle_scores):
        expected = trace.objectives[step] - np.asarray(scores)
        np.testing.assert_allclose(trace.step_costs[step], expected, rtol=0, atol=1e-4)


def test_naive_scorer_matches_prefix_scorer(tiny64):
    model, tokenizer = tiny64
    encoded = encode_chain(EXAMPLE_CHAINS[0], tokenizer)
    args = (encoded.prefix_ids, encoded.reasoning_ids, encoded.answer_ids)
    fast = PrefixReuseScorer(model, "joint", 64).score(*args)
    slow = NaiveScorer(model, "joint", 64).score(*args)
    np.testing.assert_allclose(fast.candidate_objectives, slow.candidate_objectives, atol=1e-9)
    assert fast.tokens_processed < slow.tokens_processed


@pytest.mark.parametrize("objective", ["joint", "answer"])
def test_crossstep_equals_prefix_reuse_to_the_end(tiny64, objective):
    """Every step of a full ranking, on all example chains: cross-step reuse changes no number."""
    model, tokenizer = tiny64
    for chain in EXAMPLE_CHAINS:
        encoded = encode_chain(chain, tokenizer)
        n = len(encoded.reasoning_ids)
        plain = greedy_prune(PrefixReuseScorer(model, objective, 1024), encoded, n)
        reused = greedy_prune(CrossStepScorer(model, objective, 1024), encoded, n)
        assert plain.order == reused.order
        for step, (a, b) in enumerate(zip(plain.step_costs, reused.step_costs), 1):
            np.testing.assert_allclose(a, b, atol=1e-6, err_msg=f"{chain.id} step {step}")
        assert reused.tokens_processed < plain.tokens_processed


def test_crossstep_with_repeated_tokens(tiny64):
    """Runs of identical tokens share one sequence; their cached suffixes must still line up."""
    model, tokenizer = tiny64
    encoded = encode_chain(EXAMPLE_CHAINS[0], tokenizer)
    ids = encoded.reasoning_ids
    reasoning = ids[:5] + [ids[5]] * 4 + ids[5:12] + [ids[3]] * 3
    n = len(reasoning)
    encoded = type(encoded)(encoded.chain, encoded.prefix_ids, reasoning, encoded.answer_ids, [(0, 0)] * n, True)
    order, scores = naive_greedy(model, encoded.prefix_ids, encoded.reasoning_ids, encoded.answer_ids, n)
    trace = greedy_prune(CrossStepScorer(model, "joint", 40), encoded, n)
    assert pruned_sequences(encoded.reasoning_ids, trace.order) == pruned_sequences(encoded.reasoning_ids, order)


def test_identical_adjacent_tokens_tie_to_lowest_position(tiny64):
    model, tokenizer = tiny64
    encoded = encode_chain(EXAMPLE_CHAINS[0], tokenizer)
    reasoning = encoded.reasoning_ids[:6] + [encoded.reasoning_ids[6]] * 3 + encoded.reasoning_ids[6:]
    scores = PrefixReuseScorer(model).score(encoded.prefix_ids, reasoning, encoded.answer_ids)
    assert scores.candidate_objectives[6] == scores.candidate_objectives[7] == scores.candidate_objectives[8]


def test_keep_ratio_step_count():
    assert n_deletions(10, 0.0) == 10
    assert n_deletions(10, 0.45) == 6  # floor(4.5) = 4 kept
    assert n_deletions(7, 0.5) == 4


def test_deterministic(tiny):
    model, tokenizer = tiny
    encoded = encode_chain(EXAMPLE_CHAINS[2], tokenizer)
    first = greedy_prune(PrefixReuseScorer(model), encoded, 10)
    second = greedy_prune(PrefixReuseScorer(model, max_batch_tokens=33), encoded, 10)
    assert first.order == second.order


def test_prune_writes_consistent_run(tmp_path, tiny_loaded):
    from cotsurvival.pruning.run import prune

    run = prune(EXAMPLE_CHAINS, tmp_path / "run", loaded_model=tiny_loaded, keep_ratio=0.5,
                baselines=["random", "surprisal", "loo", "attention"], progress=False)
    tokens = pd.read_parquet(run.path / "tokens.parquet")
    steps = pd.read_parquet(run.path / "steps.parquet")
    traces = pd.read_parquet(run.path / "traces.parquet")
    base = pd.read_parquet(run.path / "baselines.parquet")
    for index, group in tokens.groupby("chain_index"):
        n = len(group)
        d = n_deletions(n, 0.5)
        assert group["deleted_step"].notna().sum() == d
        assert sorted(group["deleted_step"].dropna()) == list(range(1, d + 1))
        assert group.loc[group.censored, "survival"].eq(d / n).all()
        chain_steps = steps[steps.chain_index == index].sort_values("step")
        # the winner of each step is the lowest-cost candidate in the trace
        chain_traces = traces[traces.chain_index == index]
        for step, candidates in chain_traces.groupby("step"):
            winner = chain_steps.loc[chain_steps.step == step, "position_deleted"].item()
            best = candidates.loc[candidates.cost.idxmin(), "position"]
            assert candidates.loc[candidates.position == winner, "cost"].item() == candidates.cost.min()
            assert winner == best
            assert len(candidates) == n - step + 1
        # objective drop of each step equals the chosen cost (same numbers, two tables)
        drops = -np.diff(chain_steps["objective"].to_numpy())
        chosen = group.set_index("deleted_step")["deletion_cost"].dropna().sort_index().to_numpy()
        np.testing.assert_allclose(drops, chosen, atol=1e-4)
        # loo baseline = ascending step-1 costs
        step1 = chain_traces[chain_traces.step == 1].sort_values(["cost", "position"])
        loo = base[(base.chain_index == index) & (base.ordering == "loo")].dropna(subset=["deleted_step"])
        assert list(loo.sort_values("deleted_step").position) == list(step1.position[:d])
    # surprisal baseline: highest static log-prob first
    chain0 = tokens[tokens.chain_index == 0]
    sur = base[(base.chain_index == 0) & (base.ordering == "surprisal")].dropna(subset=["deleted_step"])
    first = sur.sort_values("deleted_step").position.iloc[0]
    assert first == chain0.static_logprob.idxmax() - chain0.index[0]


def test_resume_continue_and_refuse(tmp_path, tiny_loaded):
    from cotsurvival.errors import CotSurvivalError
    from cotsurvival.pruning.run import prune

    full = prune(EXAMPLE_CHAINS[:2], tmp_path / "full", loaded_model=tiny_loaded, keep_ratio=0.2, progress=False)
    half = prune(EXAMPLE_CHAINS[:2], tmp_path / "cont", loaded_model=tiny_loaded, keep_ratio=0.6, progress=False)
    prune(EXAMPLE_CHAINS[:2], half.path, loaded_model=tiny_loaded, keep_ratio=0.2, progress=False)
    for table in ("tokens", "steps", "traces"):
        a = pd.read_parquet(full.path / f"{table}.parquet")
        b = pd.read_parquet(half.path / f"{table}.parquet")
        pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-5)
    with pytest.raises(CotSurvivalError, match="objective"):
        prune(EXAMPLE_CHAINS[:2], full.path, loaded_model=tiny_loaded, objective="answer", progress=False)
    with pytest.raises(CotSurvivalError, match="set of chains"):
        prune(EXAMPLE_CHAINS[1:], full.path, loaded_model=tiny_loaded, keep_ratio=0.2, progress=False)


def test_export_pruned_text(tmp_path, tiny_loaded):
    from cotsurvival.errors import CotSurvivalError
    from cotsurvival.pruning import export_pruned
    from cotsurvival.pruning.run import prune

    run = prune(EXAMPLE_CHAINS[:2], tmp_path / "run", loaded_model=tiny_loaded, keep_ratio=0.5, progress=False)
    count = export_pruned(run, 0.5, tmp_path / "pruned.jsonl")
    rows = [__import__("json").loads(line) for line in (tmp_path / "pruned.jsonl").read_text().splitlines()]
    assert count == len(rows) == 2
    tokens = pd.read_parquet(run.path / "tokens.parquet")
    for row, chain in zip(rows, EXAMPLE_CHAINS[:2]):
        mine = tokens[tokens.chain_id == chain.id].sort_values("position")
        kept = mine[mine.censored]
        assert row["n_kept"] == len(kept) == len(mine) // 2
        # the kept tokens appear in the exported text, in order, and deleted-only words do not
        cursor = 0
        for text in kept["text"]:
            cursor = row["reasoning"].index(text.strip(), cursor)
        assert row["answer"] == chain.answer
    full = export_pruned(run, 0.9, tmp_path / "light.jsonl")
    assert full == 2
    with pytest.raises(CotSurvivalError, match="keep ratio"):
        export_pruned(run, 0.2, tmp_path / "deeper.jsonl")


def test_out_of_memory_halves_the_batch_and_retries(tiny, monkeypatch):
    model, tokenizer = tiny
    encoded = encode_chain(EXAMPLE_CHAINS[0], tokenizer)
    args = (encoded.prefix_ids, encoded.reasoning_ids, encoded.answer_ids)
    expected = PrefixReuseScorer(model, "joint", 512).score(*args)
    scorer = PrefixReuseScorer(model, "joint", 512)
    original = PrefixReuseScorer._score_batch
    calls = {"n": 0}

    def flaky(self, *a):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("simulated")
        return original(self, *a)

    monkeypatch.setattr(PrefixReuseScorer, "_score_batch", flaky)
    sizes = []
    monkeypatch.setattr(PrefixReuseScorer, "_score_batch",
                        lambda self, *a: sizes.append(len(a[6])) or flaky(self, *a))
    got = scorer.score(*args)
    assert scorer.max_batch_tokens == 256
    assert sizes[1] < sizes[0]  # the retried batch was re-split under the halved budget
    np.testing.assert_allclose(got.candidate_objectives, expected.candidate_objectives, atol=1e-5)
