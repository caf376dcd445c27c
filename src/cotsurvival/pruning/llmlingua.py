"""The ``llmlingua2`` baseline: the deletion order TokenSkip takes from LLMLingua-2.

LLMLingua-2 (Pan et al., 2024) is a token classifier (XLM-RoBERTa-large, distilled from GPT-4
deletion labels; default ``microsoft/llmlingua-2-xlm-roberta-large-meetingbank``) whose label 1
means *keep*. The baseline deletes the reasoning tokens with the lowest keep probability first.
Steps 1-3 reproduce the inference of the ``llmlingua`` package (0.2.2, ``PromptCompressor`` with
``use_llmlingua2=True``: ``compress_prompt_llmlingua2`` -> ``__chunk_context``, ``__compress``,
``TokenClfDataset``, ``__merge_token_to_word``) to float precision; ``tests/test_llmlingua.py``
runs the package itself as the oracle. transformers alone does it: the package would add
``nltk``/``tiktoken`` and load weights with ``trust_remote_code=True`` by default.

1. **Chunking** (``__chunk_context``): the reasoning is tokenized with the classifier's tokenizer
   (``max_seq_len`` = 512). Once at most ``max_seq_len - 2`` tokens remain, they are the last
   chunk; before that, a chunk ends at the last chunk-end token (``.`` or a newline token) among
   its first ``max_seq_len - 1`` tokens (never at its first token), else holds all
   ``max_seq_len - 1``. Each chunk is decoded to a string and tokenized again
   (``convert_tokens_to_string`` then ``tokenize``), as the package does; the round trip can
   change the tokens at a chunk's edges (a word piece gains a ``▁``, a trailing ``▁`` goes).
2. **Framing** (``TokenClfDataset``): a chunk runs as ``[cls] tokens [sep]``, cut to
   ``max_seq_len`` tokens (a chunk of ``max_seq_len - 1`` tokens loses ``[sep]``) and padded to
   ``max_seq_len`` with the framing's pad string, masked. ``framing``:

   * ``"package"`` (default): the package builds its dataset without ``model_name``, so it frames
     with BERT's strings ``[CLS]``/``[SEP]``, which an XLM-RoBERTa tokenizer maps to ``<unk>``:
     every chunk runs as ``<unk> tokens <unk>``. This is what users of LLMLingua-2 (and TokenSkip,
     which calls the package) get, hence the default.
   * ``"trained"``: ``<s> tokens </s>`` (the tokenizer's own ``cls``/``sep`` tokens), as the
     package's training script frames its data: the model as it was trained.

   For the multilingual-BERT variant both framings are ``[CLS] tokens [SEP]``.
3. **Keep probability and words** (``__merge_token_to_word``, ``token_to_word="mean"``): keep
   probability = ``softmax(logits)[..., 1]``; tokens that are special-token strings (``<unk>``
   included) belong to no word; within each chunk, for SentencePiece tokenizers (XLM-RoBERTa) a
   token starts a new word when it begins with ``▁`` or is a single punctuation character, for
   WordPiece tokenizers (``bert``) when it does not begin with ``##``; other tokens join the
   previous word (a word never spans two chunks). A word's keep probability is the mean over its
   tokens. Its character span in the text is the union of its tokens' spans (a re-tokenized token's
   span: the original tokens its decoded characters come from; a lone ``▁`` has none) with
   whitespace trimmed; a word of whitespace only (a lone ``▁`` before punctuation) has an empty span.
4. **Mapping onto the pruner's tokens** (ours; LLMLingua-2 works on words, the pruner on its
   model's tokens): a pruner token takes the probability of the word its character span overlaps
   most (ties: the earlier word). A token that overlaps no word (whitespace such as ``\\n``, or
   text under an ``<unk>``) takes the probability of the next word starting at or after it, or,
   at the end of the text, of the last word. So every piece of a word split into several pruner
   tokens gets that word's probability.
5. **Order**: ascending keep probability, ties to the lowest position (a stable sort), so the
   pieces of one word go left to right.

The package's ``rate`` is not used: keep ratios here count the pruner's tokens (as for every
ordering), whereas the package's ``rate`` counts OpenAI-tokenizer (tiktoken) tokens.
Force tokens (``force_tokens``) are not supported; the package's default has none (it still adds
their placeholders ``[NEW0]`` ... ``[NEW99]`` to its tokenizer, so a text holding those strings
literally would be tokenized differently there).
"""
from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import CotSurvivalError
from ..models import _check_safe_weights, file_sha256, locate_hub, resolve_device, resolve_dtype
from .registry import LLMLINGUA_FRAMINGS

DEFAULT_LLMLINGUA_MODEL = "microsoft/llmlingua-2-xlm-roberta-large-meetingbank"
MAX_SEQ_LEN = 512
CHUNK_END_TOKENS = (".", "\n")
KEEP_LABEL = 1
FRAMINGS = tuple(LLMLINGUA_FRAMINGS)
DEFAULT_FRAMING = FRAMINGS[0]
# TokenClfDataset's strings when built without model_name (its default "bert-base-multilingual-cased").
PACKAGE_FRAME = ("[CLS]", "[SEP]", "[PAD]")


@dataclass(frozen=True)
class Word:
    """A classifier word: character span in the text (empty: whitespace only), keep probability, text.

    ``text`` is the word as the package writes it (its tokens joined, ``▁``/``##`` markers removed).
    """

    start: int
    end: int
    keep_prob: float
    text: str = field(default="", compare=False)


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
        Classifier window including the two framing tokens (LLMLingua-2: 512).
    batch_size : int
        Chunks per forward pass (LLMLingua-2: 50).
    framing : str
        ``"package"`` (``[CLS]``/``[SEP]`` strings, as the ``llmlingua`` package runs it) or
        ``"trained"`` (``<s>``/``</s>``, as it was trained); module docstring, step 2.
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
    framing: str = DEFAULT_FRAMING

    def __post_init__(self) -> None:
        check_framing(self.framing)

    @property
    def wordpiece(self) -> bool:
        return getattr(self.model.config, "model_type", "") in ("bert", "distilbert")

    def frame(self) -> tuple[str, str, str]:
        """The ``(cls, sep, pad)`` token strings a chunk is framed and padded with."""
        if self.framing == "package":
            return PACKAGE_FRAME
        tok = self.tokenizer
        return tok.cls_token, tok.sep_token, tok.pad_token

    def to_dict(self) -> dict:
        """What the manifest records about the classifier."""
        cls, sep, _ = self.frame()
        return {"spec": self.spec, "source": self.source, "revision": self.revision, "sha256": self.sha256,
                "model_type": getattr(self.model.config, "model_type", None), "max_seq_len": self.max_seq_len,
                "framing": self.framing,
                "frame_ids": [self.tokenizer.convert_tokens_to_ids(cls), self.tokenizer.convert_tokens_to_ids(sep)],
                "reference": "llmlingua 0.2.2 PromptCompressor(use_llmlingua2=True)",
                "token_to_word": "mean", "chunk_end_tokens": list(CHUNK_END_TOKENS),
                "mapping": "max character overlap with a word; no overlap: next word, else last word"}

    # ------------------------------------------------------------------ per text
    def chunks(self, text: str) -> list[dict]:
        """Steps 1-2: each chunk's framed ids, token strings and character spans in ``text``.

        A chunk is ``{"ids", "mask", "spans"}``: ``ids`` and ``mask`` as the package's dataset
        builds them (framed, cut to ``max_seq_len``); ``spans[i]`` is the character span in
        ``text`` of framed token ``i`` (``None`` for the framing tokens and tokens with no characters).
        """
        tok = self.tokenizer
        encoded = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        tokens = encoded.tokens()
        offsets = [(int(a), int(b)) for a, b in encoded["offset_mapping"]]
        cls, sep, pad = self.frame()
        out = []
        for start, stop in chunk_bounds(tokens, self.max_seq_len - 2):
            piece = tok.convert_tokens_to_string(tokens[start:stop])
            again = tok(piece, add_special_tokens=False, return_offsets_mapping=True)
            if again.tokens() == tokens[start:stop]:
                spans = offsets[start:stop]
            else:  # the round trip changed the tokens: find the original ones under each new token
                spans = realign(tok, tokens[start:stop], offsets[start:stop], again["offset_mapping"])
            framed = ([cls] + again.tokens() + [sep])[: self.max_seq_len]
            spans = ([None] + list(spans) + [None])[: self.max_seq_len]
            ids = tok.convert_tokens_to_ids(framed)
            if any(i is None for i in ids):
                raise CotSurvivalError("E130", model=self.spec, reason=(
                    f"its tokenizer has no id for {cls!r}/{sep!r} and no unknown token; use the trained framing"))
            out.append({"ids": ids, "mask": [int(t != pad) for t in framed], "spans": spans})
        return out

    def words(self, text: str) -> list[Word]:
        """LLMLingua-2's words of ``text`` with their mean keep probabilities (module docstring, steps 1-3)."""
        chunks = self.chunks(text)
        _, _, pad = self.frame()
        pad_id = self.tokenizer.convert_tokens_to_ids(pad)
        special = special_token_strings(self.tokenizer)
        words: list[Word] = []
        for first in range(0, len(chunks), self.batch_size):
            batch = chunks[first: first + self.batch_size]
            for chunk, probs in zip(batch, self._classify(batch, pad_id)):
                active = [i for i, m in enumerate(chunk["mask"]) if m]
                tokens = self.tokenizer.convert_ids_to_tokens([chunk["ids"][i] for i in active])
                words += merge_words(text, tokens, [chunk["spans"][i] for i in active], probs[active],
                                     [t in special for t in tokens], wordpiece=self.wordpiece)
        return words

    @torch.inference_mode()
    def _classify(self, chunks: list[dict], pad_id) -> list[np.ndarray]:
        """Keep probability (float32, as the package) of every framed token of each chunk.

        Every chunk is padded to ``max_seq_len`` with the framing's pad string and the mask is boolean,
        as in the package, so that its probabilities come out bit for bit (a narrower batch differs
        in the last bits, which can swap near-tied words); one forward pass per chain is cheap
        beside pruning.
        """
        ids = torch.full((len(chunks), self.max_seq_len), pad_id if pad_id is not None else 0, dtype=torch.long)
        mask = torch.zeros((len(chunks), self.max_seq_len), dtype=torch.bool)
        for row, chunk in enumerate(chunks):
            ids[row, : len(chunk["ids"])] = torch.tensor(chunk["ids"])
            mask[row, : len(chunk["mask"])] = torch.tensor(chunk["mask"], dtype=torch.bool)
        logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
        keep = torch.softmax(logits.float(), dim=-1)[..., KEEP_LABEL].cpu().numpy()
        return [keep[row, : len(chunk["ids"])] for row, chunk in enumerate(chunks)]

    def keep_probs(self, text: str, offsets) -> np.ndarray:
        """Keep probability of each pruner token (``offsets`` into ``text``), step 4."""
        return map_words_to_tokens(self.words(text), offsets)


# ---------------------------------------------------------------------- pure steps (tested alone)

def check_framing(framing: str) -> str:
    if framing not in FRAMINGS:
        raise CotSurvivalError("E138", value=framing, choices=", ".join(FRAMINGS))
    return framing


def special_token_strings(tokenizer) -> set[str]:
    """The strings the package skips as special: its tokenizer's special-token map without the additional ones."""
    out = set()
    for key, value in tokenizer.special_tokens_map.items():
        if key != "additional_special_tokens":
            out.update([value] if isinstance(value, str) else value)
    return out


def chunk_bounds(tokens: list[str], max_len: int, end_tokens=CHUNK_END_TOKENS) -> list[tuple[int, int]]:
    """``[start, stop)`` token ranges of the chunks, as the package's ``__chunk_context`` cuts them.

    The rest of the text is the last chunk once it holds at most ``max_len`` tokens. Otherwise the
    chunk ends at the last token in ``end_tokens`` among tokens ``start + 1 .. start + max_len``, or
    at ``start + max_len`` when there is none: a chunk can hold ``max_len + 1`` tokens, one more
    than the window leaves room for (the framing then loses its closing token, as in the package).
    """
    if max_len < 1:
        raise ValueError("max_len must be positive")
    bounds, start, n = [], 0, len(tokens)
    while start < n:
        if start + max_len > n - 1:
            bounds.append((start, n))
            break
        end = start + max_len
        for candidate in range(end, start, -1):
            if tokens[candidate] in end_tokens:
                end = candidate
                break
        bounds.append((start, end + 1))
        start = end + 1
    return bounds


def realign(tokenizer, tokens: list[str], offsets, new_offsets) -> list[tuple[int, int] | None]:
    """Character spans in the text of the tokens a chunk's string was re-tokenized into.

    Token ``k`` of the chunk decodes to the characters between the decoded lengths of its first
    ``k`` and ``k + 1`` tokens; a new token takes the union of the text spans of the original tokens
    whose decoded characters it overlaps (``None``: none, e.g. a token of no characters).
    """
    ends = [len(tokenizer.convert_tokens_to_string(tokens[: k + 1])) for k in range(len(tokens))]
    starts = [0] + ends[:-1]
    spans = []
    for a, b in new_offsets:
        under = [k for k in range(len(tokens)) if min(ends[k], b) > max(starts[k], a)]
        spans.append((min(offsets[k][0] for k in under), max(offsets[k][1] for k in under)) if under else None)
    return spans


def starts_word(token: str, wordpiece: bool) -> bool:
    """LLMLingua-2's ``is_begin_of_new_word`` without force tokens."""
    if wordpiece:
        return not token.startswith("##")
    return token.startswith("▁") or token in string.punctuation


def merge_words(text: str, tokens, spans, probs, special, *, wordpiece: bool = False) -> list[Word]:
    """Group one chunk's classifier tokens into words (mean keep probability, whitespace-trimmed spans).

    ``spans[i]`` is token ``i``'s character span in ``text`` or ``None``. A lone ``▁`` has no span
    of its own (the tokenizer gives it the next character's, which belongs to the next word). The
    mean is taken in the probabilities' own precision (float32 from the classifier), as the package does.
    """
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
        covered = [spans[i] for i in group
                   if spans[i] is not None and spans[i][1] > spans[i][0] and tokens[i].strip("▁")]
        start = min((s[0] for s in covered), default=0)
        end = max((s[1] for s in covered), default=0)
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end == start:
            start = end = 0
        if wordpiece:
            word = tokens[group[0]] + "".join(tokens[i].lstrip("#") for i in group[1:])
        else:
            word = "".join(tokens[i].lstrip("▁") for i in group)
        values = [probs[i] for i in group]
        words.append(Word(start, end, float(sum(values) / len(values)), word))
    return words


def map_words_to_tokens(words: list[Word], offsets) -> np.ndarray:
    """Keep probability of each pruner token: the word it overlaps most, else the next, else the last word.

    Words with an empty span (whitespace only) take no part.
    """
    words = [w for w in words if w.end > w.start]
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
                         batch_size: int = 50, framing: str = DEFAULT_FRAMING) -> KeepClassifier:
    """Load an LLMLingua-2 classifier from a local directory or a hub id (cache only when offline).

    Weights are read from safetensors only unless ``allow_unsafe_weights``; no repository code runs.
    A missing model gives ``E130`` naming it. ``framing``: ``"package"`` or ``"trained"`` (module docstring, step 2).
    """
    check_framing(framing)
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
                          revision=revision, sha256=sha, max_seq_len=window, batch_size=batch_size, device=torch_device,
                          framing=framing)


def classifier_for_run(run, manifest: dict, names, spec: str | None, *, needed: bool, device: str = "auto",
                       allow_unsafe_weights: bool = False, framing: str | None = None) -> KeepClassifier | None:
    """The classifier a ``prune`` call needs for ``llmlingua2`` (None when the baseline is not asked for).

    A run keeps one classifier: ``spec`` defaults to the one its manifest records (else
    :data:`DEFAULT_LLMLINGUA_MODEL`), and a different one is refused (``E132``), since committed
    chains would otherwise mix two orderings under one name. Likewise one framing: ``framing``
    defaults to the recorded one (else :data:`DEFAULT_FRAMING`) and another is refused (``E137``),
    as is adding chains to a run recorded before the framing was (its chunks ran as ``<s> ... </s>``
    without the package's round trip, which this module no longer reproduces). Loaded only when
    ``needed`` (chains to commit).
    """
    if "llmlingua2" not in names:
        return None
    record = manifest.get("llmlingua2") or {}
    recorded = record.get("spec")
    spec = spec or recorded or DEFAULT_LLMLINGUA_MODEL
    if recorded and recorded != spec:
        raise CotSurvivalError("E132", path=run.path, old=recorded, new=spec)
    if framing is not None:
        check_framing(framing)
    if record and record.get("framing") is None and (needed or framing is not None):
        raise CotSurvivalError("E137", path=run.path, new=framing or DEFAULT_FRAMING, fix="Use a new --out directory",
                               old="'<s> ... </s>' (unrecorded: made before the framing was recorded, without the "
                                   "package's chunk round trip)")
    framing = framing or record.get("framing") or DEFAULT_FRAMING
    if record.get("framing", framing) != framing:
        raise CotSurvivalError("E137", path=run.path, old=record["framing"], new=framing,
                               fix=f"Use a new --out directory or --llmlingua-framing {record['framing']}")
    if not needed:
        return None
    classifier = load_keep_classifier(spec, device=device, allow_unsafe_weights=allow_unsafe_weights, framing=framing)
    run.update_manifest(llmlingua2=classifier.to_dict())  # before any chain is committed with it
    return classifier
