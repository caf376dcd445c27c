"""Cost of on-policy resampling (``cotsurvival resample``): rollouts per second on this CPU, and a projection.

Measures, with the built-in SmolLM2-135M (float32, CPU, torch threads capped as the stage caps them):

1. decode cost: ``generate`` of B sampled continuations of exactly T new tokens from one prompt (a real
   GSM8K chain's prefix and half its reasoning), for each batch size B: seconds, new tokens per
   second, and rollouts per second at that length;
2. the stage itself: ``ChainResampler.rollouts_at`` on one cut with the stage's settings (sampling,
   answer-line stop, verifier, teacher-forced log P(answer) of each rollout).

The projection for an 8B Llama-style model on one H100 uses a stated cost model, not a
measurement: batched decoding is memory-bound, so one decode step of a batch of B rows reads the
weights once plus each row's KV cache,
``t_step = (2·P + B·ctx·kv_bytes_per_token) / (bandwidth · efficiency)``, a rollout of T tokens
costs T steps shared by its batch, and prefill and scoring are compute-bound
(``2·P·tokens / (flops · mfu)``). Parameters are printed with the result.

    .venv/bin/python bench/resample_cpu.py --new-tokens 32 --batches 1,4,8 --json /tmp/bench_resample.json
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from cotsurvival import read_chains
from cotsurvival.encoding import encode_chain
from cotsurvival.models import load_model
from cotsurvival.resampling import ChainResampler, Job, SamplingOptions
from cotsurvival.threads import cap_torch_threads

# An 8B Llama-3-style model: 8.0e9 parameters (bf16), 32 layers, 8 KV heads of 128 -> 128 KiB of KV per token.
P_8B = 8.0e9
KV_BYTES_PER_TOKEN = 2 * 32 * 8 * 128 * 2
H100 = {"bandwidth": 3.35e12, "flops": 989e12}  # SXM: HBM3 bytes/s, dense bf16 FLOP/s (datasheet)
EFFICIENCY = {"bandwidth": 0.5, "mfu": 0.4}  # assumed for Hugging Face generate (not measured here)


def project(rollouts: int, units: int, chains: int, new_tokens: int, prompt: int, batch: int) -> dict:
    """Hours for a study on one H100 under the cost model of the module docstring."""
    cuts = (units + 1) * chains
    total = cuts * rollouts
    batch = min(batch, rollouts)  # the stage batches the rollouts of one cut (see cotsurvival.resampling)
    ctx = prompt + new_tokens / 2
    step = (2 * P_8B + batch * ctx * KV_BYTES_PER_TOKEN) / (H100["bandwidth"] * EFFICIENCY["bandwidth"])
    decode = (total / batch) * new_tokens * step
    compute = 2 * P_8B / (H100["flops"] * EFFICIENCY["mfu"])
    prefill = total * prompt * compute  # generate prefills every row's prompt, identical or not
    scoring = total * (prompt + new_tokens) * compute  # teacher-forced log P(answer) of each rollout
    seconds = decode + prefill + scoring
    return {"rollouts_total": total, "seconds": seconds, "hours": seconds / 3600, "rollouts_per_second": total / seconds,
            "decode_step_ms": step * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batches", default="1,4,8")
    parser.add_argument("--skip-decode", action="store_true", help="Only the stage measurement and the projection.")
    parser.add_argument("--stage-rollouts", type=int, default=8)
    parser.add_argument("--stage-max-new-tokens", type=int, default=96)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    load = os.getloadavg()
    model, tokenizer, info = load_model("smollm2-135m", device="cpu", dtype="float32")
    cap_torch_threads()  # as the stage does: no more threads than the CPUs the machine's load leaves idle
    chain = next(c for c in read_chains("gsm8k") if c.id == "gsm8k-test-1189")
    enc = encode_chain(chain, tokenizer)
    half = len(enc.reasoning_ids) // 2
    prompt = enc.prefix_ids + enc.reasoning_ids[:half]
    out = {"model": info.spec, "threads": torch.get_num_threads(), "load_before": load, "prompt_tokens": len(prompt),
           "decode": []}
    for batch in [] if args.skip_decode else [int(b) for b in args.batches.split(",")]:
        ids = torch.tensor([prompt] * batch)
        torch.manual_seed(0)
        began = time.perf_counter()
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=0.7,
                           top_p=0.95, top_k=0, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                           pad_token_id=tokenizer.eos_token_id)
        seconds = time.perf_counter() - began
        row = {"batch": batch, "new_tokens": args.new_tokens, "seconds": round(seconds, 3),
               "new_tokens_per_second": round(batch * args.new_tokens / seconds, 1),
               "rollouts_per_second": round(batch / seconds, 3)}
        out["decode"].append(row)
        print(json.dumps(row), flush=True)
    worker = ChainResampler(model, tokenizer, info)
    job = Job(0, chain.id, chain.reasoning, chain.answer, enc.prefix_ids, enc.reasoning_ids, enc.answer_ids,
              enc.offsets, None, [])
    options = SamplingOptions(rollouts=args.stage_rollouts, max_new_tokens=args.stage_max_new_tokens,
                              batch_size=args.stage_rollouts)
    began = time.perf_counter()
    rows = worker.rollouts_at(job, (half, 1), options, "bench")
    seconds = time.perf_counter() - began
    out["stage"] = {"rollouts": len(rows), "max_new_tokens": options.max_new_tokens, "seconds": round(seconds, 2),
                    "rollouts_per_second": round(len(rows) / seconds, 3),
                    "mean_new_tokens": float(rows["n_new_tokens"].mean()),
                    "outcomes": rows["outcome"].value_counts().to_dict()}
    print(json.dumps(out["stage"]), flush=True)
    study = dict(rollouts=16, units=10, chains=100, new_tokens=256, prompt=400, batch=64)
    out["projection_8b_h100"] = {"study": study, "assumptions": {"params": P_8B, "kv_bytes_per_token": KV_BYTES_PER_TOKEN,
                                                                 **H100, **EFFICIENCY},
                                 **project(**study)}
    out["projection_8b_h100_100_rollouts"] = project(**{**study, "rollouts": 100, "batch": 100})
    print(json.dumps(out["projection_8b_h100"]), flush=True)
    print(json.dumps(out["projection_8b_h100_100_rollouts"]), flush=True)
    cpu_rate = out["stage"]["rollouts_per_second"]
    out["study_on_this_cpu_hours"] = round(project(**study)["rollouts_total"] / cpu_rate / 3600, 1)
    out["load_after"] = os.getloadavg()
    print(json.dumps({"study_on_this_cpu_hours_smollm2": out["study_on_this_cpu_hours"], "load_after": out["load_after"]}))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(out, handle, indent=2)


if __name__ == "__main__":
    main()
