"""Forward passes that score only what greedy pruning needs.

Two backends compute the same numbers:

* :class:`DecoderForward` re-implements the decoder stack of the Llama family (Llama, Mistral,
  Qwen2, SmolLM) on top of the Hugging Face modules' own weights and sub-modules. It exists
  because the engine needs two things the generic ``model(...)`` call does not give cheaply:
  (1) a *per-row* shared-prefix length, so a batch of candidates can each attend to a different
  length of one cached prefix without copying it per candidate into a padded cache object, and
  (2) the vocabulary head applied only at the positions whose log-probability is scored
  (~20% of a small model's compute otherwise).
* :class:`GenericForward` calls ``model(input_ids).logits`` and is used for any other
  architecture: exact, without prefix reuse.

Tensor shapes are written ``(batch, query, ...)``: B rows, L query tokens, P cached-prefix keys.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")


@dataclass
class PrefixCache:
    """Keys and values of a shared prefix, one ``(1, kv_heads, P, head_dim)`` pair per layer."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def length(self) -> int:
        return int(self.keys[0].shape[2]) if self.keys else 0


def supports_prefix_reuse(model) -> bool:
    """Whether :class:`DecoderForward` reproduces this model's forward pass."""
    config = model.config
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        return False
    inner = getattr(model, "model", None)
    needed = ("embed_tokens", "layers", "norm", "rotary_emb")
    if inner is None or not all(hasattr(inner, name) for name in needed):
        return False
    return getattr(config, "sliding_window", None) is None or not getattr(config, "use_sliding_window", True)


class DecoderForward:
    """Llama-family decoder forward with a shared prefix cache and a sparse vocabulary head."""

    def __init__(self, model) -> None:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        self._rope = apply_rotary_pos_emb
        self.model = model
        inner = model.model
        self.embed, self.layers, self.norm, self.rotary = inner.embed_tokens, inner.layers, inner.norm, inner.rotary_emb
        self.lm_head = model.get_output_embeddings()
        config = model.config
        self.n_heads = config.num_attention_heads
        self.n_kv = getattr(config, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_heads
        self.scale = self.head_dim ** -0.5

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
        hidden = self.embed(input_ids)
        cos, sin = self.rotary(hidden, positions)
        mask = self._mask(input_ids.shape, prefix, prefix_lengths, query_valid, hidden.device)
        new_keys, new_values = [], []
        for index, layer in enumerate(self.layers):
            past = None if prefix is None else (prefix.keys[index], prefix.values[index])
            hidden, (key, value) = self._layer(layer, hidden, cos, sin, mask, past)
            if keep_cache:
                new_keys.append(key)
                new_values.append(value)
        return self.norm(hidden), (PrefixCache(new_keys, new_values) if keep_cache else None)

    def _layer(self, layer, hidden, cos, sin, mask, past):
        batch, length, _ = hidden.shape
        attn = layer.self_attn
        normed = layer.input_layernorm(hidden)
        query = attn.q_proj(normed).view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)
        key = attn.k_proj(normed).view(batch, length, self.n_kv, self.head_dim).transpose(1, 2)
        value = attn.v_proj(normed).view(batch, length, self.n_kv, self.head_dim).transpose(1, 2)
        query, key = self._rope(query, key, cos, sin)
        all_keys, all_values = key, value
        if past is not None:
            # The prefix is stored once (batch 1) and broadcast: candidates differ only in how
            # much of it they may see, which the mask says.
            all_keys = torch.cat([past[0].expand(batch, -1, -1, -1), key], dim=2)
            all_values = torch.cat([past[1].expand(batch, -1, -1, -1), value], dim=2)
        out = F.scaled_dot_product_attention(query, all_keys, all_values, attn_mask=mask, scale=self.scale,
                                             enable_gqa=self.n_kv != self.n_heads)
        out = out.transpose(1, 2).reshape(batch, length, self.n_heads * self.head_dim)
        hidden = hidden + attn.o_proj(out)
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return hidden, (key, value)

    @staticmethod
    def _mask(shape, prefix, prefix_lengths, query_valid, device):
        batch, length = shape
        causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
        mask = causal.expand(batch, length, length)
        if query_valid is not None:
            # A padded query must still see one key, or softmax yields NaN; let it see itself.
            mask = mask & (query_valid[:, None, :] | torch.eye(length, dtype=torch.bool, device=device))
        if prefix is not None:
            keys = torch.arange(prefix.length, device=device)
            seen = keys[None, :] < prefix_lengths[:, None]  # (B, P)
            mask = torch.cat([seen[:, None, :].expand(batch, length, prefix.length), mask], dim=2)
        return mask[:, None, :, :]

    def log_probs(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``log p(target)`` from hidden states ``(M, hidden)`` and targets ``(M,)``, in float32 or better."""
        logits = self.lm_head(hidden)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        return logits.gather(-1, targets[:, None])[:, 0] - torch.logsumexp(logits, dim=-1)

    def log_softmax(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(hidden)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        return torch.log_softmax(logits, dim=-1)


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
