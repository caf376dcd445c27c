"""Tiny, deterministic stand-ins for tests and examples: no download, built in code in a second.

``tiny_llama()`` returns a random-weight Llama (2 layers, 64 hidden) and a byte-level BPE
tokenizer trained on a few GSM8K-style sentences, with a chat template so the same code paths
run as with a real instruct model.
"""
from __future__ import annotations

import torch

from .chains import Chain

TRAINING_TEXT = [
    "Natalia sold 48/2 = 24 clips in May.",
    "So she has 16 - 3 = 13 eggs left.",
    "Let's find the total cost of the apples.",
    "Thus, the final answer is: 18",
    "Weng earns 12/60 = $0.2 per minute. Working 50 minutes, she earned 0.2 x 50 = $10.",
    "Betty has only 100 / 2 = $50. Her grandparents gave her 15 * 2 = $30.",
    "#### 72 #### 10 #### 5",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

EXAMPLE_CHAINS = [
    Chain("ex-1", "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
          "How many clips did Natalia sell altogether in April and May?",
          "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.", "#### 72"),
    Chain("ex-2", "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
          "Weng earns 12/60 = $0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $10.", "#### 10"),
    Chain("ex-3", "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does it take?",
          "It takes 2/2 = 1 bolt of white fiber.\nSo the total amount of fabric is 2+1 = 3 bolts.", "#### 3"),
]


def tiny_tokenizer():
    """A byte-level BPE tokenizer (vocab ~400) with a chat template."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer(add_prefix_space=False, trim_offsets=True)
    special = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"]
    bpe.train_from_iterator(TRAINING_TEXT * 4, vocab_size=400, min_frequency=2, special_tokens=special, show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>", additional_special_tokens=special[1:])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_llama(seed: int = 0, dtype: torch.dtype = torch.float32, n_layers: int = 2):
    """``(model, tokenizer)``: a random-weight Llama sized for unit tests."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=n_layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Larger-than-default weights give peaked distributions, so candidate scores are well separated.
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, 0.2)
    return model.to(dtype).eval(), tokenizer
