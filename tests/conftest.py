import os

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
