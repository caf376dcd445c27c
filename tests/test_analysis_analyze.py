"""analyze(): outputs, speed on a small run, wording that follows the data, and degenerate runs."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from cotsurvival.analysis import analyze
from cotsurvival.cli import main
from cotsurvival.testing import synthetic_run


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    run = synthetic_run(tmp_path_factory.mktemp("an") / "r", n_chains=6, n_tokens=30, seed=0)
    return run, analyze(run)


def test_small_run_is_complete(small):
    # (speed is measured in bench/, not asserted in a test: the shared machine's load varies 10x)
    run, result = small
    folder = run.stats_dir
    text = (folder / "stats.json").read_text()
    stats = json.loads(text)  # allow_nan=False on write: no NaN tokens
    assert "NaN" not in text and stats["counts"]["n_chains"] == 6
    for name in ("summary_category", "cox_category", "logrank_pairwise_category", "mannwhitney_category"):
        for ext in ("csv", "md", "tex"):
            assert (folder / f"{name}.{ext}").is_file()
    assert "\\toprule" in (folder / "cox_category.tex").read_text()
    assert (folder / "km_category.csv").is_file() and (folder / "citations.md").is_file()
    for name, test in stats["tests"].items():
        if isinstance(test, dict) and "note" not in test and name != "cox_reference" and "chi2" in test:
            assert test["n_tokens"] > 0 and test["n_chains"] > 0, name
    for name, table in result.tables_.items():
        if "n_tokens" in table:
            assert table["n_tokens"].notna().all(), name


def test_citations_follow_the_data(small):
    run, result = small
    from cotsurvival.analysis import chain_level_test, load_run

    first = result.citations_[0]
    assert first.startswith("Primary result (pre-specified): symbolic math tokens")
    oracle = chain_level_test(load_run(run), "category", "symbolic_math")
    assert result.primary_["p_value"] == oracle["p_value"] and f"{oracle['estimate']:+.3f}" in first
    assert f"n = {oracle['n_chains']} chains" in first and "sign-flip" in first
    assert ("did not survive significantly" in first) == (oracle["p_value"] >= 0.05)
    stats = json.loads((run.stats_dir / "stats.json").read_text())
    assert stats["primary"]["estimate"] == pytest.approx(oracle["estimate"])
    assert stats["primary"]["power"]["n_chains_needed"] >= 2
    for sentence in result.citations_:
        if "log-rank" in sentence or "Kruskal" in sentence:
            assert "tokens treated as independent" in sentence, sentence
        if not sentence.startswith(("Sensitivity", "Note: primary result")):  # the sensitivity block names its covariates
            assert "Wald p unadjusted" not in sentence and "token length" not in sentence.replace("token length not", "")
        if "chain-bootstrap" in sentence:
            assert "6 chains" in sentence and "likely too narrow" in sentence
    random = [c for c in result.citations_ if c.startswith("Descriptively, under the random ordering")]
    lr = result.tables_["orderings_category"].query("ordering == 'random'")["logrank_p"].iloc[0]
    assert ("did not differ significantly" in random[0]) == (lr >= 0.05)
    paired = result.tables_["orderings_chain_level"].set_index("ordering")
    assert paired.loc["random", "baseline_mean_contrast"] == 0.0  # the exact expectation, not one draw


def test_minimum_support_withholds_citations(tmp_path):
    result = analyze(synthetic_run(tmp_path / "few", n_chains=3, n_tokens=20), n_boot=20, save=False)
    assert result.citations_[0].startswith("Primary result withheld")
    assert not any(c.startswith("Descriptively") or "HR =" in c for c in result.citations_)
    assert cites(result, "withheld (below the minimum support of 6 chains")
    relaxed = analyze(synthetic_run(tmp_path / "few2", n_chains=3, n_tokens=20), n_boot=20, save=False,
                      min_chains=3, min_tokens=5)
    assert relaxed.citations_[0].startswith("Primary result (pre-specified)")


def cites(result, phrase):
    return any(phrase in c for c in result.citations_)


def test_one_category_only(tmp_path):
    run = synthetic_run(tmp_path / "one", n_chains=4, n_tokens=12)
    for index in run.part_indices("labels"):
        part = run.read_part("labels", index).assign(category="grammar", label="FUNCTION")
        run.write_part("labels", index, part)
    result = analyze(run, n_boot=50)
    assert cites(result, "Only one category (grammar)")
    assert "needs at least 2 category groups" in result.tests_["logrank_category"]["note"]


def test_all_censored(tmp_path):
    result = analyze(synthetic_run(tmp_path / "c", n_chains=3, n_tokens=10, keep_ratio=1.0), n_boot=20)
    assert cites(result, "Every token is censored")
    assert "all censored" in result.tests_["cox_category"]["note"]


def test_one_token_chains(tmp_path):
    result = analyze(synthetic_run(tmp_path / "t", n_chains=3, n_tokens=1), n_boot=20)
    assert cites(result, "single reasoning token") and cites(result, "No chain has 2 or more reasoning tokens")


def test_mixed_one_token_chain(tmp_path):
    run = synthetic_run(tmp_path / "m", n_chains=4, n_tokens=12)
    part = run.read_part("tokens", 0).iloc[:1].assign(n_tokens=1, survival=1.0, deleted_step=pd.array([1], "Int64"))
    run.write_part("tokens", 0, part)
    result = analyze(run, n_boot=20)
    assert cites(result, "1 chain(s) have a single reasoning token")
    assert result.tests_["logrank_category"]["n_chains"] == 3


def test_category_with_zero_tokens(tmp_path):
    run = synthetic_run(tmp_path / "z", n_chains=3, n_tokens=12)
    result = analyze(run, n_boot=20, categories=["symbolic_math", "grammar", "quantity"])
    assert cites(result, "Category 'quantity' has no tokens in this run")


def test_no_baselines_no_attention_untagged(tmp_path):
    result = analyze(synthetic_run(tmp_path / "b", n_chains=3, n_tokens=12, baselines=False), n_boot=20)
    assert cites(result, "No baseline orderings") and cites(result, "No attention features")
    untagged = analyze(synthetic_run(tmp_path / "u", n_chains=3, n_tokens=12, tagged=False), n_boot=20)
    assert cites(untagged, "cotsurvival tag") and "tau" in untagged.tests_


def test_cli_analyze(tmp_path):
    run = synthetic_run(tmp_path / "cli", n_chains=3, n_tokens=10)
    out = tmp_path / "stats"
    assert main(["analyze", str(run.path), "--out", str(out), "--n-boot", "20", "--no-mixed",
                 "--level", "category", "--min-chains", "3", "--primary", "grammar"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert "mixed_category" not in stats["tables"] and stats["config"]["min_chains"] == 3
    assert stats["primary"]["targets"] == ["grammar"] and stats["primary"]["n_chains"] == 3
    assert main(["analyze", str(tmp_path / "missing")]) == 2
