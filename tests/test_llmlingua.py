"""The llmlingua2 baseline: chunking, word merging, mapping onto pruner tokens, loading, and the run.

The classifier is a tiny random XLM-RoBERTa token classifier with a SentencePiece-style Unigram
tokenizer built in code (the real weights cannot be downloaded here). Oracles: the classifier run
directly on ``<s> ids </s>`` (transformers), word groups and token-to-word maps written by hand.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cotsurvival.errors import CotSurvivalError
from cotsurvival.pruning.llmlingua import (chunk_bounds, llmlingua2_order, load_keep_classifier, map_words_to_tokens,
                                           merge_words, Word)

TEXT = "Tom has 12 apples.\nHe eats 3 apples."
TRAINING = ["Tom has 12 apples. He eats 3 apples.", "So 12 - 3 = 9 apples are left.", "The answer is 9."] * 5


def build_classifier_dir(folder, seed: int = 0):
    """Save a tiny XLM-RoBERTa token classifier (2 labels) and a Unigram/Metaspace tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import XLMRobertaConfig, XLMRobertaForTokenClassification, XLMRobertaTokenizerFast

    tok = Tokenizer(models.Unigram())
    # XLM-RoBERTa's SentencePiece normalizer turns newlines into spaces; so does this one.
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace("\n", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(TRAINING, trainers.UnigramTrainer(
        vocab_size=40, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], unk_token="<unk>",
        show_progress=False))
    tokenizer = XLMRobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                        cls_token="<s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=32, max_position_embeddings=40, num_labels=2,
                              pad_token_id=tokenizer.pad_token_id, bos_token_id=0, eos_token_id=2)
    torch.manual_seed(seed)
    model = XLMRobertaForTokenClassification(config).eval()
    with torch.no_grad():  # spread the keep probabilities so that no two words tie by accident
        model.classifier.weight.normal_(0.0, 3.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clf_dir(tmp_path_factory):
    return build_classifier_dir(tmp_path_factory.mktemp("llmlingua-clf"))


@pytest.fixture(scope="module")
def clf(clf_dir):
    return load_keep_classifier(str(clf_dir), device="cpu")


def direct_token_probs(clf, ids):
    """Oracle: the classifier on ``<s> ids </s>`` without padding, softmax label 1."""
    with torch.no_grad():
        logits = clf.model(input_ids=torch.tensor([[clf.tokenizer.cls_token_id, *ids, clf.tokenizer.sep_token_id]])).logits
    return torch.softmax(logits, -1)[0, 1:-1, 1].double().numpy()


def test_hand_computed_order_with_a_word_split_into_several_pruner_tokens(clf):
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
    expected_order = sorted(range(len(pruner)), key=lambda i: (hand[i], i))  # lowest first, ties by position
    assert llmlingua2_order(got).tolist() == expected_order
    # The three pieces of "apples" are deleted consecutively, left to right.
    where = [expected_order.index(i) for i in (4, 5, 6)]
    assert where == list(range(where[0], where[0] + 3))


def test_chunks_end_at_sentence_ends_and_each_chunk_runs_alone(clf_dir):
    small = load_keep_classifier(str(clf_dir), device="cpu", max_seq_len=10)  # windows of 8 tokens
    ids = small.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    tokens = small.tokenizer.convert_ids_to_tokens(ids)
    bounds = chunk_bounds(tokens, 8)
    # Hand: window [0, 8) has no "." -> cut at 8; [8, 16) has "." at 11 -> cut after it; then [12, 20) none;
    # [20, 24) is the rest.
    assert bounds == [(0, 8), (8, 12), (12, 20), (20, 24)]
    _, _, probs, _ = small.token_keep_probs(TEXT)
    oracle = np.concatenate([direct_token_probs(small, ids[a:b]) for a, b in bounds])
    np.testing.assert_allclose(probs, oracle, rtol=1e-5)
    # The default window holds the whole text in one chunk, so probabilities differ from the chunked run.
    assert not np.allclose(direct_token_probs(small, ids), oracle)


def test_merge_and_map_rules_on_hand_made_words():
    text = "ab  cd.e"
    tokens = ["▁a", "b", "▁", "▁cd", ".", "e"]
    offsets = [(0, 1), (1, 2), (2, 3), (3, 6), (6, 7), (7, 8)]
    probs = [0.2, 0.4, 0.9, 0.5, 0.1, 0.3]
    special = [False, False, False, False, False, True]  # e.g. an <unk>: belongs to no word
    words = merge_words(text, tokens, offsets, probs, special)
    # "▁" alone is a whitespace-only word and is dropped; "." is punctuation, its own word.
    assert words == [Word(0, 2, pytest.approx(0.3)), Word(4, 6, 0.5), Word(6, 7, 0.1)]
    # Pruner token (1, 5) overlaps "ab" by 1 and "cd" by 1: a tie goes to the earlier word.
    # (7, 8) (under the <unk>) overlaps nothing and no word follows: the last word.
    got = map_words_to_tokens(words, [(0, 1), (1, 5), (2, 4), (5, 7), (7, 8)])
    np.testing.assert_allclose(got, [0.3, 0.3, 0.5, 0.5, 0.1])  # (2, 4) is whitespace: next word "cd"
    # (5, 7) overlaps "cd" by 1 and "." by 1: the earlier word.
    wordpiece = merge_words("unhappy dog", ["un", "##happy", "dog"], [(0, 2), (2, 7), (8, 11)], [0.1, 0.3, 0.8],
                            [False] * 3, wordpiece=True)
    assert wordpiece == [Word(0, 7, pytest.approx(0.2)), Word(8, 11, 0.8)]


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
