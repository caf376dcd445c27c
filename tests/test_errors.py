"""Numbered errors: each is also the built-in exception it stands for; codes in order; warning classes."""
from __future__ import annotations

import ast
import pickle
import re
import warnings
from pathlib import Path

import pytest

import cotsurvival
from cotsurvival import errors
from cotsurvival.chains import read_chains
from cotsurvival.errors import (BUILTIN, ApproximationWarning, ChainInputError, CheckpointWarning, CotSurvivalError,
                                CotSurvivalWarning, Errors, NonEnglishWarning, PrecisionWarning)

PACKAGE = Path(cotsurvival.__file__).parent
CODES = [name for name in vars(Errors) if re.fullmatch(r"E\d{3}", name)]


def test_missing_chains_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        read_chains(tmp_path / "nope.jsonl")
    error = info.value
    assert isinstance(error, CotSurvivalError) and isinstance(error, ChainInputError) and error.code == "E001"
    assert str(error) == f"[E001] {tmp_path / 'nope.jsonl'}: file not found."


@pytest.mark.parametrize("code, builtin", [("E001", FileNotFoundError), ("E081", FileExistsError),
                                           ("E053", LookupError), ("E051", IndexError), ("E070", ImportError),
                                           ("E086", ValueError), ("E088", ValueError), ("E009", ValueError),
                                           ("E010", OSError), ("E102", RuntimeError), ("E114", FloatingPointError)])
def test_each_code_is_its_builtin(code, builtin):
    fields = {name: "x" for name in re.findall(r"{(\w+)", getattr(Errors, code))}
    error = CotSurvivalError(code, **fields)
    assert isinstance(error, builtin) and isinstance(error, CotSurvivalError)
    assert type(error).__name__ == "CotSurvivalError"  # tracebacks name the package's class
    assert error.one_line().startswith(f"error[{code}]: ")
    with pytest.raises(builtin):
        raise error


def test_unmapped_codes_are_value_errors_and_the_map_names_real_codes():
    assert set(BUILTIN) <= set(CODES)
    error = CotSurvivalError("E041", reason="too few chains")
    assert isinstance(error, ValueError) and not isinstance(error, OSError)


def test_errors_survive_pickling_with_code_class_and_message():
    # Ray sends a worker's exceptions to the driver by pickling them.
    for error in (CotSurvivalError("E001", path="a.jsonl"), ChainInputError("E002", path="p", line=3, reason="bad")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and copy.code == error.code and str(copy) == str(error)
        assert copy.fields == error.fields


def test_codes_are_defined_in_order_and_every_template_formats():
    assert CODES == sorted(CODES)
    for code in CODES:
        fields = {name: "x" for name in re.findall(r"{(\w+)", getattr(Errors, code))}
        assert CotSurvivalError(code, **fields).message


def test_every_raised_code_exists_and_e009_is_no_catch_all():
    """Every code raised in src is defined; E009 (the old catch-all) is raised nowhere."""
    raised = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")).endswith("Error")
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                    and re.fullmatch(r"E\d{3}", node.args[0].value)):
                raised.setdefault(node.args[0].value, []).append(path.name)
    assert set(raised) <= set(CODES), set(raised) - set(CODES)
    assert "E009" not in raised, raised.get("E009")
    assert len(raised) > 60


def test_option_errors_name_option_rule_and_value(tmp_path):
    with pytest.raises(ValueError, match=r"E086\] --limit must be at least 1, not 0"):
        read_chains("gsm8k", limit=0)
    with pytest.raises(ValueError, match=r"E088\] Unknown --on-error 'ignore'; choose from: fail, skip"):
        read_chains("gsm8k", on_error="ignore")


@pytest.mark.parametrize("category", [ApproximationWarning, PrecisionWarning, NonEnglishWarning, CheckpointWarning])
def test_warning_classes_can_be_filtered_by_kind(category):
    assert issubclass(category, CotSurvivalWarning) and issubclass(category, UserWarning)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=category)
        warnings.warn("silenced", category)
        warnings.warn("shown", CotSurvivalWarning)
    assert [str(w.message) for w in caught] == ["shown"]


def test_precision_warning_is_raised_by_its_class():
    from cotsurvival.models import warn_if_imprecise

    with pytest.warns(PrecisionWarning, match="float16"):
        warn_if_imprecise("float16")


def test_package_warns_only_with_its_own_classes():
    """No bare ``warnings.warn(message)`` (a plain UserWarning a user cannot single out) in src."""
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "warn" \
                    and getattr(node.func.value, "id", "") == "warnings":
                category = node.args[1] if len(node.args) > 1 else next(
                    (k.value for k in node.keywords if k.arg == "category"), None)
                assert category is not None and getattr(category, "id", "").endswith("Warning"), \
                    f"{path.name}:{node.lineno}"
                assert hasattr(errors, category.id), f"{path.name}:{node.lineno}: {category.id} not in errors.py"
