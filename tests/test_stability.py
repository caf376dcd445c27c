"""Rank stability: replicate paths (prune --replicates), their summary and agreement, near-tie diagnostics.

Oracles: a naive Gumbel-perturbed greedy pruner (full forward pass per candidate, the noise formula
written out here from the documentation), hand-worked traces, and scipy's Kendall tau.
"""
from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from cotsurvival.encoding import encode_chain
from cotsurvival.errors import CotSurvivalError
from cotsurvival.models import ModelInfo
from cotsurvival.pruning.diagnostics import gaps_from_traces, near_tie, run_summary, step_gap, trace_gaps
from cotsurvival.rundir import RunDir
from cotsurvival.testing import EXAMPLE_CHAINS

from naive_greedy import sequence_objective

SCALE = 0.5  # nats: large enough that the tiny model's replicates leave the greedy path
K = 3


def documented_noise(seed, chain_id, replicate, step, kept_ids):
    """The noise the docs define, written out independently of the engine's helper."""
    key = int.from_bytes(hashlib.sha256(chain_id.encode("utf-8")).digest()[:8], "big") >> 1
    noise = np.random.default_rng([seed, replicate, step, key]).gumbel(size=len(kept_ids))
    for k in range(1, len(kept_ids)):
        if kept_ids[k] == kept_ids[k - 1]:
            noise[k] = noise[k - 1]  # identical neighbours give one sequence: one draw
    return noise


@torch.no_grad()
def candidate_objectives(model, prefix, kept, answer):
    """Joint objective of every single deletion: all candidate sequences in one plain forward pass."""
    rows = torch.tensor([prefix + kept[:k] + kept[k + 1:] + answer for k in range(len(kept))])
    logprobs = torch.log_softmax(model(input_ids=rows).logits.double(), dim=-1)
    targets = rows[:, len(prefix):]
    picked = logprobs[:, len(prefix) - 1: -1].gather(2, targets[..., None])[..., 0]
    return picked.sum(dim=1).numpy()


def naive_perturbed_greedy(model, encoded, n_steps, replicate, scale, seed=0):
    """Deletion order of one replicate, every candidate scored by a full forward pass."""
    alive = list(range(len(encoded.reasoning_ids)))
    order = []
    for step in range(1, n_steps + 1):
        kept = [encoded.reasoning_ids[i] for i in alive]
        base = sequence_objective(model, encoded.prefix_ids, kept, encoded.answer_ids)
        objectives = candidate_objectives(model, encoded.prefix_ids, kept, encoded.answer_ids)
        if replicate == 0:
            winner = int(np.argmax(objectives))
        else:
            costs = (base - objectives).astype(np.float32).astype(np.float64)
            winner = int(np.argmin(costs - scale * documented_noise(seed, encoded.chain.id, replicate, step, kept)))
        order.append(alive.pop(winner))
    return order


@pytest.fixture(scope="module")
def loaded64():
    from cotsurvival.testing import tiny_llama
    import torch

    model, tokenizer = tiny_llama(dtype=torch.float64)
    return model, tokenizer, ModelInfo("tiny-llama-64", "in-code", None, None, "llama", "float64", "cpu", 0, 512)


@pytest.fixture(scope="module")
def replicate_run(tmp_path_factory, loaded64):
    from cotsurvival.pruning import prune

    out = tmp_path_factory.mktemp("stability") / "run"
    return prune(EXAMPLE_CHAINS, out, loaded_model=loaded64, keep_ratio=0.4, replicates=K, perturbation_scale=SCALE,
                 baselines=["loo"], progress=False)


def test_replicates_equal_naive_perturbed_greedy(replicate_run, loaded64):
    model, tokenizer, _ = loaded64
    tokens = replicate_run.read_table("tokens", replicates=True)
    steps = replicate_run.read_table("steps", replicates=True)
    moved = 0
    for index, chain in list(enumerate(EXAMPLE_CHAINS))[1:2]:  # the 30-token chain: the oracle is slow
        encoded = encode_chain(chain, tokenizer)
        n = len(encoded.reasoning_ids)
        wanted = n - int(np.floor(n * 0.4))
        orders = [naive_perturbed_greedy(model, encoded, wanted, r, SCALE) for r in range(K)]
        for r, order in enumerate(orders):
            mine = steps[(steps["chain_index"] == index) & (steps["replicate"] == r)].sort_values("step")
            assert [int(p) for p in mine["position_deleted"].iloc[1:]] == order, (chain.id, r)
            rows = tokens[(tokens["chain_index"] == index) & (tokens["replicate"] == r)].sort_values("position")
            expected = np.full(n, float(wanted))
            expected[order] = np.arange(1, wanted + 1)
            np.testing.assert_allclose(rows["survival"].to_numpy(), expected / n)
        moved += sum(o != orders[0] for o in orders[1:])
    assert moved, "the perturbation should move some replicate off the greedy path (else the test is vacuous)"


def test_per_token_summary_equals_recomputation(replicate_run):
    from cotsurvival.analysis import load_run

    table = load_run(replicate_run, require_tags=False)
    assert len(table) == sum(len(encode_chain(c, _tokenizer(replicate_run)).reasoning_ids) for c in EXAMPLE_CHAINS)
    long = replicate_run.read_table("tokens", replicates=True)
    wide = long.pivot(index=["chain_index", "position"], columns="replicate", values="survival")
    merged = table.set_index(["chain_index", "position"]).join(wide)
    values = merged[list(range(K))].to_numpy()
    np.testing.assert_allclose(merged["survival_mean"], values.mean(axis=1))
    np.testing.assert_allclose(merged["survival_sd"], values.std(axis=1, ddof=1), atol=1e-12)
    np.testing.assert_allclose(merged["survival_min"], values.min(axis=1))
    np.testing.assert_allclose(merged["survival_max"], values.max(axis=1))
    np.testing.assert_allclose(merged["survival"], merged[0])  # replicate 0 stays the survival
    assert (merged["n_replicates"] == K).all()
    manifest = replicate_run.read_manifest()
    assert manifest["replicates"]["k"] == K and manifest["replicates"]["scale_nats"] == SCALE
    assert manifest["replicates"]["perturbation"] == "gumbel" and manifest["replicates"]["seed"] == 0


def _tokenizer(run):
    from cotsurvival.testing import tiny_tokenizer

    return tiny_tokenizer()


def test_replicate_orders_follow_from_their_own_traces(replicate_run):
    """Documented property: each replicate's deletions are argmin(stored float32 cost - T * noise)."""
    chains = replicate_run.read_chains().set_index("chain_index")
    traces = replicate_run.read_table("traces", replicates=True)
    steps = replicate_run.read_table("steps", replicates=True)
    for (index, r), block in traces[traces["replicate"] > 0].groupby(["chain_index", "replicate"]):
        ids = list(chains.loc[index, "reasoning_ids"])
        deleted = steps[(steps["chain_index"] == index) & (steps["replicate"] == r)].set_index("step")["position_deleted"]
        for step, rows in block.groupby("step"):
            rows = rows.sort_values("position")
            kept = [ids[p] for p in rows["position"]]
            noise = documented_noise(0, chains.loc[index, "chain_id"], r, step, kept)
            pick = rows["position"].to_numpy()[np.argmin(rows["cost"].to_numpy(np.float64) - SCALE * noise)]
            assert pick == deleted.loc[step]


def test_zero_scale_replicates_are_todays_greedy_path(tmp_path, tiny_loaded):
    from cotsurvival.pruning import prune

    plain = prune(EXAMPLE_CHAINS, tmp_path / "plain", loaded_model=tiny_loaded, keep_ratio=0.5, baselines=["loo"],
                  progress=False)
    zero = prune(EXAMPLE_CHAINS, tmp_path / "zero", loaded_model=tiny_loaded, keep_ratio=0.5, baselines=["loo"],
                 replicates=3, perturbation_scale=0.0, progress=False)
    for table in ("tokens", "steps", "traces"):
        reference = pd.read_parquet(plain.path / f"{table}.parquet")
        assert (reference["replicate"] == 0).all()
        everything = zero.read_table(table, replicates=True)
        for r in range(3):
            block = everything[everything["replicate"] == r].reset_index(drop=True)
            pd.testing.assert_frame_equal(block.drop(columns="replicate"), reference.drop(columns="replicate"),
                                          check_exact=True, obj=f"{table} replicate {r}")
        pd.testing.assert_frame_equal(zero.read_table(table), reference, check_exact=True)
    # replicates at T = 0 score nothing: every step comes from the greedy path
    engine = zero.read_manifest()["engine"]
    assert set(engine["replicate_token_rows"].values()) == {0}
    assert pd.read_parquet(plain.path / "baselines.parquet").equals(pd.read_parquet(zero.path / "baselines.parquet"))


def test_reuse_changes_no_number(tiny64):
    """Replicates reusing the greedy path's costs equal replicates scored from scratch, and score fewer rows."""
    from cotsurvival.pruning.crossstep import CrossStepScorer
    from cotsurvival.pruning.engine import Perturbation, greedy_prune

    model, tokenizer = tiny64
    encoded = encode_chain(EXAMPLE_CHAINS[2], tokenizer)
    n = len(encoded.reasoning_ids)
    scorer = CrossStepScorer(model, "joint", 4096)
    greedy = greedy_prune(scorer, encoded, n)
    saved = 0
    for r in (1, 2):
        with_reuse = greedy_prune(scorer, encoded, n, perturbation=Perturbation(0.3, 7, r), reuse=greedy)
        fresh = greedy_prune(scorer, encoded, n, perturbation=Perturbation(0.3, 7, r))
        assert with_reuse.order == fresh.order and with_reuse.replicate == r
        for a, b in zip(with_reuse.step_costs, fresh.step_costs):
            np.testing.assert_allclose(a, b, atol=1e-6)
        assert with_reuse.reused_steps >= 1 and fresh.reused_steps == 0
        saved += fresh.token_rows - with_reuse.token_rows
    assert saved > 0


def test_resume_per_replicate(tmp_path, tiny_loaded, monkeypatch):
    """A run killed while committing a replicate resumes with the replicates still missing, and ends as an
    uninterrupted run; re-running with more replicates adds them."""
    from cotsurvival.pruning import prune
    from cotsurvival.pruning import run as run_module

    options = dict(loaded_model=tiny_loaded, keep_ratio=0.5, replicates=3, perturbation_scale=SCALE, progress=False)
    reference = prune(EXAMPLE_CHAINS, tmp_path / "ref", **options)
    real_commit = run_module._commit

    def failing_commit(run, item, index, trace, *args, **kwargs):
        if index == 1 and trace.replicate == 2:
            raise KeyboardInterrupt
        return real_commit(run, item, index, trace, *args, **kwargs)

    monkeypatch.setattr(run_module, "_commit", failing_commit)
    with pytest.raises(KeyboardInterrupt):
        prune(EXAMPLE_CHAINS, tmp_path / "run", **options)
    monkeypatch.setattr(run_module, "_commit", real_commit)
    partial = RunDir(tmp_path / "run")
    assert run_module._committed_replicates(partial, 1) == {0: 15, 1: 15}
    calls = []
    real_prune_one = run_module._prune_one

    def counting(run, scorer, item, index, *args, **kwargs):
        perturbation = kwargs.get("perturbation")
        calls.append((index, perturbation.replicate if perturbation else 0))
        return real_prune_one(run, scorer, item, index, *args, **kwargs)

    monkeypatch.setattr(run_module, "_prune_one", counting)
    resumed = prune(EXAMPLE_CHAINS, tmp_path / "run", **options)
    assert calls == [(1, 2), (2, 0), (2, 1), (2, 2)]
    for table in ("tokens", "steps", "traces"):
        pd.testing.assert_frame_equal(resumed.read_table(table, replicates=True),
                                      reference.read_table(table, replicates=True), check_exact=False, atol=1e-5)
    calls.clear()
    more = prune(EXAMPLE_CHAINS, tmp_path / "run", **{**options, "replicates": 4})
    assert calls == [(0, 3), (1, 3), (2, 3)]
    assert more.read_manifest()["replicates"]["k"] == 4
    assert sorted(more.read_table("tokens", replicates=True)["replicate"].unique()) == [0, 1, 2, 3]
    with pytest.raises(CotSurvivalError) as info:  # the existing replicates were made with another scale
        prune(EXAMPLE_CHAINS, tmp_path / "run", **{**options, "perturbation_scale": 0.1})
    assert info.value.code == "E083" and "perturbation scale" in info.value.one_line()


def test_replicate_options_are_checked(tmp_path, tiny_loaded):
    from cotsurvival.pruning import prune

    for bad in (0, -1, 1.5):
        with pytest.raises(CotSurvivalError) as info:
            prune(EXAMPLE_CHAINS, tmp_path / "r", loaded_model=tiny_loaded, replicates=bad, progress=False)
        assert info.value.code == "E140"
    with pytest.raises(CotSurvivalError) as info:
        prune(EXAMPLE_CHAINS, tmp_path / "r", loaded_model=tiny_loaded, replicates=2, perturbation_scale=-0.1,
              progress=False)
    assert info.value.code == "E140"
    with pytest.raises(CotSurvivalError) as info:
        prune(EXAMPLE_CHAINS, tmp_path / "r", loaded_model=tiny_loaded, replicates=2, approx="topk:0.3", progress=False)
    assert info.value.code == "E141"
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- near-tie diagnostic
def test_step_gap_by_hand():
    ids = [5, 7, 7, 9, 4]
    # step 1: all alive; positions 1 and 2 are identical neighbours (one sequence, cost 0.30 each)
    assert step_gap([1.0, 0.30, 0.30, 0.35, 2.0], [0, 1, 2, 3, 4], ids) == pytest.approx(0.05)
    # position 3 gone: the twins still count once, so the gap is 0.31 - 0.30
    assert step_gap([0.5, 0.30, 0.30, 0.31], [0, 1, 2, 4], ids) == pytest.approx(0.01)
    assert step_gap([0.9, 0.2], [0, 4], ids) == pytest.approx(0.7)
    assert np.isnan(step_gap([0.4], [3], ids))
    # tokens become neighbours (identical ids) only once the token between them is deleted
    apart = [5, 7, 9, 7]
    assert step_gap([1.0, 0.3, 0.3], [0, 1, 3], apart) == pytest.approx(0.7)
    assert step_gap([1.0, 0.3, 0.9, 0.3], [0, 1, 2, 3], apart) == pytest.approx(0.0)


def test_hand_made_trace_diagnostic():
    """Three steps of a 4-token chain, every number worked out by hand."""
    ids = [11, 12, 12, 13]
    traces = pd.DataFrame({
        "step": [1, 1, 1, 1, 2, 2, 2, 3, 3],
        "position": [0, 1, 2, 3, 0, 1, 3, 0, 3],
        "cost": np.array([2.0, 0.5, 0.5, 0.50005, 1.0, 3.0, 1.02, 4.0, 0.1], dtype=np.float32),
    })
    # step 1: distinct deletions {2.0, 0.5 (twins 1,2), 0.50005} -> gap 5e-5 (a float32 near-tie)
    # step 2: {1.0, 3.0, 1.02} -> 0.02; step 3: {4.0, 0.1} -> 3.9
    gaps = gaps_from_traces(traces, ids)
    np.testing.assert_allclose(gaps.to_numpy(), [5e-5, 0.02, 3.9], rtol=1e-3)
    step_costs = [g["cost"].to_numpy() for _, g in traces.groupby("step")]
    step_positions = [g["position"].to_numpy() for _, g in traces.groupby("step")]
    np.testing.assert_allclose(trace_gaps(step_costs, step_positions, ids), gaps.to_numpy())
    assert list(near_tie(gaps.to_numpy(), 1.5e-4)) == [True, False, False]
    assert list(near_tie(gaps.to_numpy(), 0.22)) == [True, True, False]  # float16's threshold
    tokens = pd.DataFrame({"chain_id": "c", "position": [0, 1, 2, 3], "deleted_step": pd.array([None, 1, 2, 3], "Int64"),
                           "deletion_gap": [np.nan, *gaps.to_numpy()]})
    summary = run_summary(tokens, 1.5e-4)
    assert summary["n_steps"] == 3 and summary["n_near_tie_steps"] == 1 and summary["n_chains_with_near_tie"] == 1
    assert summary["chains"]["c"]["first_near_tie_step"] == 1
    assert summary["min_gap"] == pytest.approx(5e-5, rel=1e-3)
    assert summary["chains"]["c"]["median_gap"] == pytest.approx(0.02, rel=1e-3)


def test_run_records_near_ties_and_tokens_carry_their_gap(replicate_run):
    from cotsurvival.analysis import load_run
    from cotsurvival.precision import COST_ERROR_NATS

    manifest = replicate_run.read_manifest()
    diagnostics = manifest["diagnostics"]
    assert diagnostics["near_tie_threshold"] == COST_ERROR_NATS["float64"]["max"]
    chains = replicate_run.read_chains().set_index("chain_index")
    table = load_run(replicate_run, require_tags=False)
    for index in chains.index:
        traces = replicate_run.read_part("traces", index)
        gaps = gaps_from_traces(traces, list(chains.loc[index, "reasoning_ids"]))
        rows = table[(table["chain_index"] == index) & table["deleted_step"].notna()]
        np.testing.assert_allclose(rows["deletion_gap"], gaps.reindex(rows["deleted_step"].astype(int)).to_numpy())
        assert diagnostics["chains"][chains.loc[index, "chain_id"]]["n_steps"] == int(gaps.notna().sum())
    assert (table["near_tie"] == (table["deletion_gap"] < diagnostics["near_tie_threshold"])).all()
    # the same numbers, recomputed from traces for a run whose manifest lacks them (pruned before)
    from cotsurvival.pruning.diagnostics import run_diagnostics

    class Older(RunDir):
        def read_manifest(self):
            return {k: v for k, v in manifest.items() if k != "diagnostics"}

    again = run_diagnostics(Older(replicate_run.path))
    assert again["chains"] == diagnostics["chains"] and again["n_steps"] == diagnostics["n_steps"]


# --------------------------------------------------------------------------- stability and analysis
def test_chain_stability_by_hand():
    from cotsurvival.analysis.stability import chain_stability, noise_corrected_agreement, stability_summary

    # one chain, 4 tokens, 3 replicates; survival ranks worked out by hand
    ranks = {0: [1, 2, 3, 4], 1: [2, 1, 3, 4], 2: [4, 3, 2, 1]}
    long = pd.DataFrame([{"chain_index": 0, "chain_id": "c", "position": p, "replicate": r, "survival": v / 4}
                         for r, values in ranks.items() for p, v in enumerate(values)])
    per_chain = chain_stability(long)
    # pairs: (0,1) one discordant of 6 -> 4/6; (0,2) all discordant -> -1; (1,2) 5 discordant -> -4/6
    assert per_chain.loc[0, "tau_mean"] == pytest.approx((4 / 6 - 1 - 4 / 6) / 3)
    assert per_chain.loc[0, "tau_to_greedy"] == pytest.approx((4 / 6 - 1) / 2)
    assert per_chain.loc[0, "tau_min"] == pytest.approx(-1) and per_chain.loc[0, "pairs"] == 3
    summary = stability_summary(per_chain, n_boot=50)
    assert summary["tau"]["mean"] == pytest.approx(per_chain.loc[0, "tau_mean"]) and summary["n_replicates"] == 3
    index = pd.Index(["a", "b", "c"])
    out = noise_corrected_agreement(pd.Series([0.4, 0.2, 0.3], index), pd.Series([0.8, 0.6, 0.7], index),
                                    pd.Series([0.5, 0.5, 0.5], index), n_boot=200)
    assert out["ratio"] == pytest.approx(0.3 / np.sqrt(0.7 * 0.5))
    assert out["ci_low"] <= out["ratio"] <= out["ci_high"] and out["n_chains"] == 3


def test_run_stability_matches_scipy(replicate_run):
    from cotsurvival.analysis.stability import chain_stability, replicate_survival

    long = replicate_survival(replicate_run)
    per_chain = chain_stability(long).set_index("chain_index")
    for index, chain in long.groupby("chain_index"):
        wide = chain.pivot(index="position", columns="replicate", values="survival")
        taus = [stats.kendalltau(wide[a], wide[b]).statistic for a, b in itertools.combinations(range(K), 2)]
        assert per_chain.loc[index, "tau_mean"] == pytest.approx(np.mean(taus))


def _label(run: RunDir) -> None:
    """Hand labels: digits are symbolic math, everything else narration."""
    from cotsurvival.labels import RULE, record_source, write_labels

    taxonomy = {"name": "hand", "version": "0"}
    for index in run.part_indices("tokens"):
        tokens = run.read_part("tokens", index, columns=["chain_index", "chain_id", "position", "text"])
        math_like = tokens["text"].str.contains(r"[0-9=+*/]")
        frame = tokens[["chain_index", "chain_id", "position"]].assign(
            label=np.where(math_like, "SYMBOLIC_MATH", "CONTENT"),
            category=np.where(math_like, "symbolic_math", "narration"))
        write_labels(run, index, frame, RULE, taxonomy)
    record_source(run, RULE, kind="hand", taxonomy=taxonomy)


def test_analyze_uses_replicate_mean_and_reports_spread(replicate_run, tmp_path):
    import shutil

    from cotsurvival.analysis import analyze, chain_level_test, load_run
    from cotsurvival.analysis.stability import replicate_survival

    run = RunDir(shutil.copytree(replicate_run.path, tmp_path / "run"))
    _label(run)
    result = analyze(run, n_boot=100, min_chains=2, min_tokens=5)
    table = load_run(run)
    ranked = table[table["n_tokens"] > 1]
    expected = chain_level_test(ranked.assign(survival=ranked["survival_mean"]), "category", "symbolic_math",
                                min_chains=2, min_tokens=5)
    assert result.primary_["estimate"] == pytest.approx(expected["estimate"])
    spread = result.primary_["replicate_spread"]
    long = replicate_survival(run)
    for r in range(K):
        path = ranked.drop(columns="survival").merge(long[long["replicate"] == r][["chain_index", "position", "survival"]],
                                                     on=["chain_index", "position"])
        alone = chain_level_test(path, "category", "symbolic_math", min_chains=2, min_tokens=5)
        assert spread["estimates"][r] == pytest.approx(alone["estimate"])
    assert spread["sd"] == pytest.approx(np.std(list(spread["estimates"].values()), ddof=1))
    saved = result.to_dict()["stability"]
    assert saved["replicates"]["k"] == K and saved["tau"]["n_chains"] == 3 and "sentence" in saved
    assert saved["diagnostics"]["n_steps"] > 0
    # one wording (cotsurvival.provenance): stats.json's sentence is the one citations quote
    tau = saved["tau"]
    assert saved["sentence"].startswith(f"ranks reproduced at a mean Kendall tau of {tau['mean']:.2f} "
                                        f"[95% CI {tau['ci_low']:.2f}, {tau['ci_high']:.2f}] across {K} paths "
                                        f"perturbed by {SCALE:g} nats")
    assert f"{tau['n_chains']} chains ({saved['n_chains_below_0.9']} below 0.9)" in saved["sentence"]
    assert any(f"this run's {saved['sentence']}" in c for c in result.citations_)
    assert saved["diagnostics"]["sentence"].startswith(
        f"{saved['diagnostics']['n_near_tie_steps']} of {saved['diagnostics']['n_steps']} greedy steps in ")
    assert "stability_per_chain" in result.tables_


def test_compare_with_replicates(tmp_path, replicate_run, loaded64):
    from cotsurvival.analysis.stability import chain_stability, kendall_tau, replicate_survival
    from cotsurvival.comparison.compare import compare
    from cotsurvival.pruning import prune

    other = prune(EXAMPLE_CHAINS, tmp_path / "answer", loaded_model=loaded64, keep_ratio=0.4, replicates=2,
                  perturbation_scale=SCALE, objective="answer", progress=False)
    result = compare([replicate_run.path, other.path], n_boot=100, figures=False)
    stability = result.pairs[0]["stability"]
    assert stability["k_a"] == K and stability["k_b"] == 2
    own_a = chain_stability(replicate_survival(replicate_run))
    own_b = chain_stability(replicate_survival(other))
    assert stability["own_tau_a"]["mean"] == pytest.approx(own_a["tau_mean"].mean())
    assert stability["own_tau_b"]["mean"] == pytest.approx(own_b["tau_mean"].mean())
    # between: every (replicate of a, replicate of b) pair, per chain, by hand (same tokenizer: token units)
    la, lb = replicate_survival(replicate_run), replicate_survival(other)
    per_chain = []
    for index in sorted(la["chain_index"].unique()):
        wa = la[la["chain_index"] == index].pivot(index="position", columns="replicate", values="survival")
        wb = lb[lb["chain_index"] == index].pivot(index="position", columns="replicate", values="survival")
        per_chain.append(np.mean([kendall_tau(wa[i], wb[j]) for i in wa.columns for j in wb.columns]))
    assert stability["between_tau"]["mean"] == pytest.approx(np.mean(per_chain))
    expected = np.mean(per_chain) / np.sqrt(own_a["tau_mean"].mean() * own_b["tau_mean"].mean())
    assert stability["noise_corrected"]["ratio"] == pytest.approx(expected)
    assert any("noise-corrected agreement" in c for c in result.citations)
    assert not result.tables["stability_per_chain"].empty


def test_cli_prune_with_replicates(tmp_path, tiny_dir):
    import json

    from cli_helpers import assert_one_line_error, cli, write_jsonl

    source = write_jsonl(tmp_path / "chains.jsonl", EXAMPLE_CHAINS[:2])
    run = tmp_path / "run"
    result = cli("prune", source, "--out", run, "--model", tiny_dir, "--keep-ratio", "0.6", "--replicates", "2",
                 "--perturbation-scale", "0.2", timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "near-ties" in result.stdout and "2 replicate paths per chain" in result.stdout
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["replicates"]["k"] == 2 and manifest["replicates"]["scale_nats"] == 0.2
    bad = cli("prune", source, "--out", tmp_path / "bad", "--model", tiny_dir, "--replicates", "0")
    assert bad.returncode == 2
    assert_one_line_error(bad.stderr, "E140", "--replicates")


# --------------------------------------------------------------------------- the sentences, one home
def test_stability_and_near_tie_sentences_by_hand():
    from cotsurvival.provenance import near_tie_sentence, stability_sentence

    summary = {"tau": {"mean": 0.8349, "ci_low": 0.7012, "ci_high": 0.951, "n_chains": 8}, "n_replicates": 8,
               "n_chains_below_0.9": 3}
    assert stability_sentence(summary, {"k": 8, "scale_nats": 0.05, "seed": 0}) == (
        "ranks reproduced at a mean Kendall tau of 0.83 [95% CI 0.70, 0.95] across 8 paths perturbed by 0.05 nats "
        "(Gumbel noise on each step's costs), 8 chains (3 below 0.9)")
    assert stability_sentence({"mean": 0.5, "n_chains": 1}) == "ranks reproduced at a mean Kendall tau of 0.50 across replicate paths, 1 chain"
    assert stability_sentence({"tau": {"mean": float("nan")}}) is None and stability_sentence(None) is None
    diagnostics = {"near_tie_threshold": 1.5e-4, "dtype": "float32", "n_steps": 40, "n_near_tie_steps": 1,
                   "n_chains_with_near_tie": 1, "min_gap": 3.3e-5}
    assert near_tie_sentence(diagnostics, 1, suggest_replicates=False) == (
        "1 of 40 greedy steps in 1 of 1 chain were near-ties (two cheapest deletions within 0.00015 nats, the "
        "measured rounding error of a cost in float32), where the path could have gone either way; smallest gap 3.3e-05 nats")
    assert near_tie_sentence(diagnostics, 2).endswith("; prune --replicates K measures how much that moves the ranks")
    assert near_tie_sentence({"n_steps": 0}) is None


def test_the_sentences_have_one_home():
    """The stability and near-tie wordings live in provenance only (the stages call it)."""
    from pathlib import Path

    import cotsurvival

    root = Path(cotsurvival.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if path.name == "provenance.py":
            continue
        assert "greedy steps were near-ties" not in text and "were near-ties (" not in text, path
        assert "ranks reproduced at a mean" not in text, path


# --------------------------------------------------------------------------- --approx auto: the ensemble rule
def _row(spec, tau, own, same, cats=4, ratio=5.0):
    return {"spec": spec, "k": 8, "scale": 0.05, "tau": tau, "own_tau": own, "same_sign": same,
            "n_categories": cats, "row_ratio": ratio, "n_chains": 8, "chains": "GSM8K chains of 50-52 tokens"}


def test_auto_picks_the_fewest_rows_among_those_meeting_the_ensemble_target():
    from cotsurvival.pruning.approx import ApproxSpec, auto_spec, meets_ensemble_target

    rows = [_row("topk:0.2", 0.90, 0.94, 4, ratio=5.2),           # within 0.05, signs kept, 5.2x: meets
            _row("topk:0.5", 0.95, 0.94, 4, ratio=11.7),          # meets, fewer rows: chosen
            _row("topk:0.2,window=8,block=8", 0.93, 0.94, 3, ratio=20.0),  # a sign flipped: out
            _row("topk:k=2", 0.94, 0.94, 4, ratio=2.0),           # too few rows saved: out
            _row("lazy", 0.88, 0.94, 4, ratio=4.0)]               # 0.06 below: out
    assert [meets_ensemble_target(r) for r in rows] == [True, True, False, False, False]
    assert meets_ensemble_target(_row("topk:0.3", 0.89, 0.94, 4))  # exactly 0.05 below: meets
    chosen = auto_spec({"ensemble": {"approximations": rows}})
    assert chosen.target_met and chosen.long == ApproxSpec(fraction=0.5)
    assert chosen.for_length(150) is None and chosen.for_length(151) == ApproxSpec(fraction=0.5)
    assert "topk:0.5 met the ensemble target" in chosen.to_dict()["chosen_by"]


def test_auto_says_when_no_approximation_meets_the_target():
    from cotsurvival.provenance import scoring_notes
    from cotsurvival.pruning.approx import AUTO_FRACTION, AUTO_WINDOW, ApproxSpec, auto_spec

    rows = [_row("topk:0.2", 0.55, 0.96, 4), _row("topk:k=4", 0.70, 0.96, 3, ratio=3.7),
            _row("topk:k=2", 0.80, 0.96, 4, ratio=1.9)]  # closer, but saves too few rows to be quoted
    chosen = auto_spec({"ensemble": {"approximations": rows}})
    assert not chosen.target_met and chosen.long == ApproxSpec(fraction=AUTO_FRACTION, window=AUTO_WINDOW)
    assert chosen.exact_max == 150 and chosen.for_length(150) is None
    record = chosen.to_dict()
    assert record["ensemble_target_met"] is False
    assert "no approximation met the ensemble target" in record["chosen_by"]
    assert "the closest at >= 3x fewer rows, topk:k=4, scored tau 0.70 against their own 0.96" in record["chosen_by"]
    (note,) = scoring_notes({"engine": {"approx": record}})
    assert "--approx auto: no approximation met the ensemble target" in note.text
    assert not auto_spec({}).target_met and "has been measured" in auto_spec({}).basis


def test_shipped_auto_follows_the_shipped_figures():
    """``--approx auto`` is the rule applied to the package's fidelity.json (no hard-coded choice)."""
    from cotsurvival.provenance import fidelity_data
    from cotsurvival.pruning.approx import meets_ensemble_target, parse_approx

    rows = [r for r in fidelity_data().get("ensemble", {}).get("approximations", []) if meets_ensemble_target(r)]
    auto = parse_approx("auto")
    assert auto.target_met == bool(rows)
    if rows:
        assert auto.long.describe() == parse_approx(max(rows, key=lambda r: r["row_ratio"])["spec"]).describe()


def test_an_approximation_measured_on_two_chain_sets_is_quoted_from_the_longer(monkeypatch):
    """bench/stability.py writes one ensemble row per chain set; a citation quotes the one measured on the
    longest chains (approximations run on long chains), whatever the rows' order."""
    from cotsurvival import provenance

    short = {**_row("topk:0.5", 0.44, 0.99, 4, ratio=6.4), "set": "short", "max_tokens": 52}
    long = {**_row("topk:0.5", 0.38, 0.98, 4, ratio=11.0), "set": "long", "max_tokens": 103}
    for rows in ([short, long], [long, short]):
        monkeypatch.setattr(provenance, "fidelity_data", lambda rows=rows: {"ensemble": {"approximations": rows}})
        assert provenance.measured_ensemble("topk:0.5") is long
    assert provenance.measured_ensemble("topk:0.35") is None


def test_stability_bench_replaces_only_its_own_chain_sets_rows(tmp_path, monkeypatch):
    """``bench/stability.py --set S report --update-fidelity`` rewrites the ensemble rows of set S and keeps
    the other set's (rows written before sets existed count as ``short``)."""
    import importlib.util
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "stability.py"
    spec = importlib.util.spec_from_file_location("stability_bench", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    data = tmp_path / "fidelity.json"
    data.write_text(json.dumps({"ensemble": {"approximations": [
        {**_row("topk:0.5", 0.44, 0.99, 4), "max_tokens": 52},               # an old row: short
        {**_row("topk:0.35", 0.40, 0.93, 4), "set": "long", "max_tokens": 103}]}}))
    ci = {"estimate": 0.65, "ci_low": 0.64, "ci_high": 0.66, "n_chains": 4}
    result = {"date": "today", "chains": {"gsm8k-test-440": 70, "model-881": 103},
              "approximations": [{"spec": "lazy", "tau_to_ensemble": ci, "own_tau": {**ci, "estimate": 0.93},
                                  "same_sign": "4/4", "row_ratio": 3.08, "n_chains": 2,
                                  "chain_ids": ["gsm8k-test-440", "model-881"]}]}
    bench.use_set("long")
    bench.update_fidelity(result, data)
    rows = json.loads(data.read_text())["ensemble"]["approximations"]
    assert [(r.get("set", "short"), r["spec"]) for r in rows] == [("short", "topk:0.5"), ("long", "lazy")]
    assert rows[1]["max_tokens"] == 103 and rows[1]["row_ratio"] == 3.08 and rows[1]["own_tau"] == 0.93
    assert rows[1]["chains"] == "GSM8K chains of 70-103 tokens (1 human-written, 1 model-written)"
