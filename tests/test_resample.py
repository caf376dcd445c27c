"""On-policy resampling importance (``cotsurvival resample``) and its side-by-side statistics.

Oracles: a direct recomputation of rollouts and answer log-probabilities with the documented seeds
(plain ``generate`` and one unbatched forward pass per rollout); pandas' Spearman, scipy's t test and
an enumerated sign-flip distribution for the across-chain statistics; hand-worked splits and counts.
"""
from __future__ import annotations

import itertools
import zlib

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from cotsurvival.analysis.onpolicy import (OnPolicyResult, category_contrasts, per_chain_spearman, rewritten_mask,
                                          unit_importance)
from cotsurvival.errors import CotSurvivalError
from cotsurvival.resampling import FAILED, ChainResampler, SamplingOptions, resample
from cotsurvival.rundir import RunDir
from cotsurvival.taxonomy.units import split_units, token_units, unit_spans
from cotsurvival.testing import EXAMPLE_CHAINS

OPTIONS = dict(rollouts=3, max_new_tokens=8, batch_size=2, temperature=0.9, top_p=0.95, seed=7)


@pytest.fixture(scope="module")
def pruned(tmp_path_factory, tiny_loaded):
    from cotsurvival.pruning import prune

    path = tmp_path_factory.mktemp("resample") / "run"
    prune(EXAMPLE_CHAINS, path, loaded_model=tiny_loaded, keep_ratio=0.0, progress=False)
    return path


@pytest.fixture(scope="module")
def resampled(pruned, tiny_loaded, tmp_path_factory):
    import shutil

    path = tmp_path_factory.mktemp("resampled") / "run"
    shutil.copytree(pruned, path)
    result = resample(path, loaded_model=tiny_loaded, progress=False, regeneration_keep_ratios=(0.7, 0.3), **OPTIONS)
    return path, result


# ---------------------------------------------------------------------------------------- splitter

def test_split_units_hand_worked():
    text = 'So 48/2 = 24 clips. Then 3.5 more, e.g. this.\nHe said "go." (Yes!) Next\n\n  12 + 3 = 15'
    assert [u.text for u in split_units(text)] == ["So 48/2 = 24 clips.", "Then 3.5 more, e.g. this.",
                                                   'He said "go."', "(Yes!)", "Next", "12 + 3 = 15"]
    for unit in split_units(text):
        assert text[unit.start:unit.end] == unit.text


def test_token_units_are_contiguous_and_cover_every_token(tiny):
    _, tokenizer = tiny
    for chain in EXAMPLE_CHAINS:
        encoded = tokenizer(chain.reasoning, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"]
        of = token_units(offsets, split_units(chain.reasoning))
        assert (np.diff(of) >= 0).all() and of.min() >= 0
        spans = unit_spans(offsets, chain.reasoning)
        assert len(spans) == 2 and spans[0][0] == 0 and spans[-1][1] == len(offsets)
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        # each unit's text lies within the characters of its tokens
        for first, end, unit in spans:
            assert offsets[first][0] <= unit.start and unit.end <= offsets[end - 1][1]


def test_one_splitter_for_resample_viewer_and_tagger(pruned, tmp_path):
    """The tagger's labels, the viewer's unit marks and the on-policy units are the same units."""
    import json
    import re
    import shutil

    from cotsurvival.reports import build_viewer
    from cotsurvival.taxonomy import tag_run

    copy = tmp_path / "run"
    shutil.copytree(pruned, copy)
    run = RunDir(copy)
    tag_run(run, progress=False)
    page = build_viewer(run, tmp_path / "v.html", traces=False).read_text(encoding="utf-8")
    viewer = json.loads(re.search(r'id="cs-data">(.*?)</script>', page, re.S).group(1))
    units = OnPolicyResult(rollouts=pd.DataFrame(), regeneration_rows=pd.DataFrame(), tokens=run.read_table("tokens"),
                           chains=run.read_chains()).units()
    for chain, shown in zip(EXAMPLE_CHAINS, viewer["chains"]):
        index = shown["index"]
        stored = run.read_part("labels", index).sort_values("position")["unit"].tolist()
        assert stored == shown["unit"]
        # by hand: each example chain is two lines, and the tokens of line k show exactly its text
        lines = chain.reasoning.split("\n")
        for k, line in enumerate(lines):
            assert "".join(seg for seg, u in zip(shown["seg"], shown["unit"]) if u == k).strip() == line
        mine = units[units["chain_index"] == index]
        assert mine["text"].tolist() == lines
        assert [stored.index(k) for k in range(len(lines))] == mine["first_token"].tolist()
    assert "unit-start" in page  # the script marks where a unit begins


# ---------------------------------------------------------------------------------------- stage

def _direct_rollouts(model, tokenizer, chain, cut, options):
    """The rollouts of one cut, drawn with plain ``generate`` and the documented seeds, scored unbatched."""
    prompt = list(chain["prefix_ids"]) + list(chain["reasoning_ids"])[:cut]
    eos = tokenizer.eos_token_id
    answer = list(chain["answer_ids"])
    out = []
    for chunk, first in enumerate(range(0, options["rollouts"], options["batch_size"])):
        n = min(options["batch_size"], options["rollouts"] - first)
        torch.manual_seed(zlib.crc32(f"{options['seed']}\x00{chain['chain_id']}\x00{cut}\x00{chunk}".encode()))
        ids = torch.tensor([prompt] * n)
        with torch.no_grad():
            new = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0,
                                 temperature=options["temperature"], top_p=options["top_p"],
                                 max_new_tokens=options["max_new_tokens"], eos_token_id=[eos], pad_token_id=eos)
        for row in new[:, len(prompt):].tolist():
            row = row[: row.index(eos)] if eos in row else row
            while row and not tokenizer.decode(row[-1:]).strip():
                row = row[:-1]
            seq = torch.tensor([prompt + row + answer])
            with torch.no_grad():
                logp = torch.log_softmax(model(seq).logits[0].double(), dim=-1)
            start = len(prompt) + len(row)
            out.append(float(sum(logp[start - 1 + k, t] for k, t in enumerate(answer))))
    return np.array(out)


def test_importance_equals_a_direct_recomputation(resampled, tiny):
    path, result = resampled
    model, tokenizer = tiny
    chains = RunDir(path).read_chains().set_index("chain_index")
    table = result.importance()
    assert len(table) == 2 * len(EXAMPLE_CHAINS)  # two units per example chain
    for _, unit in table.iterrows():
        chain = chains.loc[unit["chain_index"]].copy()
        chain["chain_id"] = chain["chain_id"]
        kept = _direct_rollouts(model, tokenizer, chain, int(unit["end_token"]), OPTIONS)
        resampled_lp = _direct_rollouts(model, tokenizer, chain, int(unit["first_token"]), OPTIONS)
        # the random model's gibberish never rewrites a unit, so every replacement is a counterfactual
        assert unit["n_similar"] == 0 and unit["n_resampled"] == OPTIONS["rollouts"]
        assert unit["d_logprob"] == pytest.approx(kept.mean() - resampled_lp.mean(), abs=1e-4)
        assert unit["d_logprob_ci_low"] <= unit["d_logprob"] <= unit["d_logprob_ci_high"]
    # one cut per unit start and one at the end; every rollout recorded with its seed
    rows = result.rollouts
    assert len(rows) == len(EXAMPLE_CHAINS) * 3 * OPTIONS["rollouts"]
    assert rows.groupby(["chain_index", "cut"])["seed"].nunique().max() == 2  # 3 rollouts in chunks of 2
    manifest = RunDir(path).read_manifest()["resample"]
    assert manifest["seed"] == 7 and manifest["temperature"] == 0.9 and manifest["rollouts"] == 3
    assert manifest["similarity_threshold"] == 0.8 == result.similarity_threshold


def _lcs_ratio(a: str, b: str) -> float:
    """Oracle: 2·LCS / (len a + len b) over the same tokens, by dynamic programming."""
    import re

    x, y = re.findall(r"\w+|[^\w\s]", a.lower()), re.findall(r"\w+|[^\w\s]", b.lower())
    table = np.zeros((len(x) + 1, len(y) + 1), dtype=int)
    for i, u in enumerate(x):
        for j, v in enumerate(y):
            table[i + 1, j + 1] = table[i, j] + 1 if u == v else max(table[i, j + 1], table[i + 1, j])
    return 2 * table[-1, -1] / (len(x) + len(y))


def test_unit_similarity_hand_worked():
    from cotsurvival.analysis.onpolicy import replacement_unit, unit_similarity

    unit = "Her sister ate 3 + 2 = 5 slices."
    # 10 tokens each, 8 in common (two numbers changed): 16 / 20, by hand and by the LCS oracle
    for other, expected in [("her sister ate 3+2=5 slices .", 1.0), ("Her sister ate 3 + 3 = 6 slices.", 0.8),
                            ("Then 7 pies.", 2 / 14), ("", 0.0), ("Her sister ate 3", 8 / 14)]:
        assert unit_similarity(unit, other) == pytest.approx(expected)
        assert _lcs_ratio(unit, other) == pytest.approx(expected)
    # an unfinished copy (cut off by the token bound) is compared with as much of the original
    assert unit_similarity(unit, "Her sister ate 3", cut_off=True) == 1.0
    assert unit_similarity(unit, "His sister ate 4", cut_off=True) == pytest.approx(0.5)
    # the replacement is the first unit of the rollout's own reasoning, before its answer line
    assert replacement_unit(" Her sister ate 5.\nThen 3 more.\n#### 8", "gsm8k") == ("Her sister ate 5.", False)
    assert replacement_unit("\n#### 8", "gsm8k") == ("", False)
    assert replacement_unit(" Her sister ate", "gsm8k", truncated=True) == ("Her sister ate", True)
    assert replacement_unit(" She ate 5. Then", "gsm8k", truncated=True) == ("She ate 5.", False)


def _hand_result(threshold=None):
    """One chain of two units, rollouts with hand-chosen texts and log-probabilities."""
    reasoning = "Her sister ate 3 + 2 = 5 slices.\nSo they ate 5 + 3 = 8 slices."
    import re

    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", reasoning)]
    tokens = pd.DataFrame({"chain_index": 0, "position": range(len(words)), "char_start": [a for a, _ in words],
                           "char_end": [b for _, b in words], "is_whitespace": False,
                           "text": [reasoning[a:b] for a, b in words], "survival": np.linspace(0, 1, len(words))})
    tokens["category"] = ["symbolic_math" if t[0] in "0123456789+=" else "narration" for t in tokens["text"]]
    chains = pd.DataFrame({"chain_index": [0], "chain_id": ["c0"], "reasoning": [reasoning], "answer": ["#### 8"]})
    texts = {0: [" Her sister ate 3 + 2 = 5 slices.\nSo", " Her sister ate 3 + 3 = 6 slices.", " Then 7 pies.",
                 "\n#### 8"],
             1: ["\nSo they ate 5 + 3 = 8 slices.\n#### 8", "\nso they ate 5+3=8 slices", " Next, 4 cats.",
                 "\nSo they ate 5 + 3 = 8"],
             2: ["\n#### 8", "\n#### 8", "\n#### 9", " and"]}
    outcomes = {0: ["no_answer", "no_answer", "no_answer", "correct"], 1: ["correct", "no_answer", "no_answer",
                                                                          "truncated"],
                2: ["correct", "correct", "wrong", "truncated"]}
    logprobs = {0: [-1.0, -2.0, -4.0, -8.0], 1: [-0.5, -1.5, -3.5, -2.5], 2: [-0.1, -0.2, -0.3, -0.4]}
    rows = []
    for unit, cut in ((0, 0), (1, 9), (2, 18)):
        for r in range(4):
            rows.append({"chain_index": 0, "chain_id": "c0", "cut": cut, "unit": unit, "n_units": 2, "rollout": r,
                         "outcome": outcomes[unit][r], "text": texts[unit][r], "answer_logprob": logprobs[unit][r]})
    config = {"min_chains": 6, "n_boot": 200, "seed": 0}
    if threshold is not None:
        config["similarity_threshold"] = threshold
    return OnPolicyResult(rollouts=pd.DataFrame(rows), regeneration_rows=pd.DataFrame(), tokens=tokens,
                          chains=chains, config=config)


def test_counterfactual_filter_equals_a_hand_count():
    result = _hand_result()
    rep = result.replacements()
    # unit 0: a copy (1.0, out), two numbers changed (0.8, kept: not above the threshold), another step
    # (only "." in common: 2 / 14), no step; unit 1: copies (the full stop missing: 18 / 19), another step
    expected = [1.0, 0.8, 2 / 14, 0.0, 1.0, 18 / 19, 2 / 15, 1.0]
    np.testing.assert_allclose(rep["similarity"], expected)
    np.testing.assert_allclose([_lcs_ratio(o, r) for o, r in zip(rep["original"], rep["replacement"])][:7],
                               expected[:7])
    assert rep["counterfactual"].tolist() == [False, True, True, True, False, False, True, False]
    assert rep["cut_off"].tolist() == [False] * 7 + [True]  # truncated inside its first unit
    table = result.importance().set_index("unit")
    kept_0, kept_1 = np.mean([-0.5, -1.5, -3.5, -2.5]), np.mean([-0.1, -0.2, -0.3, -0.4])
    assert table.loc[0, "d_logprob"] == pytest.approx(kept_0 - np.mean([-2.0, -4.0, -8.0]))
    assert table.loc[0, "d_logprob_unfiltered"] == pytest.approx(kept_0 - np.mean([-1.0, -2.0, -4.0, -8.0]))
    assert (table.loc[0, "n_resampled_all"], table.loc[0, "n_similar"], table.loc[0, "n_resampled"]) == (4, 1, 3)
    # the failure share and accuracy are those of the dissimilar replacements alone
    assert table.loc[0, "failed_resampled"] == pytest.approx(2 / 3) and table.loc[0, "accuracy_resampled"] == 1.0
    assert table.loc[1, "d_logprob"] == pytest.approx(kept_1 - (-3.5))
    assert (table.loc[1, "n_similar"], table.loc[1, "n_resampled"]) == (3, 1)
    summary = result.filter_summary()
    assert (summary["n_resampled"], summary["n_similar_excluded"], summary["threshold"]) == (8, 4, 0.8)
    # a stricter threshold also drops the changed-numbers rewrite; a unit left without one has no importance
    strict = _hand_result(threshold=0.7).importance().set_index("unit")
    assert strict.loc[0, "d_logprob"] == pytest.approx(kept_0 - np.mean([-4.0, -8.0]))
    none_left = _hand_result(threshold=0.0).importance().set_index("unit")
    assert none_left.loc[1, "n_resampled"] == 0 and np.isnan(none_left.loc[1, "d_logprob"])
    assert none_left.loc[1, "d_logprob_unfiltered"] == pytest.approx(kept_1 - np.mean([-0.5, -1.5, -3.5, -2.5]))
    assert any("Counterfactual filter: 4 of 8" in s for s in result.citations())


def test_unit_survival_and_category_shares_equal_a_hand_count():
    units = _hand_result().units()
    survival = np.linspace(0, 1, 18)  # nine words a unit; numbers and + = are symbolic_math, five per unit
    for k in (0, 1):
        own = survival[9 * k: 9 * k + 9]
        row = units.iloc[k]
        assert (row["first_token"], row["end_token"]) == (9 * k, 9 * k + 9)
        assert (row["survival_min"], row["survival_max"]) == pytest.approx((own.min(), own.max()))
        assert row["survival_mean"] == pytest.approx(sum(own) / 9)
        assert row["share_symbolic_math"] == pytest.approx(5 / 9) and row["share_narration"] == pytest.approx(4 / 9)
        assert row["category"] == "symbolic_math"


def test_failed_rollouts_are_their_own_outcome(resampled):
    _, result = resampled
    rows = result.rollouts
    # A random-weight model never writes an answer line: every rollout failed, none is "wrong".
    assert set(rows["outcome"]) <= set(FAILED) and rows["correct"].isna().all()
    assert (rows.loc[rows["outcome"] == "truncated", "n_new_tokens"] == OPTIONS["max_new_tokens"]).all()
    table = result.importance()
    assert (table["failed_kept"] == 1).all() and table["d_correct"].isna().all()
    assert table["d_logprob"].notna().all()  # the log-probability is still measured
    # typed columns: the whole table reads in one go even where a part's answers are all missing
    path, _ = resampled
    whole = pd.read_parquet(path / "resample.parquet")
    assert len(whole) == len(rows) and str(whole["correct"].dtype) == "boolean"
    import pyarrow.parquet as pq

    assert str(pq.read_schema(RunDir(path).part_path("resample", 0)).field("predicted").type) == "string"


def test_scoring_sorts_outcomes(tiny_loaded, pruned):
    """Hand-made continuations through the real scorer: right, wrong, stopped without answer, cut off."""
    model, tokenizer, info = tiny_loaded
    from cotsurvival.resampling import _job

    run = RunDir(pruned)
    job = _job(run, 0, run.read_chains().set_index("chain_index").loc[0])  # gold 72
    worker = ChainResampler(model, tokenizer, info)
    eos = worker.stop_ids[0]
    enc = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    options = SamplingOptions(rollouts=2, max_new_tokens=len(enc("So 48 clips 48 clips")))
    drawn = [enc(" So 72.\n#### 72\n") + [eos], enc(" So 5.\n#### 5\n") + [eos], enc(" So") + [eos],
             enc("So 48 clips 48 clips")]
    scored = worker.score(job.prefix_ids, drawn, job, options)
    assert [s["outcome"] for s in scored] == ["correct", "wrong", "no_answer", "truncated"]
    assert [s["correct"] for s in scored] == [True, False, None, None]
    assert scored[0]["predicted"] == "72"
    # the log-probability of a rollout that answered is taken right after its reasoning, not after its answer
    body = job.prefix_ids + enc(" So 72.")
    ref = _logprob(model, body, job.answer_ids)
    assert scored[0]["answer_logprob"] == pytest.approx(ref, abs=1e-4)


def _logprob(model, body, answer):
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([body + answer])).logits[0].double(), dim=-1)
    return float(sum(logp[len(body) - 1 + k, t] for k, t in enumerate(answer)))


def test_unit_importance_counts_failures_apart():
    def arm(outcomes, lps):
        return pd.DataFrame({"outcome": outcomes, "answer_logprob": lps})

    kept = arm(["correct", "wrong", "truncated", "no_answer"], [-1.0, -2.0, -3.0, -4.0])
    resampled = arm(["wrong", "wrong", "truncated", "correct"], [-5.0, -5.0, -5.0, -5.0])
    out = unit_importance(kept, resampled, n_boot=500)
    assert out["accuracy_kept"] == 0.5 and out["accuracy_resampled"] == pytest.approx(1 / 3)
    assert out["d_correct"] == pytest.approx(0.5 - 1 / 3)
    assert out["failed_kept"] == 0.5 and out["failed_resampled"] == 0.25
    assert out["d_logprob"] == pytest.approx(-2.5 + 5.0)
    assert out["d_logprob_ci_low"] < out["d_logprob"] < out["d_logprob_ci_high"]


def test_resume_redoes_only_missing_cuts(resampled, tiny_loaded, tmp_path, monkeypatch):
    import shutil

    path, result = resampled
    copy = tmp_path / "run"
    shutil.copytree(path, copy)
    run = RunDir(copy)
    part = run.read_part("resample", 0)
    first_cut = part["cut"].min()
    run.write_part("resample", 0, part[part["cut"] == first_cut])  # interrupted after chain 0's first cut
    run.part_path("resample", 2).unlink()  # and before chain 2
    run.part_path("regeneration", 2).unlink()
    calls = []
    original = ChainResampler.rollouts_at
    monkeypatch.setattr(ChainResampler, "rollouts_at",
                        lambda self, job, cut, *a: calls.append((job.index, cut[0])) or original(self, job, cut, *a))
    import cotsurvival.threads

    capped = []  # torch threads are capped to the idle CPUs at the start and before every cut, as prune does
    monkeypatch.setattr(cotsurvival.threads, "cap_torch_threads", lambda own_load=0.0: capped.append(own_load) or 1)
    again = resample(copy, loaded_model=tiny_loaded, progress=False, regeneration_keep_ratios=(0.7, 0.3), **OPTIONS)
    assert sorted(c for c, _ in calls) == [0, 0, 2, 2, 2]
    assert len(capped) == 1 + len(calls)
    key = ["chain_index", "cut", "rollout"]
    pd.testing.assert_frame_equal(again.rollouts.sort_values(key).reset_index(drop=True),
                                  result.rollouts.sort_values(key).reset_index(drop=True), check_exact=False, atol=1e-6)
    pd.testing.assert_frame_equal(again.regeneration_rows.sort_values(["chain_index", "keep_ratio"])
                                  .reset_index(drop=True).drop(columns=["continuation_ids", "continuation_words"]),
                                  result.regeneration_rows.sort_values(["chain_index", "keep_ratio"])
                                  .reset_index(drop=True).drop(columns=["continuation_ids", "continuation_words"]),
                                  check_exact=False, atol=1e-6)
    # other settings are a new set of rows, never mixed with the old ones
    calls.clear()
    resample(copy, loaded_model=tiny_loaded, progress=False, chains=[1], regeneration_keep_ratios=(),
             **{**OPTIONS, "seed": 8})
    assert len(calls) == 3


def test_citation_minimum_is_analyzes():
    # the same minimum number of chains as analyze's citations, whichever way the result is made
    import inspect

    from cotsurvival.analysis.chainlevel import MIN_CHAINS

    assert inspect.signature(OnPolicyResult.from_run).parameters["min_chains"].default == MIN_CHAINS == 6
    empty = OnPolicyResult(rollouts=pd.DataFrame(), regeneration_rows=pd.DataFrame(), tokens=pd.DataFrame(),
                           chains=pd.DataFrame())
    assert empty.config["min_chains"] == MIN_CHAINS


def test_options_are_checked(pruned, tiny_loaded):
    with pytest.raises(CotSurvivalError) as info:
        resample(pruned, loaded_model=tiny_loaded, rollouts=1, progress=False)
    assert info.value.code == "E160"
    with pytest.raises(CotSurvivalError) as info:
        OnPolicyResult.from_run(pruned)
    assert info.value.code == "E161"


# ---------------------------------------------------------------------------------------- Ray

try:
    import ray
except ImportError:  # the cluster extra is optional
    ray = None


@pytest.mark.skipif(ray is None, reason="ray is not installed (pip install cotsurvival[cluster])")
def test_ray_equals_local_and_a_dead_actor_is_replaced(resampled, pruned, tiny_loaded, tmp_path, monkeypatch):
    """One Ray start for both: the actor given the first chain is killed as soon as it has it; the chain
    goes to a fresh actor, every chain is committed once, and the rows equal the local backend's."""
    import shutil

    from cotsurvival import resampling

    _, local = resampled
    copy = tmp_path / "run"
    shutil.copytree(pruned, copy)
    real_submit, real_commit = resampling._submit, resampling.commit
    killed, commits = [], []

    def submit_then_kill(actor, job, *args):
        ref = real_submit(actor, job, *args)
        if not killed:  # the first chain's actor dies while it holds the chain
            killed.append(job[0].chain_id)
            ray.kill(actor, no_restart=True)
        return ref

    def counting_commit(run, table, index, old, new):
        commits.append((table, index, tuple(new["cut"]) if table == resampling.TABLE else None))
        return real_commit(run, table, index, old, new)

    monkeypatch.setattr(resampling, "_submit", submit_then_kill)
    monkeypatch.setattr(resampling, "commit", counting_commit)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="error")
    try:
        remote = resample(copy, loaded_model=tiny_loaded, progress=False, backend="ray", workers=2,
                          regeneration_keep_ratios=(0.7, 0.3), **OPTIONS)
    finally:
        ray.shutdown()
    retries = RunDir(copy).read_manifest()["resample"]["ray"]["retries"]
    assert [r["chain_id"] for r in retries] == killed and len(killed) == 1
    rollout_commits = [c for c in commits if c[0] == resampling.TABLE]
    assert len(rollout_commits) == len(set(rollout_commits)) == 3 * len(EXAMPLE_CHAINS)  # each cut written once
    key = ["chain_index", "cut", "rollout"]
    pd.testing.assert_frame_equal(remote.rollouts.sort_values(key).reset_index(drop=True),
                                  local.rollouts.sort_values(key).reset_index(drop=True), check_exact=False, atol=1e-5)
    pd.testing.assert_frame_equal(remote.importance(), local.importance(), check_exact=False, atol=1e-5)


@pytest.mark.skipif(ray is None, reason="ray is not installed (pip install cotsurvival[cluster])")
def test_dispatch_requeues_a_dead_actors_job_and_gives_up_after_max_retries():
    """The shared dispatch loop (prune and resample) against a scripted stand-in for Ray: no cluster needed."""
    from ray.exceptions import RayActorError

    from cotsurvival.pruning.ray_backend import dispatch

    class Scripted:  # ray.wait / ray.get over refs whose outcome the test decides
        def __init__(self, deaths):
            self.deaths, self.refs = deaths, {}

        def submit(self, actor, job):
            ref = (actor, job, len(self.refs))
            self.refs[ref] = RayActorError() if self.deaths.get(job, 0) > 0 else f"done {job}"
            if self.deaths.get(job, 0) > 0:
                self.deaths[job] -= 1
            return ref

        def wait(self, refs, num_returns=1):
            return [refs[0]], refs[1:]

        def get(self, ref):
            if isinstance(self.refs[ref], Exception):
                raise self.refs[ref]
            return self.refs[ref]

    def pool():
        actors = {"a0": "a0", "a1": "a1"}

        def factory():
            name = f"a{len(actors) + len(retries)}"
            actors[name] = name
            return name
        return actors, factory

    fake, retries = Scripted({"x": 2}), []
    actors, factory = pool()
    got = [(job, result) for job, result, _ in dispatch(fake, actors, factory, ["x", "y", "z"], fake.submit,
                                                          key=lambda j: (j, f"chain-{j}"), max_retries=3,
                                                          retries=retries, follow_up=lambda j, r: ["w"] if j == "y" else [])]
    assert sorted(got) == [("w", "done w"), ("x", "done x"), ("y", "done y"), ("z", "done z")]  # each once
    assert [r["chain_id"] for r in retries] == ["chain-x", "chain-x"] and len(actors) == 2  # pool kept its size
    fake, retries = Scripted({"x": 4}), []
    actors, factory = pool()
    with pytest.raises(CotSurvivalError) as info:
        list(dispatch(fake, actors, factory, ["x"], fake.submit, key=lambda j: (j, f"chain-{j}"), max_retries=3,
                      retries=retries))
    assert info.value.code == "E071" and "chain-x" in info.value.message and len(retries) == 4


# ---------------------------------------------------------------------------------------- statistics

def _synthetic_units(seed=0, n_chains=9, signal=0.0):
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_chains):
        n = int(rng.integers(2, 8))
        survival = rng.random(n)
        importance = signal * survival + rng.normal(size=n)
        categories = rng.choice(["symbolic_math", "narration", "grammar"], size=n)
        for k in range(n):
            rows.append({"chain_index": c, "unit": k, "survival_mean": survival[k], "d_logprob": importance[k],
                         "d_correct": np.nan if k == 0 else rng.normal(), "category": categories[k]})
    return pd.DataFrame(rows)


def _result_with(table):
    result = OnPolicyResult(rollouts=pd.DataFrame({"chain_index": table["chain_index"].unique()}),
                            regeneration_rows=pd.DataFrame(), tokens=pd.DataFrame(), chains=pd.DataFrame())
    result._cache["importance"] = table
    return result


def test_agreement_equals_pandas_scipy_and_an_enumerated_sign_flip():
    table = _synthetic_units(seed=3, signal=1.0)
    result = _result_with(table)
    a = result.agreement("d_logprob")
    expected = []
    for _, sub in table.groupby("chain_index"):
        expected.append(sub["survival_mean"].corr(sub["d_logprob"], method="spearman") if len(sub) >= 3 else np.nan)
    np.testing.assert_allclose(a["per_chain"]["rho"].to_numpy(), expected, atol=1e-12)
    rho = np.array([r for r in expected if not np.isnan(r)])
    assert a["n_chains"] == len(rho) and a["n_chains_excluded"] == len(expected) - len(rho)
    assert a["mean_rho"] == pytest.approx(rho.mean())
    assert a["p_t"] == pytest.approx(stats.ttest_1samp(rho, 0).pvalue)
    t_half = stats.t.ppf(0.975, len(rho) - 1) * rho.std(ddof=1) / np.sqrt(len(rho))
    assert a["ci_low"] == pytest.approx(rho.mean() - t_half) and a["ci_high"] == pytest.approx(rho.mean() + t_half)
    null = [abs(np.dot(signs, rho)) / len(rho) for signs in itertools.product((1, -1), repeat=len(rho))]
    assert a["p_sign_flip"] == pytest.approx(np.mean(np.array(null) >= abs(rho.mean()) - 1e-12))
    # ties take average ranks, as scipy's spearmanr; a constant column gives none
    tied = pd.DataFrame({"chain_index": [0] * 5 + [1] * 3, "a": [1, 1, 2, 3, 3, 1, 1, 1],
                         "b": [0.5, 0.1, 0.1, 0.9, 0.2, 1, 2, 3]})
    got = per_chain_spearman(tied, "a", "b")["rho"].to_numpy()
    assert got[0] == pytest.approx(stats.spearmanr(tied["a"][:5], tied["b"][:5]).statistic) and np.isnan(got[1])
    # d_correct: chains whose units are NaN are left out of that chain's rho, never counted as 0
    assert result.agreement("d_correct")["per_chain"]["n_units"].tolist() == \
        table.dropna(subset=["d_correct"]).groupby("chain_index").size().reindex(range(9), fill_value=0).tolist()


def test_category_contrasts_equal_a_naive_loop():
    table = _synthetic_units(seed=5)
    got = category_contrasts(table, "narration", "d_logprob")
    for _, row in got.iterrows():
        sub = table[table["chain_index"] == row["chain_index"]]
        inside = [v for v, c in zip(sub["d_logprob"], sub["category"]) if c == "narration"]
        outside = [v for v, c in zip(sub["d_logprob"], sub["category"]) if c != "narration"]
        assert row["contrast"] == pytest.approx(sum(inside) / len(inside) - sum(outside) / len(outside))
    both = [c for c, sub in table.groupby("chain_index") if (sub["category"] == "narration").any()
            and (sub["category"] != "narration").any()]
    assert got["chain_index"].tolist() == both
    by = _result_with(table).by_category()
    row = by[(by["category"] == "narration") & (by["measure"] == "on-policy d_logprob")].iloc[0]
    assert row["estimate"] == pytest.approx(got["contrast"].mean()) and row["n_chains"] == len(got)


@pytest.mark.parametrize("position_effect", [False, True])
def test_agreement_test_holds_its_level_under_the_null(position_effect):
    """No link between survival and importance (optionally both crowded by position): about 5% rejections."""
    from cotsurvival.analysis.inference import sign_flip_test

    runs, chains = 150, 8
    rows = []
    for s in range(runs):
        rng = np.random.default_rng(1000 + s)
        for c in range(chains):
            n = int(rng.integers(3, 7))
            pos = np.arange(n) / n
            # a sharp position effect in one measure only leaves them independent
            survival = (5 * (pos > 0.5) if position_effect else 0) + rng.random(n)
            rows += [{"chain_index": s * chains + c, "unit": k, "survival_mean": survival[k],
                      "d_logprob": rng.normal()} for k in range(n)]
    # agreement() is per_chain_spearman, then sign_flip_test and a t test over the chains' rho (checked
    # against pandas/scipy above); here every simulated study's chains go through one groupby
    rho = per_chain_spearman(pd.DataFrame(rows), "survival_mean", "d_logprob")["rho"].to_numpy().reshape(runs, chains)
    flip = np.array([sign_flip_test(r, seed=0)["p_value"] for r in rho])
    p_t = stats.ttest_1samp(rho, 0.0, axis=1).pvalue
    assert (flip < 0.05).mean() < 0.09 and (p_t < 0.05).mean() < 0.09
    # and the method itself gives the same p-values on one of them
    one = _result_with(pd.DataFrame([r for r in rows if r["chain_index"] < chains])).agreement("d_logprob")
    assert one["p_sign_flip"] == pytest.approx(flip[0]) and one["p_t"] == pytest.approx(p_t[0])


def test_sentences_never_call_an_interval_excluding_zero_not_significant():
    from cotsurvival.reports.onpolicy import _verdict

    assert _verdict(0.01, 0.1, 0.5) == "claim"
    assert _verdict(0.08, 0.01, 0.5) == "mixed" and _verdict(0.03, -0.1, 0.5) == "mixed"
    assert _verdict(0.4, -0.2, 0.3) == "none"


def test_rewritten_mask_matches_each_written_word_once():
    got = rewritten_mask(["48", "clips", "48", "", "may"], ["48", "clips", "clips", "june"])
    assert got.tolist() == [True, True, False, False, False]


def test_regeneration_shares_equal_a_hand_count(resampled):
    _, result = resampled
    per_chain = result.regeneration_per_chain()
    assert set(per_chain["keep_ratio"]) == {0.7, 0.3}
    row = result.regeneration_rows.iloc[0]
    toks = result.tokens[result.tokens["chain_index"] == row["chain_index"]].sort_values("position")
    from cotsurvival.pruning.engine import n_deletions

    deleted = toks[toks["deleted_step"].fillna(np.inf) <= n_deletions(len(toks), row["keep_ratio"])]
    words = [w.strip().lower() for w in deleted["text"] if w.strip()]
    pool = list(row["continuation_words"])
    hits = 0
    for w in words:
        if w in pool:
            pool.remove(w)
            hits += 1
    got = per_chain[(per_chain["chain_index"] == row["chain_index"]) & (per_chain["keep_ratio"] == row["keep_ratio"])
                    & (per_chain["category"] == "all")].iloc[0]
    assert got["n_deleted"] == len(words) and got["rewritten_deleted"] == pytest.approx(hits / len(words))
    assert row["n_kept"] == len(toks) - len(deleted)


def test_cli_errors_are_one_line(pruned, capsys):
    from cli_helpers import assert_one_line_error, cli

    from cotsurvival.cli import main

    result = cli("resample", pruned, "--rollouts", "1")  # the real command line, once: exit 2, one line
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "E160", "--rollouts")
    for args, needle in ((["--chains", "99"], "[99]"), (["--similarity-threshold", "1.5"], "--similarity-threshold")):
        assert main(["resample", str(pruned), *args]) == 2  # in process: refused before any model is loaded
        assert_one_line_error(capsys.readouterr().err, "E160", needle)
