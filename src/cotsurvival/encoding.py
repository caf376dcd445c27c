"""Turning a chain into the three token-id parts everything downstream works on.

The chain is rendered with the model's chat template (user = question, assistant = reasoning,
a newline, answer) when the tokenizer has one, and as ``Question: ...\\nAnswer: `` otherwise.
The three parts are tokenized separately and concatenated, so every reasoning token lies wholly
inside the reasoning text (its character offsets index ``chain.reasoning``) and deleting
reasoning tokens never changes how the prefix or the answer is tokenized:

* ``prefix_ids``: everything before the reasoning (system prompt, question, turn markers);
* ``reasoning_ids``: the reasoning text, the tokens that pruning deletes;
* ``answer_ids``: the separator newline and the answer text (the end-of-turn marker is not
  scored, so it is left out).
"""
from __future__ import annotations

from dataclasses import dataclass

from .chains import Chain

ANSWER_SEPARATOR = "\n"
PLAIN_PROMPT = "Question: {question}\nAnswer: "


@dataclass(frozen=True)
class EncodedChain:
    """Token ids of a chain's three parts and the reasoning tokens' character offsets."""

    chain: Chain
    prefix_ids: list[int]
    reasoning_ids: list[int]
    answer_ids: list[int]
    offsets: list[tuple[int, int]]  # per reasoning token, into chain.reasoning
    used_chat_template: bool

    @property
    def n_tokens(self) -> int:
        """Total sequence length before pruning."""
        return len(self.prefix_ids) + len(self.reasoning_ids) + len(self.answer_ids)

    def token_texts(self) -> list[str]:
        return [self.chain.reasoning[a:b] for a, b in self.offsets]


def render_prefix(chain: Chain, tokenizer) -> tuple[str, bool]:
    """Text before the reasoning, and whether the chat template made it."""
    if getattr(tokenizer, "chat_template", None):
        content = chain.reasoning + ANSWER_SEPARATOR + chain.answer
        messages = [{"role": "user", "content": chain.question}, {"role": "assistant", "content": content}]
        rendered = tokenizer.apply_chat_template(messages, tokenize=False)
        start = rendered.rfind(content)
        if start >= 0:
            return rendered[:start], True
    bos = tokenizer.bos_token if getattr(tokenizer, "bos_token", None) and _adds_bos(tokenizer) else ""
    return bos + PLAIN_PROMPT.format(question=chain.question), False


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def encode_chain(chain: Chain, tokenizer) -> EncodedChain:
    """Tokenize a chain into prefix, reasoning and answer ids (see module docstring)."""
    prefix_text, templated = render_prefix(chain, tokenizer)
    prefix_ids = tokenizer(prefix_text, add_special_tokens=False)["input_ids"]
    reasoning = tokenizer(chain.reasoning, add_special_tokens=False, return_offsets_mapping=True)
    answer_ids = tokenizer(ANSWER_SEPARATOR + chain.answer, add_special_tokens=False)["input_ids"]
    offsets = [(int(a), int(b)) for a, b in reasoning["offset_mapping"]]
    return EncodedChain(chain, list(prefix_ids), list(reasoning["input_ids"]), list(answer_ids), offsets, templated)
