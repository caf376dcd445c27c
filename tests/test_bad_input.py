"""Hostile and malformed chain input (tests/data/bad/): one-line errors naming file and line, exit 2,
no traceback; with --on-error skip every valid line is pruned and every bad one is in the manifest."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from cotsurvival.chains import Chain, read_chains
from cotsurvival.errors import ChainInputError, CotSurvivalError

from cli_helpers import assert_one_line_error, cli

BAD = Path(__file__).parent / "data" / "bad"

# file -> (ids of the valid chains, {line: reason} skipped when reading, {line: reason} skipped by the model)
EXPECTED = {
    "malformed_json.jsonl": (["ok-1", "ok-2", "ok-3"], {2: "malformed JSON (Expecting ','", 4: "malformed JSON"}, {}),
    "wrong_types.jsonl": (["ok-1", "ok-2"], {2: "field 'question' must be a string, got int",
                                             3: "field 'reasoning' must be a string, got list",
                                             4: "expected a JSON object, got list",
                                             5: "expected a JSON object, got str",
                                             6: "field 'answer' must be a string, got dict"}, {}),
    "missing_fields.jsonl": (["ok-1", "ok-2"], {2: "missing field 'answer'", 3: "missing field 'question'",
                                                4: "missing field 'answer'", 5: "no final '#### n' line"}, {}),
    "empty_reasoning.jsonl": (["ok-1", "ok-2"], {2: "empty reasoning", 3: "empty reasoning"}, {}),
    "empty_answer.jsonl": (["ok-1", "ok-2"], {2: "empty answer", 3: "empty answer"}, {}),
    "invalid_utf8.jsonl": (["ok-1", "ok-2"], {2: "invalid UTF-8 at byte"}, {}),
    "nul_bytes.jsonl": (["ok-1", "ok-2"], {2: "malformed JSON (Invalid control character", 3: "contains a NUL byte"}, {}),
    "hostile_json.jsonl": (["ok-1", "ok-2"], {2: "nested too deeply", 3: "4300 digits", 4: "lone surrogate",
                                              5: "duplicate id 'ok-1'"}, {}),
    "long_reasoning.jsonl": (["ok-1", "long", "ok-2"], {}, {2: "exceed the model's context of 512"}),
    "bad_rows.csv": (["c1", "c3", "c4"], {3: "empty reasoning"}, {4: "exceed the model's context of 512"}),
}


# ----------------------------------------------------------------------------- read_chains, in process
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_read_chains_skip_keeps_every_valid_line(name):
    ids, read_skips, _ = EXPECTED[name]
    corpus = read_chains(BAD / name, on_error="skip")
    assert [c.id for c in corpus] == ids
    assert {s.line: s.reason for s in corpus.skipped}.keys() == read_skips.keys()
    for skipped in corpus.skipped:
        assert read_skips[skipped.line] in skipped.reason
        assert skipped.source == str(BAD / name)
    assert len(corpus.lines) == len(corpus.chains)


@pytest.mark.parametrize("name", sorted(n for n, (_, skips, _) in EXPECTED.items() if skips))
def test_read_chains_fail_names_file_and_first_bad_line(name):
    _, read_skips, _ = EXPECTED[name]
    first = min(read_skips)
    with pytest.raises(ChainInputError) as info:
        read_chains(BAD / name)
    line = info.value.one_line()
    assert line.startswith(f"error[E002]: {BAD / name}:{first}: ")
    assert read_skips[first] in line and "\n" not in line


def test_bom_csv_is_valid():
    corpus = read_chains(BAD / "bom.csv")
    assert [c.id for c in corpus] == ["c1", "c2"]
    assert corpus.lines == [2, 4]  # c1's quoted reasoning spans lines 2-3
    assert corpus[0].reasoning == "Natalia sold 48/2 = 24 clips.\nSo 48+24 = 72."
    assert corpus[1].question == "Weng earns $12, how much?" and corpus[1].answer == "#### 10"
    assert not corpus.skipped


def test_long_reasoning_reads_whole():
    corpus = read_chains(BAD / "long_reasoning.jsonl")
    assert len(corpus[1].reasoning) == 100_000
    csv_corpus = read_chains(BAD / "bad_rows.csv", on_error="skip")
    assert len(csv_corpus[1].reasoning) == 200_000  # above csv's default field limit (131072)


# ----------------------------------------------------------------------------- the CLI, in a subprocess
def test_cli_fail_mode_one_line_exit_2_no_traceback(tmp_path, tiny_dir):
    """Every bad file: exit 2, one line `error[E002]: FILE:LINE: reason`, nothing else on stderr."""
    jobs = {}
    for name, (_, read_skips, model_skips) in EXPECTED.items():
        extra = ["--on-error", "fail"] if not read_skips else []
        first = min(read_skips) if read_skips else min(model_skips)
        reason = (read_skips or model_skips)[first]
        args = ["prune", BAD / name, "--out", tmp_path / name, "--model", tiny_dir, "--keep-ratio", "0.9", *extra]
        jobs[name] = (args, first, reason)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(jobs, pool.map(lambda job: cli(*job[0]), jobs.values())))
    for name, result in results.items():
        _, first, reason = jobs[name]
        assert result.returncode == 2, (name, result.stderr)
        assert_one_line_error(result.stderr, "E002", f"{BAD / name}:{first}: ", reason)
        # the chain-level check (too long) runs after the run directory could be created; reading errors before
        assert not (tmp_path / name / "tokens.parquet").exists()


def test_cli_skip_mode_subprocess(tmp_path, tiny_dir):
    out = tmp_path / "run"
    result = cli("prune", BAD / "hostile_json.jsonl", "--out", out, "--model", tiny_dir, "--keep-ratio", "0.9",
                 "--on-error", "skip")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["line"] for s in manifest["skipped"]] == [2, 3, 4, 5]
    assert sorted(pd.read_parquet(out / "tokens.parquet").chain_id.unique()) == ["ok-1", "ok-2"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_cli_skip_mode_prunes_every_valid_line(tmp_path, tiny_dir, name):
    from cotsurvival.cli import main

    ids, read_skips, model_skips = EXPECTED[name]
    out = tmp_path / "run"
    code = main(["prune", str(BAD / name), "--out", str(out), "--model", str(tiny_dir), "--keep-ratio", "0.9",
                 "--on-error", "skip"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    skipped = {s["line"]: s for s in manifest["skipped"]}
    assert skipped.keys() == read_skips.keys() | model_skips.keys()
    for line, entry in skipped.items():
        assert (read_skips | model_skips)[line] in entry["reason"]
        assert entry["source"] == str(BAD / name)
        # a line that could not be read is named by its record's id when it has one (else null)
        assert (entry["chain_id"] is None or isinstance(entry["chain_id"], str)) if line in read_skips \
            else (entry["chain_id"] in ids)
    pruned = [i for i in ids if i not in {skipped[line]["chain_id"] for line in model_skips}]
    chains = pd.read_parquet(out / "chains.parquet")
    assert list(chains.chain_id) == pruned
    tokens = pd.read_parquet(out / "tokens.parquet")
    assert list(tokens.chain_id.unique()) == pruned
    assert manifest["n_chains"] == len(pruned)
    # every pruned chain ran its steps: N - floor(0.9 N) deletions
    for _, group in tokens.groupby("chain_index"):
        n = len(group)
        assert group.deleted_step.notna().sum() == n - int(n * 0.9)


def test_cli_skip_mode_every_line_bad(tmp_path, tiny_dir):
    bad = tmp_path / "all_bad.jsonl"
    bad.write_bytes(b'{"question": 1}\n\xff\n[]\n')
    result = cli("prune", bad, "--out", tmp_path / "run", "--model", tiny_dir, "--on-error", "skip")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "E014", "every chain was skipped")


# ----------------------------------------------------------------------------- chains the model cannot take
def test_answer_or_reasoning_tokenizing_to_nothing(tmp_path, tiny_loaded):
    """Chains given in code skip read_chains' checks; the encoder still refuses empty token lists."""
    from cotsurvival.pruning import prune
    from cotsurvival.testing import EXAMPLE_CHAINS

    chains = [EXAMPLE_CHAINS[0], Chain("no-answer", "q?", "So it is 5.", ""),
              Chain("no-reasoning", "q?", "", "#### 5"), EXAMPLE_CHAINS[1]]
    run = prune(chains, tmp_path / "run", loaded_model=tiny_loaded, keep_ratio=0.9, progress=False)
    skipped = {s["chain_id"]: s["reason"] for s in run.read_manifest()["skipped"]}
    assert skipped == {"no-answer": "answer tokenizes to nothing", "no-reasoning": "reasoning tokenizes to nothing"}
    assert list(pd.read_parquet(run.path / "tokens.parquet").chain_id.unique()) == ["ex-1", "ex-2"]
    with pytest.raises(CotSurvivalError) as info:
        prune(chains, tmp_path / "fail", loaded_model=tiny_loaded, keep_ratio=0.9, on_error="fail", progress=False)
    assert info.value.code == "E002" and "no-answer" in info.value.one_line()
    assert "answer tokenizes to nothing" in info.value.one_line()
