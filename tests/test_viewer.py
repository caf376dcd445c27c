"""The viewer's embedded data: equal to the run, safely escaped, one self-contained file."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from cotsurvival.cli import main
from cotsurvival.errors import CotSurvivalError
from cotsurvival.reports import build_viewer
from cotsurvival.reports.viewer import embed_json
from cotsurvival.testing import synthetic_run

EVIL = ["<script>alert(1)</script>", '"onerror=alert(2)', "<img src=x onerror=alert(3)>", "&amp;", "</script>"]


def make_evil_run(path):
    """A synthetic run whose chain 0 has markup in its tokens, question and id (offsets kept consistent)."""
    run = synthetic_run(path, n_chains=3, n_tokens=20, seed=2)
    tokens = run.read_part("tokens", 0)
    texts = list(tokens["text"].str.strip())
    texts[: len(EVIL)] = EVIL
    starts = [sum(len(t) + 1 for t in texts[:i]) for i in range(len(texts))]
    tokens["text"] = texts
    tokens["char_start"] = starts
    tokens["char_end"] = [s + len(t) for s, t in zip(starts, texts)]
    run.write_part("tokens", 0, tokens)
    chains = run.read_chains()
    chains.loc[0, "reasoning"] = " ".join(texts)
    chains.loc[0, "question"] = "<b>bold?</b> </script><script>alert(4)</script>"
    chains.loc[0, "chain_id"] = "<i>evil</i>"
    run.write_chains(chains)
    return run


def embedded(path) -> dict:
    page = path.read_text(encoding="utf-8")
    block = re.search(r'<script type="application/json" id="cs-data">(.*?)</script>', page, re.S).group(1)
    assert "<" not in block and ">" not in block and "&" not in block
    return json.loads(block)


def test_embedded_data_equals_the_run(tmp_path):
    run = synthetic_run(tmp_path / "run", n_chains=3, n_tokens=12, keep_ratio=0.25)
    data = embedded(build_viewer(run, tmp_path / "v.html"))
    assert [c["index"] for c in data["chains"]] == [0, 1, 2]
    for chain in data["chains"]:
        i = chain["index"]
        tokens = run.read_part("tokens", i).sort_values("position")
        steps = run.read_part("steps", i)
        assert chain["n"] == len(tokens) and chain["steps"] == steps["step"].max()
        assert chain["orderings"]["greedy"] == [None if pd.isna(v) else int(v) for v in tokens["deleted_step"]]
        assert set(chain["orderings"]) == {"greedy", "random", "surprisal", "loo", "attention"}
        base = run.read_part("baselines", i)
        rand = base[base["ordering"] == "random"].sort_values("position")["deleted_step"]
        assert chain["orderings"]["random"] == [None if pd.isna(v) else int(v) for v in rand]
        # costs[s] = step s+1's candidates in position order; 4 significant digits
        traces = run.read_part("traces", i)
        for s, costs in enumerate(chain["costs"]):
            expected = traces[traces["step"] == s + 1].sort_values("position")["cost"].to_numpy()
            assert costs == pytest.approx(expected, rel=1e-3)
            assert len(costs) == chain["n"] - s
        assert chain["objective"] == pytest.approx(steps.sort_values("step")["objective"].to_numpy(), rel=1e-3)
        assert "".join(chain["seg"]) + chain["tail"] == run.read_chains().loc[i, "reasoning"]


def test_markup_is_escaped_and_only_our_scripts_exist(tmp_path):
    run = make_evil_run(tmp_path / "run")
    path = build_viewer(run, tmp_path / "v.html")
    page = path.read_text(encoding="utf-8")
    assert page.count("<script") == 2  # the JSON block and the page's own script
    assert "alert(1)</script>" not in page and "<img src=x" not in page
    assert "http://" not in page and "https://" not in page
    data = embedded(path)
    assert data["chains"][0]["text"][: len(EVIL)] == EVIL
    assert data["chains"][0]["question"].startswith("<b>bold?</b>")
    assert "Content-Security-Policy" in page


def test_embed_json_round_trip():
    value = {"t": "</script><!-- & \u2028 é"}
    text = embed_json(value)
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == value


def test_chain_selection_and_errors(tmp_path, capsys):
    run = synthetic_run(tmp_path / "run", n_chains=4, n_tokens=10)
    data = embedded(build_viewer(run, tmp_path / "v.html", chains=[2, 0], traces=False))
    assert [c["index"] for c in data["chains"]] == [2, 0] and data["chains"][0]["costs"] is None
    assert len(embedded(build_viewer(run, tmp_path / "w.html", max_chains=1))["chains"]) == 1
    with pytest.raises(CotSurvivalError) as info:
        build_viewer(run, tmp_path / "x.html", chains=[7])
    assert info.value.code == "E051"
    # Chosen by id (the chains file's `id`), on the command line or in a file, in the order given.
    assert main(["view", str(run.path), "--out", str(tmp_path / "y.html"), "--chains", "syn-3,syn-1"]) == 0
    assert [c["index"] for c in embedded(tmp_path / "y.html")["chains"]] == [3, 1]
    ids = tmp_path / "ids.txt"
    ids.write_text("# two chains\nsyn-2\nsyn-0\n")
    assert main(["view", str(run.path), "--out", str(tmp_path / "i.html"), "--ids", str(ids)]) == 0
    assert [c["id"] for c in embedded(tmp_path / "i.html")["chains"]] == ["syn-2", "syn-0"]
    capsys.readouterr()
    for args, code in ((["--chains", "syn-1,syn-9"], "E053"), (["--chains", "syn-1", "--ids", str(ids)], "E054"),
                       (["--chains", ","], "E055")):
        assert main(["view", str(run.path), "--out", str(tmp_path / "z.html"), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error[{code}]") and "\n" not in err
        assert not (tmp_path / "z.html").exists()
    with pytest.raises(CotSurvivalError) as info:
        build_viewer(run, tmp_path / "x.html", chain_ids=["nope"])
    assert info.value.code == "E053" and "syn-0" in info.value.message
