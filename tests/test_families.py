"""Every supported architecture's fast path against Hugging Face's own forward, ``model(input_ids)``.

Tiny random models of each family's own config class (``cotsurvival.testing.tiny_model``), float64.
Oracles: ``model(input_ids).logits`` per sequence (log-probabilities), and the naive greedy of
tests/naive_greedy.py, which calls ``model(input_ids)`` once per candidate (orders, every cost).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cotsurvival.chains import Chain
from cotsurvival.encoding import EncodedChain
from cotsurvival.errors import CotSurvivalError
from cotsurvival.pruning.crossstep import CrossStepScorer
from cotsurvival.pruning.engine import greedy_prune
from cotsurvival.pruning.forward import FamilyForward, supports_prefix_reuse, unsupported_reason
from cotsurvival.pruning.methods import make_scorer
from cotsurvival.pruning.scoring import NaiveScorer, PrefixReuseScorer
from cotsurvival.testing import TINY_FAMILIES, RecordingScorer, tiny_model

from naive_greedy import naive_greedy

SHORT = 6  # a window shorter than every test chain (prefix 6 + reasoning 12 + answer 3 = 21 tokens)
LONG = 4096  # a window longer than every test chain
YARN = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0, "original_max_position_embeddings": 64}
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "rope_theta": 500000.0, "original_max_position_embeddings": 16}
LINEAR = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
DYNAMIC = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
LONGROPE = {"rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": 256,
            "short_factor": [1.0, 1.1, 1.2, 1.3], "long_factor": [2.0, 2.5, 3.0, 3.5]}

# (family, variant): the variants that change a family's forward.
VARIANTS = [
    ("llama", {}),
    ("llama", {"attention_bias": True, "mlp_bias": True, "tie_word_embeddings": True}),
    ("llama", {"head_dim": 16, "rope_parameters": LLAMA3}),
    ("llama", {"rope_parameters": YARN}),
    ("llama", {"rope_parameters": LINEAR}),
    ("llama", {"rope_parameters": DYNAMIC}),
    ("mistral", {}),
    ("mistral", {"sliding_window": SHORT}),
    ("mistral", {"sliding_window": LONG, "head_dim": 16}),
    # The stray key of issue 13: Mistral's forward applies the window whatever this says.
    ("mistral", {"sliding_window": SHORT, "use_sliding_window": False}),
    ("qwen2", {}),
    ("qwen2", {"use_sliding_window": True, "sliding_window": SHORT, "max_window_layers": 1}),
    ("qwen2", {"tie_word_embeddings": True}),
    ("qwen3", {}),
    ("qwen3", {"attention_bias": True, "head_dim": 16, "tie_word_embeddings": True}),
    ("qwen3", {"use_sliding_window": True, "sliding_window": SHORT, "max_window_layers": 0}),
    ("qwen3", {"rope_parameters": YARN}),
    ("gemma2", {}),
    ("gemma2", {"sliding_window": SHORT}),
    ("gemma2", {"sliding_window": SHORT, "attn_logit_softcapping": None, "final_logit_softcapping": None,
                "query_pre_attn_scalar": 16, "tie_word_embeddings": True}),
    ("gemma3_text", {}),
    ("gemma3_text", {"sliding_window": SHORT}),
    ("gemma3_text", {"sliding_window": SHORT, "attention_bias": True, "final_logit_softcapping": 5.0,
                     "rope_parameters": {"full_attention": LINEAR,
                                         "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}}}),
    ("phi3", {}),
    ("phi3", {"sliding_window": SHORT, "tie_word_embeddings": True}),
    ("phi3", {"rope_parameters": {**LONGROPE, "partial_rotary_factor": 1.0}}),
    ("phi3", {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}}),
    ("olmo2", {}),
    ("olmo2", {"attention_bias": True, "tie_word_embeddings": True}),
    ("granite", {}),
    ("granite", {"attention_bias": True, "mlp_bias": True, "tie_word_embeddings": True, "logits_scaling": 0.5}),
    ("smollm3", {}),
    ("smollm3", {"use_sliding_window": True, "sliding_window": SHORT, "no_rope_layers": [1, 0],
                 "layer_types": ["full_attention", "sliding_attention"]}),
    ("smollm3", {"no_rope_layers": [0, 1], "attention_bias": True, "mlp_bias": True}),
]


def tolerance(model) -> float:
    """1e-9, except under eager attention: transformers' eager attention runs its softmax in float32
    (``softmax(..., dtype=torch.float32)``), so a float64 model is only float32-exact there; the same
    score computed from a cache and from scratch then differs by float32 rounding, ~1e-7 relative."""
    return 2e-5 if model.config._attn_implementation == "eager" else 1e-9


def _id(case):
    family, variant = case
    return family + ("-" + "-".join(sorted(variant)) if variant else "")


def _chain(seed: int = 0, p: int = 6, n: int = 12, a: int = 3):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 400, (p + n + a,), generator=generator).tolist()
    return ids[:p], ids[p: p + n], ids[p + n:]


@torch.no_grad()
def _oracle_logprobs(model, ids: list[int]) -> np.ndarray:
    """``log p(ids[t] | ids[:t])`` for t ≥ 1 from Hugging Face's own forward."""
    logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    return torch.log_softmax(logits, -1)[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0].numpy()


@pytest.mark.parametrize("case", VARIANTS, ids=_id)
@torch.inference_mode()
def test_family_forward_logprobs_equal_hf_forward(case):
    family, variant = case
    model = tiny_model(family, **variant)
    assert supports_prefix_reuse(model), unsupported_reason(model)
    implementation = model.config._attn_implementation
    forward = FamilyForward(model)
    prefix, kept, answer = _chain()
    sequence = prefix + kept + answer
    total = len(sequence)
    ids = torch.tensor(sequence)
    # No prefix: one pass over the whole sequence.
    hidden, _ = forward.run(ids[None], torch.arange(total)[None])
    got = forward.log_probs(hidden[0, :-1], ids[1:]).numpy()
    np.testing.assert_allclose(got, _oracle_logprobs(model, sequence), rtol=0, atol=tolerance(model))
    # A shared prefix (the first P tokens, cached once) and padded rows of different lengths:
    # row k is the sequence without token k, run from min(k, P) on top of that many cached keys.
    shared = 10
    _, cache = forward.run(ids[None, :shared], torch.arange(shared)[None], keep_cache=True)
    deleted = [0, 3, 9, 10, 14, total - 2]
    rows = [sequence[:k] + sequence[k + 1:] for k in deleted]
    starts = [min(k, shared) for k in deleted]
    width = max(len(r) - s for r, s in zip(rows, starts))
    batch = torch.zeros(len(rows), width, dtype=torch.long)
    positions = torch.zeros(len(rows), width, dtype=torch.long)
    valid = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, (row, start) in enumerate(zip(rows, starts)):
        length = len(row) - start
        batch[i, :length] = torch.tensor(row[start:])
        positions[i, :length] = torch.arange(start, start + length)
        valid[i, :length] = True
    hidden, _ = forward.run(batch, positions, prefix=cache, prefix_lengths=torch.tensor(starts), query_valid=valid)
    for i, (row, start) in enumerate(zip(rows, starts)):
        length = len(row) - start
        got = forward.log_probs(hidden[i, : length - 1], batch[i, 1:length]).numpy()
        expected = _oracle_logprobs(model, row)[start:]
        np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance(model), err_msg=f"row deleting {deleted[i]}")
    assert model.config._attn_implementation == implementation  # the model's own users see no change


@pytest.mark.parametrize("case", VARIANTS, ids=_id)
def test_family_greedy_equals_per_candidate_oracle(case):
    family, variant = case
    model = tiny_model(family, **variant)
    prefix, kept, answer = _chain(seed=1)
    encoded = EncodedChain(Chain("c", "", "", ""), prefix, kept, answer, [(0, 0)] * len(kept), False)
    steps = 4
    objective = "answer" if "bias" in _id(case) else "joint"  # both objectives, spread over the variants
    order, oracle = naive_greedy(model, prefix, kept, answer, steps, objective)
    for cls, batch in ((CrossStepScorer, 4096), (PrefixReuseScorer, 40), (CrossStepScorer, 30)):
        recorder = RecordingScorer(cls(model, objective, max_batch_tokens=batch))
        trace = greedy_prune(recorder, encoded, steps)
        assert trace.order == order, cls.__name__
        for step, (scores, expected) in enumerate(zip(recorder.steps, oracle), 1):
            np.testing.assert_allclose(scores.candidate_objectives, expected, rtol=0, atol=tolerance(model),
                                       err_msg=f"{cls.__name__} step {step}")


def test_short_window_changes_the_numbers():
    """The window tests above can fail: with a window shorter than the chain the log-probs differ."""
    prefix, kept, answer = _chain()
    sequence = prefix + kept + answer
    for family in ("mistral", "gemma2", "qwen3"):
        variant = {"use_sliding_window": True, "max_window_layers": 0} if family == "qwen3" else {}
        windowed = _oracle_logprobs(tiny_model(family, sliding_window=SHORT, **variant), sequence)
        wide = _oracle_logprobs(tiny_model(family, sliding_window=LONG, **variant), sequence)
        assert np.abs(windowed - wide).max() > 1e-3, family
        np.testing.assert_allclose(windowed[:SHORT - 1], wide[:SHORT - 1], atol=1e-12)


def test_auto_picks_the_fast_path_for_every_family():
    for family in TINY_FAMILIES:
        model = tiny_model(family, dtype=torch.float32)
        assert type(make_scorer(model, "auto")).__name__ == "CrossStepScorer", family


def test_unsupported_architecture_is_refused():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=400, bos_token_id=0, eos_token_id=0, n_embd=32, n_layer=2, n_head=4, n_positions=64)).eval()
    assert not supports_prefix_reuse(model)
    assert isinstance(make_scorer(model, "auto"), NaiveScorer)
    for method in ("prefix", "crossstep"):
        with pytest.raises(CotSurvivalError) as error:
            make_scorer(model, method)
        assert error.value.code == "E100"
        assert "GPT2LMHeadModel" in error.value.one_line() and "--method naive" in error.value.one_line()
    # Lazy re-scoring keeps a prefix-reuse cache: refused with a pointer to top-k, which runs anywhere.
    from cotsurvival.encoding import EncodedChain
    from cotsurvival.pruning.engine import greedy_prune
    from cotsurvival.testing import EXAMPLE_CHAINS

    encoded = EncodedChain(EXAMPLE_CHAINS[0], [1, 2, 3], [4, 5, 6, 7], [8, 9], [(0, 1)] * 4, False)
    with pytest.raises(CotSurvivalError) as error:
        greedy_prune(make_scorer(model, "auto"), encoded, 2, approx="lazy")
    assert error.value.code == "E113" and "topk" in error.value.one_line()
    assert len(greedy_prune(make_scorer(model, "auto"), encoded, 4, approx="topk:0.5").order) == 4


def test_look_alike_class_and_unsupported_settings_are_refused():
    from transformers import LlamaForCausalLM

    class LlamaForCausalLM(LlamaForCausalLM):  # same name, different forward: not the allow-listed class
        pass

    config = tiny_model("llama").config
    assert not supports_prefix_reuse(LlamaForCausalLM(config))
    flash = tiny_model("llama")
    flash.config._attn_implementation = "flash_attention_2"
    assert "attn_implementation" in unsupported_reason(flash)
    assert "bidirectional" in unsupported_reason(tiny_model("gemma3_text", use_bidirectional_attention=True))


def test_eager_attention_is_exact_too():
    model = tiny_model("qwen3", attn_implementation="eager", use_sliding_window=True, sliding_window=SHORT,
                       max_window_layers=0)
    prefix, kept, answer = _chain(seed=2)
    order, oracle = naive_greedy(model, prefix, kept, answer, 2)
    recorder = RecordingScorer(CrossStepScorer(model, "joint"))
    encoded = EncodedChain(Chain("c", "", "", ""), prefix, kept, answer, [(0, 0)] * len(kept), False)
    assert greedy_prune(recorder, encoded, 2).order == order
    np.testing.assert_allclose(recorder.steps[1].candidate_objectives, oracle[1], atol=tolerance(model))


def test_gpu_benchmark_script_runs_tiny_on_cpu(tmp_path):
    """bench/gpu.py end to end on tiny shapes, so a GPU session can run it in one go."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from cli_helpers import CHILD_ENV

    script = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"
    out = tmp_path / "gpu.json"
    result = subprocess.run([sys.executable, str(script), "--tiny", "--device", "cpu", "--steps", "1",
                             "--families", "llama,gemma2,smollm3", "--json", str(out)],
                            capture_output=True, text=True, timeout=600, env=CHILD_ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["all_exact"] and [r["family"] for r in report["families"]] == ["llama", "gemma2", "smollm3"]
    assert all(r["tokens_processed"] > 0 and r["seconds_per_chain"] > 0 for r in report["families"])
