"""Pruned chains as text at any keep ratio a run covers (e.g. to train students on them)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import CotSurvivalError
from ..outputs import check_output, is_export_file, run_inputs
from ..rundir import RunDir, as_rundir, atomic_write_bytes
from .engine import n_deletions


def pruned_text(reasoning: str, char_starts, char_ends, keep: np.ndarray) -> str:
    """Text of the kept tokens, each with the whitespace that preceded it in the original."""
    pieces = []
    previous_end = 0
    for start, end, kept in zip(char_starts, char_ends, keep):
        if kept:
            pieces.append(reasoning[previous_end:end] if pieces or previous_end else reasoning[start:end])
        previous_end = end
    return "".join(pieces).strip()


def export_pruned(run: str | Path | RunDir, keep_ratio: float, out: str | Path, *, overwrite: bool = False) -> int:
    """Write ``{id, question, reasoning, answer, keep_ratio, n_kept, n_tokens}`` per chain as JSONL.

    ``out`` may not be a file of the run nor the chains file it was pruned from (E080), nor an
    existing file other than an earlier export unless ``overwrite`` (E081).

    Returns the number of chains written.
    """
    from ..options import check_ratio  # noqa: the options module checks values at the edge

    keep_ratio = check_ratio("--keep-ratio", keep_ratio)  # 1.5 is an error, never a file saying keep_ratio 1.5
    run = as_rundir(run)
    manifest = run.require().read_manifest()
    check_output(out, inputs=run_inputs(run.path), overwrite=overwrite, ours=is_export_file, command="export")
    if keep_ratio < manifest["keep_ratio"]:
        raise CotSurvivalError("E090", path=run.path, reached=manifest["keep_ratio"], asked=keep_ratio)
    chains = run.read_chains().set_index("chain_index")
    lines = []
    for index in run.part_indices("tokens"):
        tokens = run.read_part("tokens", index).sort_values("position")
        n = len(tokens)
        steps = n_deletions(n, keep_ratio)
        deleted = tokens["deleted_step"].fillna(np.iinfo(np.int64).max).to_numpy(dtype=np.int64)
        keep = deleted > steps
        chain = chains.loc[index]
        text = pruned_text(chain["reasoning"], tokens["char_start"], tokens["char_end"], keep)
        lines.append(json.dumps({"id": chain["chain_id"], "question": chain["question"], "reasoning": text,
                                 "answer": chain["answer"], "keep_ratio": keep_ratio, "n_kept": int(keep.sum()),
                                 "n_tokens": n}, ensure_ascii=False))
    atomic_write_bytes(Path(out), ("\n".join(lines) + "\n").encode("utf-8"))
    return len(lines)
