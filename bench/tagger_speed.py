"""Throughput of the rule tagger (`tag_many`) in words per second.

    python bench/tagger_speed.py [--limit 1000] [--batch-size 64]

Measures the built-in GSM8K corpus (100 human solutions) and, when present, the model-written
solutions in /work/shared/data/gsm8k/example_model_solutions.jsonl (or --solutions PATH). Words are
whitespace-separated tokens of the reasoning. The spaCy pipeline is loaded (and warmed up) before
timing; questions are passed, as `tag_run` does.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

DEFAULT_SOLUTIONS = Path("/work/shared/data/gsm8k/example_model_solutions.jsonl")


def builtin_items():
    import cotsurvival

    return [(c.question, c.reasoning) for c in cotsurvival.read_chains("gsm8k")]


def solution_items(path: Path, limit: int):
    items = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            for key in ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"):
                solution = re.sub(r"<<[^<>]*>>", "", record[key]["solution"]).rsplit("\nA:", 1)[0]
                items.append((record["question"], solution))
            if len(items) >= limit:
                return items[:limit]
    return items


def measure(name, items, batch_size, repeats=3):
    from cotsurvival.taxonomy import tag_many

    texts = [r for _, r in items]
    questions = [q for q, _ in items]
    words = sum(len(t.split()) for t in texts)
    best = float("inf")
    for _ in range(repeats):
        from cotsurvival.taxonomy import tagger

        tagger._QUESTION_CACHE.clear()  # time the questions' analysis too
        start = time.perf_counter()
        tag_many(texts, questions, batch_size=batch_size)
        best = min(best, time.perf_counter() - start)
    print(f"{name:<28} {len(texts):>6} texts {words:>8} words  {best:7.2f} s  {words / best:9.0f} words/s")
    return words / best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=1000, help="model solutions to time")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--solutions", type=Path, default=DEFAULT_SOLUTIONS)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from cotsurvival.taxonomy import load_pipeline, tag

    load_pipeline()
    tag("warm up 1 + 2 = 3.")
    print("command: python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))
    measure("gsm8k built-in (human)", builtin_items(), args.batch_size, args.repeats)
    if args.solutions.is_file():
        measure("example model solutions", solution_items(args.solutions, args.limit), args.batch_size, args.repeats)
    else:
        print(f"({args.solutions} not found; skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
