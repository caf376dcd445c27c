"""The choices of ``prune`` by name, with a one-line meaning each.

The code validates against these dicts and the CLI builds its ``--objective``, ``--method`` and
``--baselines`` choices and help from them, so the two cannot drift. This module imports nothing
heavy, so the CLI can read it without loading torch.
"""
from __future__ import annotations

#: What a deletion's cost measures.
OBJECTIVES = {
    "joint": "log p(reasoning kept + answer | prompt): the chain must stay likely",
    "answer": "log p(answer | prompt, reasoning kept): only the answer must stay likely",
}

#: How candidate deletions are scored (``auto`` picks per architecture); the classes are in
#: :data:`cotsurvival.pruning.methods.SCORERS`.
SCORING_METHODS = {
    "auto": "crossstep for supported architectures (Llama, Mistral, Qwen2/3, Gemma 2/3, Phi-3, OLMo 2, Granite, "
            "SmolLM3), naive otherwise",
    "crossstep": "prefix reuse + each candidate's own computation carried across steps (fastest)",
    "prefix": "prefix reuse only (less memory)",
    "naive": "full recompute of every candidate (any model)",
}

#: Orderings stored beside the greedy one (see :mod:`cotsurvival.pruning.baselines`).
BASELINES = {
    "random": "a seeded permutation per chain",
    "surprisal": "most predictable tokens (highest log p in the unpruned chain) first",
    "loo": "static leave-one-out: ascending step-1 costs",
    "attention": "least attention received from the answer tokens first",
    "llmlingua2": "lowest LLMLingua-2 keep probability first (TokenSkip's order; --llmlingua-model, --llmlingua-framing)",
}

#: How ``llmlingua2`` frames each classifier chunk (see :mod:`cotsurvival.pruning.llmlingua`); the first is the default.
LLMLINGUA_FRAMINGS = {
    "package": "[CLS]/[SEP], read as <unk> by XLM-RoBERTa: what the llmlingua package (0.2.2) runs",
    "trained": "<s>/</s>: the framing the classifier was trained with",
}
