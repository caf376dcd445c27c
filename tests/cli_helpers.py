"""Helpers for tests that drive the real command line in a subprocess (bad input, faults, Ray)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# One torch thread in the child too: the in-process reference runs use one (tests/conftest.py), and
# multi-threaded float32 reductions may round differently.
CHILD_ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
                 PYTHONUNBUFFERED="1")
CLI = [sys.executable, "-m", "cotsurvival.cli"]


def save_tiny_model(folder: Path) -> Path:
    """The tiny random Llama and its tokenizer as a safetensors model directory (what --model takes)."""
    from cotsurvival.testing import tiny_llama

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        model, tokenizer = tiny_llama()
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
    return folder


def cli(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Run ``cotsurvival ARGS`` in a fresh Python process and capture its output."""
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=CHILD_ENV,
                          **kwargs)


def popen_cli(*args: str, prelude: str = "") -> subprocess.Popen:
    """Start ``cotsurvival ARGS`` without waiting; ``prelude`` is Python run first (e.g. to set a constant)."""
    code = f"import sys\n{prelude}\nfrom cotsurvival.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=CHILD_ENV)


def assert_one_line_error(result_stderr: str, code: str, *needles: str) -> str:
    """stderr is exactly one ``error[CODE]: ...`` line containing every needle, and no traceback."""
    assert "Traceback" not in result_stderr, result_stderr
    lines = [line for line in result_stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result_stderr
    assert lines[0].startswith(f"error[{code}]: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def write_jsonl(path: Path, chains) -> Path:
    path.write_text("".join(json.dumps(c.to_dict()) + "\n" for c in chains), encoding="utf-8")
    return path
