"""The demo end to end (every stage, real spaCy tagger) on the tiny model saved as a local model directory."""
from __future__ import annotations

import json

import pandas as pd
import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_every_stage(tmp_path, tiny_dir):
    from cotsurvival.demo import run_demo, shortest_chains

    paths = run_demo(tmp_path / "demo", limit=2, keep_ratio=0.5, model=str(tiny_dir), progress=False)
    chains = shortest_chains(2)
    tokens = pd.read_parquet(paths["run"] / "tokens.parquet")
    assert sorted(tokens["chain_id"].unique()) == sorted(c.id for c in chains)
    from cotsurvival.analysis import load_run

    labelled = load_run(paths["run"])
    assert len(labelled) == len(tokens) and labelled.attrs["labels_source"] == "rule"
    assert labelled["category"].notna().all() and labelled["label"].notna().all()
    baselines = pd.read_parquet(paths["run"] / "baselines.parquet")
    assert set(baselines["ordering"]) == {"random", "surprisal", "loo", "attention"}
    attention = pd.read_parquet(paths["run"] / "attention.parquet")
    assert len(attention) == len(tokens)
    stats = json.loads((paths["stats"] / "stats.json").read_text())
    assert stats["counts"]["n_tokens"] == len(tokens) and stats["counts"]["n_chains"] == len(chains)
    assert sum(stats["counts"]["categories"].values()) == len(tokens)
    citations = paths["citations"].read_text()
    assert f"in {len(chains)} chains" in citations
    page = paths["report"].read_text()
    assert "fig1_kaplan_meier" in page or "data:image/png;base64" in page
    assert paths["viewer"].read_text().lstrip().lower().startswith("<!doctype html")
    manifest = json.loads((paths["run"] / "manifest.json").read_text())
    assert manifest["demo_timings"]["total"] > 0 and manifest["taxonomy"]["version"]
