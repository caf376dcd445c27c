"""Every command block of the README and docs/*.md runs, in order, on the tiny model and small inputs.

A ```bash or ```python block runs unless its first line is a visible marker
``# not run in CI: REASON`` (a GPU, a network, a cluster, hours). ``cotsurvival`` lines run in this
process (``cotsurvival.cli.main``, exit status 0 required); other shell lines run in bash. Python
blocks of one file share a namespace. The default model (``smollm2-135m``) is swapped for the tiny
random Llama through ``COTSURVIVAL_DEFAULT_MODEL``, so every command is what a reader types.
"""
from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = ("bash", "sh", "python")
SKIP = re.compile(r"^#\s*not run in CI:\s*\S")
FENCE = re.compile(r"^```(\w*)\s*$")


def code_blocks(path: Path) -> list[tuple[int, str, str]]:
    """``(line, language, code)`` of every fenced block of a Markdown file."""
    blocks, language, start, lines = [], None, 0, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fence = FENCE.match(line.strip()) if line.startswith("```") else None
        if fence and language is None:
            language, start, lines = fence.group(1) or "", number + 1, []
        elif line.startswith("```") and language is not None:
            blocks.append((start, language, "\n".join(lines)))
            language = None
        elif language is not None:
            lines.append(line)
    return blocks


def test_code_blocks_parser_by_hand(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n```bash\ncotsurvival a \\\n  --b\n```\n```\nRUN/\n```\n```python\nx = 1\n```\n")
    assert code_blocks(page) == [(3, "bash", "cotsurvival a \\\n  --b"), (7, "", "RUN/"), (10, "python", "x = 1")]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_command_block_is_marked_runnable_or_skipped(path):
    """A block that holds commands is ```bash or ```python (so it runs), never an untagged fence."""
    for line, language, code in code_blocks(path):
        commands = [c for c in code.splitlines() if re.match(r"\s*(cotsurvival |import cotsurvival|from cotsurvival)", c)]
        assert language in RUNNABLE + ("toml", "json", "text") or not commands, \
            f"{path.name}:{line}: a block with commands needs ```bash or ```python (or a '# not run in CI:' marker)"
        if language == "text":
            assert not commands, f"{path.name}:{line}: commands in a ```text block are never run; use ```bash"


def run_block(language: str, code: str, namespace: dict, where: str) -> None:
    from cotsurvival.cli import main

    if language == "python":
        exec(compile(code, where, "exec"), namespace)  # noqa: S102 - the project's own documentation
        return
    for command in code.replace("\\\n", " ").splitlines():
        words = shlex.split(command, comments=True)
        if not words:
            continue
        if words[0] == "cotsurvival":
            assert main(words[1:]) == 0, f"{where}: `{command.strip()}` failed"
        else:
            done = subprocess.run(command, shell=True, capture_output=True, text=True, executable="/bin/bash")
            assert done.returncode == 0, f"{where}: `{command.strip()}` failed: {done.stderr[-500:]}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_dir):
    """One folder for all docs, in order: the README makes the runs the docs go on to use."""
    folder = tmp_path_factory.mktemp("docs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COTSURVIVAL_DEFAULT_MODEL", str(tiny_dir))
        patch.setenv("COTSURVIVAL_PROGRESS_SECONDS", "3600")
        yield folder, patch


@pytest.mark.integration
@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_doc_command_blocks_run(path, workdir, capsys):
    folder, patch = workdir
    patch.chdir(folder)
    namespace: dict = {"__name__": "__doc__"}
    ran = skipped = 0
    for line, language, code in code_blocks(path):
        if language not in RUNNABLE:
            continue
        if SKIP.match(code.lstrip().splitlines()[0] if code.strip() else ""):
            skipped += 1
            continue
        run_block(language, code, namespace, f"{path.name}:{line}")
        ran += 1
    print(f"{path.name}: ran {ran} blocks, {skipped} marked not run in CI")
