"""The llmlingua2 baseline: chunking, framing, word merging, mapping onto pruner tokens, loading, the run.

Two tiny random XLM-RoBERTa token classifiers with SentencePiece-style Unigram tokenizers built in
code (the real weights cannot be downloaded here). Oracles: the ``llmlingua`` package itself (0.2.2,
the ``test`` extra) run on its own ``PromptCompressor`` path; the classifier run directly on framed
ids (transformers); chunk bounds, round-trip tokens, word groups and token-to-word maps written by hand.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import random
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cotsurvival.errors import CotSurvivalError
from cotsurvival.pruning.llmlingua import (chunk_bounds, llmlingua2_order, load_keep_classifier, map_words_to_tokens,
                                           merge_words, Word)

TEXT = "Tom has 12 apples.\nHe eats 3 apples."
TRAINING = ["Tom has 12 apples. He eats 3 apples.", "So 12 - 3 = 9 apples are left.", "The answer is 9."] * 5


def train_tokenizer(texts: list[str], vocab_size: int):
    """An XLM-RoBERTa-style tokenizer (Unigram pieces, Metaspace ``▁``) trained on ``texts``, the same every run.

    The trainer's pieces are the same from run to run, but not their scores (they move by ~1e-3) nor
    their order (ids), which would change segmentations and the random model's outputs: each piece is
    scored by its count in the training text as the pre-tokenizer sees it, and numbered by that score,
    then by its text.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import XLMRobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.Unigram())
    # XLM-RoBERTa's SentencePiece normalizer turns newlines into spaces; so does this one.
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace("\n", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(texts, trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>", show_progress=False))
    seen = "".join("▁" + t.replace("\n", " ").replace(" ", "▁") for t in texts)
    scored = sorted((-math.log((seen.count(p) + 1) / len(seen)), p)
                    for p, _ in json.loads(tok.to_str())["model"]["vocab"] if p not in specials)
    tok.model = models.Unigram([(p, 0.0) for p in specials] + [(p, -cost) for cost, p in scored],
                               unk_id=specials.index("<unk>"), byte_fallback=False)
    return XLMRobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")


def build_classifier_dir(folder, seed: int = 0):
    """Save a tiny XLM-RoBERTa token classifier (2 labels, 1 layer, 38-token window) and its tokenizer."""
    from transformers import XLMRobertaConfig, XLMRobertaForTokenClassification

    tokenizer = train_tokenizer(TRAINING, 40)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=32, max_position_embeddings=40, num_labels=2,
                              pad_token_id=tokenizer.pad_token_id, bos_token_id=0, eos_token_id=2)
    torch.manual_seed(seed)
    model = XLMRobertaForTokenClassification(config).eval()
    with torch.no_grad():  # keep probabilities spread over (0, 1), neither all near 0.5 nor saturated (ties)
        model.classifier.weight.normal_(0.0, 0.5)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clf_dir(tmp_path_factory):
    return build_classifier_dir(tmp_path_factory.mktemp("llmlingua-clf"))


@pytest.fixture(scope="module")
def clf(clf_dir):
    return load_keep_classifier(str(clf_dir), device="cpu")


def direct_token_probs(clf, ids, *, closed: bool = True):
    """Oracle: the classifier on ``cls ids sep`` (``sep`` left out unless ``closed``) without padding, label 1.

    ``cls``/``sep`` are the ids of the framing's strings: the package framing's ``[CLS]``/``[SEP]``
    are not in an XLM-RoBERTa vocabulary, so both are ``<unk>``.
    """
    cls, sep, _ = clf.frame()
    if clf.framing == "package":
        assert (cls, sep) == ("[CLS]", "[SEP]")
        cls_id = sep_id = clf.tokenizer.unk_token_id
    else:
        assert (cls, sep) == ("<s>", "</s>")
        cls_id, sep_id = clf.tokenizer.cls_token_id, clf.tokenizer.sep_token_id
    framed = [cls_id, *ids] + ([sep_id] if closed else [])
    with torch.no_grad():
        logits = clf.model(input_ids=torch.tensor([framed])).logits
    return torch.softmax(logits, -1)[0, 1: 1 + len(ids), 1].double().numpy()


@pytest.mark.parametrize("framing", ["package", "trained"])
def test_hand_computed_order_with_a_word_split_into_several_pruner_tokens(clf_dir, framing):
    clf = load_keep_classifier(str(clf_dir), device="cpu", framing=framing)
    encoded = clf.tokenizer(TEXT, add_special_tokens=False, return_offsets_mapping=True)
    tokens = clf.tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    # The classifier's own tokens, checked so that the hand-written word groups below are right.
    assert tokens == ["▁T", "o", "m", "▁", "h", "a", "s", "▁", "1", "2", "▁apples", ".", "▁", "H", "e", "▁", "e", "a",
                      "t", "s", "▁", "3", "▁apples", "."]
    p = direct_token_probs(clf, encoded["input_ids"])
    # Words by hand: "▁" starts a word, "." is punctuation (its own word); "▁" before "H" joins "He".
    word = {"Tom": p[0:3].mean(), "has": p[3:7].mean(), "12": p[7:10].mean(), "apples1": p[10],
            "dot1": p[11], "He": p[12:15].mean(), "eats": p[15:20].mean(), "3": p[20:22].mean(),
            "apples2": p[22], "dot2": p[23]}
    # Pruner tokens (char offsets into TEXT), a different tokenization: "apples" split into three
    # pieces, "12" into two, a lone newline, "eats" split in two.
    pruner = [(0, 3), (3, 7), (7, 9), (9, 10), (10, 13), (13, 15), (15, 17), (17, 18), (18, 19), (19, 21),
              (21, 24), (24, 26), (26, 28), (28, 35), (35, 36)]
    texts = [TEXT[a:b] for a, b in pruner]
    assert texts == ["Tom", " has", " 1", "2", " ap", "pl", "es", ".", "\n", "He", " ea", "ts", " 3", " apples", "."]
    hand = np.array([word["Tom"], word["has"], word["12"], word["12"], word["apples1"], word["apples1"],
                     word["apples1"], word["dot1"], word["He"],  # "\n" overlaps no word: the next word ("He")
                     word["He"], word["eats"], word["eats"], word["3"], word["apples2"], word["dot2"]])
    got = clf.keep_probs(TEXT, pruner)
    np.testing.assert_allclose(got, hand, rtol=1e-6)
    # Distinct words lie far apart (so float32 rounding cannot reorder them); ties are pieces of one word.
    assert np.diff(np.unique(np.round(hand, 6))).min() > 1e-4
    expected_order = sorted(range(len(pruner)), key=lambda i: (hand[i], i))  # lowest first, ties by position
    assert llmlingua2_order(got).tolist() == expected_order
    # The three pieces of "apples" are deleted consecutively, left to right.
    where = [expected_order.index(i) for i in (4, 5, 6)]
    assert where == list(range(where[0], where[0] + 3))


def test_chunks_round_trip_and_framing_as_the_package_by_hand(clf_dir):
    small = load_keep_classifier(str(clf_dir), device="cpu", max_seq_len=10)  # chunks of at most 8 (+1) tokens
    tokens = small.tokenizer.tokenize(TEXT)
    # Hand, as __chunk_context: [0, 8] has no "." -> 9 tokens; from 9, "." at 11 within [10, 17] -> [9, 12);
    # from 12, no "." within [13, 20] -> 9 tokens; 21 + 8 > 23: the rest.
    assert chunk_bounds(tokens, 8) == [(0, 9), (9, 12), (12, 21), (21, 24)]
    # Each chunk is decoded and tokenized again: "2" and "3" (word pieces) gain a "▁"; "He eats " loses its
    # trailing "▁". The first chunk is cut to the window (10) together with its closing token.
    again = [["▁T", "o", "m", "▁", "h", "a", "s", "▁", "1"], ["▁", "2", "▁apples", "."],
             ["▁", "H", "e", "▁", "e", "a", "t", "s"], ["▁", "3", "▁apples", "."]]
    chunks = small.chunks(TEXT)
    assert [small.tokenizer.convert_ids_to_tokens(c["ids"]) for c in chunks] == (
        [["<unk>", *again[0]]] + [["<unk>", *t, "<unk>"] for t in again[1:]])
    p = [direct_token_probs(small, small.tokenizer.convert_tokens_to_ids(t), closed=i > 0) for i, t in enumerate(again)]
    # Words by hand, one chunk at a time (a word never spans two chunks): "1" and "2" of "12" are two words.
    hand = [("Tom", 0, 3, p[0][0:3]), ("has", 4, 7, p[0][3:7]), ("1", 8, 9, p[0][7:9]), ("2", 9, 10, p[1][0:2]),
            ("apples", 11, 17, p[1][2:3]), (".", 17, 18, p[1][3:4]), ("He", 19, 21, p[2][0:3]),
            ("eats", 22, 26, p[2][3:8]), ("3", 27, 28, p[3][0:2]), ("apples", 29, 35, p[3][2:3]),
            (".", 35, 36, p[3][3:4])]
    words = small.words(TEXT)
    assert [(w.text, w.start, w.end) for w in words] == [h[:3] for h in hand]
    np.testing.assert_allclose([w.keep_prob for w in words], [h[3].mean() for h in hand], rtol=1e-5)
    assert all(TEXT[w.start:w.end] == w.text for w in words)
    # The default window holds the whole text in one chunk, so probabilities differ from the chunked run.
    whole = load_keep_classifier(str(clf_dir), device="cpu").words(TEXT)
    assert not np.allclose([w.keep_prob for w in whole][:3], [w.keep_prob for w in words][:3])


def test_merge_and_map_rules_on_hand_made_words():
    text = "ab  cd.e"
    tokens = ["▁a", "b", "▁", "▁cd", ".", "e"]
    offsets = [(0, 1), (1, 2), (2, 3), (3, 6), (6, 7), (7, 8)]
    probs = [0.2, 0.4, 0.9, 0.5, 0.1, 0.3]
    special = [False, False, False, False, False, True]  # e.g. an <unk>: belongs to no word
    words = merge_words(text, tokens, offsets, probs, special)
    # "▁" alone is a whitespace-only word (empty span, no part in the mapping); "." is punctuation, its own word.
    assert words == [Word(0, 2, pytest.approx(0.3)), Word(0, 0, pytest.approx(0.9)), Word(4, 6, 0.5), Word(6, 7, 0.1)]
    assert [w.text for w in words] == ["ab", "", "cd", "."]
    # Pruner token (1, 5) overlaps "ab" by 1 and "cd" by 1: a tie goes to the earlier word.
    # (7, 8) (under the <unk>) overlaps nothing and no word follows: the last word.
    got = map_words_to_tokens(words, [(0, 1), (1, 5), (2, 4), (5, 7), (7, 8)])
    np.testing.assert_allclose(got, [0.3, 0.3, 0.5, 0.5, 0.1])  # (2, 4) is whitespace: next word "cd"
    # (5, 7) overlaps "cd" by 1 and "." by 1: the earlier word.
    wordpiece = merge_words("unhappy dog", ["un", "##happy", "dog"], [(0, 2), (2, 7), (8, 11)], [0.1, 0.3, 0.8],
                            [False] * 3, wordpiece=True)
    assert wordpiece == [Word(0, 7, pytest.approx(0.2)), Word(8, 11, 0.8)]
    assert [w.text for w in wordpiece] == ["unhappy", "dog"]


def test_missing_model_is_one_line_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(CotSurvivalError) as info:
        load_keep_classifier("microsoft/llmlingua-2-xlm-roberta-large-meetingbank", device="cpu")
    assert info.value.code == "E130"
    assert "microsoft/llmlingua-2-xlm-roberta-large-meetingbank" in info.value.one_line()
    assert "\n" not in info.value.one_line()
    with pytest.raises(CotSurvivalError) as info:
        load_keep_classifier(str(tmp_path / "nowhere"), device="cpu")
    assert info.value.code == "E130"


def test_pickled_weights_refused(clf_dir, tmp_path):
    import shutil

    folder = tmp_path / "pickled"
    shutil.copytree(clf_dir, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CotSurvivalError) as info:
        load_keep_classifier(str(folder), device="cpu")
    assert info.value.code == "E131"


def test_prune_stores_llmlingua2_like_the_other_baselines(tiny_loaded, clf_dir, clf, tmp_path):
    from cotsurvival.analysis import load_run
    from cotsurvival.pruning import prune
    from cotsurvival.testing import EXAMPLE_CHAINS

    run = prune(EXAMPLE_CHAINS[:2], tmp_path / "run", loaded_model=tiny_loaded, keep_ratio=0.5,
                baselines=["random", "llmlingua2"], llmlingua_model=str(clf_dir), progress=False)
    manifest = run.read_manifest()
    assert manifest["llmlingua2"]["spec"] == str(clf_dir) and manifest["llmlingua2"]["sha256"]
    assert manifest["llmlingua2"]["framing"] == "package" and clf.framing == "package"
    unk = clf.tokenizer.unk_token_id
    assert manifest["llmlingua2"]["frame_ids"] == [unk, unk]
    assert "llmlingua2" in manifest["baselines"]
    baselines = pd.read_parquet(run.path / "baselines.parquet")
    tokens = pd.read_parquet(run.path / "tokens.parquet")
    chains = run.read_chains()
    for index, chain in chains.iterrows():
        toks = tokens[tokens.chain_index == index].sort_values("position")
        probs = clf.keep_probs(chain["reasoning"], list(zip(toks.char_start, toks.char_end)))
        order = llmlingua2_order(probs)
        n = len(toks)
        steps = int(toks.deleted_step.notna().sum())
        rows = baselines[(baselines.chain_index == index) & (baselines.ordering == "llmlingua2")].sort_values("position")
        expected = np.full(n, -1)
        expected[order[:steps]] = np.arange(1, steps + 1)
        assert rows.deleted_step.fillna(-1).astype(int).tolist() == expected.tolist()
    table = load_run(run, require_tags=False)
    assert "survival_llmlingua2" in table.columns
    # A different classifier for the same run is refused.
    with pytest.raises(CotSurvivalError) as info:
        prune(EXAMPLE_CHAINS[:2], tmp_path / "run", loaded_model=tiny_loaded, keep_ratio=0.5,
              baselines=["llmlingua2"], llmlingua_model=str(tmp_path / "other"), progress=False)
    assert info.value.code == "E132"
    # So is the other framing (E137), and resuming a run whose framing was not recorded.
    with pytest.raises(CotSurvivalError) as info:
        prune(EXAMPLE_CHAINS[:2], tmp_path / "run", loaded_model=tiny_loaded, keep_ratio=0.5,
              baselines=["llmlingua2"], llmlingua_framing="trained", progress=False)
    assert info.value.code == "E137"
    assert "package framing" in info.value.one_line() and "--llmlingua-framing package" in info.value.one_line()
    with pytest.raises(CotSurvivalError) as info:
        prune(EXAMPLE_CHAINS[:2], tmp_path / "run", loaded_model=tiny_loaded, keep_ratio=0.5,
              baselines=["llmlingua2"], llmlingua_framing="unk", progress=False)
    assert info.value.code == "E138"
    older = {k: v for k, v in manifest["llmlingua2"].items() if k not in ("framing", "frame_ids", "reference")}
    run.update_manifest(llmlingua2=older)
    # Nothing to add: the older run is left as it is; more deletions (keep ratio 0.3) would need the classifier.
    prune(EXAMPLE_CHAINS[:2], tmp_path / "run", loaded_model=tiny_loaded, keep_ratio=0.5, baselines=["llmlingua2"],
          progress=False)
    with pytest.raises(CotSurvivalError) as info:
        prune(EXAMPLE_CHAINS[:2], tmp_path / "run", loaded_model=tiny_loaded, keep_ratio=0.3,
              baselines=["llmlingua2"], progress=False)
    assert info.value.code == "E137" and "unrecorded" in info.value.one_line()
    # The same framing resumes (nothing left to do).
    run.update_manifest(llmlingua2=manifest["llmlingua2"])
    prune(EXAMPLE_CHAINS[:2], tmp_path / "run", loaded_model=tiny_loaded, keep_ratio=0.5, baselines=["llmlingua2"],
          llmlingua_framing="package", progress=False)


def test_cli_missing_classifier_is_one_line(tiny_dir, tmp_path):
    from cli_helpers import assert_one_line_error, cli, write_jsonl
    from cotsurvival.testing import EXAMPLE_CHAINS

    chains = write_jsonl(tmp_path / "chains.jsonl", EXAMPLE_CHAINS[:1])
    missing = tmp_path / "no-such-classifier"
    done = cli("prune", chains, "--out", tmp_path / "run", "--model", tiny_dir, "--keep-ratio", "0.9",
               "--baselines", "random,llmlingua2", "--llmlingua-model", missing, timeout=300)
    assert done.returncode == 2
    assert_one_line_error("\n".join(l for l in done.stderr.replace("\r", "\n").splitlines() if "error[" in l or
                                    "Traceback" in l), "E130", str(missing))
    assert "Traceback" not in done.stderr


def test_unreachable_hub_fails_fast_with_e130(tmp_path):
    """A classifier id neither cached nor reachable fails in seconds (models.locate_hub), not minutes of retries.

    The hub is a closed local port (HF_ENDPOINT, read when huggingface_hub is imported, hence a child
    process) and HF_HUB_OFFLINE is unset, so only the quick reachability check stands between the
    call and transformers' connection retries (about 3.5 minutes before this check was shared).
    """
    import os
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1")
    code = ("from cotsurvival.errors import CotSurvivalError\n"
            "from cotsurvival.pruning.llmlingua import load_keep_classifier\n"
            "try:\n    load_keep_classifier('someone/llmlingua-2-missing', device='cpu')\n"
            "except CotSurvivalError as exc:\n    print(exc.one_line())\n")
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    seconds = time.perf_counter() - began
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("error[E130]") and "someone/llmlingua-2-missing" in done.stdout, done.stdout
    assert "cannot reach the Hugging Face hub" in done.stdout
    assert seconds < 30, seconds


def test_cli_framing_option_reaches_the_manifest(tiny_dir, clf_dir, tmp_path):
    import json

    from click.testing import CliRunner

    from cli_helpers import write_jsonl
    from cotsurvival.cli import cli
    from cotsurvival.testing import EXAMPLE_CHAINS

    chains = write_jsonl(tmp_path / "chains.jsonl", EXAMPLE_CHAINS[:1])
    args = ["prune", str(chains), "--out", str(tmp_path / "run"), "--model", str(tiny_dir), "--keep-ratio", "0.9",
            "--baselines", "llmlingua2", "--llmlingua-model", str(clf_dir), "--device", "cpu"]
    done = CliRunner().invoke(cli, [*args, "--llmlingua-framing", "trained"])
    assert done.exit_code == 0, done.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["llmlingua2"]["framing"] == "trained"
    done = CliRunner().invoke(cli, args)  # resuming without the option keeps the run's framing
    assert done.exit_code == 0, done.output
    done = CliRunner().invoke(cli, [*args, "--llmlingua-framing", "package"])
    # (main() prints this as one line with exit status 2; the group itself lets the error through)
    assert isinstance(done.exception, CotSurvivalError) and done.exception.code == "E137", done.output


# ---------------------------------------------------------------------- the llmlingua package as the oracle

# Worked solutions in the style of GSM8K (the tokenizer is trained on them; the texts below reuse them).
SOLUTIONS = [
    "Natalia sold 48/2 = 24 clips in May. Natalia sold 48+24 = 72 clips altogether in April and May.\n#### 72",
    "Weng earns 12/60 = $0.2 per minute. Working 50 minutes, she earned 0.2 x 50 = $10.\n#### 10",
    "In the beginning, Betty has only 100 / 2 = $50. Betty's grandparents gave her 15 * 2 = $30. "
    "This means, Betty needs 100 - 50 - 30 - 15 = $5 more.",
    "Maila read 12 x 2 = 24 pages today. So she was able to read a total of 12 + 24 = 36 pages since yesterday. "
    "There are 120 - 36 = 84 pages left to be read. Since she wants to read half of the remaining pages "
    "tomorrow, then she should read 84/2 = 42 pages.",
    "He writes each friend 3*2=6 pages a week. So he writes 6*2=12 pages every week. That means he writes "
    "12*52=624 pages a year.",
]
REFERENCE_TEXTS = [
    SOLUTIONS[0],
    SOLUTIONS[3],
    "\n\n".join(SOLUTIONS * 3),                                  # 3 chunks ending at "."
    " ".join(f"{i} apples" for i in range(300)),                 # no ".": cut inside words, [sep] cut off
    "  Cost: 5 € per √x,  a naïve café.\nThen 3 + 4 = 7. " * 3,  # unknown characters (<unk> in the text)
]


def build_reference_classifier(folder: Path) -> Path:
    """A 2-layer random XLM-RoBERTa token classifier with 512-token chunks and a Unigram tokenizer.

    The folder name must contain ``xlm-roberta-large``: the package picks its word rule by name.
    """
    from transformers import XLMRobertaConfig, XLMRobertaForTokenClassification

    assert "xlm-roberta-large" in folder.name
    tokenizer = train_tokenizer(SOLUTIONS, 120)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=514, num_labels=2,
                              pad_token_id=tokenizer.pad_token_id, bos_token_id=0, eos_token_id=2)
    torch.manual_seed(1)
    model = XLMRobertaForTokenClassification(config).eval()
    with torch.no_grad():  # keep probabilities spread over (0, 1), neither all near 0.5 nor saturated
        model.classifier.weight.normal_(0.0, 0.3)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class WhitespaceCounter:
    """Stands in for tiktoken's gpt-3.5-turbo encoding (a download): the package counts tokens with it
    only for its ``rate`` threshold, which the word probabilities do not depend on."""

    def encode(self, text: str) -> list[str]:
        return text.split() or [text]


@contextlib.contextmanager
def global_state_kept():
    """PromptCompressor seeds Python, NumPy and torch and sets PYTHONHASHSEED (seed_everything(42)): undo it."""
    python, numpy, hashseed = random.getstate(), np.random.get_state(), os.environ.get("PYTHONHASHSEED")
    with torch.random.fork_rng():
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(numpy)
            if hashseed is None:
                os.environ.pop("PYTHONHASHSEED", None)
            else:
                os.environ["PYTHONHASHSEED"] = hashseed


def package_words(folder: Path, texts: list[str], framing: str) -> list[tuple[list[str], np.ndarray]]:
    """The ``llmlingua`` package's words and word keep probabilities of each text, from its own path.

    ``PromptCompressor(use_llmlingua2=True).compress_prompt_llmlingua2`` runs unchanged; its word
    merging and token-to-word steps are only watched (their outputs recorded). ``trained``: its
    ``TokenClfDataset`` is built with ``model_name`` (``<s> ... </s>``), as its training script does.
    """
    import llmlingua.prompt_compressor as pc

    compressor_class = pc.PromptCompressor
    merge = compressor_class._PromptCompressor__merge_token_to_word
    to_word = compressor_class._PromptCompressor__token_prob_to_word_prob
    seen: dict[str, list] = {"words": [], "probs": []}

    def merge_watched(self, *args, **kwargs):
        out = merge(self, *args, **kwargs)
        seen["words"].append(list(out[0]))
        return out

    def to_word_watched(self, *args, **kwargs):
        out = to_word(self, *args, **kwargs)
        seen["probs"].append(list(out))
        return out

    results = []
    with pytest.MonkeyPatch.context() as patch, global_state_kept():
        patch.setattr(pc.tiktoken, "encoding_for_model", lambda name: WhitespaceCounter())
        patch.setattr(compressor_class, "_PromptCompressor__merge_token_to_word", merge_watched)
        patch.setattr(compressor_class, "_PromptCompressor__token_prob_to_word_prob", to_word_watched)
        if framing == "trained":
            patch.setattr(pc, "TokenClfDataset", functools.partial(pc.TokenClfDataset, model_name=str(folder)))
        compressor = compressor_class(model_name=str(folder), device_map="cpu", use_llmlingua2=True)
        for text in texts:
            seen["words"].clear()
            seen["probs"].clear()
            compressor.compress_prompt_llmlingua2([text], rate=0.5)
            words = [w.lstrip("▁") for chunk in seen["words"] for w in chunk]
            results.append((words, np.array([p for chunk in seen["probs"] for p in chunk], dtype=np.float64)))
    return results


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
    return build_reference_classifier(tmp_path_factory.mktemp("models") / "tiny-xlm-roberta-large")


@pytest.fixture(scope="module")
def reference_words(reference_dir):
    """Per framing: the package's (words, probabilities) and ours (Word lists) for REFERENCE_TEXTS."""
    out = {}
    for framing in ("package", "trained"):
        ours = load_keep_classifier(str(reference_dir), device="cpu", framing=framing)
        out[framing] = (package_words(reference_dir, REFERENCE_TEXTS, framing), [ours.words(t) for t in REFERENCE_TEXTS])
    return out


def test_reference_texts_reach_every_path(reference_dir):
    """The texts below exercise what matters: several chunks, a chunk cut with its closing token, tokens
    changed by the chunk round trip, and unknown characters inside the text."""
    clf = load_keep_classifier(str(reference_dir), device="cpu")
    assert clf.max_seq_len == 512
    lengths = [[len(c["ids"]) for c in clf.chunks(t)] for t in REFERENCE_TEXTS]
    assert len(lengths[2]) == 3 and len(lengths[3]) > 3 and lengths[0] == [len(clf.tokenizer.tokenize(REFERENCE_TEXTS[0])) + 2]
    assert 512 in lengths[3]  # [cls] + 511 tokens: [sep] cut off
    tokens = clf.tokenizer.tokenize(REFERENCE_TEXTS[3])
    changed = [tokens[a:b] != clf.tokenizer.tokenize(clf.tokenizer.convert_tokens_to_string(tokens[a:b]))
               for a, b in chunk_bounds(tokens, 510)]
    assert any(changed)
    # The tokenizer keeps an unknown character's text as its token string, but gives it the <unk> id.
    unknown = clf.tokenizer(REFERENCE_TEXTS[4], add_special_tokens=False)
    assert "€" in unknown.tokens() and clf.tokenizer.unk_token_id in unknown["input_ids"]


@pytest.mark.parametrize("framing", ["package", "trained"])
def test_words_and_orders_match_the_llmlingua_package(reference_words, framing):
    package, ours = reference_words[framing]
    for text, (words, probs), mine in zip(REFERENCE_TEXTS, package, ours):
        assert [w.text for w in mine] == words
        got = np.array([w.keep_prob for w in mine])
        np.testing.assert_allclose(got, probs, rtol=0, atol=1e-6)
        assert llmlingua2_order(got).tolist() == llmlingua2_order(probs).tolist()
        # Each word's span holds its text (spaces aside; unknown characters are in the span, not the word);
        # a word of no text (a lone "▁") has an empty span.
        for w in mine:
            span = re.sub(r"\s", "", text[w.start:w.end])
            rest = iter(span)
            assert span == w.text or (w.text and all(c in rest for c in w.text)), (w, span)


def framing_difference(reference_words) -> tuple[float, float, int, int]:
    """Largest |package - trained| word keep probability, smallest Kendall tau-b of the word orders, and
    the word pairs (all texts, counted directly) the two framings order oppositely, and tie under one only."""
    from scipy.stats import kendalltau

    (package, _), (trained, _) = reference_words["package"], reference_words["trained"]
    delta = max(float(np.abs(a[1] - b[1]).max()) for a, b in zip(package, trained))
    tau = min(float(kendalltau(a[1], b[1])[0]) for a, b in zip(package, trained))
    signs = [(np.sign(np.subtract.outer(a[1], a[1])), np.sign(np.subtract.outer(b[1], b[1]))) for a, b in zip(package, trained)]
    swapped = sum(int((x * y < 0).sum()) // 2 for x, y in signs)
    tied_once = sum(int(((x == 0) != (y == 0)).sum()) // 2 for x, y in signs)
    return delta, tau, swapped, tied_once


def test_framings_differ_as_the_readme_says(reference_words):
    delta, tau, swapped, tied_once = framing_difference(reference_words)
    assert delta > 1e-6  # the option changes something: the two oracle runs are not one run twice
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Answer recovery and the LLMLingua-2 baseline"):]
    section = " ".join(section[: section.index("\n## ", 10)].split())
    n_words = sum(len(w) for w, _ in reference_words["package"][0])
    assert f"max |Δ| = {delta:.1e}" in section, (delta, tau, n_words)
    assert f"Kendall τ-b ≥ {np.floor(tau * 1e4) / 1e4:.4f}" in section, (delta, tau, n_words)
    assert f"{len(REFERENCE_TEXTS)} texts, {n_words} words" in section, n_words
    assert f"{swapped} pair{'s' * (swapped != 1)} of words in opposite orders, {tied_once} tied under one framing only" in section, (
        swapped, tied_once)
