"""cotsurvival.comparison.compare: alignment across tokenizers, agreement, paired category tests.

Oracles: a brute-force character loop for the word alignment, ``str.split`` for the words, a
full 2**n sign-flip enumeration and a hand-written Holm step-down written here, scipy for τ.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cotsurvival.chains import Chain
from cotsurvival.comparison import ComparisonResult, compare, load_view
from cotsurvival.comparison.compare import chain_category_means
from cotsurvival.errors import CotSurvivalError
from cotsurvival.testing import synthetic_run

# Short chains keep greedy pruning of the tiny models to a few seconds.
CHAINS = [
    Chain("c1", "How many clips?", "Natalia sold 48/2 = 24 clips in May.", "#### 24"),
    Chain("c2", "How much?", "Weng earns 12/60 = $0.2 per minute.", "#### 0.2"),
    Chain("c3", "How many bolts?", "It takes 2/2 = 1 bolt of white fiber.", "#### 1"),
    Chain("c4", "How many eggs?", "So she has 16 - 3 = 13 eggs left.", "#### 13"),
]


def other_tiny_llama(seed: int = 1):
    """A tiny random Llama on a DIFFERENT tokenizer: byte-level BPE with few merges on other text."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from cotsurvival.testing import CHAT_TEMPLATE, random_llama

    bpe = ByteLevelBPETokenizer(add_prefix_space=False, trim_offsets=True)
    special = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"]
    text = ["the cat sat on the mat", "numbers: 1 2 3 4 5 6 7 8 9 0", "clips eggs bolts minutes"] * 3
    bpe.train_from_iterator(text, vocab_size=290, min_frequency=2, special_tokens=special, show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>", additional_special_tokens=special[1:])
    tokenizer.chat_template = CHAT_TEMPLATE
    model = random_llama(tokenizer, seed=seed, hidden_size=32, intermediate_size=64, n_layers=1, n_heads=2, n_kv_heads=1)
    return model, tokenizer


def _prune(model_and_tokenizer, name, out, **kwargs):
    from cotsurvival.models import ModelInfo
    from cotsurvival.pruning import prune

    model, tokenizer = model_and_tokenizer
    info = ModelInfo(name, "in-code", None, None, "llama", "float32", "cpu", 0, 512)
    return prune(CHAINS, out, loaded_model=(model, tokenizer, info), progress=False, **kwargs)


def _tag_by_rule(run):
    """Store cheap deterministic labels (digits/operators -> symbolic_math) as the ``rule`` source, without spaCy."""
    from cotsurvival.labels import RULE, record_source, write_labels

    taxonomy = {"name": "test-rule", "version": "0"}
    for index in run.part_indices("tokens"):
        part = run.read_part("tokens", index)
        is_math = part["text"].str.contains(r"[0-9=/$+\-]", regex=True)
        frame = part[["chain_index", "chain_id", "position"]].assign(
            label=np.where(is_math, "SYMBOLIC_MATH", "CONTENT"), category=np.where(is_math, "symbolic_math", "narration"))
        write_labels(run, index, frame, RULE, taxonomy)
    record_source(run, RULE, kind="test rule", taxonomy=taxonomy)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("compare-runs")
    a = _prune(tiny, "tiny-llama", root / "tiny", baselines=["random"])
    b = _prune(other_tiny_llama(), "other-tiny-llama", root / "other", objective="answer")
    for run in (a, b):
        _tag_by_rule(run)
    return {"a": a.path, "b": b.path, "root": root}


# ----------------------------------------------------------------------------- alignment
def test_different_tokenizers_align_on_words_and_every_word_is_mapped(runs):
    view_a, view_b = load_view(runs["a"]), load_view(runs["b"])
    # The two tokenizations really differ (otherwise this test would not test word alignment).
    assert len(view_a.tokens) != len(view_b.tokens)
    result = compare([runs["a"], runs["b"]], figures=False)
    pair = result.pairs[0]
    assert pair["units"] == "word" and pair["n_chains"] == len(CHAINS)
    units = result.tables["units"]
    for chain in CHAINS:
        sub = units[units["chain_id"] == chain.id]
        assert sub["text"].tolist() == chain.reasoning.split()           # oracle: str.split gives the words
    assert units["covered_a"].all() and units["covered_b"].all()
    assert units["survival_a"].notna().all() and units["survival_b"].notna().all()
    # Oracle for the unit rule: a brute-force character scan over every token of every word.
    for view, side in ((view_a, "a"), (view_b, "b")):
        for row in units.itertuples():
            tokens = view.tokens[view.tokens["chain_id"] == row.chain_id]
            overlapping = [t for t in tokens.itertuples()
                           if any(t.char_start <= c < t.char_end for c in range(row.char_start, row.char_end))]
            assert overlapping, (row.text, side)
            steps = [np.inf if np.isnan(t.deleted_step) else t.deleted_step for t in overlapping]
            expected = max(t.survival for t in overlapping)
            assert getattr(row, f"survival_{side}") == pytest.approx(expected)
            got_step = getattr(row, f"deleted_{side}")
            assert (np.isnan(got_step) and max(steps) == np.inf) or got_step == max(steps)


def test_same_tokenizer_compares_token_by_token(runs):
    result = compare([runs["a"], f"{runs['a']}:random"], figures=False)
    pair = result.pairs[0]
    assert pair["units"] == "token"
    assert pair["n_units"] == len(load_view(runs["a"]).tokens)


# ----------------------------------------------------------------------------- identical runs
def test_identical_runs_agree_perfectly(runs, tmp_path):
    result = compare([runs["a"], runs["a"]], tmp_path / "same")
    pair = result.pairs[0]
    assert pair["b"].endswith("#2")
    assert pair["kendall_tau"]["mean"] == pytest.approx(1.0)
    assert pair["spearman_rho"]["mean"] == pytest.approx(1.0)
    assert all(j["mean"] == pytest.approx(1.0) for j in pair["jaccard"].values())
    assert pair["categories"]
    for stats in pair["categories"].values():
        assert stats["difference"] == 0.0 and stats["ci_low"] == 0.0 and stats["ci_high"] == 0.0
        assert stats["p_value"] == 1.0 and stats["p_holm"] == 1.0
    data = json.loads((tmp_path / "same" / "comparison.json").read_text())
    entry = data["pairs"][0]
    for key in ("a", "b", "n_chains", "kendall_tau", "categories", "model_a", "objective_a", "alignment"):
        assert key in entry
    assert set(entry["kendall_tau"]) >= {"mean", "ci_low", "ci_high"}
    assert set(next(iter(entry["categories"].values()))) >= {"difference", "ci_low", "ci_high", "p_value"}


def test_random_baseline_gives_tau_near_zero(runs, tmp_path):
    result = compare([runs["a"], f"{runs['a']}:random"], figures=False)
    tau = result.pairs[0]["kendall_tau"]
    assert abs(tau["mean"]) < 0.3
    # With many chains the mean settles near 0 and its CI covers 0 (synthetic run, exact random permutation).
    run = synthetic_run(tmp_path / "syn", n_chains=40, n_tokens=30, seed=3)
    many = compare([run.path, f"{run.path}:random"], figures=False).pairs[0]
    assert abs(many["kendall_tau"]["mean"]) < 0.08
    assert many["kendall_tau"]["ci_low"] < 0 < many["kendall_tau"]["ci_high"]
    # ... while the greedy order against itself is perfect (the statistic can move).
    assert compare([run.path, run.path], figures=False).pairs[0]["kendall_tau"]["mean"] == pytest.approx(1.0)


def _brute_force_sign_flip(diffs: np.ndarray) -> float:
    observed = abs(diffs.mean())
    hits = total = 0
    for signs in itertools.product((1, -1), repeat=len(diffs)):
        total += 1
        hits += abs((np.array(signs) * diffs).mean()) >= observed - 1e-12
    return hits / total


def _holm_by_hand(p: list[float]) -> list[float]:
    order = sorted(range(len(p)), key=lambda i: p[i])
    adjusted, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def test_paired_test_matches_brute_force_enumeration(tmp_path):
    run = synthetic_run(tmp_path / "syn", n_chains=7, n_tokens=20, seed=5)
    result = compare([run.path, f"{run.path}:random"], figures=False)
    pair = result.pairs[0]
    means = chain_category_means(result.tables["units"])
    cats = sorted(pair["categories"])
    raw = []
    for category in cats:
        chains = means[means["category"] == category]
        diffs = (chains["survival_a"] - chains["survival_b"]).to_numpy()
        expected = _brute_force_sign_flip(diffs)
        assert pair["categories"][category]["p_value"] == pytest.approx(expected)
        assert pair["categories"][category]["difference"] == pytest.approx(diffs.mean())
        raw.append(expected)
    assert any(p < 0.5 for p in raw)             # a real difference is present, not only trivial p = 1
    for category, adjusted in zip(cats, _holm_by_hand(raw)):
        assert pair["categories"][category]["p_holm"] == pytest.approx(adjusted)


# ----------------------------------------------------------------------------- matching, outputs
def test_chains_in_one_run_only_and_changed_text_are_reported(tmp_path):
    full = synthetic_run(tmp_path / "full", n_chains=6, seed=0)
    part = synthetic_run(tmp_path / "part", n_chains=4, seed=0)     # same generator: the first 4 chains are equal
    result = compare([full.path, part.path], figures=False)
    matching = result.tables["chain_matching"].set_index("chain_id")
    assert (matching.loc[["syn-4", "syn-5"], "status"] == "only in: full").all()
    assert (matching.loc[["syn-0", "syn-3"], "status"] == "common").all()
    assert result.pairs[0]["n_chains"] == 4
    assert any("only in: full" in n for n in result.notes)
    other = synthetic_run(tmp_path / "other", n_chains=4, seed=9)   # same ids, other text
    with pytest.raises(CotSurvivalError) as err:
        compare([part.path, other.path], figures=False)
    assert err.value.code == "E122"


def test_save_load_tables_figures_and_escaped_html(runs, tmp_path):
    out = tmp_path / "cmp"
    result = compare([runs["a"], runs["b"], f"{runs['a']}:random"], out,
                     names=["<b>tiny</b>", "other", "tiny:random"])
    assert len(result.pairs) == 3
    for stem in ("fig_km_by_run", "fig_scatter", "fig_forest"):
        assert (out / f"{stem}.png").stat().st_size > 1000 and (out / f"{stem}.pdf").is_file()
    for name in ("category_differences", "category_survival", "agreement_per_chain", "movers"):
        assert (out / f"{name}.csv").is_file() and (out / f"{name}.md").is_file() and (out / f"{name}.tex").is_file()
    page = (out / "index.html").read_text()
    assert "<b>tiny</b>" not in page and "&lt;b&gt;tiny&lt;/b&gt;" in page
    assert "<b>tiny</b>" not in result._repr_html_()
    citations = (out / "citations.md").read_text()
    assert "tiny-llama" in citations and "other-tiny-llama" in citations and "answer objective" in citations
    # 4 common chains: below the one minimum-support rule of every citations.md (analysis.citations)
    assert "withheld (below the minimum support of 6 chains / 20 tokens)" in citations and "(4 chains)" in citations
    assert "n = 4 chains" not in citations
    loaded = ComparisonResult.load(out)
    assert loaded.pairs == json.loads((out / "comparison.json").read_text())["pairs"]
    pd.testing.assert_frame_equal(loaded.to_frame().reset_index(drop=True),
                                  pd.read_csv(out / "category_differences.csv"), check_dtype=False)
    with pytest.raises(CotSurvivalError) as err:
        ComparisonResult.load(tmp_path)
    assert err.value.code == "E125"


def test_recovery_is_included_when_present(tmp_path):
    a = synthetic_run(tmp_path / "a", n_chains=3, seed=0)
    b = synthetic_run(tmp_path / "b", n_chains=3, seed=0)
    pd.DataFrame({"chain_id": ["syn-0", "syn-1", "syn-2"] * 2, "ordering": ["greedy"] * 6,
                  "keep_ratio": [0.5] * 3 + [0.25] * 3, "answer_logprob": [-1.0, -2.0, -3.0, -4, -5, -6],
                  "correct": [True, True, False, True, False, False]}).to_parquet(a.path / "recovery.parquet")
    table = compare([a.path, b.path], figures=False).tables["recovery"]
    row = table[(table["run"] == "a") & (table["keep_ratio"] == 0.5)].iloc[0]
    assert row["accuracy"] == pytest.approx(2 / 3) and row["mean_answer_logprob"] == pytest.approx(-2.0)
    assert set(table["run"]) == {"a"}                  # b has none: skipped silently
    assert "recovery" not in compare([b.path, b.path], figures=False).tables


def test_unknown_ordering_and_single_run_are_user_errors(runs):
    with pytest.raises(CotSurvivalError) as err:
        compare([runs["b"], f"{runs['b']}:random"], figures=False)
    assert err.value.code == "E121"
    with pytest.raises(CotSurvivalError) as err:
        compare([runs["a"]])
    assert err.value.code == "E120"


def test_cli_compare(runs, tmp_path):
    from cli_helpers import cli

    out = tmp_path / "cli"
    done = cli("compare", runs["a"], f"{runs['a']}:random", "--out", out, "--keep-ratios", "0.5", "--n-boot", "200")
    assert done.returncode == 0, done.stderr
    data = json.loads((out / "comparison.json").read_text())
    assert list(data["pairs"][0]["jaccard"]) == ["0.5"]
    bad = cli("compare", runs["a"], "--out", out)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error[E120]") and "Traceback" not in bad.stderr


def test_untagged_runs_compare_without_category_statistics(tmp_path):
    a = synthetic_run(tmp_path / "a", n_chains=4, seed=0, tagged=False)
    result = compare([a.path, f"{a.path}:loo"], tmp_path / "out")
    pair = result.pairs[0]
    assert pair["categories"] == {} and pair["kendall_tau"]["n_chains"] == 4
    assert any("not tagged" in n for n in result.notes)
    assert (tmp_path / "out" / "fig_scatter.png").is_file() and not (tmp_path / "out" / "fig_forest.png").exists()


def test_run_spec_parsing(tmp_path):
    from cotsurvival.comparison import parse_run_spec

    assert parse_run_spec("runs/a:random") == (Path("runs/a"), "random")
    assert parse_run_spec("runs/a") == (Path("runs/a"), "greedy")
    assert parse_run_spec("runs/a:unknown") == (Path("runs/a:unknown"), "greedy")
    odd = tmp_path / "x:random"              # a folder whose name really ends in ':random' is a run
    odd.mkdir()
    assert parse_run_spec(str(odd)) == (odd, "greedy")


def test_cli_compare_out_is_guarded(tmp_path):
    """--out may not be a compared run or lie inside one, nor a folder of other files (unless --overwrite)."""
    from cli_helpers import assert_one_line_error, cli

    a = synthetic_run(tmp_path / "a", n_chains=3, seed=0, tagged=False)
    before = sorted(p.relative_to(a.path).as_posix() for p in a.path.rglob("*"))
    for out in (a.path, a.path / "cmp"):
        done = cli("compare", a.path, f"{a.path}:loo", "--out", out, "--n-boot", "50")
        assert done.returncode == 2, done.stderr
        assert_one_line_error(done.stderr, "E080", "compared run")
    assert sorted(p.relative_to(a.path).as_posix() for p in a.path.rglob("*")) == before   # nothing written
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep me")
    done = cli("compare", a.path, f"{a.path}:loo", "--out", foreign, "--n-boot", "50")
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "E081", "compare", "--overwrite")
    assert not (foreign / "comparison.json").exists()
    done = cli("compare", a.path, f"{a.path}:loo", "--out", foreign, "--n-boot", "50", "--overwrite")
    assert done.returncode == 0, done.stderr
    assert (foreign / "comparison.json").is_file() and (foreign / "mine.txt").read_text() == "keep me"
    # Its own earlier output is replaced without --overwrite.
    done = cli("compare", a.path, f"{a.path}:loo", "--out", foreign, "--n-boot", "50")
    assert done.returncode == 0, done.stderr


def test_python_compare_out_is_guarded_like_the_cli(tmp_path):
    """compare(..., out) refuses what `compare --out` refuses, before writing anything."""
    from cotsurvival.comparison import compare

    a = synthetic_run(tmp_path / "a", n_chains=3, seed=0, tagged=False)
    before = sorted(p.relative_to(a.path).as_posix() for p in a.path.rglob("*"))
    with pytest.raises(CotSurvivalError) as inside:
        compare([a.path, f"{a.path}:loo"], a.path / "cmp", n_boot=50)
    assert inside.value.code == "E080"
    assert sorted(p.relative_to(a.path).as_posix() for p in a.path.rglob("*")) == before
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep me")
    with pytest.raises(CotSurvivalError) as refused:
        compare([a.path, f"{a.path}:loo"], foreign, n_boot=50)
    assert refused.value.code == "E081" and not (foreign / "comparison.json").exists()
    compare([a.path, f"{a.path}:loo"], foreign, n_boot=50, figures=False, overwrite=True)
    assert (foreign / "comparison.json").exists() and (foreign / "mine.txt").read_text() == "keep me"
