"""The ``llmlingua2`` baseline: the deletion order TokenSkip takes from LLMLingua-2.

LLMLingua-2 (Pan et al., 2024) is a token classifier (XLM-RoBERTa-large, distilled from GPT-4
deletion labels; default ``microsoft/llmlingua-2-xlm-roberta-large-meetingbank``) whose label 1
means *keep*. The baseline deletes the reasoning tokens with the lowest keep probability first.
We follow the public ``llmlingua`` code (``PromptCompressor`` with ``use_llmlingua2=True``,
``llmlingua/prompt_compressor.py``) step by step, with transformers only:

1. **Chunking** (``__chunk_context``): the reasoning is tokenized with the classifier's tokenizer;
   chunks hold at most ``max_seq_len - 2`` tokens (room for ``<s>`` and ``</s>``; ``max_seq_len``
   = 512) and end at the last chunk-end token (``.`` or a newline token) within that window, or at
   the window's end when there is none. (The original can emit one token more than the window,
   which its dataset then truncates together with ``</s>``; we keep every chunk within the window.)
   Each chunk runs as ``<s> chunk </s>``. The original decodes a chunk to a string and tokenizes
   it again; we feed the chunk's token ids directly, which is the same input without the
   round trip.
2. **Keep probability per token**: ``softmax(logits)[..., 1]``.
3. **Words** (``__merge_token_to_word``, ``token_to_word="mean"``): for SentencePiece tokenizers
   (XLM-RoBERTa) a token starts a new word when it begins with ``▁`` or is a single punctuation
   character; for WordPiece tokenizers (``bert``: the multilingual-BERT variant) when it does not
   begin with ``##``. Other tokens join the previous word. Special tokens (``<unk>`` included, as
   in the original) belong to no word. A word's keep probability is the mean over its tokens.
   A word's character span is the union of its tokens' offsets with leading and trailing
   whitespace removed; a word of whitespace only (a lone ``▁`` before punctuation) is dropped.
4. **Mapping onto the pruner's tokens** (ours; LLMLingua-2 works on words, the pruner on its
   model's tokens): a pruner token takes the probability of the word its character span overlaps
   most (ties: the earlier word). A token that overlaps no word (whitespace such as ``\\n``, or
   text under an ``<unk>``) takes the probability of the next word starting at or after it, or,
   at the end of the text, of the last word. So every piece of a word split into several pruner
   tokens gets that word's probability.
5. **Order**: ascending keep probability, ties to the lowest position (a stable sort), so the
   pieces of one word go left to right.

The ``llmlingua`` package is not used: it adds the chunking and word merging written out here
(a few lines), but pulls in ``nltk`` and ``tiktoken`` and loads weights with
``trust_remote_code=True`` by default; transformers' ``AutoModelForTokenClassification`` is the
same network.
"""
from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import CotSurvivalError
from ..models import _check_safe_weights, file_sha256, locate_hub, resolve_device, resolve_dtype

DEFAULT_LLMLINGUA_MODEL = "microsoft/llmlingua-2-xlm-roberta-large-meetingbank"
MAX_SEQ_LEN = 512
CHUNK_END_TOKENS = (".", "\n")
KEEP_LABEL = 1


@dataclass(frozen=True)
class Word:
    """A classifier word: character span in the text and its keep probability."""

    start: int
    end: int
    keep_prob: float


@dataclass
class KeepClassifier:
    """A loaded LLMLingua-2 token classifier.

    Attributes
    ----------
    model : transformers.PreTrainedModel
        A token-classification model whose label 1 means *keep*.
    tokenizer : transformers.PreTrainedTokenizerFast
        Must return character offsets.
    spec : str
        What the user asked for (hub id or path).
    max_seq_len : int
        Classifier window including ``<s>`` and ``</s>`` (LLMLingua-2: 512).
    batch_size : int
        Chunks per forward pass (LLMLingua-2: 50).
    """

    model: object
    tokenizer: object
    spec: str
    source: str = ""
    revision: str | None = None
    sha256: str | None = None
    max_seq_len: int = MAX_SEQ_LEN
    batch_size: int = 50
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def wordpiece(self) -> bool:
        return getattr(self.model.config, "model_type", "") in ("bert", "distilbert")

    def to_dict(self) -> dict:
        """What the manifest records about the classifier."""
        return {"spec": self.spec, "source": self.source, "revision": self.revision, "sha256": self.sha256,
                "model_type": getattr(self.model.config, "model_type", None), "max_seq_len": self.max_seq_len,
                "token_to_word": "mean", "chunk_end_tokens": list(CHUNK_END_TOKENS),
                "mapping": "max character overlap with a word; no overlap: next word, else last word"}

    # ------------------------------------------------------------------ per text
    def token_keep_probs(self, text: str) -> tuple[list[str], list[tuple[int, int]], np.ndarray, np.ndarray]:
        """Classifier tokens of ``text``, their offsets, keep probabilities and special-token mask."""
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(encoded["input_ids"])
        offsets = [(int(a), int(b)) for a, b in encoded["offset_mapping"]]
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        special = np.isin(np.asarray(ids, dtype=np.int64), np.asarray(self.tokenizer.all_special_ids, dtype=np.int64))
        probs = np.zeros(len(ids), dtype=np.float64)
        chunks = chunk_bounds(tokens, self.max_seq_len - 2)
        for first in range(0, len(chunks), self.batch_size):
            batch = chunks[first: first + self.batch_size]
            for (start, stop), row in zip(batch, self._classify([ids[a:b] for a, b in batch])):
                probs[start:stop] = row
        return tokens, offsets, probs, special

    @torch.inference_mode()
    def _classify(self, chunks: list[list[int]]) -> list[np.ndarray]:
        """Keep probability of every token of each chunk, run as ``<s> chunk </s>`` (right-padded)."""
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        width = max(len(c) for c in chunks) + 2
        ids = torch.full((len(chunks), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunks), width), dtype=torch.long)
        for row, chunk in enumerate(chunks):
            ids[row, : len(chunk) + 2] = torch.tensor([cls, *chunk, sep])
            mask[row, : len(chunk) + 2] = 1
        logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
        keep = torch.softmax(logits.float(), dim=-1)[..., KEEP_LABEL].double().cpu().numpy()
        return [keep[row, 1: len(chunk) + 1] for row, chunk in enumerate(chunks)]

    def words(self, text: str) -> list[Word]:
        """LLMLingua-2's words of ``text`` with their mean keep probabilities (module docstring, step 3)."""
        tokens, offsets, probs, special = self.token_keep_probs(text)
        return merge_words(text, tokens, offsets, probs, special, wordpiece=self.wordpiece)

    def keep_probs(self, text: str, offsets) -> np.ndarray:
        """Keep probability of each pruner token (``offsets`` into ``text``), step 4."""
        return map_words_to_tokens(self.words(text), offsets)


# ---------------------------------------------------------------------- pure steps (tested alone)

def chunk_bounds(tokens: list[str], max_len: int, end_tokens=CHUNK_END_TOKENS) -> list[tuple[int, int]]:
    """``[start, stop)`` token ranges of the chunks (LLMLingua-2's ``__chunk_context``).

    A chunk holds at most ``max_len`` tokens and ends at the last token in ``end_tokens`` inside
    that window (searching back from its end), or at the window's end when there is none.
    """
    if max_len < 1:
        raise ValueError("max_len must be positive")
    bounds, start, n = [], 0, len(tokens)
    while start < n:
        stop = min(start + max_len, n)
        if stop < n:
            for end in range(stop - 1, start, -1):  # as the original: never a chunk of one end token
                if tokens[end] in end_tokens:
                    stop = end + 1
                    break
        bounds.append((start, stop))
        start = stop
    return bounds


def starts_word(token: str, wordpiece: bool) -> bool:
    """LLMLingua-2's ``is_begin_of_new_word`` without force tokens."""
    if wordpiece:
        return not token.startswith("##")
    return token.startswith("▁") or token in string.punctuation


def merge_words(text: str, tokens, offsets, probs, special, *, wordpiece: bool = False) -> list[Word]:
    """Group classifier tokens into words (mean keep probability, whitespace-trimmed spans)."""
    groups: list[list[int]] = []
    for index, token in enumerate(tokens):
        if special[index]:
            continue
        if not groups or starts_word(token, wordpiece):
            groups.append([index])
        else:
            groups[-1].append(index)
    words = []
    for group in groups:
        start, end = min(offsets[i][0] for i in group), max(offsets[i][1] for i in group)
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            words.append(Word(start, end, float(np.mean([probs[i] for i in group]))))
    return words


def map_words_to_tokens(words: list[Word], offsets) -> np.ndarray:
    """Keep probability of each pruner token: the word it overlaps most, else the next, else the last word."""
    out = np.ones(len(offsets), dtype=np.float64)  # no words at all: every token equal (order by position)
    if not words:
        return out
    starts = np.array([w.start for w in words])
    ends = np.array([w.end for w in words])
    probs = np.array([w.keep_prob for w in words])
    for index, (a, b) in enumerate(offsets):
        overlap = np.minimum(ends, b) - np.maximum(starts, a)
        best = int(np.argmax(overlap))  # first maximum: ties go to the earlier word
        if overlap[best] > 0:
            out[index] = probs[best]
            continue
        following = np.nonzero(starts >= a)[0]
        out[index] = probs[following[0]] if len(following) else probs[-1]
    return out


def llmlingua2_order(keep_probs: np.ndarray) -> np.ndarray:
    """Deletion order: lowest keep probability first, ties to the lowest position."""
    return np.argsort(np.asarray(keep_probs, dtype=np.float64), kind="stable")


# ---------------------------------------------------------------------- loading

def load_keep_classifier(spec: str = DEFAULT_LLMLINGUA_MODEL, *, device: str = "auto", dtype: str = "float32",
                         allow_unsafe_weights: bool = False, max_seq_len: int | None = None,
                         batch_size: int = 50) -> KeepClassifier:
    """Load an LLMLingua-2 classifier from a local directory or a hub id (cache only when offline).

    Weights are read from safetensors only unless ``allow_unsafe_weights``; no repository code runs.
    A missing model gives ``E130`` naming it.
    """
    from transformers import AutoModelForTokenClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = Path(spec).expanduser()
    kwargs: dict = {"use_safetensors": None if allow_unsafe_weights else True}
    sha = revision = None
    if path.is_dir():
        try:
            _check_safe_weights(path, allow_unsafe_weights)
        except CotSurvivalError as exc:
            raise CotSurvivalError("E131", model=spec, path=exc.fields.get("path")) from None
        weights = sorted(path.glob("*.safetensors"))
        sha = file_sha256(weights[0]) if len(weights) == 1 else None
        source, where = str(path), {"local_files_only": True}
    elif path.exists() or spec.startswith((".", "/", "~")):
        raise CotSurvivalError("E130", model=spec, reason="no such model directory")
    else:
        # The local Hugging Face cache, else a quick hub check (models.locate_hub): an unreachable or
        # offline hub fails in seconds instead of minutes of transformers' connection retries.
        source, revision, _, found = locate_hub(spec, allow_unsafe_weights, error="E130", aliases={})
        where = {k: v for k, v in found.items() if k in ("local_files_only", "revision")}
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **where)
        model = AutoModelForTokenClassification.from_pretrained(source, dtype=torch_dtype, **kwargs, **where)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        # The first sentence says what went wrong; the rest of transformers' message is advice.
        reason = " ".join(str(exc).split()).split(". ")[0][:200]
        raise CotSurvivalError("E130", model=spec, reason=reason or "cannot be loaded") from None
    if not getattr(tokenizer, "is_fast", False):
        raise CotSurvivalError("E130", model=spec, reason="its tokenizer gives no character offsets (needs a fast tokenizer)")
    if getattr(model.config, "num_labels", 2) != 2:
        raise CotSurvivalError("E130", model=spec, reason=f"expected 2 labels (drop/keep), found {model.config.num_labels}")
    model.to(torch_device).eval()
    limit = getattr(model.config, "max_position_embeddings", MAX_SEQ_LEN + 2)
    if getattr(model.config, "model_type", "") in ("xlm-roberta", "roberta"):
        limit -= 2  # RoBERTa positions start after the padding index
    window = min(max_seq_len or MAX_SEQ_LEN, limit)
    return KeepClassifier(model=model, tokenizer=tokenizer, spec=spec, source=source,
                          revision=revision, sha256=sha, max_seq_len=window, batch_size=batch_size, device=torch_device)


def classifier_for_run(run, manifest: dict, names, spec: str | None, *, needed: bool, device: str = "auto",
                       allow_unsafe_weights: bool = False) -> KeepClassifier | None:
    """The classifier a ``prune`` call needs for ``llmlingua2`` (None when the baseline is not asked for).

    A run keeps one classifier: ``spec`` defaults to the one its manifest records (else
    :data:`DEFAULT_LLMLINGUA_MODEL`), and a different one is refused (``E132``), since committed
    chains would otherwise mix two orderings under one name. Loaded only when ``needed`` (chains to commit).
    """
    if "llmlingua2" not in names:
        return None
    recorded = (manifest.get("llmlingua2") or {}).get("spec")
    spec = spec or recorded or DEFAULT_LLMLINGUA_MODEL
    if recorded and recorded != spec:
        raise CotSurvivalError("E132", path=run.path, old=recorded, new=spec)
    if not needed:
        return None
    classifier = load_keep_classifier(spec, device=device, allow_unsafe_weights=allow_unsafe_weights)
    run.update_manifest(llmlingua2=classifier.to_dict())  # before any chain is committed with it
    return classifier
