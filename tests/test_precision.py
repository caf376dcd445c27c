"""Deletion costs are scored in float32 unless asked otherwise, because half precision rounds them
enough to switch the greedy path (BENCHMARKS.md, "Precision"); asking for it warns."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cotsurvival.errors import PrecisionWarning
from cotsurvival.testing import EXAMPLE_CHAINS

from cli_helpers import write_jsonl


class Loaded(Exception):
    """Raised by the stand-in loader once it has seen what prune asked for."""


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_prune_auto_dtype_is_float32_on_every_device(tmp_path, monkeypatch, device):
    import cotsurvival.models as models
    from cotsurvival.pruning import prune

    asked = {}

    def fake_load(spec, *, device, dtype, **kwargs):
        asked.update(device=device, dtype=dtype, resolved=models.resolve_dtype(dtype, torch.device(device)))
        raise Loaded

    monkeypatch.setattr(models, "load_model", fake_load)
    source = write_jsonl(tmp_path / "chains.jsonl", EXAMPLE_CHAINS)
    with pytest.raises(Loaded):
        prune(source, tmp_path / "run", device=device, progress=False)
    assert asked["resolved"] == torch.float32
    # the other stages keep their default: bfloat16 on CUDA (generation is not a difference of sums)
    assert models.resolve_dtype("auto", torch.device(device)) == (torch.bfloat16 if device == "cuda" else torch.float32)
    with pytest.raises(Loaded):
        prune(source, tmp_path / "run", device=device, dtype="float16", progress=False)
    assert asked["dtype"] == "float16"  # an explicit choice is kept


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_prune_warns_and_records_its_dtype(tmp_path, tiny_dir, dtype):
    from cotsurvival.pruning import prune

    source = write_jsonl(tmp_path / "chains.jsonl", EXAMPLE_CHAINS[:1])
    with pytest.warns(PrecisionWarning, match=f"scoring in {dtype} rounds deletion costs"):
        run = prune(source, tmp_path / "run", model=str(tiny_dir), device="cpu", dtype=dtype, keep_ratio=0.8,
                    progress=False)
    assert run.read_manifest()["model"]["dtype"] == dtype


def test_float32_prune_does_not_warn(tmp_path, tiny_dir, recwarn):
    from cotsurvival.pruning import prune

    source = write_jsonl(tmp_path / "chains.jsonl", EXAMPLE_CHAINS[:1])
    prune(source, tmp_path / "run", model=str(tiny_dir), device="cpu", keep_ratio=0.8, progress=False)
    assert not [w for w in recwarn if "rounds deletion costs" in str(w.message)]


def test_bfloat16_cost_error_is_an_order_larger_than_float16(tiny_dir):
    """The reason for the default, on the tiny model: first-step deletion costs against float64."""
    from cotsurvival.encoding import encode_chain
    from cotsurvival.models import load_model
    from cotsurvival.pruning.engine import greedy_prune
    from cotsurvival.pruning.methods import make_scorer

    costs = {}
    for dtype in ("float64", "float32", "float16", "bfloat16"):
        model, tokenizer, _ = load_model(str(tiny_dir), device="cpu", dtype=dtype)
        encoded = encode_chain(EXAMPLE_CHAINS[0], tokenizer)
        trace = greedy_prune(make_scorer(model, method="prefix"), encoded, 1)
        costs[dtype] = np.asarray(trace.step_costs[0], dtype=np.float64)
    error = {d: np.median(np.abs(costs[d] - costs["float64"])) for d in ("float32", "float16", "bfloat16")}
    assert error["float32"] < 1e-3
    assert error["bfloat16"] > 3 * error["float16"], error  # 8 vs 11 mantissa bits; measured 5.3x


@pytest.mark.filterwarnings("ignore:scoring in float16")
@pytest.mark.parametrize("approx", [None, "lazy", "topk:0.5"])
def test_overflowing_model_is_refused_not_ranked(tmp_path, tiny_dir, approx):
    """A float16 overflow gives NaN costs, which argmax would take as the best deletion: E114 instead,
    and no chain is committed."""
    from cotsurvival.errors import CotSurvivalError
    from cotsurvival.models import load_model
    from cotsurvival.pruning import prune
    from cotsurvival.rundir import RunDir

    model, tokenizer, info = load_model(str(tiny_dir), device="cpu", dtype="float16")
    with torch.no_grad():  # logits beyond float16's 65,504: the head overflows to inf, log_softmax to NaN
        model.get_output_embeddings().weight.mul_(1e4)
    source = write_jsonl(tmp_path / "chains.jsonl", EXAMPLE_CHAINS[:1])
    with pytest.raises(CotSurvivalError) as raised:
        prune(source, tmp_path / "run", loaded_model=(model, tokenizer, info), keep_ratio=0.5, approx=approx,
              progress=False)
    assert raised.value.code == "E114"
    assert "--dtype float32" in raised.value.one_line() and "'ex-1'" in raised.value.one_line()
    assert not RunDir(tmp_path / "run").exists() or RunDir(tmp_path / "run").part_indices("tokens") == []


def test_half_precision_run_says_so_in_citations_and_comparisons(tmp_path, tiny_dir):
    """A run scored in bfloat16 carries the precision note in analyze's citations, every report
    caption and first in a comparison's citations; the float32 run beside it carries none."""
    from cotsurvival.analysis import analyze
    from cotsurvival.comparison import compare
    from cotsurvival.pruning import prune
    from cotsurvival.rundir import RunDir
    from cotsurvival.taxonomy.runs import tag_run

    with pytest.warns(PrecisionWarning, match="scoring in bfloat16"):
        prune(EXAMPLE_CHAINS, tmp_path / "half", model=str(tiny_dir), device="cpu", dtype="bfloat16", progress=False)
    prune(EXAMPLE_CHAINS, tmp_path / "full", model=str(tiny_dir), device="cpu", progress=False)
    for name in ("half", "full"):
        tag_run(tmp_path / name)
    said = [s for s in analyze(tmp_path / "half", n_boot=50, mixed=False).citations_ if "scored in bfloat16" in s]
    # Without replicates the note quotes the run's own near-tie diagnostic, not another model's τ.
    diagnostics = RunDir(tmp_path / "half").read_manifest()["diagnostics"]
    assert len(said) == 1 and (f"{diagnostics['n_near_tie_steps']} of {diagnostics['n_steps']} greedy steps"
                               in said[0]) and "0.74" not in said[0]
    assert not any("scored in" in s for s in analyze(tmp_path / "full", n_boot=50, mixed=False).citations_)
    from cotsurvival.reports import build_report

    report = build_report(tmp_path / "half", tmp_path / "report", widths=("one",), run_analysis=False)
    page = (tmp_path / "report" / "index.html").read_text()
    assert page.count("Deletion costs were scored in bfloat16") >= len(report.figures) > 0  # every caption
    comparison = compare([tmp_path / "half", tmp_path / "full"], n_boot=50, figures=False)
    assert comparison.citations[0].startswith("Note: 'half': Deletion costs were scored in bfloat16")
    assert not any("'full'" in c and "scored in" in c for c in comparison.citations)
