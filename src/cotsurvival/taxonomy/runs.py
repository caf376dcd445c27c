"""Filling a run directory's tokens with taxonomy labels (``cotsurvival tag RUN``)."""
from __future__ import annotations

import time
from os import PathLike
from typing import Callable

import pandas as pd

from ..errors import CotSurvivalError
from ..rundir import RunDir
from .spec import TaxonomySpec, load_spec
from .tagger import DEFAULT_BATCH_SIZE, iter_tag, project_spans

LABEL_COLUMNS = ("label", "category", "equation_correct")


def tag_run(
    run_dir: str | PathLike | RunDir,
    spec: TaxonomySpec | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
    equations: bool = True,
) -> dict:
    """Label every reasoning token of a run with the rule tagger.

    For each chain the reasoning is tagged (its question is used), the spans are projected onto
    the run's tokens (``char_start``/``char_end``), and the tokens part is rewritten atomically with
    ``label`` and ``category`` columns (replacing earlier labels). The spec is recorded under
    ``taxonomy`` in manifest.json.

    Parameters
    ----------
    run_dir : path or RunDir
    spec : TaxonomySpec, optional
        The packaged spec by default.
    batch_size : int
        Chains per spaCy batch.
    progress : callable, optional
        Called with the number of chains just finished (e.g. ``tqdm.update``).
    equations : bool
        Also write ``equation_correct`` (nullable bool): for tokens inside an arithmetic equation
        the tagger found, whether its sides agree (see :mod:`.equations`); null elsewhere.

    Returns
    -------
    dict
        ``{"n_chains", "n_tokens", "label_counts", "seconds"}``.
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    run.require()
    spec = spec or load_spec()
    indices = run.part_indices("tokens")
    if not indices:
        raise CotSurvivalError("E012", path=run.path, what="tokens", command="cotsurvival prune")
    chains = run.read_chains().set_index("chain_index")
    missing = [i for i in indices if i not in chains.index]
    if missing:
        raise CotSurvivalError("E020", path=run.path, chain=missing[0], reason="it is not in chains.parquet")
    from .language import warn_if_not_english  # the rules are English: say so when a text is not

    warn_if_not_english([chains.loc[i, "chain_id"] for i in indices], [chains.loc[i, "reasoning"] for i in indices])
    started = time.perf_counter()
    texts = [str(chains.at[i, "reasoning"]) for i in indices]
    questions = [chains.at[i, "question"] if isinstance(chains.at[i, "question"], str) else None for i in indices]
    counts: dict[str, int] = {}
    n_tokens = 0
    for index, text, spans in zip(indices, texts, iter_tag(texts, questions, spec=spec, batch_size=batch_size)):
        tokens = run.read_part("tokens", index).drop(columns=list(LABEL_COLUMNS), errors="ignore")
        _check_offsets(run, index, tokens, text)
        offsets = list(zip(tokens["char_start"].tolist(), tokens["char_end"].tolist()))
        labels = project_spans(spans, offsets, text, spec)
        tokens["label"] = pd.Series(labels, index=tokens.index, dtype=object)
        tokens["category"] = [spec.category(label) for label in labels]
        if equations:
            tokens["equation_correct"] = _equation_column(text, spans, offsets)
        run.write_part("tokens", index, tokens)
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
        n_tokens += len(labels)
        if progress is not None:
            progress(1)
    seconds = time.perf_counter() - started
    manifest = run.read_manifest()
    timings = dict(manifest.get("timings") or {})
    timings["tag"] = round(seconds, 3)
    run.update_manifest(taxonomy=spec.manifest_entry(), timings=timings)
    return {"n_chains": len(indices), "n_tokens": n_tokens, "label_counts": counts, "seconds": seconds}


def _check_offsets(run: RunDir, index: int, tokens: pd.DataFrame, text: str) -> None:
    for column in ("char_start", "char_end"):
        if column not in tokens.columns:
            raise CotSurvivalError("E020", path=run.path, chain=index, reason=f"tokens has no '{column}' column")
    starts, ends = tokens["char_start"], tokens["char_end"]
    if len(tokens) and (int(starts.min()) < 0 or int(ends.max()) > len(text) or bool((ends < starts).any())):
        raise CotSurvivalError("E020", path=run.path, chain=index, reason="token offsets fall outside its reasoning text")
    if "text" in tokens.columns:
        for start, end, token_text in zip(starts, ends, tokens["text"]):
            # Compared without surrounding whitespace: tokenizers differ on whether offsets include a leading space.
            if text[int(start):int(end)].strip() != str(token_text).strip():
                raise CotSurvivalError("E020", path=run.path, chain=index,
                                       reason=f"token text {token_text!r} differs from reasoning[{start}:{end}]")


def _equation_column(text: str, spans, offsets) -> pd.Series:
    from .equations import find_equations

    values: list = [None] * len(offsets)
    for equation in find_equations(text, spans):
        for k, (start, end) in enumerate(offsets):
            if start < equation.end and end > equation.start and text[start:end].strip():
                values[k] = equation.correct if values[k] is None else (values[k] and equation.correct)
    return pd.Series(values, dtype="boolean")
