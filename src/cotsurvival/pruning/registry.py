"""The choices of ``prune`` by name, with a one-line meaning each (:class:`cotsurvival.registry.Registry`).

The code validates against these registries, finds implementations in them by name, and the CLI
builds its ``--objective``, ``--method``, ``--baselines`` and ``--backend`` choices and help from
them, so the three cannot drift. This module imports nothing heavy, so the CLI can read it without
loading torch; the implementations register themselves where they are defined (objectives and
scorers in :mod:`.scoring` and :mod:`.crossstep`, baselines in :mod:`.baselines`, backends in
:mod:`.run`).
"""
from __future__ import annotations

from ..registry import Registry

#: What a deletion's cost measures; implementations: ``weights(n_kept, n_answer) -> array``.
OBJECTIVES = Registry("--objective", {
    "joint": "log p(reasoning kept + answer | prompt): the chain must stay likely",
    "answer": "log p(answer | prompt, reasoning kept): only the answer must stay likely",
})

#: How candidate deletions are scored (``auto`` picks per architecture); implementations: Scorer classes.
SCORING_METHODS = Registry("--method", {
    "auto": "crossstep for supported architectures (Llama, Mistral, Qwen2/3, Gemma 2/3, Phi-3, OLMo 2, Granite, "
            "SmolLM3), naive otherwise",
    "crossstep": "prefix reuse + each candidate's own computation carried across steps (fastest)",
    "prefix": "prefix reuse only (less memory)",
    "naive": "full recompute of every candidate (any model)",
})

#: Orderings stored beside the greedy one; implementations: ``order(trace, inputs) -> positions``.
BASELINES = Registry("baseline", {
    "random": "a seeded permutation per chain",
    "surprisal": "most predictable tokens (highest log p in the unpruned chain) first",
    "loo": "static leave-one-out: ascending step-1 costs",
    "attention": "least attention received from the answer tokens first",
    "llmlingua2": "lowest LLMLingua-2 keep probability first (TokenSkip's order; --llmlingua-model, --llmlingua-framing)",
})

#: Where pruning runs; implementations: ``start(**options) -> (pool, model, tokenizer, info)``.
BACKENDS = Registry("--backend", {
    "local": "this process, on --device",
    "ray": "Ray workers, one chain each (pip install cotsurvival[cluster])",
})

#: How ``llmlingua2`` frames each classifier chunk (see :mod:`cotsurvival.pruning.llmlingua`); the first is the default.
LLMLINGUA_FRAMINGS = Registry("--llmlingua-framing", {
    "package": "[CLS]/[SEP], read as <unk> by XLM-RoBERTa: what the llmlingua package (0.2.2) runs",
    "trained": "<s>/</s>: the framing the classifier was trained with",
})
