"""load_run / orderings_long / kaplan_meier: joined columns, errors, KM against lifelines."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cotsurvival.analysis import kaplan_meier, load_run, orderings_long
from cotsurvival.errors import CotSurvivalError
from cotsurvival.testing import synthetic_run


@pytest.fixture(scope="module")
def censored_run(tmp_path_factory):
    return synthetic_run(tmp_path_factory.mktemp("run") / "r", n_chains=6, n_tokens=30, keep_ratio=0.3, seed=1)


def test_load_run_columns_and_values(censored_run):
    df = load_run(censored_run)
    raw = pd.read_parquet(censored_run.table_dir("tokens"))
    assert len(df) == len(raw)
    assert list(df.columns[:14]) == ["chain_index", "chain_id", "position", "n_tokens", "rel_position", "text",
                                     "token_len", "is_whitespace", "label", "category", "deleted_step", "survival",
                                     "censored", "deletion_cost"]
    row = df.iloc[3]
    assert row.rel_position == pytest.approx(row.position / (row.n_tokens - 1))
    assert row.token_len == len(row.text)
    for name in ("random", "surprisal", "loo", "attention"):
        assert f"survival_{name}" in df and f"censored_{name}" in df
    base = pd.read_parquet(censored_run.table_dir("baselines"))
    pick = base[(base.ordering == "random") & (base.chain_index == 2)].set_index("position")["survival"]
    mine = df[df.chain_index == 2].set_index("position")["survival_random"]
    np.testing.assert_allclose(mine.sort_index(), pick.sort_index())


def test_orderings_long(censored_run):
    long = orderings_long(censored_run)
    assert list(long["ordering"].cat.categories) == ["greedy", "attention", "loo", "random", "surprisal"]
    assert long.groupby("ordering", observed=True).size().nunique() == 1


def test_untagged_run_message(tmp_path):
    run = synthetic_run(tmp_path / "u", n_chains=2, n_tokens=8, tagged=False, baselines=False)
    with pytest.raises(CotSurvivalError) as info:
        load_run(run)
    assert info.value.code == "E040" and "cotsurvival tag" in info.value.message
    df = load_run(run, require_tags=False)
    assert df["category"].isna().all() and "survival_random" not in df


def test_not_a_run(tmp_path):
    with pytest.raises(CotSurvivalError) as info:
        load_run(tmp_path)
    assert info.value.code == "E007"


def test_one_token_chain_rel_position(tmp_path):
    run = synthetic_run(tmp_path / "o", n_chains=2, n_tokens=1, baselines=False)
    df = load_run(run)
    assert (df["n_tokens"] == 1).all() and (df["rel_position"] == 0).all()


@pytest.mark.parametrize("group", ["category", "label", None])
def test_kaplan_meier_matches_lifelines(censored_run, group):
    from lifelines import KaplanMeierFitter

    df = load_run(censored_run)
    km = kaplan_meier(df, group=group)
    groups = df.groupby(group) if group else [("all", df)]
    for name, sub in groups:
        fit = KaplanMeierFitter(alpha=0.05).fit(sub["survival"], ~sub["censored"])
        mine = km[km.group == name].set_index("time")
        theirs = fit.survival_function_.join(fit.confidence_interval_)
        theirs = theirs.loc[mine.index]  # lifelines also lists censoring-only times
        np.testing.assert_allclose(mine["survival"], theirs.iloc[:, 0], rtol=1e-10)
        np.testing.assert_allclose(mine["lower"], theirs.iloc[:, 1], rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(mine["upper"], theirs.iloc[:, 2], rtol=1e-8, atol=1e-12)
        table = fit.event_table.loc[mine.index[1:]]
        np.testing.assert_array_equal(mine["at_risk"].iloc[1:], table["at_risk"])


def test_kaplan_meier_all_censored_and_hand_example():
    frame = pd.DataFrame({"survival": [0.2, 0.2, 0.5, 0.7, 0.9], "censored": [False, True, False, True, False],
                          "category": "a"})
    km = kaplan_meier(frame)
    # Hand-worked: S(0.2) = 4/5, S(0.5) = 4/5 * 2/3, S(0.9) = 0.
    np.testing.assert_allclose(km["survival"], [1.0, 0.8, 0.8 * 2 / 3, 0.0])
    np.testing.assert_array_equal(km["at_risk"], [5, 5, 3, 1])
    assert km["lower"].iloc[-1] == 0 and km["upper"].iloc[-1] == 0
    flat = kaplan_meier(frame.assign(censored=True))
    assert len(flat) == 1 and flat["survival"].iloc[0] == 1.0


def test_load_run_units_follow_the_sentences_of_the_reasoning(tmp_path):
    """``unit``/``final_unit`` come from the text (the splitter resampling cuts at), checked against a
    hand-placed layout: sentence ends after tokens 9 and 19 (a full stop, then a line break)."""
    run = synthetic_run(tmp_path / "u", n_chains=2, n_tokens=30, seed=3)
    part = run.read_part("tokens", 0)
    n = len(part)
    texts = [f"{'' if i == 0 else ' '}w{i}" for i in range(n)]
    texts[9], texts[10], texts[19], texts[20] = " w9.", " Then", " w19", "\nSo"
    starts = np.cumsum([0] + [len(t) for t in texts[:-1]])
    part = part.assign(text=texts, char_start=starts, char_end=starts + np.array([len(t) for t in texts]))
    run.write_part("tokens", 0, part)
    chains = run.read_chains()
    chains.loc[chains.chain_index == 0, "reasoning"] = "".join(texts)
    run.write_chains(chains)
    df = load_run(run, baselines=False, attention=False)
    chain = df[df.chain_index == 0].sort_values("position")
    expected = np.where(np.arange(n) < 10, 0, np.where(np.arange(n) < 20, 1, 2))
    np.testing.assert_array_equal(chain["unit"], expected)
    np.testing.assert_array_equal(chain["final_unit"], np.arange(n) >= 20)
    # the other chain's reasoning has no sentence break: one unit, all of it final (no jump to adjust)
    assert df.loc[df.chain_index == 1, "final_unit"].all()
