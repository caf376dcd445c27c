"""A sentence linter: generated citations.md files must never contradict themselves.

Runs are simulated across the null (and one alternative) scenarios of the calibration, with 5-10
chains (where exact tests sit near their floor), the analysis's primary and category sections are
computed as ``analyze`` computes them, and every sentence is checked for: "not significant" beside
an interval that excludes 0 (or a claimed difference beside one that includes it); an adjusted
sentence quoting an unadjusted number; a p-value below the smallest one the test can produce with
that many chains; "not significant" where the test could not have reached p < 0.05 at all.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import importlib

analyze_module = importlib.import_module("cotsurvival.analysis.analyze")
from cotsurvival.analysis.analyze import AnalysisResult
from cotsurvival.analysis.citations import citations
from cotsurvival.analysis.inference import smallest_p
from cotsurvival.analysis.simulate import SCENARIOS, simulate_token_table

NUMBER = r"([+-]?\d+\.\d+)"
INTERVAL = rf"\[(?:95% CI )?{NUMBER}, {NUMBER}"
NOT_SIGNIFICANT = r"(?:not significant\w*|did not \w+ significantly)"
CLAIM = r"(?:survived longer than|were deleted earlier than|: larger|: smaller)"


def lint(sentences: list[str], primary: dict | None = None) -> list[str]:
    problems = []
    for s in sentences:
        # each verdict with the first interval after it, up to the next verdict
        for chunk in re.split(r"; (?=[a-z][\w ]*: )", s):
            for verdict, claim in ((NOT_SIGNIFICANT, False), (CLAIM, True)):
                m = re.search(verdict + r"[^\[]*?" + INTERVAL, chunk)
                if m:
                    low, high = float(m.group(1)), float(m.group(2))
                    excludes = low > 0 or high < 0
                    if excludes != claim:
                        problems.append(f"verdict and interval disagree: {chunk}")
        # the floor 2 / 2**C binds the chain-level sign-flip tests (token-level and parametric tests have none)
        for m in re.finditer(r"(?<!reach )(?<!attainable )p (=|<) (\d+\.\d+)", s if "sign-flip" in s else ""):
            chains = re.search(r"(\d+) chains", s[m.end():])
            if not chains:
                continue
            floor = smallest_p(int(chains.group(1)))
            value = float(m.group(2))
            # p-values are printed with 3 decimals: below the floor means below it by more than the rounding
            if (m.group(1) == "=" and value + 0.0005 < floor) or (m.group(1) == "<" and value <= floor):
                problems.append(f"p below the attainable floor {floor:.4f} with {chains.group(1)} chains: {s}")
        for m in re.finditer(NOT_SIGNIFICANT, s):
            chains = re.search(r"(\d+) chains", s[m.end():])
            if chains and smallest_p(int(chains.group(1))) >= 0.05:
                problems.append(f"'not significant' where the test cannot reach p < 0.05: {s}")
    if primary and "p_value" in primary and "withheld" not in primary:
        first = next(s for s in sentences if s.startswith("Primary result"))
        # the primary sentence states the adjustment it rests on, in the words stats.json stores
        if primary.get("adjustment", "none") != "none" and f"adjusted for {primary['adjusted_for']}" not in first:
            problems.append(f"the primary sentence does not state its adjustment ({primary['adjusted_for']}): {first}")
        if "adjusted for" in first:
            if re.search(r"Cliff's δ[^;]*\[", first):
                problems.append(f"an interval on Cliff's δ inside the adjusted sentence: {first}")
            raw, adjusted = primary.get("cliffs_delta_unadjusted"), primary.get("cliffs_delta")
            if raw is not None and np.isfinite(raw) and f"{raw:.2f}" != f"{adjusted:.2f}" and f"δ within position windows = {raw:.2f}" in first:
                problems.append(f"the adjusted sentence quotes the unadjusted Cliff's δ: {first}")
            if f"{primary['sensitivity']['none']['estimate']:+.3f}" in first and \
                    f"{primary['sensitivity']['none']['estimate']:+.3f}" != f"{primary['estimate']:+.3f}":
                problems.append(f"the adjusted sentence quotes the unadjusted estimate: {first}")
    return problems


def _sentences(table, min_chains=6, seed=0):
    result = AnalysisResult(run="simulated", config={"min_chains": min_chains, "min_tokens": 20, "levels": [],
                                                      "primary": "symbolic_math", "n_boot": 0})
    analyze_module._primary(result, table, "symbolic_math", min_chains, 20, seed)
    return citations(result), result


def test_the_linter_catches_each_kind_of_contradiction():
    bad = ["Primary result (pre-specified): symbolic math tokens did not survive significantly differently from "
           "the rest of their chain, by a mean +0.120 in normalized survival [95% CI +0.050, +0.190] (n = 8 chains).",
           "Each category: grammar: not significantly different, +0.100 [95% CI +0.020, +0.180] (8 chains).",
           "Primary result: x tokens survived longer than the rest, by +0.1 [95% CI -0.010, +0.200] (8 chains).",
           "Something (sign-flip test): p = 0.016 (5 chains).",
           "Something else (sign-flip test): p < 0.001 (9 chains).",
           "A family: not significant, +0.1 (5 chains)."]
    assert len(lint(bad)) == 6
    fine = ["Each category: grammar: not significantly different, +0.100 [95% CI -0.020, +0.180], p = 0.200 (8 chains)."]
    assert lint(fine) == []
    # a primary sentence that does not state the adjustment stats.json says it used
    primary = {"p_value": 0.2, "adjustment": "cubic_final_step", "adjusted_for": "a cubic trend and a final-unit jump",
               "cliffs_delta": 0.1, "cliffs_delta_unadjusted": 0.1, "estimate": 0.05,
               "sensitivity": {"none": {"estimate": 0.07}}}
    silent = ["Primary result (pre-specified): x tokens did not survive significantly differently from the rest, by "
              "a mean +0.050 [95% CI -0.020, +0.120] (adjusted for a cubic trend; 8 chains)."]
    assert len(lint(silent, primary)) == 1
    assert lint([silent[0].replace("a cubic trend;", "a cubic trend and a final-unit jump;")], primary) == []


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_generated_citations_never_contradict_themselves(scenario):
    rng = np.random.default_rng(hash(scenario) % 2**32)
    checked = 0
    for n_chains, effect, min_chains in ((5, 0.0, 6), (5, 0.1, 3), (6, 0.1, 6), (7, 0.0, 6), (7, 0.15, 6),
                                         (10, 0.1, 6)):
        table = simulate_token_table(n_chains, scenario=scenario, effect=effect, seed=rng, max_tokens=80)
        sentences, result = _sentences(table, min_chains=min_chains)
        problems = lint(sentences, result.primary_)
        assert not problems, "\n".join(problems)
        checked += len(sentences)
        if n_chains < min_chains:
            assert sentences[0].startswith("Primary result withheld")
        if min_chains == 3 and "withheld" not in result.primary_:
            # with 5 chains after Bonferroni across the categories no p can reach 0.05: said so
            assert any("cannot reach p < 0.05" in s for s in sentences)
    assert checked >= 10


def test_full_analysis_citations_never_contradict_themselves(tmp_path):
    from cotsurvival.analysis import analyze
    from cotsurvival.testing import synthetic_run

    for n_chains, seed in ((6, 1), (7, 2)):
        run = synthetic_run(tmp_path / f"r{n_chains}", n_chains=n_chains, n_tokens=24, seed=seed)
        result = analyze(run, n_boot=50)
        problems = lint(result.citations_, result.primary_)
        assert not problems, "\n".join(problems)
        text = "\n".join(result.citations_)
        assert "greedy vs random is not listed" in text or "random" not in text.split("Compared with each baseline")[-1][:0]
        assert "Hotelling" in text or "Cox" not in text
