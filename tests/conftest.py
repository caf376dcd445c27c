import functools
import os
import re
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One thread: torch's multi-threaded CPU kernels may split float32 reductions differently from run
# to run, and the tiny test model (large random weights) amplifies that rounding into differences
# the exactness tests would see.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the tiny random Llama in float32."""
    from cotsurvival.testing import tiny_llama

    return tiny_llama()


@pytest.fixture(scope="session")
def tiny64():
    from cotsurvival.testing import tiny_llama

    return tiny_llama(dtype=torch.float64)


@pytest.fixture(scope="session")
def tiny_loaded(tiny):
    """The tiny model as ``prune(loaded_model=...)`` takes it."""
    from cotsurvival.models import ModelInfo

    model, tokenizer = tiny
    info = ModelInfo("tiny-llama", "in-code", None, None, "llama", "float32", "cpu", 0, 512)
    return model, tokenizer, info


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M (float32, CPU). Integration tests only."""
    from cotsurvival.models import load_model

    return load_model("smollm2-135m", device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """The tiny model saved as a safetensors model directory, what ``--model DIR`` takes."""
    from cli_helpers import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_from_dir(tiny_dir):
    """The saved tiny model loaded as the CLI loads it (same spec string, so runs can be resumed in process)."""
    from cotsurvival.models import load_model

    return load_model(str(tiny_dir), device="cpu", dtype="float32")


# ------------------------------------------------------------------------------ parallel runs (xdist)
# `make test` runs the suite on two pytest-xdist workers (`-n 2 --dist loadfile`). The scheduler below
# makes every test file one unit of work, as loadfile does (its module fixtures, e.g. a pruned run or
# the docs' shared folder, are built once, and its tests keep their order), with two wider units:
# - "ray": every test file that imports Ray. The backend joins a cluster already running on the
#   machine (`address="auto"`), so a cluster of the other worker would be joined, then shut down under it.
# - "notebooks": the three notebooks prune into one shared run folder.
# Units start heaviest first (measured: BENCHMARKS.md, "Test suite"), so that no long unit starts last
# while the other worker idles. Without xdist none of this runs: same tests, same order.
# (xdist's own `--dist loadgroup` marks would say the same, but its renaming of test ids does not
# reach pytest 9's node ids; the scheduler hook is xdist's public way to choose the units.)
HEAVIEST_FIRST = ("tests/test_doc_examples.py", "tests/test_engine_smollm2.py", "ray", "notebooks", "tests/test_llmlingua.py")


@functools.lru_cache(maxsize=None)
def _imports_ray(path: Path) -> bool:
    return path.suffix == ".py" and re.search(r"^\s*import ray\b", path.read_text(encoding="utf-8"), re.M) is not None


def work_unit(rootdir: Path, nodeid: str) -> str:
    """The xdist unit of work a test belongs to: its file, or "ray", or "notebooks"."""
    path = nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        return "notebooks"
    return "ray" if _imports_ray(rootdir / path) else path


@pytest.hookimpl(optionalhook=True, tryfirst=True)  # pytest-xdist's hook (absent without it), before its own
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None  # xdist's own schedulers
    from xdist.scheduler import LoadScopeScheduling

    class FileOrSharedStateScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(config.rootpath, nodeid)

    config.option.loadscopereorder = False  # keep the heaviest-first order the workers collected
    return FileOrSharedStateScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    if not hasattr(config, "workerinput"):  # only an xdist worker reorders (all of them alike)
        return
    rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(work_unit(config.rootpath, item.nodeid), len(rank)))


def pytest_configure(config):
    """Parallel run: convert the packaged SmolLM2 to its safetensors cache once, before the workers
    start, rather than in two workers at once (both would write the same cache folder)."""
    if not getattr(config.option, "numprocesses", None) or hasattr(config, "workerinput"):
        return
    from cotsurvival.assets import cache_dir

    if not (cache_dir() / "models" / "smollm2-135m-instruct-q4_1" / "cotsurvival.json").is_file():
        from cotsurvival.models import _smollm2_cache

        _smollm2_cache()
