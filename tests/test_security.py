"""Security: no eval of input text, no remote code or pickled weights unless asked, HTML escaped."""
from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

import cotsurvival
from cotsurvival.errors import CotSurvivalError

from cli_helpers import CHILD_ENV, assert_one_line_error, cli, save_tiny_model

SRC = Path(cotsurvival.__file__).parent

# Calls that can run code (or unbounded work) on a string or a file. Bare builtins only for eval/exec/compile
# (``model.eval()`` and ``re.compile`` are fine); any spelling for the rest.
BUILTIN_DANGEROUS = {"eval", "exec", "compile", "__import__"}
ANY_DANGEROUS = {"sympify", "parse_expr", "parse_latex", "lambdify", "literal_eval"}
MODULE_DANGEROUS = {("pickle", "load"), ("pickle", "loads"), ("torch", "load"), ("yaml", "load"), ("marshal", "loads"),
                    ("dill", "load"), ("joblib", "load"), ("cloudpickle", "load"), ("os", "system")}

# Reviewed call sites: (file, function) -> count.
# * taxonomy/equations.py, sympify: each side of the equation has matched ^[\d.+\-*/() ]+$ first, so the
#   string holds no name, attribute, string literal or call: nothing but arithmetic can be expressed.
# * generation/verify.py, parse_expr: the text is re-emitted by _LatexReader from a closed grammar (integers,
#   operators, brackets, single-letter symbols, four whitelisted names), then parsed with empty __builtins__
#   and a globals dict holding only sympy constructors; exponents are bounded before evaluation.
#   sympify there is applied to a sympy object (tree.doit()), not to text.
REVIEWED = {
    ("taxonomy/equations.py", "sympify"): 1,
    ("generation/verify.py", "parse_expr"): 1,
    ("generation/verify.py", "sympify"): 1,
}


def dangerous_calls() -> Counter:
    found: Counter = Counter()
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = path.relative_to(SRC).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Name) and (func.id in BUILTIN_DANGEROUS or func.id in ANY_DANGEROUS):
                    found[(rel, func.id)] += 1
                elif isinstance(func, ast.Attribute):
                    owner = func.value.id if isinstance(func.value, ast.Name) else None
                    if func.attr in ANY_DANGEROUS or (owner, func.attr) in MODULE_DANGEROUS:
                        found[(rel, func.attr)] += 1
                    if func.attr == "load" and owner in ("np", "numpy"):
                        pickled = [k for k in node.keywords if k.arg == "allow_pickle"]
                        if not pickled or not (isinstance(pickled[0].value, ast.Constant) and pickled[0].value.value is False):
                            found[(rel, "np.load without allow_pickle=False")] += 1
                for keyword in node.keywords:
                    if keyword.arg in ("shell", "trust_remote_code", "weights_only") and isinstance(keyword.value, ast.Constant):
                        if (keyword.arg, keyword.value.value) in (("shell", True), ("trust_remote_code", True),
                                                                  ("weights_only", False)):
                            found[(rel, f"{keyword.arg}={keyword.value.value}")] += 1
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
                for name in names:
                    if name.split(".")[0] in ("pickle", "marshal", "dill", "cloudpickle", "shelve"):
                        found[(rel, f"import {name}")] += 1
    return found


def test_no_eval_or_pickle_outside_reviewed_sites():
    found = dangerous_calls()
    assert dict(found) == REVIEWED, "new call site that can run code on input: review it and add it to REVIEWED"


def test_reviewed_sites_refuse_code():
    from cotsurvival.generation.verify import parse_math
    from cotsurvival.taxonomy.equations import _check

    for text in ("__import__('os').system('echo pwned') = 0", "open('x').read() = 1", "().__class__ = 1",
                 "lambda: 1 = 1", "x = 1"):
        assert _check(text) is None
    for text in ("__import__('os').system('echo pwned')", "\\operatorname{exec}('x')", "().__class__.__bases__",
                 "a.b", "'string'", "9^{9^{9^{9}}}"):
        assert parse_math(text) is None
    assert _check("48/2 = 24") is True and parse_math("\\frac{1}{2}") is not None


def test_equation_check_is_bounded():
    code = ("from cotsurvival.taxonomy.equations import _check; _check('1 = 1'); import time; t = time.time(); "
            "_check('9**9**9 = 1'); print(time.time() - t)")
    try:
        subprocess.run([sys.executable, "-c", code], timeout=6, env=CHILD_ENV, capture_output=True, check=True)
    except subprocess.TimeoutExpired:
        pytest.fail("equation check on '9**9**9 = 1' did not finish in 6 s")


# ----------------------------------------------------------------------------- model loading
def test_trust_remote_code_off_by_default(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cotsurvival import models
    from cotsurvival.pruning import run as run_module

    assert inspect.signature(models.load_model).parameters["trust_remote_code"].default is False
    assert inspect.signature(run_module.prune).parameters["trust_remote_code"].default is False
    folder = save_tiny_model(tmp_path / "tiny")
    seen = []
    for cls in (AutoModelForCausalLM, AutoTokenizer):
        real = cls.from_pretrained.__func__

        def spy(klass, *args, _real=real, **kwargs):
            seen.append((klass.__name__, kwargs.get("trust_remote_code"), kwargs.get("use_safetensors", "n/a")))
            return _real(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    models.load_model(str(folder), device="cpu", dtype="float32")
    assert ("AutoTokenizer", False, "n/a") in seen and ("AutoModelForCausalLM", False, True) in seen
    # the CLI flags default to off as well
    from cotsurvival.cli import generate, prune

    for command, args in ((prune, ["chains.jsonl", "--out", "run"]), (generate, ["q.jsonl", "--out", "o.jsonl"])):
        params = command.make_context(command.name, args).params
        assert params["trust_remote_code"] is False and params["allow_unsafe_weights"] is False


@pytest.fixture(scope="module")
def pickled_model_dir(tmp_path_factory):
    """A model directory whose only weights are a pickled pytorch_model.bin."""
    from cotsurvival.testing import tiny_llama

    folder = tmp_path_factory.mktemp("pickled")
    model, tokenizer = tiny_llama()
    model.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    assert not list(folder.glob("*.safetensors"))
    return folder


def test_pickled_weights_refused_without_flag(pickled_model_dir, tmp_path):
    from cotsurvival.models import load_model
    from cotsurvival.testing import EXAMPLE_CHAINS

    with pytest.raises(CotSurvivalError) as info:
        load_model(str(pickled_model_dir), device="cpu")
    assert info.value.code == "E011" and "pytorch_model.bin" in info.value.one_line()
    chains = tmp_path / "chains.jsonl"
    chains.write_text(json.dumps(EXAMPLE_CHAINS[0].to_dict()) + "\n")
    result = cli("prune", chains, "--out", tmp_path / "run", "--model", pickled_model_dir, "--keep-ratio", "0.9")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "E011", str(pickled_model_dir / "pytorch_model.bin"), "--allow-unsafe-weights")
    assert not (tmp_path / "run" / "chains.parquet").exists()


def test_pickled_weights_load_with_flag(pickled_model_dir):
    from cotsurvival.models import load_model
    from cotsurvival.testing import tiny_llama

    model, _, info = load_model(str(pickled_model_dir), device="cpu", dtype="float32", allow_unsafe_weights=True)
    reference, _ = tiny_llama()
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name
    assert info.sha256 is None


# ----------------------------------------------------------------------------- HTML output
SCRIPT = "<script>alert(1)</script>"
ATTR = '"onerror=alert(1) x="'
IMG = "<img src=x onerror=alert(1)>"


def hostile_run(folder: Path, math: str = " $12 and $5", analyzed: bool = True):
    """A synthetic run whose chain 0 carries script/attribute payloads in question, reasoning, tokens and id."""
    from cotsurvival.analysis import analyze
    from cotsurvival.testing import synthetic_run

    run = synthetic_run(folder, n_chains=5, n_tokens=14)
    chains = run.read_chains()
    tokens = run.read_part("tokens", 0)
    texts = list(tokens["text"])
    texts[0], texts[1], texts[2] = SCRIPT, " " + ATTR, math
    texts[3] = " " + IMG
    starts, position = [], 0
    for text in texts:
        starts.append(position)
        position += len(text)
    tokens["text"] = texts
    tokens["char_start"] = starts
    tokens["char_end"] = [s + len(t) for s, t in zip(starts, texts)]
    chain_id = IMG
    tokens["chain_id"] = chain_id
    run.write_part("tokens", 0, tokens)
    for table in ("steps", "traces", "baselines", "labels"):
        part = run.read_part(table, 0)
        part["chain_id"] = chain_id
        run.write_part(table, 0, part)
    chains.loc[0, "question"] = f"{SCRIPT} {ATTR} {IMG}?"
    chains.loc[0, "reasoning"] = "".join(texts)
    chains.loc[0, "chain_id"] = chain_id
    run.write_chains(chains)
    if analyzed:
        analyze(run, n_boot=20, mixed=False)
    return run


def test_html_outputs_escape_chain_text(tmp_path):
    run = hostile_run(tmp_path / f"run {IMG[:-1]}")  # the run's folder name is shown as a title too
    viewer = tmp_path / "viewer.html"
    report = tmp_path / "report"
    done = [cli("view", run.path, "--out", viewer),
            cli("report", run.path, "--out", report, "--width", "one", "--chain", "0", timeout=240)]
    for result in done:
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
    pages = {"viewer": viewer.read_text(encoding="utf-8"), "report": (report / "index.html").read_text(encoding="utf-8")}
    for name, page in pages.items():
        for payload in (SCRIPT, ATTR, IMG, "onerror=alert(1)>", "<script>alert", "<img src=x"):
            assert payload not in page, (name, payload)
    # the payloads are present, escaped: the test did reach them
    viewer_page = pages["viewer"]
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in viewer_page
    assert '\\"onerror=alert(1) x=\\"' in viewer_page
    assert "&lt;img src=x onerror=alert(1)" in pages["report"]  # the title (folder name) and chain ids in tables
    # the viewer's script never parses text as HTML
    script = (Path(cotsurvival.__file__).parent / "reports" / "templates" / "viewer.js").read_text(encoding="utf-8")
    import re

    code = re.sub(r"//[^\n]*|/\*.*?\*/", "", script, flags=re.S)  # comments may name the sinks they avoid
    for sink in (r"\.(inner|outer)HTML\s*\+?=", r"insertAdjacentHTML\s*\(", r"document\.write", r"\beval\s*\(",
                 r"new\s+Function", r"setTimeout\s*\(\s*['\"]"):
        assert not re.search(sink, code), sink
    assert "textContent" in code
    assert "Content-Security-Policy" in viewer_page


@pytest.mark.parametrize("token", [" $$", " $\\frac{1$"])
def test_chain_figure_draws_dollar_signs_as_text(tmp_path, token):
    import io

    import matplotlib

    matplotlib.use("Agg")
    from cotsurvival.reports.data import ReportData
    from cotsurvival.reports.figures import FIGURES

    run = hostile_run(tmp_path / "run", math=token, analyzed=False)
    spec = next(f for f in FIGURES if f.stem == "fig8_chain")
    figure = spec.draw(ReportData(run), "one", chain_index=0)
    figure.savefig(io.BytesIO(), format="png")
