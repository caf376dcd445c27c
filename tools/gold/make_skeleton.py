"""Write the question/reasoning blocks of the GSM8K chains of the gold set (labels are added by hand).

Run once; it prints blocks in the format that ``build_gold.py`` reads, with an empty ``@labels``
section for the annotator to fill in by reading the reasoning (never by running a tagger).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from select_chains import MODEL_FIELD, pick  # same folder

_CALC = re.compile(r"<<[^<>]*>>")
_FINAL = re.compile(r"^[ \t]*####.*$|^A: .*$", re.MULTILINE)


def reasoning_of(solution: str, keep: bool) -> str:
    """Text before the final ``#### n`` / ``A: n`` line, calculator annotations stripped unless ``keep``."""
    last = list(_FINAL.finditer(solution))[-1]
    text = solution[: last.start()].strip()
    return text if keep else _CALC.sub("", text)


def main() -> None:
    folder = Path(os.environ.get("GSM8K_DIR", "/work/shared/data/gsm8k"))
    test = [json.loads(line) for line in open(folder / "test.jsonl", encoding="utf-8")]
    model = [json.loads(line) for line in open(folder / "example_model_solutions.jsonl", encoding="utf-8")]
    picks = pick()
    for style in ("human", "terse", "verbose"):
        for pos, index in enumerate(picks["test_line_indices"][style]):
            split = "heldout" if pos in picks["heldout_positions"][style] else "dev"
            keep = style == "human" and pos in picks["human_keep_annotations_positions"]
            if style == "human":
                reasoning = reasoning_of(test[index]["answer"], keep)
            elif style == "terse":
                reasoning = reasoning_of(model[index][MODEL_FIELD]["solution"], False)
            else:
                reasoning = ""
            source = f"test.jsonl line {index + 1}" if style != "terse" else f"example_model_solutions.jsonl line {index + 1} ({MODEL_FIELD})"
            print(f"@chain id={style}-{index:04d} style={style} split={split} annotations={'kept' if keep else 'stripped'}")
            print(f"@source {source}")
            print("@question")
            print(" ".join(test[index]["question"].split()))
            print("@reasoning")
            print(reasoning)
            print("@labels")
            print()


if __name__ == "__main__":
    main()
