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
    tokenizer = tiny_tokenizer()
    return random_llama(tokenizer, seed=seed, n_layers=n_layers).to(dtype).eval(), tokenizer


def random_llama(tokenizer, *, seed: int = 0, hidden_size: int = 64, intermediate_size: int = 128, n_layers: int = 2,
                 n_heads: int = 4, n_kv_heads: int = 2):
    """A random-weight Llama for ``tokenizer`` (its vocabulary and special tokens), in evaluation mode.

    Weights of matrices are drawn from N(0, 0.2²) after ``torch.manual_seed(seed)``: larger than the
    default, so distributions are peaked and candidate scores well separated.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_kv_heads,
                         max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, 0.2)
    return model.eval()


from .taxonomy.spec import CATEGORY_OF_LABEL  # noqa: E402  (the packaged spec's label -> category)
# Mean static deletion cost per label in the synthetic run (nats): math costs most, as in the study.
_SYNTHETIC_COST = {"SYMBOLIC_MATH": 3.0, "ENTITY_NAME": 1.6, "VERBAL_MATH": 1.4, "COREFERENCE": 1.0,
                   "CONTENT": 0.9, "META_DISCOURSE": 0.5, "FUNCTION": 0.4}


def synthetic_run(path, n_chains: int = 6, n_tokens: int = 30, keep_ratio: float = 0.0, seed: int = 0,
                  tagged: bool = True, baselines: bool = True, labels_layout: str = "table"):
    """Write a small, internally consistent run directory without any model.

    With ``tagged`` the true labels are stored as the source ``rule`` of ``labels.parquet``
    (``labels_layout="table"``), or inside ``tokens.parquet`` as cotsurvival 0.1.0 wrote them
    (``labels_layout="0.1.0"``).

    Token costs are drawn per fine label (symbolic math costliest) and drift as neighbours are deleted,
    so the greedy order, traces and steps agree with each other exactly as a real run's do. Meant for
    tests and examples of the analysis and report stages.

    Returns
    -------
    RunDir
    """
    import numpy as np
    import pandas as pd

    from ._version import __version__
    from .rundir import RunDir

    rng = np.random.default_rng(seed)
    run = RunDir(path)
    run.path.mkdir(parents=True, exist_ok=True)
    labels = list(_SYNTHETIC_COST)
    words = {"SYMBOLIC_MATH": "48", "VERBAL_MATH": "total", "ENTITY_NAME": "clips", "COREFERENCE": "she",
             "META_DISCOURSE": "so", "CONTENT": "sold", "FUNCTION": "the"}
    chain_rows, label_rows = [], []
    for index in range(n_chains):
        n = int(n_tokens + rng.integers(-n_tokens // 3, n_tokens // 3 + 1)) if n_tokens > 3 else n_tokens
        token_labels = rng.choice(labels, size=n, p=[0.25, 0.08, 0.15, 0.07, 0.1, 0.1, 0.25])
        texts = [(" " if i else "") + words[lab] for i, lab in enumerate(token_labels)]
        reasoning = "".join(texts)
        starts = np.cumsum([0] + [len(t) for t in texts[:-1]])
        chain_id = f"syn-{index}"
        chain_rows.append({"chain_index": index, "chain_id": chain_id, "question": f"Synthetic question {index}?",
                           "reasoning": reasoning, "answer": "#### 1", "prefix_ids": [1, 2, 3],
                           "reasoning_ids": list(range(10, 10 + n)), "answer_ids": [4, 5], "used_chat_template": False})
        base = np.array([_SYNTHETIC_COST[lab] for lab in token_labels]) * rng.lognormal(0.0, 0.5, size=n)
        order, traces, objectives, costs_at = _simulate_greedy(base, keep_ratio, rng)
        n_steps = len(order)
        deleted = {pos: step + 1 for step, pos in enumerate(order)}
        tokens = pd.DataFrame({
            "chain_index": index, "chain_id": chain_id, "position": np.arange(n), "token_id": np.arange(10, 10 + n),
            "text": texts, "char_start": starts,
            "char_end": starts + np.array([len(t) for t in texts]), "is_whitespace": False,
            "deleted_step": pd.array([deleted.get(i) for i in range(n)], dtype="Int64"), "n_tokens": n,
        })
        tokens["survival"] = tokens["deleted_step"].fillna(n_steps).astype(float) / n
        tokens["censored"] = tokens["deleted_step"].isna()
        tokens["deletion_cost"] = [costs_at.get(i, np.nan) for i in range(n)]
        if tagged:
            labelled = tokens[["chain_index", "chain_id", "position"]].assign(
                label=token_labels, category=[CATEGORY_OF_LABEL[lab] for lab in token_labels])
            if labels_layout == "0.1.0":
                tokens["label"], tokens["category"] = labelled["label"], labelled["category"]
            else:
                label_rows.append(labelled)
        run.write_part("tokens", index, tokens)
        steps = pd.DataFrame({"chain_index": index, "chain_id": chain_id, "step": np.arange(n_steps + 1),
                              "position_deleted": pd.array([None] + list(order), dtype="Int64"),
                              "objective": objectives, "n_remaining": n - np.arange(n_steps + 1)})
        run.write_part("steps", index, steps)
        trace = pd.DataFrame(traces, columns=["step", "position", "cost"])
        trace.insert(0, "chain_id", chain_id)
        trace.insert(0, "chain_index", index)
        trace["cost"] = trace["cost"].astype("float32")
        run.write_part("traces", index, trace)
        if baselines:
            run.write_part("baselines", index, _synthetic_baselines(index, chain_id, base, n_steps, rng))
    run.write_chains(pd.DataFrame(chain_rows))
    run.write_manifest({
        "cotsurvival_version": __version__, "model": {"spec": "synthetic"}, "objective": "joint",
        "keep_ratio": keep_ratio, "seed": seed, "n_chains": n_chains, "skipped": [],
        "engine": {"method": "synthetic"}, "baselines": ["random", "surprisal", "loo", "attention"] if baselines else [],
        "taxonomy": {"name": "synthetic", "version": "0"} if tagged else None, "timings": {},
    })
    if label_rows:
        from .labels import RULE, record_source, write_labels

        for frame in label_rows:
            write_labels(run, int(frame["chain_index"].iloc[0]), frame, RULE, {"name": "synthetic", "version": "0"})
        record_source(run, RULE, kind="synthetic truth", taxonomy={"name": "synthetic", "version": "0"})
    return run


def _simulate_greedy(base, keep_ratio, rng):
    """Greedy deletion over costs that grow when a neighbour goes (importance is dynamic)."""
    import math

    import numpy as np

    n = len(base)
    cost = base.copy()
    alive = list(range(n))
    n_delete = n - math.floor(n * keep_ratio)
    objective = -float(base.sum()) - 5.0
    order, traces, objectives, costs_at = [], [], [objective], {}
    for step in range(1, n_delete + 1):
        current = cost[alive]
        traces.extend((step, pos, float(np.float32(cost[pos]))) for pos in alive)
        pick = alive[int(np.argmin(np.float32(current)))]  # ties: lowest position (alive is sorted)
        order.append(pick)
        costs_at[pick] = float(np.float32(cost[pick]))
        objective -= float(np.float32(cost[pick]))
        objectives.append(objective)
        where = alive.index(pick)
        alive.remove(pick)
        for neighbour in alive[max(0, where - 1): where + 1]:
            cost[neighbour] += 0.3 * rng.random()
    return order, traces, objectives, costs_at


def _synthetic_baselines(index, chain_id, base, n_steps, rng):
    import numpy as np
    import pandas as pd

    n = len(base)
    orders = {"random": rng.permutation(n), "surprisal": np.argsort(base + rng.normal(0, 1.0, n), kind="stable"),
              "loo": np.argsort(base, kind="stable"), "attention": np.argsort(base + rng.normal(0, 0.5, n), kind="stable")}
    frames = []
    for name, order in orders.items():
        step_of = {int(pos): s + 1 for s, pos in enumerate(order[:n_steps])}
        steps = pd.array([step_of.get(i) for i in range(n)], dtype="Int64")
        frame = pd.DataFrame({"chain_index": index, "chain_id": chain_id, "ordering": name, "position": np.arange(n),
                              "deleted_step": steps, "n_tokens": n})
        frame["survival"] = frame["deleted_step"].fillna(n_steps).astype(float) / n
        frame["censored"] = frame["deleted_step"].isna()
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------- tiny models per family
# Every architecture the engine's fast path supports, as a random-weight model small enough for
# unit tests. Each family keeps its own forward's features (q/k norms, soft-capping, sandwich
# norms, multipliers, NoPE layers, windows); sizes shrink, defaults that assume a big model
# (head_dim 128/256, 4096-token windows, pad ids beyond the vocabulary) are set explicitly.
TINY_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "olmo2", "granite", "smollm3")

_FAMILY_CLASSES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"), "mistral": ("MistralConfig", "MistralForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"), "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM"), "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM"),
    "phi3": ("Phi3Config", "Phi3ForCausalLM"), "olmo2": ("Olmo2Config", "Olmo2ForCausalLM"),
    "granite": ("GraniteConfig", "GraniteForCausalLM"), "smollm3": ("SmolLM3Config", "SmolLM3ForCausalLM"),
}
# What a family's defaults would make too big or inconsistent for a 32-wide model.
_FAMILY_DEFAULTS = {
    "mistral": {"sliding_window": None},
    "qwen3": {"sliding_window": None},
    "gemma2": {"sliding_window": 4096, "query_pre_attn_scalar": 8},
    "gemma3_text": {"sliding_window": 4096, "query_pre_attn_scalar": 8},
    "granite": {"embedding_multiplier": 2.0, "residual_multiplier": 0.5, "attention_multiplier": 0.2,
                "logits_scaling": 3.0},
}


def tiny_config(family: str, vocab_size: int = 400, **variant):
    """A small config of ``family``'s own config class; ``variant`` overrides any field."""
    import transformers

    if family not in _FAMILY_CLASSES:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(TINY_FAMILIES)}")
    config_name, _ = _FAMILY_CLASSES[family]
    kwargs = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=512,
                  bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=False)
    kwargs.update(_FAMILY_DEFAULTS.get(family, {}))
    kwargs.update(variant)
    if family == "gemma3_text" and "layer_types" not in variant:
        # Gemma 3 alternates five sliding layers with one global one; a tiny model alternates 1:1 so
        # both kinds are present.
        kwargs["layer_types"] = ["sliding_attention" if i % 2 == 0 else "full_attention"
                                 for i in range(kwargs["num_hidden_layers"])]
    return getattr(transformers, config_name)(**kwargs)


def tiny_model(family: str, seed: int = 0, dtype: torch.dtype = torch.float64, vocab_size: int = 400,
               attn_implementation: str | None = None, **variant):
    """A random-weight ``family`` causal LM (2 layers, 32 wide) in eval mode; ``variant`` edits its config.

    Examples: ``tiny_model("qwen3", attention_bias=True)``, ``tiny_model("mistral", sliding_window=6)``,
    ``tiny_model("llama", rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0,
    "original_max_position_embeddings": 128})``.
    """
    import transformers

    config = tiny_config(family, vocab_size=vocab_size, **variant)
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = getattr(transformers, _FAMILY_CLASSES[family][1])(config)
    # Larger-than-default weights give peaked distributions, so candidate scores are well separated;
    # norms and biases get random values too, so a forward that skipped one would show.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, 0.2)
            elif "norm" in name:
                parameter.uniform_(0.5, 1.5)
            else:
                parameter.normal_(0.0, 0.1)
    return model.to(dtype).eval()


def pruned_sequences(reasoning: list[int], order: list[int]) -> list[tuple[int, ...]]:
    """The sequence after each step of a deletion order: orders that differ only between identical
    tokens are equal (compare these, not positions, when checking two engines' orders)."""
    alive = list(range(len(reasoning)))
    out = []
    for position in order:
        alive.remove(position)
        out.append(tuple(reasoning[i] for i in alive))
    return out


class RecordingScorer:
    """A scorer wrapper that keeps every step's :class:`~cotsurvival.pruning.scoring.StepScores`
    (exactness checks in tests and ``bench/gpu.py`` compare two scorers step by step)."""

    def __init__(self, scorer):
        self.scorer, self.steps = scorer, []

    def score(self, prefix, kept, answer):
        scores = self.scorer.score(prefix, kept, answer)
        self.steps.append(scores)
        return scores

    def reset(self):
        self.scorer.reset()

    @property
    def token_rows(self) -> int:  # part of the Scorer interface the greedy loop reads
        return self.scorer.token_rows
