"""How much memory pruning one chain needs, and the method that fits.

Cross-step reuse keeps every candidate's keys and values from its deletion point on: candidate
``k`` of a chain with ``n`` reasoning and ``a`` answer tokens holds ``n + a - k`` token rows, so a
step holds ``≈ n²/2 + n·a`` rows besides the ``T`` rows of the current sequence, and while a step
builds the next generation both generations are alive (×2). Prefix reuse keeps only the current
sequence's ``T`` rows; naive keeps nothing between batches. On top of that each batch needs its
transient memory: activations of ``max_batch_tokens`` rows, the prefix keys broadcast to every
row of one layer, attention scores and the vocabulary rows that are scored.

:func:`plan_chain` picks, per chain, the requested method when its estimate fits the budget,
else prefix reuse, else prefix reuse with smaller batches (halving down to 64 token rows), else
naive scoring (also halving), and
says why; ``prune`` records the choice per chain in the manifest.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import CotSurvivalError
from .forward import exact_length_limit, supports_prefix_reuse

# Leave this much of what the device reports free for the allocator's fragmentation and for
# what the estimate leaves out (Python objects, small buffers).
SAFETY = 0.85
MIN_BATCH_TOKENS = 64
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
          "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


@dataclass(frozen=True)
class ChainPlan:
    """The method and batch budget one chain runs with, and why."""

    method: str
    max_batch_tokens: int
    estimated_bytes: int
    budget_bytes: int | None
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def parse_memory(value: str | int | float | None) -> int | None:
    """``"8GB"``, ``"512MiB"``, ``"2e9"`` or a number of bytes -> bytes (None stays None)."""
    if value is None or isinstance(value, (int, float)):
        if value is not None and value <= 0:
            raise CotSurvivalError("E101", value=value, reason="must be positive")
        return None if value is None else int(value)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", str(value).lower())
    if not match or match.group(2) not in _UNITS:
        raise CotSurvivalError("E101", value=value, reason="not a size")
    size = int(float(match.group(1)) * _UNITS[match.group(2)])
    if size <= 0:
        raise CotSurvivalError("E101", value=value, reason="must be positive")
    return size


def available_memory(device: torch.device) -> int | None:
    """Bytes this process can still allocate on ``device`` (None when unknown)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # Memory torch has reserved but not handed out is free for our tensors too.
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    candidates = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:  # a cgroup v2 memory limit (containers, Slurm) caps what the host reports
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            current = int(Path("/sys/fs/cgroup/memory.current").read_text())
            candidates.append(int(limit) - current)
    except (OSError, ValueError):
        pass
    return min(candidates) if candidates else None


def _shape(model) -> dict:
    config = model.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    parameter = next(model.parameters())
    return {"layers": config.num_hidden_layers, "kv": getattr(config, "num_key_value_heads", None) or heads,
            "heads": heads, "head_dim": head_dim, "hidden": config.hidden_size,
            "intermediate": getattr(config, "intermediate_size", 4 * config.hidden_size),
            "vocab": config.vocab_size, "bytes": parameter.element_size()}


def kv_bytes_per_token(model) -> int:
    """Keys and values of one token row over all layers."""
    s = _shape(model)
    return 2 * s["layers"] * s["kv"] * s["head_dim"] * s["bytes"]


def estimate_chain_bytes(model, p: int, n: int, a: int, method: str, max_batch_tokens: int) -> int:
    """Peak bytes (beyond the weights) that pruning a chain of ``p + n + a`` tokens needs."""
    s = _shape(model)
    total = p + n + a
    kv_token = kv_bytes_per_token(model)
    kv_layer = kv_token // s["layers"]
    rows = min(max_batch_tokens, n * total)
    batch_rows = min(n, max(1, max_batch_tokens // max(1, n + a)))  # candidates in one batch (short suffixes)
    transient = (
        rows * s["bytes"] * (4 * s["hidden"] + 3 * s["intermediate"])  # one layer's activations
        + rows * s["heads"] * total * max(4, s["bytes"])  # attention scores of one layer
        + batch_rows * total * kv_layer  # the prefix broadcast to every row of one layer
        + rows * s["vocab"] * 4 * 2  # scored logits in float32 and their log-softmax
    )
    if method == "naive":
        return transient
    if method == "crossstep":
        transient += rows * kv_token  # each batch's new keys/values are kept
        kept = n * (n + 1) // 2 + n * a  # Σ_k (n + a − k) rows of the candidates' own suffixes
        return 2 * (total + kept) * kv_token + transient
    return total * kv_token + transient


def plan_chain(model, p: int, n: int, a: int, method: str, max_batch_tokens: int,
               budget_bytes: int | None) -> ChainPlan:
    """The method that fits: ``method``, else prefix reuse, else smaller batches, else naive."""
    supported = supports_prefix_reuse(model)
    if method == "auto":
        method = "crossstep" if supported else "naive"
    limit = exact_length_limit(model) if supported else None
    if method != "naive" and limit is not None and p + n + a > limit:
        method, why = "naive", f"{p + n + a} tokens exceed the {limit} its length-dependent rope is exact for"
    else:
        why = "requested"
    ladder = {"crossstep": ["crossstep", "prefix", "naive"], "prefix": ["prefix", "naive"], "naive": ["naive"]}[method]
    if budget_bytes is None:
        size = estimate_chain_bytes(model, p, n, a, method, max_batch_tokens)
        return ChainPlan(method, max_batch_tokens, size, None, why)
    for candidate in ladder:
        tokens = max_batch_tokens
        while True:
            size = estimate_chain_bytes(model, p, n, a, candidate, tokens)
            if size <= budget_bytes:
                if candidate != method or tokens != max_batch_tokens:
                    why = (f"{method} with {max_batch_tokens}-token batches needs ~"
                           f"{_human(estimate_chain_bytes(model, p, n, a, method, max_batch_tokens))} "
                           f"> budget {_human(budget_bytes)}")
                return ChainPlan(candidate, tokens, size, budget_bytes, why)
            # Cross-step reuse is tried with the full batch only: its cached rows dominate, and
            # prefix reuse with the same batch needs less.
            if tokens <= MIN_BATCH_TOKENS or candidate == "crossstep":
                break
            tokens = max(MIN_BATCH_TOKENS, tokens // 2)
    needed = estimate_chain_bytes(model, p, n, a, "naive", MIN_BATCH_TOKENS)
    raise CotSurvivalError("E102", chain=f"of {p + n + a} tokens", budget=_human(budget_bytes), needed=_human(needed))


def memory_budget(device: torch.device, max_memory: int | None) -> int | None:
    """What a chain may use: ``max_memory`` and what the device has free, whichever is smaller."""
    free = available_memory(device)
    free = None if free is None else int(free * SAFETY)
    if max_memory is None:
        return free
    return max_memory if free is None else min(max_memory, free)


def _human(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
