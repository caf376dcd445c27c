"""The API reference builds offline from the docstrings (pdoc), for every public module."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("pdoc", reason="pdoc is in the test extras (pip install -e .[test])")
TOOL = Path(__file__).resolve().parents[1] / "tools" / "api_docs.py"


def _tool():
    spec = importlib.util.spec_from_file_location("api_docs", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_builds_offline_for_every_public_module(tmp_path, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("the API reference must build without network access")

    monkeypatch.setattr(socket, "create_connection", no_network)
    tool = _tool()
    modules = tool.public_modules()
    assert {"cotsurvival.errors", "cotsurvival.results", "cotsurvival.rundir", "cotsurvival.analysis.analyze",
            "cotsurvival.reports.figures", "cotsurvival.pruning.run"} <= set(modules)
    index = tool.build(tmp_path)
    assert index.is_file()
    pages = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.html")}
    for module in modules:  # one page per module
        assert module.replace(".", "/") + ".html" in pages, module
    errors = (tmp_path / "cotsurvival" / "errors.html").read_text(encoding="utf-8")
    assert "PrecisionWarning" in errors and "FileNotFoundError" in errors
    results = (tmp_path / "cotsurvival" / "results.html").read_text(encoding="utf-8")
    assert all(name in results for name in ("to_jsonable", "write_json", "write_table", "StageResult"))
