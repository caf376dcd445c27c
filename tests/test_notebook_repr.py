"""Jupyter display: ``RunDir._repr_html_``, ``RunDir.chain(i)`` and ``AnalysisResult._repr_html_``."""
from __future__ import annotations

import html

import pytest

from cotsurvival.analysis import analyze, load_run
from cotsurvival.errors import CotSurvivalError
from cotsurvival.reports.notebook import ChainView, chain_html, run_summary_html
from cotsurvival.rundir import RunDir
from cotsurvival.testing import synthetic_run

EVIL = "<script>alert(1)</script>"


def make_run(path, evil: bool = True) -> RunDir:
    """A synthetic run; chain 0's first token (and its question and id) carry markup."""
    run = synthetic_run(path, n_chains=4, n_tokens=16, seed=3)
    if evil:
        tokens = run.read_part("tokens", 0)
        texts = list(tokens["text"])
        texts[0] = EVIL
        starts, position = [], 0
        for text in texts:
            starts.append(position)
            position += len(text)
        tokens["text"] = texts
        tokens["char_start"] = starts
        tokens["char_end"] = [s + len(t) for s, t in zip(starts, texts)]
        run.write_part("tokens", 0, tokens)
        chains = run.read_chains()
        chains.loc[0, "reasoning"] = "".join(texts)
        chains.loc[0, "question"] = "Is <b>this</b> bold?"
        chains.loc[0, "chain_id"] = "<i>evil</i>"
        run.write_chains(chains)
    return run


def test_rundir_repr_html_shows_the_runs_numbers(tmp_path):
    run = make_run(tmp_path / "run")
    page = run._repr_html_()
    assert page == run_summary_html(run)
    tokens = load_run(run, require_tags=False, baselines=False, attention=False)
    for category, group in tokens.groupby("category"):
        # A full ranking (nothing censored): the Kaplan–Meier median is the sample median; the mean is
        # the chain-level one (mean over chains of each chain's mean), as everywhere else.
        assert not group["censored"].any()
        chain_mean = group.groupby("chain_index")["survival"].mean().mean()
        assert (f"<td>{len(group):,}</td><td>{len(group):,}</td><td>{group['survival'].median():.3f}</td>"
                f"<td>{chain_mean:.3f}</td>") in page
    assert "<td>4</td>" in page  # chains (manifest n_chains)
    assert "synthetic" in page
    assert "<script" not in page


def test_chain_view_renders_and_escapes(tmp_path):
    run = make_run(tmp_path / "run")
    view = run.chain(0)
    assert isinstance(view, ChainView)
    page = view._repr_html_()
    assert page == chain_html(run, 0)
    assert "<script" not in page and "<b>this" not in page and "<i>evil" not in page
    assert html.escape(EVIL) in page
    assert html.escape("<i>evil</i>") in page
    n = len(run.read_part("tokens", 0))
    assert f"{n} tokens" in page
    assert page.count("<span style=\"background:rgba") >= n  # one span per token (plus the legend)
    assert "ChainView" in repr(view) and "chain_index=0" in repr(view)


def test_chain_view_of_an_unknown_chain_fails_at_once(tmp_path):
    run = make_run(tmp_path / "run", evil=False)
    with pytest.raises(CotSurvivalError, match="E051"):
        run.chain(99)


def test_analysis_result_repr_html(tmp_path):
    run = make_run(tmp_path / "run")
    result = analyze(run, n_boot=20, mixed=False, save=False)
    page = result._repr_html_()
    assert "<script" not in page
    assert f"{result.counts_['n_tokens']:,}" in page
    assert f">{result.counts_['n_chains']}</td>" in page
    primary = result.primary_  # the chain-level primary test is the headline (issue 11)
    assert f"{primary['estimate']:+.3f}" in page and "Primary (chain-level) test" in page
    assert page.count("<li>") == len(result.citations_) > 0
    for sentence in result.citations_:
        assert html.escape(sentence) in page


def test_analysis_result_repr_html_escapes_notes(tmp_path):
    run = make_run(tmp_path / "run", evil=False)
    result = analyze(run, n_boot=0, mixed=False, save=False)
    result.citations_.append(f"Note: {EVIL}")
    result.counts_["model"] = "<img src=x onerror=alert(2)>"
    page = result._repr_html_()
    assert "<script" not in page and "<img" not in page
    assert html.escape(EVIL) in page


def test_rundir_repr_states_near_ties_in_the_provenance_wording(tmp_path):
    """The run's repr words the near-tie diagnostic with the one sentence citations use."""
    from cotsurvival.provenance import near_tie_sentence

    run = make_run(tmp_path / "run", evil=False)
    diagnostics = {"near_tie_threshold": 1.5e-4, "dtype": "float32", "n_steps": 60, "n_near_tie_steps": 2,
                   "n_chains_with_near_tie": 1, "min_gap": 2e-5}
    run.update_manifest(diagnostics=diagnostics)
    page = run._repr_html_()
    sentence = near_tie_sentence(diagnostics, 4)
    assert sentence.startswith("2 of 60 greedy steps in 1 of 4 chains were near-ties")
    assert html.escape(sentence) in page
