"""Approximate greedy survival (``--approx``): exact settings equal the exact engine; approximate
settings equal an independent naive implementation of the same approximation; runs say so."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cotsurvival.encoding import encode_chain
from cotsurvival.errors import ApproximationWarning, CotSurvivalError
from cotsurvival.pruning.approx import ApproxSpec, AutoSpec, approx_prune, parse_approx, score_round
from cotsurvival.pruning.crossstep import CrossStepScorer
from cotsurvival.pruning.engine import ChainTrace, greedy_prune
from cotsurvival.pruning.scoring import NaiveScorer, PrefixReuseScorer
from cotsurvival.testing import EXAMPLE_CHAINS, pruned_sequences

from naive_greedy import naive_greedy, sequence_objective


def naive_topk(model, encoded, k_of, window=None, block=None):
    """The top-k approximation written plainly: full HF forward of every candidate sequence.

    With a window, a block [s, e) is scored on prefix + kept[:s] | kept[s:e] | kept[e:e+W]
    (or the rest of the chain and the answer when the window reaches the end)."""
    prefix, reasoning, answer = encoded.prefix_ids, encoded.reasoning_ids, encoded.answer_ids
    alive = list(range(len(reasoning)))
    order, rounds = [], []
    while alive:
        kept = [reasoning[i] for i in alive]
        m = len(kept)
        costs = []
        spans = [(0, m)] if window is None else [(s, min(m, s + block)) for s in range(0, m, block)]
        for start, end in spans:
            tail = answer if end == m else (kept[end:] + answer if end + window >= m else kept[end:end + window])
            left, middle = prefix + kept[:start], kept[start:end]
            base = sequence_objective(model, left, middle, tail)
            for j in range(len(middle)):
                costs.append(base - sequence_objective(model, left, middle[:j] + middle[j + 1:], tail))
        costs = np.asarray(costs)
        rounds.append((list(alive), costs))
        chosen = sorted(range(m), key=lambda j: (costs[j], j))[: k_of(m)]
        order += [alive[j] for j in chosen]
        alive = [a for j, a in enumerate(alive) if j not in set(chosen)]
    return order, rounds


def test_parse_specs_and_errors():
    assert parse_approx(None) is None and parse_approx("exact") is None
    assert isinstance(parse_approx("auto"), AutoSpec)
    assert parse_approx("topk:0.1") == ApproxSpec(fraction=0.1)
    assert parse_approx("topk:0.1,window=64,block=32") == ApproxSpec(fraction=0.1, window=64, block=32)
    assert parse_approx("topk:k=1").is_exact and not parse_approx("topk:k=1,window=8").is_exact
    assert parse_approx("topk:0.2").deletions(49) == 9 and parse_approx("topk:0.2").deletions(3) == 1
    for bad in ("fast", "topk:1.5", "topk:k=0", "topk:0.1,k=2", "topk:x", "topk:0.1,depth=3"):
        with pytest.raises(CotSurvivalError) as error:
            parse_approx(bad)
        assert error.value.code == "E110"


@pytest.mark.parametrize("spec", ["topk:k=1", "topk:k=1,window=1000,block=5", "lazy:refresh=0",
                                  "lazy:radius=0,batch=1,refresh=0,same=0"])
def test_exact_settings_equal_naive_oracle(tiny64, spec):
    """k = 1, a window reaching the end of the chain (scored in blocks of 5) and lazy re-scoring with
    a full refresh at every step are exact: orders, every candidate's cost and the objectives."""
    from cotsurvival.pruning.lazy import lazy_prune

    model, tokenizer = tiny64
    encoded = encode_chain(EXAMPLE_CHAINS[1], tokenizer)
    steps = 10
    oracle_order, oracle_scores = naive_greedy(model, encoded.prefix_ids, encoded.reasoning_ids,
                                               encoded.answer_ids, steps)
    # The engines directly: greedy_prune would route an exact spec to the exact loop.
    engine = lazy_prune if spec.startswith("lazy") else approx_prune
    trace = engine(PrefixReuseScorer(model, max_batch_tokens=64), encoded, steps, parse_approx(spec), ChainTrace())
    assert pruned_sequences(encoded.reasoning_ids, trace.order) == \
        pruned_sequences(encoded.reasoning_ids, oracle_order)
    assert trace.scored_steps == list(range(1, steps + 1))
    for step, scores in enumerate(oracle_scores):
        np.testing.assert_allclose(trace.step_costs[step], trace.objectives[step] - np.asarray(scores), atol=1e-4)
        assert trace.objectives[step + 1] == pytest.approx(max(scores), abs=1e-6)


def test_exact_setting_through_engine_equals_exact_engine(tiny):
    model, tokenizer = tiny
    encoded = encode_chain(EXAMPLE_CHAINS[0], tokenizer)
    n = len(encoded.reasoning_ids)
    exact = greedy_prune(CrossStepScorer(model), encoded, n)
    forced = approx_prune(PrefixReuseScorer(model), encoded, n, parse_approx("topk:k=1"), ChainTrace())
    assert pruned_sequences(encoded.reasoning_ids, forced.order) == pruned_sequences(encoded.reasoning_ids, exact.order)
    np.testing.assert_allclose(forced.objectives, exact.objectives, atol=2e-3)
    via_engine = greedy_prune(CrossStepScorer(model), encoded, n, approx="topk:k=1")
    assert via_engine.order == exact.order


@pytest.mark.parametrize("spec,window,block", [("topk:0.3", None, None), ("topk:0.25,window=3,block=4", 3, 4)])
def test_topk_and_window_equal_naive_implementation(tiny64, spec, window, block):
    model, tokenizer = tiny64
    encoded = encode_chain(EXAMPLE_CHAINS[1], tokenizer)
    parsed = parse_approx(spec)
    n = len(encoded.reasoning_ids)
    oracle_order, oracle_rounds = naive_topk(model, encoded, parsed.deletions, window, block)
    trace = greedy_prune(NaiveScorer(model, max_batch_tokens=256), encoded, n, approx=spec)
    assert trace.order == oracle_order
    assert len(trace.step_costs) == len(oracle_rounds) < n
    for (alive, costs), positions, got in zip(oracle_rounds, trace.step_positions, trace.step_costs):
        assert list(positions) == alive
        np.testing.assert_allclose(got, costs, atol=1e-4)


def test_windowed_objective_is_the_full_objective(tiny64):
    model, tokenizer = tiny64
    encoded = encode_chain(EXAMPLE_CHAINS[2], tokenizer)
    alive = list(range(len(encoded.reasoning_ids)))
    scores = score_round(PrefixReuseScorer(model), encoded, alive, parse_approx("topk:0.1,window=2,block=3"))
    full = sequence_objective(model, encoded.prefix_ids, encoded.reasoning_ids, encoded.answer_ids)
    assert scores.objective == pytest.approx(full, abs=1e-8)


def test_window_needs_joint_objective(tiny):
    model, tokenizer = tiny
    encoded = encode_chain(EXAMPLE_CHAINS[0], tokenizer)
    for spec in ("topk:0.1,window=2,block=3", "lazy:window=2,refresh=0.5"):
        with pytest.raises(CotSurvivalError) as error:
            greedy_prune(PrefixReuseScorer(model, "answer"), encoded, 3, approx=spec)
        assert error.value.code == "E112"
    # Lazy re-scoring without a window measures whole costs: the answer objective is fine.
    assert len(greedy_prune(PrefixReuseScorer(model, "answer"), encoded, 3, approx="lazy").order) == 3


def test_token_rows_counter_matches_scorer_accounting(tiny):
    """The embedding hook counts what the scorers report computing, padding included."""
    model, tokenizer = tiny
    encoded = encode_chain(EXAMPLE_CHAINS[1], tokenizer)
    for scorer in (PrefixReuseScorer(model, max_batch_tokens=50), CrossStepScorer(model, max_batch_tokens=50)):
        trace = greedy_prune(scorer, encoded, 6)
        assert trace.token_rows == trace.tokens_processed > 0


@pytest.mark.parametrize("spec", ["topk:0.2", "lazy:radius=1,batch=1,refresh=0.5,same=1,age=1"])
def test_approximate_run_end_to_end(tmp_path, tiny_loaded, spec):
    """prune --approx writes a full order, traces only for scored steps, and says so; analyze,
    report and compare run on it, and their citations, captions and figures carry the approximation."""
    from cotsurvival.analysis import analyze, load_run
    from cotsurvival.pruning import prune
    from cotsurvival.taxonomy.runs import tag_run

    out = tmp_path / "run"
    run = prune(EXAMPLE_CHAINS, out, loaded_model=tiny_loaded, approx=spec, progress=False)
    manifest = run.read_manifest()
    assert manifest["engine"]["approx"]["spec"] == spec
    assert manifest["engine"]["token_rows"] == sum(manifest["engine"]["token_rows_chains"].values()) > 0
    for index, chain in enumerate(EXAMPLE_CHAINS):
        tokens = run.read_part("tokens", index)
        n = len(tokens)
        assert sorted(tokens["deleted_step"].dropna().astype(int)) == list(range(1, n + 1))
        traces = run.read_part("traces", index)
        scored = sorted(traces["step"].unique())
        assert scored[0] == 1 and len(scored) < n
        steps = run.read_part("steps", index)
        assert len(steps) == n + 1
        if spec.startswith("topk"):
            # The deletion cost of a token deleted at an unscored step is its cost at the round's scoring.
            round_start = {s: max(x for x in scored if x <= s) for s in range(1, n + 1)}
            for _, row in tokens.iterrows():
                trace_row = traces[(traces["step"] == round_start[int(row["deleted_step"])]) &
                                   (traces["position"] == row["position"])]
                assert row["deletion_cost"] == pytest.approx(float(trace_row["cost"].iloc[0]), abs=1e-6)
        else:
            # Lazy re-scoring measures each deletion on its own step's sequence: the objective's exact drop.
            drops = -np.diff(steps.sort_values("step")["objective"].to_numpy())
            by_step = tokens.set_index("deleted_step")["deletion_cost"].sort_index().to_numpy()
            np.testing.assert_allclose(by_step, drops, atol=1e-4)
    tag_run(out)
    result = analyze(out, n_boot=50, mixed=False)
    assert any(spec in sentence and "approximated" in sentence for sentence in result.citations_)
    assert len(load_run(out)) == sum(len(run.read_part("tokens", i)) for i in range(len(EXAMPLE_CHAINS)))
    from cotsurvival.reports import build_report

    report = build_report(out, tmp_path / "report", widths=("one",), run_analysis=False)
    page = (tmp_path / "report" / "index.html").read_text()
    assert page.count("approximated with prune --approx") >= len(report.figures)  # every caption
    from cotsurvival.reports.viewer import build_viewer

    viewer = build_viewer(out, tmp_path / "viewer.html").read_text()
    assert all(chain.id in viewer for chain in EXAMPLE_CHAINS)
    assert "approximated with prune --approx" in viewer  # the viewer carries the note too
    for stem in report.figures:  # and under every figure
        assert any(" ".join(text.split()).startswith("Approximate ranks: prune --approx " + spec)
                   for text in report.texts[stem]), stem
    # An exact run records no approximation but does count its token rows; its citations say nothing.
    exact = prune(EXAMPLE_CHAINS, tmp_path / "exact", loaded_model=tiny_loaded, progress=False)
    engine = exact.read_manifest()["engine"]
    assert engine["approx"] is None and engine["token_rows"] > 0
    # A comparison of the approximate run with the exact one says which run is approximate, first.
    from cotsurvival.comparison import compare

    tag_run(tmp_path / "exact")
    comparison = compare([out, tmp_path / "exact"], n_boot=50)
    assert comparison.citations[0].startswith("Note: 'run': Greedy survival was approximated") and \
        spec in comparison.citations[0]
    assert not any("'exact'" in c and "approximated" in c for c in comparison.citations)
    (pair,) = comparison.pairs
    assert pair["n_chains"] == len(EXAMPLE_CHAINS) and -1 <= pair["kendall_tau"]["mean"] <= 1


def test_exact_run_of_long_chain_is_refused_naming_approx(tmp_path, tiny_loaded, monkeypatch):
    from cotsurvival.pruning import prune

    monkeypatch.setenv("COTSURVIVAL_EXACT_MAX_TOKENS", "20")
    with pytest.raises(CotSurvivalError) as error:
        prune(EXAMPLE_CHAINS, tmp_path / "run", loaded_model=tiny_loaded, progress=False)
    assert error.value.code == "E111" and "--approx" in error.value.message
    run = prune(EXAMPLE_CHAINS, tmp_path / "run2", loaded_model=tiny_loaded, progress=False, approx="auto",
                keep_ratio=0.5)
    record = run.read_manifest()["engine"]["approx"]
    assert record["method"] == "auto" and json.dumps(record)


def test_resume_with_another_approximation_is_refused(tmp_path, tiny_loaded):
    """The approximation changes the order, so it is a setting a run must be resumed with (issue 17)."""
    from cotsurvival.pruning import prune

    out = tmp_path / "run"
    prune(EXAMPLE_CHAINS[:1], out, loaded_model=tiny_loaded, approx="topk:0.2", keep_ratio=0.5, progress=False)
    before = (out / "manifest.json").read_text()
    for other in ("topk:0.5", None):
        with pytest.raises(CotSurvivalError) as error:
            prune(EXAMPLE_CHAINS[:1], out, loaded_model=tiny_loaded, approx=other, progress=False)
        assert error.value.code == "E083" and "topk:0.2" in error.value.message
    assert (out / "manifest.json").read_text() == before
    prune(EXAMPLE_CHAINS[:1], out, loaded_model=tiny_loaded, approx="topk:0.2", progress=False)  # same: continues
    assert out.joinpath("manifest.json").read_text() != before


def test_cli_approx_option(tmp_path, tiny_dir):
    from cli_helpers import cli

    result = cli("prune", "gsm8k", "--out", str(tmp_path / "bad"), "--model", str(tiny_dir), "--limit", "1",
                     "--approx", "topk:2.0")
    assert result.returncode == 2 and "error[E110]" in result.stderr


@pytest.mark.parametrize("spec", ["topk:0.3", "topk:0.25,window=3,block=4", "topk:k=2"])
def test_cost_model_counts_the_rows_run(tiny, spec):
    """estimate_rows (the projection's cost model) against the embedding-hook count, one candidate
    per batch so nothing is padded; duplicate adjacent tokens are scored once, so allow a little."""
    from cotsurvival.pruning.approx import estimate_rows

    model, tokenizer = tiny
    encoded = encode_chain(EXAMPLE_CHAINS[1], tokenizer)
    n = len(encoded.reasoning_ids)
    trace = greedy_prune(PrefixReuseScorer(model, max_batch_tokens=1), encoded, n, approx=spec)
    expected = estimate_rows(n, len(encoded.prefix_ids), len(encoded.answer_ids), parse_approx(spec))
    assert 0.97 * expected <= trace.token_rows <= expected


def test_exact_run_of_long_chain_warns(tmp_path, tiny_loaded, monkeypatch):
    from cotsurvival.pruning import prune
    from cotsurvival.pruning import approx

    monkeypatch.setattr(approx, "EXACT_WARN_TOKENS", 20)
    with pytest.warns(ApproximationWarning, match="--approx auto"):
        prune(EXAMPLE_CHAINS[1:2], tmp_path / "run", loaded_model=tiny_loaded, progress=False, keep_ratio=0.9)


def naive_lazy(model, encoded, radius, batch, refresh, same, age):
    """Lazy re-scoring written plainly: every cost a full HF forward of the candidate sequence."""
    prefix, reasoning, answer = encoded.prefix_ids, encoded.reasoning_ids, encoded.answer_ids
    alive, order = list(range(len(reasoning))), []
    costs, fresh, measured, refreshed, gap, step = [], [], [], None, None, 0
    while alive:
        m = len(alive)
        kept = [reasoning[i] for i in alive]
        base = sequence_objective(model, prefix, kept, answer)

        def measure(k):
            if not fresh[k]:
                costs[k] = base - sequence_objective(model, prefix, kept[:k] + kept[k + 1:], answer)
                fresh[k], measured[k] = True, step

        if refreshed is None or m <= refreshed * (1 - refresh):
            costs, fresh, measured, refreshed = [0.0] * m, [False] * m, [0] * m, m
            for k in range(m):
                measure(k)
        elif gap is not None:
            near = [k for k in range(m) if gap - radius <= k < gap + radius or (same and kept[k] == deleted_token)]
            oldest = sorted((k for k in range(m) if k not in near), key=lambda k: (measured[k], k))[:age]
            for k in near + oldest:
                measure(k)
        while True:
            winner = min(range(m), key=lambda k: (costs[k], k))
            if fresh[winner]:
                break
            for k in sorted((k for k in range(m) if not fresh[k]), key=lambda k: (costs[k], k))[:batch]:
                measure(k)
        deleted_token = kept[winner]
        order.append(alive.pop(winner))
        costs.pop(winner)
        measured.pop(winner)
        fresh, gap, step = [False] * (m - 1), winner, step + 1
    return order


def test_lazy_spec_parsing():
    from cotsurvival.pruning.approx import LazySpec

    assert parse_approx("lazy") == LazySpec()
    assert parse_approx("lazy:radius=1,batch=4,refresh=0.25") == LazySpec(radius=1, batch=4, refresh=0.25)
    assert parse_approx("lazy:refresh=0").is_exact and not parse_approx("lazy:refresh=0.1").is_exact
    assert parse_approx(parse_approx("lazy:radius=3,same=0").describe()) == LazySpec(radius=3, same=False)
    for bad in ("lazy:same=2", "lazy:age=-1", "lazy:local=1", "lazy:window=0", "lazy:window=4,radius=1", "lazy:refresh=1", "lazy:batch=0", "lazy:radius=-1", "lazy:depth=2", "lazy:radius=x", "lazy:0.1"):
        with pytest.raises(CotSurvivalError) as error:
            parse_approx(bad)
        assert error.value.code == "E110"


@pytest.mark.parametrize("spec", ["lazy:refresh=0", "lazy:window=1000,refresh=0.9"])
def test_lazy_exact_setting_on_whole_chains_equals_exact_engine(tiny, spec):
    """Whole chains (duplicate adjacent tokens included), float32, against the cross-step engine: a
    full refresh at every step, and a window that reaches the end of every chain, are exact."""
    from cotsurvival.pruning.lazy import lazy_prune

    model, tokenizer = tiny
    for chain in EXAMPLE_CHAINS:
        encoded = encode_chain(chain, tokenizer)
        n = len(encoded.reasoning_ids)
        exact = greedy_prune(CrossStepScorer(model), encoded, n)
        lazy = lazy_prune(PrefixReuseScorer(model), encoded, n, parse_approx(spec), ChainTrace())
        assert pruned_sequences(encoded.reasoning_ids, lazy.order) == \
            pruned_sequences(encoded.reasoning_ids, exact.order)
        np.testing.assert_allclose(lazy.objectives, exact.objectives, atol=2e-3)
        np.testing.assert_allclose(lazy.deletion_costs, -np.diff(exact.objectives), atol=2e-3)


@pytest.mark.parametrize("spec", ["lazy:radius=2,batch=2,refresh=0.5", "lazy:radius=0,batch=1,refresh=0.9,same=0",
                                  "lazy:radius=1,batch=3,refresh=0.2,age=2"])
def test_lazy_equals_naive_implementation(tiny64, spec):
    """Each approximate setting chooses what the plain implementation of the same rule chooses; the
    objectives it records are the exact objectives of the sequences it leaves."""
    model, tokenizer = tiny64
    encoded = encode_chain(EXAMPLE_CHAINS[1], tokenizer)
    parsed = parse_approx(spec)
    n = len(encoded.reasoning_ids)
    oracle = naive_lazy(model, encoded, parsed.radius, parsed.batch, parsed.refresh, parsed.same, parsed.age)
    trace = greedy_prune(NaiveScorer(model), encoded, n, approx=spec)
    assert pruned_sequences(encoded.reasoning_ids, trace.order) == pruned_sequences(encoded.reasoning_ids, oracle)
    assert trace.scored_steps[0] == 1 and len(trace.step_costs) == len(trace.scored_steps) < n
    alive = list(range(n))
    for step, position in enumerate(trace.order[:8], 1):
        alive.remove(position)
        kept = [encoded.reasoning_ids[i] for i in alive]
        assert trace.objectives[step] == pytest.approx(
            sequence_objective(model, encoded.prefix_ids, kept, encoded.answer_ids), abs=1e-8)
