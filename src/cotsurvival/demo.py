"""``cotsurvival demo``: the whole study on the built-in corpus and model, in minutes on a CPU.

Picks the ``limit`` shortest chains of the built-in GSM8K corpus (greedy pruning costs grow with
the cube of the reasoning length, so short chains keep a CPU demo to a few minutes), ranks every
token (keep ratio 0), computes the four baselines, tags, extracts attention features, analyses
and writes the report and the viewer.
"""
from __future__ import annotations

import time
from pathlib import Path

import click

from .analysis import analyze
from .analysis.attention import compute_attention_features
from .chains import shortest_chains  # the one home of the selection (also study's `shortest = N`)
from .models import load_model
from .pruning import prune
from .reports import build_report, build_viewer
from .rundir import RunDir
from .taxonomy import tag_run

__all__ = ["run_demo", "shortest_chains"]


def run_demo(out: str | Path = "demo-run", *, limit: int = 6, keep_ratio: float = 0.0, model: str = "smollm2-135m",
             progress: bool = True) -> dict[str, Path]:
    """Run every stage; returns the paths of what it wrote."""

    out = Path(out)
    timings = {}
    began = time.perf_counter()
    loaded = load_model(model)
    say = click.echo if progress else (lambda *_: None)
    say(f"[1/5] pruning {limit} built-in GSM8K chains with {loaded[2].spec} on {loaded[2].device} ...")
    run = prune(shortest_chains(limit), out / "run", loaded_model=loaded, keep_ratio=keep_ratio,
                baselines=["random", "surprisal", "loo", "attention"], progress=progress)
    timings["prune"] = time.perf_counter() - began
    say("[2/5] tagging tokens ...")
    tag_run(run)
    say("[3/5] attention features ...")
    compute_attention_features(run, loaded[0], progress=progress)
    say("[4/5] statistics ...")
    analyze(run)
    say("[5/5] report and viewer ...")
    build_report(run, out / "report")
    build_viewer(run, out / "viewer.html")
    timings["total"] = time.perf_counter() - began
    RunDir(run.path).update_manifest(demo_timings={k: round(v, 1) for k, v in timings.items()})
    return {"run": run.path, "stats": run.stats_dir, "citations": run.stats_dir / "citations.md",
            "report": out / "report" / "index.html", "viewer": out / "viewer.html",
            "seconds": timings["total"]}
