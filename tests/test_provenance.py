"""Provenance notes (cotsurvival.provenance): every measured figure they quote is a BENCHMARKS.md row
(read from one data file), the sentences are the hand-worked ones, and wording them needs no torch."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cotsurvival.provenance import fidelity_data, scoring_notes
from cotsurvival.pruning.approx import parse_approx

BENCHMARKS = (Path(__file__).parents[1] / "BENCHMARKS.md").read_text(encoding="utf-8")
LAZY = "lazy:radius=2,batch=1,refresh=0.99,same=1,age=0"


def _benchmark_rows(section: str) -> dict[str, tuple]:
    """Fidelity rows of the first table in a BENCHMARKS.md section: canonical spec -> (τ, lo, hi,
    same sign, same order)."""
    body = BENCHMARKS.split(section, 1)[1]
    table = body[body.index("\n|"):]
    table = table[: table.index("\n\n")]
    rows = {}
    for line in table.splitlines():
        line = line.replace("**", "")  # bold marks the best figures
        match = re.match(r"\| `([^`]+)`[^|]*\| ([\d.]+) \[([\d.]+), ([\d.]+)\][^|]*\| (\d)/4 / \d/4 \| (yes|no)", line)
        if match and not match.group(1).startswith("exact"):
            spec, tau, lo, hi, sign, order = match.groups()
            rows[parse_approx(spec).describe()] = (float(tau), float(lo), float(hi), int(sign), order == "yes")
    return rows


def test_measured_fidelity_is_the_benchmark_tables():
    """The τ and category agreement every approximate run's citations quote are BENCHMARKS.md's rows."""
    data = fidelity_data()
    for section, chains in (("### Fidelity at 101–159 tokens", "longer"), ("### Shorter chains", "short")):
        rows = _benchmark_rows(section)
        quoted = {m["spec"]: m for m in data["approximations"] if m["chains"] == chains}
        assert quoted and set(quoted) <= set(rows), (set(quoted) - set(rows))
        for spec, m in quoted.items():
            assert parse_approx(spec).describe() == spec  # keyed as manifests record the spec
            assert (m["tau"], m["lo"], m["hi"], m["same_sign"], m["same_order"]) == rows[spec], spec
        assert data["chain_sets"][chains].split("of ")[-1].replace("-", "–") in section or chains == "short"


def test_ensemble_fidelity_is_the_stability_table():
    """The figures ``--approx auto`` chooses by (fidelity.json "ensemble") are the rows of BENCHMARKS.md's
    tables of approximations against the exact replicate ensemble, one per chain set
    (bench/stability.py --set S report --update-fidelity)."""
    quoted = fidelity_data()["ensemble"]["approximations"]
    section = BENCHMARKS.split("## Rank stability: replicate paths", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for chain_set, body in re.findall(r"Approximations against the exact replicate ensemble \(T = 0\.05, chain set "
                                      r"`(\w+)`\):\n\n(\|.*?)\n\n", section, flags=re.S):
        for line in body.splitlines():
            match = re.match(r"\| `([^`]+)` \| (\d+) \| ([\d.]+) \[[^|]*\| ([\d.]+) \[[^|]*\|[^|]*\|[^|]*\| (\d)/(\d) \| "
                             r"[\d,]+ \(([\d.]+)×\)", line)
            if match:
                spec, n, tau, own, same, cats, ratio = match.groups()
                rows[chain_set, spec] = (int(n), float(tau), float(own), int(same), int(cats), float(ratio))
    assert quoted and {(m.get("set", "short"), m["spec"]) for m in quoted} == set(rows)
    for m in quoted:
        assert parse_approx(m["spec"]).describe() == m["spec"]
        assert (m["n_chains"], m["tau"], m["own_tau"], m["same_sign"], m["n_categories"],
                round(m["row_ratio"], 1)) == rows[m.get("set", "short"), m["spec"]], m["spec"]


def test_precision_reference_is_the_benchmark_rows():
    precision = fidelity_data()["precision"]
    per_chain = re.search(r"\| chain \(reasoning tokens\) \| bfloat16 \| float16 \| float64 \|\n\|[-|]+\|\n((?:\|.*\n)+)",
                          BENCHMARKS)
    for column, (dtype, quoted) in enumerate(precision["dtypes"].items(), 1):
        row = re.search(rf"\(`exact@{dtype}`\) \| ([\d.]+) \[([\d.]+), ([\d.]+)\]", BENCHMARKS)
        assert row, dtype
        assert (quoted["tau"], quoted["lo"], quoted["hi"]) == tuple(float(x) for x in row.groups())
        values = [float(line.split("|")[1 + column].strip(" *")) for line in per_chain.group(1).splitlines()]
        assert quoted["range"] == f"{min(values):.2f}-{max(values):.2f}", dtype


def test_cost_errors_are_the_benchmark_sentence():
    """Step-1 cost errors per dtype (median range (max range)) as BENCHMARKS.md 'Precision' states them."""
    errors = fidelity_data()["cost_error_nats"]
    sentence = re.search(r"Step-1 deletion costs against the float32 `crossstep` ones, median \(max\) in nats: "
                         r"bfloat16 ([\d.]+)–([\d.]+)\n?\s*\(([\d.]+)–([\d.]+)\), float16 ([\d.]+)–([\d.]+) \(([\d.]+)–([\d.]+)\)",
                         BENCHMARKS)
    assert sentence
    b_lo, b_hi, bmax_lo, bmax_hi, f_lo, f_hi, fmax_lo, fmax_hi = sentence.groups()
    assert errors["bfloat16"]["median_range"] == f"{b_lo}-{b_hi}" and errors["bfloat16"]["median"] == float(b_hi)
    assert errors["bfloat16"]["max_range"] == f"{bmax_lo}-{bmax_hi}" and errors["bfloat16"]["max"] == float(bmax_hi)
    assert errors["float16"]["median_range"] == f"{f_lo}-{f_hi}" and errors["float16"]["median"] == float(f_hi)
    assert errors["float16"]["max_range"] == f"{fmax_lo}-{fmax_hi}" and errors["float16"]["max"] == float(fmax_hi)
    assert "float64 3.6·10⁻⁵ (1.5·10⁻⁴)" in BENCHMARKS
    assert (errors["float32"]["median"], errors["float32"]["max"]) == (3.6e-5, 1.5e-4)


def test_approximation_note_gives_category_agreement_and_scale():
    (note,) = scoring_notes({"engine": {"approx": {"method": "lazy", "spec": LAZY}}})
    assert note.kind == "approximation"
    assert "tau was 0.54 [95% CI 0.40, 0.67] on 5" in note.text
    assert "kept the sign of 3 of 4 category effects and kept the category order" in note.text
    assert "exact engine itself run in float16 scored tau 0.88" in note.text
    assert note.label == f"Approximate ranks: prune --approx {LAZY} (Kendall τ vs exact 0.54 [0.40, 0.67], 5 chains; BENCHMARKS.md)"
    (unmeasured,) = scoring_notes({"engine": {"approx": {"method": "topk", "spec": "topk:0.3"}}})
    assert "not measured" in unmeasured.text and "category" not in unmeasured.text
    auto = {"method": "auto", "exact_max_tokens": 150, "long": {"spec": "topk:0.1,window=64,block=64"}}
    (chosen,) = scoring_notes({"engine": {"approx": auto}})
    assert "exact for chains up to 150" in chosen.text and "tau was 0.51 [95% CI 0.45, 0.55]" in chosen.text
    assert chosen.label.startswith("Approximate ranks above the exact limit")


def test_exact_float32_run_without_diagnostics_has_no_note():
    assert scoring_notes({"model": {"dtype": "float32"}, "engine": {"approx": None}}) == []


def test_half_precision_quotes_the_runs_own_stability_when_it_has_replicates():
    manifest = {"model": {"dtype": "torch.float16"}, "replicates": {"k": 8, "scale_nats": 0.05, "seed": 0}}
    # stats.json["stability"] as analyze writes it
    stability = {"tau": {"mean": 0.912, "ci_low": 0.853, "ci_high": 0.951, "n_chains": 9}, "n_replicates": 8}
    (note,) = scoring_notes(manifest, stability=stability)
    assert note.kind == "precision" and note.text.startswith("Deletion costs were scored in float16")
    assert ("this run's ranks reproduced at a mean Kendall tau of 0.91 [95% CI 0.85, 0.95] across 8 paths "
            "perturbed by 0.05 nats") in note.text and "9 chains" in note.text
    reference = fidelity_data()["precision"]["dtypes"]["float16"]
    assert f"{reference['tau']:.2f}" not in note.text  # no constant from another model's chains
    # The same run in float32 carries its stability as a stability note.
    (plain,) = scoring_notes({**manifest, "model": {"dtype": "float32"}}, stability=stability)
    assert plain.kind == "stability" and "0.91 [95% CI 0.85, 0.95] across 8 paths" in plain.text


def test_without_replicates_the_near_tie_diagnostic_is_quoted():
    diagnostics = {"near_tie_threshold": 0.22, "dtype": "float16", "n_steps": 150, "n_near_tie_steps": 7,
                   "n_chains_with_near_tie": 2, "min_gap": 0.0031, "chains": {"a": {}, "b": {}, "c": {}}}
    (note,) = scoring_notes({"model": {"dtype": "float16"}, "diagnostics": diagnostics})
    assert "7 of 150 greedy steps in 2 of 3 chains were near-ties" in note.text
    assert "within 0.22 nats" in note.text and "smallest gap 0.0031 nats" in note.text
    assert "Kendall tau" not in note.text
    # A run made before diagnostics existed falls back to the reference, naming its model.
    (old,) = scoring_notes({"model": {"dtype": "bfloat16"}})
    assert "0.74 [95% CI 0.66, 0.80] on 5 model-written GSM8K chains of 101-159 tokens with SmolLM2" in old.text
    assert "own stability was not measured" in old.text


def test_notes_are_worded_without_torch():
    """Citations, report data and the viewer word the notes without importing torch; comparisons take
    them from the same function, not from the engine or the model loader (the comparison package
    imports the pruning stage for studies, so it is checked by its source)."""
    compare_source = (Path(__file__).parents[1] / "src/cotsurvival/comparison/compare.py").read_text(encoding="utf-8")
    assert "from ..provenance import scoring_notes" in compare_source
    assert "from ..models import" not in compare_source and "pruning.approx" not in compare_source
    code = ("import sys, cotsurvival.provenance as p, cotsurvival.analysis.citations, "
            "cotsurvival.reports.data, cotsurvival.reports.viewer\n"
            "p.scoring_notes({'engine': {'approx': {'method': 'topk', 'spec': 'topk:0.1'}}, 'model': {'dtype': 'bfloat16'}})\n"
            "print('torch' in sys.modules)")
    src = Path(__file__).parents[1] / "src"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(src), "PATH": ""})
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("spec", ["topk:0.1,window=64", "lazy", "auto"])
def test_approximate_setting_is_the_canonical_spec(spec):
    """settings.scoring holds the spec once, canonical; runs that stored the JSON record still resume."""
    from cotsurvival.pruning.approx import approx_record
    from cotsurvival.pruning.run import _legacy_scoring, approx_setting

    parsed = parse_approx(spec)
    assert approx_setting(parsed) == f"approx {parsed.describe()}"
    legacy = "approx " + json.dumps(approx_record(parsed), sort_keys=True)
    assert _legacy_scoring(legacy) == approx_setting(parsed)

