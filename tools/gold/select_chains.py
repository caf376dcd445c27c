"""Pick the GSM8K problems of the gold set and their heldout split (run once, before annotating).

Reads the public GSM8K files from ``$GSM8K_DIR`` (default ``/work/shared/data/gsm8k``) and prints
the picks as JSON. The seed and the length filters are part of the gold set's provenance
(see ``src/cotsurvival/taxonomy/data/GOLD.md``).
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

SEED = 20240604
N_PER_STYLE = 12
N_HELDOUT = 3  # a quarter of each style
MAX_HUMAN_CHARS = 420  # short chains keep hand annotation tractable
MAX_MODEL_CHARS = 420
MODEL_FIELD = "175b_verification"


def pick() -> dict:
    """GSM8K line indices per style, heldout positions, and the human chains that keep annotations."""
    folder = Path(os.environ.get("GSM8K_DIR", "/work/shared/data/gsm8k"))
    test = [json.loads(line) for line in open(folder / "test.jsonl", encoding="utf-8")]
    model = [json.loads(line) for line in open(folder / "example_model_solutions.jsonl", encoding="utf-8")]
    rng = random.Random(SEED)
    order = list(range(len(test)))
    rng.shuffle(order)
    human = [i for i in order if len(test[i]["answer"]) <= MAX_HUMAN_CHARS][:N_PER_STYLE]
    taken = set(human)
    model_ok = [i for i in order if i not in taken and len(model[i][MODEL_FIELD]["solution"]) <= MAX_MODEL_CHARS]
    terse = model_ok[:N_PER_STYLE]
    taken |= set(terse)
    verbose = [i for i in order if i not in taken][:N_PER_STYLE]
    picks = {"human": human, "terse": terse, "verbose": verbose}
    heldout = {style: sorted(rng.sample(range(N_PER_STYLE), N_HELDOUT)) for style in picks}
    keep_annotations = sorted(rng.sample(range(N_PER_STYLE), 2))
    return {"seed": SEED, "test_line_indices": picks, "heldout_positions": heldout,
            "human_keep_annotations_positions": keep_annotations}


def main() -> None:
    print(json.dumps(pick(), indent=1))


if __name__ == "__main__":
    main()
