"""Forward passes that score only what greedy pruning needs.

:class:`FamilyForward` runs each supported architecture through **its own Hugging Face modules**
(``model.model(...)``: embeddings and their scaling, projections, q/k norms, rotary embeddings
per layer type, NoPE layers, attention soft-capping and scaling, sandwich norms, multipliers),
and adds only two things the plain ``model(input_ids)`` call does not give cheaply:

1. a *per-row* shared-prefix length: a batch of candidates attends to different lengths of one
   cached prefix. A small :class:`~transformers.Cache` subclass hands each layer the prefix's
   keys/values (stored once, broadcast over the batch) and an explicit 4-D attention mask per
   layer type says which keys each row may see, with each family's sliding window applied
   exactly as its own mask functions do (``kv > q - window``);
2. the vocabulary head applied only at the positions whose log-probability is scored (~20% of a
   small model's compute otherwise), followed by the family's own logit transform (Gemma's final
   soft-capping, Granite's ``logits_scaling``).

What is supported is keyed on the model **class** (:data:`FAMILIES`), because that is what
decides the forward; config keys are read only the way that class's forward reads them (e.g.
Mistral and Phi-3 window every layer whenever ``sliding_window`` is set, whatever other keys a
config carries; Qwen2/3, Gemma 2/3 and SmolLM3 window the layers ``layer_types`` marks as
sliding). Each entry is tested against ``model(input_ids)`` on tiny float64 models of every
variant (tests/test_families.py). :class:`GenericForward` calls ``model(input_ids).logits`` for
anything else: exact, without prefix reuse.

Tensor shapes are written ``(batch, query, ...)``: B rows, L query tokens, P cached-prefix keys.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FamilySpec:
    """How one architecture's forward places sliding windows and post-processes its logits.

    windows : ``"none"`` (never windowed), ``"all_layers"`` (every layer when
        ``config.sliding_window`` is set: Mistral, Phi-3), ``"layer_types"`` (layers marked
        ``sliding_attention`` in ``config.layer_types``).
    head : ``"plain"``, ``"softcap"`` (``tanh(x / c) · c`` with ``final_logit_softcapping``),
        ``"granite"`` (``x / logits_scaling``).
    """

    module: str
    windows: str
    head: str


# class name -> where transformers defines it, and how its forward behaves (read from its source).
FAMILIES: dict[str, FamilySpec] = {
    "LlamaForCausalLM": FamilySpec("llama", "none", "plain"),
    "MistralForCausalLM": FamilySpec("mistral", "all_layers", "plain"),
    "Qwen2ForCausalLM": FamilySpec("qwen2", "layer_types", "plain"),
    "Qwen3ForCausalLM": FamilySpec("qwen3", "layer_types", "plain"),
    "Gemma2ForCausalLM": FamilySpec("gemma2", "layer_types", "softcap"),
    "Gemma3ForCausalLM": FamilySpec("gemma3", "layer_types", "softcap"),
    "Phi3ForCausalLM": FamilySpec("phi3", "all_layers", "plain"),
    "Olmo2ForCausalLM": FamilySpec("olmo2", "none", "plain"),
    "GraniteForCausalLM": FamilySpec("granite", "none", "granite"),
    "SmolLM3ForCausalLM": FamilySpec("smollm3", "layer_types", "plain"),
}
# Attention implementations that take an explicit 4-D mask (flash kernels take none).
MASKED_ATTENTION = ("sdpa", "eager")
# Rope types whose frequencies depend on the longest position in the batch (see
# transformers.modeling_rope_utils.dynamic_rope_update): exact only up to the original context.
LENGTH_DEPENDENT_ROPE = ("dynamic", "longrope")


@dataclass
class PrefixCache:
    """Keys and values of a shared prefix, one ``(1 or B, kv_heads, P, head_dim)`` pair per layer."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def length(self) -> int:
        return int(self.keys[0].shape[2]) if self.keys else 0


def family_spec(model) -> FamilySpec | None:
    """The :class:`FamilySpec` of ``model``'s class, or None (exactly the transformers class, not a look-alike)."""
    cls = type(model)
    spec = FAMILIES.get(cls.__name__)
    if spec is None or cls.__module__ != f"transformers.models.{spec.module}.modeling_{spec.module}":
        return None
    return spec


def unsupported_reason(model) -> str | None:
    """Why :class:`FamilyForward` cannot reproduce ``model``'s forward (a phrase to follow the class name), or None."""
    config = model.config
    if family_spec(model) is None:
        return f"model_type {getattr(config, 'model_type', '?')!r} has no prefix-reuse forward"
    implementation = getattr(config, "_attn_implementation", None) or "eager"
    if implementation not in MASKED_ATTENTION:
        return f"attn_implementation {implementation!r} takes no explicit mask (prefix reuse needs 'sdpa' or 'eager')"
    if getattr(config, "use_bidirectional_attention", False):
        return "bidirectional attention is not a causal language model"
    if getattr(config, "attention_chunk_size", None):
        return "chunked attention"
    return None


def supports_prefix_reuse(model) -> bool:
    """Whether :class:`FamilyForward` reproduces this model's forward pass."""
    return unsupported_reason(model) is None


def exact_length_limit(model) -> int | None:
    """Longest sequence for which prefix reuse is exact, or None (no limit).

    Dynamic-NTK and LongRoPE pick their frequencies from the longest position in a batch, so a
    candidate batch (one token shorter than the step's base pass) could straddle the switch;
    below the original context both use the same frequencies.
    """
    params = getattr(model.config, "rope_parameters", None) or getattr(model.config, "rope_scaling", None) or {}
    layered = params.values() if params and all(isinstance(v, dict) for v in params.values()) else [params]
    limit = None
    for entry in layered:
        if isinstance(entry, dict) and entry.get("rope_type", entry.get("type")) in LENGTH_DEPENDENT_ROPE:
            original = entry.get("original_max_position_embeddings") or model.config.max_position_embeddings
            limit = original if limit is None else min(limit, original)
    return limit


class _SharedPrefixCache:
    """What each attention layer sees as its cache: the shared prefix, broadcast over the batch.

    Hand-written (a few lines) rather than a ``DynamicCache``: that one would copy the prefix
    per row and keep every layer's copy until the pass ends; this concatenates one layer at a
    time (freed after the layer) and records only the new keys/values.
    """

    def __init__(self, prefix: PrefixCache | None, batch: int, keep: bool) -> None:
        self.prefix, self.batch, self.keep = prefix, batch, keep
        self.new_keys: list[torch.Tensor] = []
        self.new_values: list[torch.Tensor] = []

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        if self.keep:
            self.new_keys.append(key_states)
            self.new_values.append(value_states)
        if self.prefix is None:
            return key_states, value_states
        past_keys = self.prefix.keys[layer_idx].expand(self.batch, -1, -1, -1)
        past_values = self.prefix.values[layer_idx].expand(self.batch, -1, -1, -1)
        return torch.cat([past_keys, key_states], dim=2), torch.cat([past_values, value_states], dim=2)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0 if self.prefix is None else self.prefix.length


def _make_cache_class():
    """Subclass transformers' ``Cache`` lazily (isinstance checks in model code must pass)."""
    from transformers.cache_utils import Cache

    class SharedPrefixCache(_SharedPrefixCache, Cache):
        def __init__(self, prefix, batch, keep):
            Cache.__init__(self, layers=[])
            _SharedPrefixCache.__init__(self, prefix, batch, keep)

        def update(self, key_states, value_states, layer_idx, *args, **kwargs):
            return _SharedPrefixCache.update(self, key_states, value_states, layer_idx)

        def get_seq_length(self, layer_idx: int = 0) -> int:
            return _SharedPrefixCache.get_seq_length(self, layer_idx)

    return SharedPrefixCache


_GQA_SDPA = "cotsurvival_sdpa_gqa"


def _sdpa_gqa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                        **kwargs):
    """transformers' sdpa attention, with grouped-query heads left to the kernel (``enable_gqa``).

    With an explicit mask, transformers' own sdpa path copies every key/value head once per query
    head (``repeat_kv``); on a CPU that copy cost ~17% of a step on SmolLM2 (BENCHMARKS.md). Same
    arithmetic otherwise; anything this does not cover goes to transformers' own function.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if kwargs.get("softcap") is not None or kwargs.get("position_bias") is not None or dropout:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=scaling,
                                                           enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2).contiguous(), None


def _register_gqa_sdpa() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(_GQA_SDPA, _sdpa_gqa_attention)


class FamilyForward:
    """A supported family's own decoder with a shared prefix cache and a sparse vocabulary head."""

    def __init__(self, model) -> None:
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"{type(model).__name__}: {reason}")
        self.model = model
        self.spec = family_spec(model)
        self.base = model.model
        self.lm_head = model.get_output_embeddings()
        config = model.config
        self.config = config
        self.eager = (getattr(config, "_attn_implementation", None) or "eager") == "eager"
        self.length_limit = exact_length_limit(model)
        window = getattr(config, "sliding_window", None)
        n_layers = config.num_hidden_layers
        if self.spec.windows == "layer_types":
            types = list(getattr(config, "layer_types", None) or ["full_attention"] * n_layers)
        elif self.spec.windows == "all_layers" and window is not None:
            types = ["sliding_attention"] * n_layers
        else:
            types = ["full_attention"] * n_layers
        self.window = int(window) if window is not None and "sliding_attention" in types else None
        # Families whose model forward takes a {layer type: mask} mapping; the others take one mask.
        self.mask_mapping = self.spec.windows == "layer_types"
        self._cache_cls = _make_cache_class()
        heads = config.num_attention_heads
        self._gqa_on_cpu = not self.eager and (getattr(config, "num_key_value_heads", None) or heads) != heads
        if self._gqa_on_cpu:
            _register_gqa_sdpa()
        parameters = inspect.signature(self.base.forward).parameters
        self._cache_arg = "cache" if "cache" in parameters else "past_key_values"

    # ---------------------------------------------------------------- forward
    @torch.inference_mode()
    def run(
        self,
        input_ids: torch.Tensor,  # (B, L)
        positions: torch.Tensor,  # (B, L) rope positions
        prefix: PrefixCache | None = None,
        prefix_lengths: torch.Tensor | None = None,  # (B,) keys of `prefix` each row may see
        query_valid: torch.Tensor | None = None,  # (B, L) False for right padding
        keep_cache: bool = False,
    ) -> tuple[torch.Tensor, PrefixCache | None]:
        """Hidden states after the final norm, ``(B, L, hidden)``, and optionally the new keys/values."""
        batch = input_ids.shape[0]
        positions = positions.expand(batch, -1)
        cache = self._cache_cls(prefix, batch, keep_cache)
        masks = self._masks(positions, prefix, prefix_lengths, query_valid)
        swap = self._gqa_on_cpu and input_ids.device.type == "cpu"
        if swap:  # only for this call: the model's own users keep transformers' sdpa
            self.config._attn_implementation_internal = _GQA_SDPA
        try:
            out = self.base(input_ids=input_ids, position_ids=positions, attention_mask=masks, use_cache=True,
                            **{self._cache_arg: cache})
        finally:
            if swap:
                self.config._attn_implementation_internal = "sdpa"
        new = PrefixCache(cache.new_keys, cache.new_values) if keep_cache else None
        return out.last_hidden_state, new

    def _masks(self, positions, prefix, prefix_lengths, query_valid):
        """Per layer type, the ``(B, 1, L, P+L)`` mask: bool for sdpa, additive float for eager."""
        batch, length = positions.shape
        device = positions.device
        causal = torch.ones(length, length, dtype=torch.bool, device=device).tril().expand(batch, length, length)
        if query_valid is not None:
            # A padded query must still see one key, or softmax yields NaN; let it see itself.
            causal = causal & (query_valid[:, None, :] | torch.eye(length, dtype=torch.bool, device=device))
        key_positions = positions
        full = causal
        if prefix is not None:
            prefix_keys = torch.arange(prefix.length, device=device)
            seen = (prefix_keys[None, :] < prefix_lengths[:, None])[:, None, :].expand(batch, length, prefix.length)
            full = torch.cat([seen, causal], dim=2)
            key_positions = torch.cat([prefix_keys.expand(batch, -1), positions], dim=1)
        masks = {"full_attention": full}
        if self.window is not None:
            # transformers.masking_utils.sliding_window_overlay: key visible iff kv > q - window.
            near = key_positions[:, None, :] > positions[:, :, None] - self.window
            masks["sliding_attention"] = full & near
        masks = {name: self._format(mask) for name, mask in masks.items()}
        if self.mask_mapping:
            masks.setdefault("sliding_attention", masks["full_attention"])
            return masks
        return masks.get("sliding_attention", masks["full_attention"])

    def _format(self, mask: torch.Tensor) -> torch.Tensor:
        mask = mask[:, None, :, :]
        if not self.eager:
            return mask
        # Eager attention adds the mask to the scores, as transformers' own eager masks do.
        dtype = self.lm_head.weight.dtype
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)

    # ------------------------------------------------------------------- head
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The family's logits from final hidden states, in float32 or better."""
        logits = self.lm_head(hidden)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        if self.spec.head == "softcap" and self.config.final_logit_softcapping is not None:
            cap = self.config.final_logit_softcapping
            logits = torch.tanh(logits / cap) * cap
        elif self.spec.head == "granite":
            logits = logits / self.config.logits_scaling
        return logits

    def log_probs(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``log p(target)`` from hidden states ``(M, hidden)`` and targets ``(M,)``."""
        logits = self.logits(hidden)
        return logits.gather(-1, targets[:, None])[:, 0] - torch.logsumexp(logits, dim=-1)

    def log_softmax(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.logits(hidden), dim=-1)


# The name the engine used before every family had its own forward.
DecoderForward = FamilyForward


class GenericForward:
    """Any causal LM through ``model(input_ids)``: full logits, no prefix reuse."""

    def __init__(self, model) -> None:
        self.model = model

    @torch.inference_mode()
    def log_softmax_rows(self, input_ids: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids=input_ids).logits
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        return torch.log_softmax(logits, dim=-1)
