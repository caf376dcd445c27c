"""The ``tag`` stage: label a run's tokens (``labels.parquet``) or a chains file's text (spans JSONL).

``tag_run`` writes the rule tagger's labels as the source ``rule`` of ``RUN/labels.parquet`` (see
:mod:`cotsurvival.labels`); ``tokens.parquet`` is pruning's alone and is never rewritten here.
:func:`tag` is the stage function the ``cotsurvival tag`` command calls.
"""
from __future__ import annotations

import dataclasses
import html
import time
from os import PathLike
from pathlib import Path

import pandas as pd

from ..errors import CotSurvivalError
from ..labels import RULE, already_labelled, record_source, write_labels
from ..outputs import check_output, is_spans_file
from ..progress import Progress, progress_bar
from ..results import StageResult
from ..rundir import RunDir, as_rundir
from .equations import find_equations
from .language import warn_if_not_english
from .spec import TaxonomySpec, load_spec
from .tagger import DEFAULT_BATCH_SIZE, iter_tag, project_spans
from .units import split_units, token_units
from .tagger import write_spans

LABEL_COLUMNS = ("label", "category", "equation_correct")


@dataclasses.dataclass
class TagResult(StageResult):
    """What ``tag`` did: chains and tokens labelled (or spans written), per label counts."""

    title = "cotsurvival tag"
    target: str
    source: str
    n_chains: int
    n_tokens: int
    n_skipped: int = 0
    label_counts: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    taxonomy: dict = dataclasses.field(default_factory=dict)
    judge: dict | None = None

    def to_frame(self) -> pd.DataFrame:
        """One row per label: its token count (this invocation's chains)."""
        counts = pd.Series(self.label_counts, dtype="int64").sort_values(ascending=False)
        return counts.rename_axis("label").reset_index(name="n_tokens").assign(source=self.source)

    def _repr_html_(self) -> str:
        line = (f"{self.source} labels: {self.n_tokens} tokens of {self.n_chains} chains "
                f"({self.n_skipped} chains already labelled) in {self.target}")
        return f"<p><b>cotsurvival tag</b> {html.escape(line)}</p>" + self.to_frame().to_html(index=False)


def tag(
    source: str | PathLike | RunDir,
    *,
    out: str | PathLike | None = None,
    taxonomy: str | PathLike | TaxonomySpec | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    judge=None,
    judge_url: str | None = None,
    judge_retries: int = 2,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    keep_annotations: bool = False,
    fields: str | dict | None = None,
) -> TagResult:
    """The ``tag`` stage (what ``cotsurvival tag`` runs).

    Parameters
    ----------
    source : path or RunDir
        A run directory: its tokens get rule labels (and judge labels with ``judge``) in
        ``labels.parquet``. Otherwise a chains file or ``"gsm8k"``: spans are written to ``out``.
    out : path, optional
        Spans JSONL, only (and always) with a chains file.
    taxonomy : path or TaxonomySpec, optional
        The packaged spec by default.
    judge : str or ChatClient, optional
        Also label the run with an LLM judge (model spec, or model name at ``judge_url``).
    overwrite : bool
        Re-label chains that already have labels, also from another taxonomy version.
    progress : bool
        Show progress bars.
    keep_annotations, fields
        With a chains file, read as ``prune`` reads it (:func:`cotsurvival.read_chains`): GSM8K
        ``<<...>>`` annotations stripped unless ``keep_annotations``, so the spans' offsets index the
        same text ``prune`` prunes; ``fields`` maps the file's field names.
    """
    spec = taxonomy if isinstance(taxonomy, TaxonomySpec) else load_spec(taxonomy)
    if isinstance(source, RunDir) or Path(source).is_dir():
        if out is not None:
            raise CotSurvivalError("E089", reason="--out is for chains files; a run's labels go to RUN/labels.parquet")
        if keep_annotations or fields:
            raise CotSurvivalError("E089", reason="--keep-annotations and --fields are for chains files; a run's "
                                                  "chains were read when it was pruned")
        result = tag_run(source, spec=spec, batch_size=batch_size, progress=progress, overwrite=overwrite)
        if judge:
            from .judge import judge_run

            judged = judge_run(source, judge, url=judge_url, spec=spec, retries=judge_retries, device=device,
                               progress=progress, overwrite=overwrite)
            result.judge = judged.to_dict()
        return result
    if judge:
        raise CotSurvivalError("E089", reason="--judge needs a run directory as SOURCE")
    if not out:
        raise CotSurvivalError("E089", reason="tagging a chains file needs --out SPANS.jsonl")
    # never over the chains or the spec it reads, nor over a file that is not an earlier spans file
    inputs = [(p, "an input of this command") for p in (source, taxonomy)
              if isinstance(p, (str, PathLike)) and Path(p).is_file()]
    check_output(out, inputs=inputs, overwrite=overwrite, ours=is_spans_file, command="tag")

    started = time.perf_counter()
    with progress_bar(progress, None, "tag") as bar:
        count = write_spans(source, out, spec=spec, batch_size=batch_size, progress=bar.update,
                            keep_annotations=keep_annotations, fields=fields)
    return TagResult(target=str(out), source=RULE, n_chains=count, n_tokens=0, seconds=time.perf_counter() - started,
                     taxonomy=spec.manifest_entry())


def tag_run(
    run: str | PathLike | RunDir,
    spec: TaxonomySpec | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress = False,
    equations: bool = True,
    *,
    overwrite: bool = False,
) -> TagResult:
    """Label every reasoning token of a run with the rule tagger (source ``rule`` of labels.parquet).

    For each chain the reasoning is tagged (its question is used) and the spans are projected onto
    the run's tokens (``char_start``/``char_end``). Chains that already have rule labels of the same
    taxonomy are skipped (re-running resumes), unless ``overwrite``. Labels from another taxonomy
    version are refused (E017) unless ``overwrite``. ``tokens.parquet`` is not touched. The spec is
    recorded under ``labels.rule`` (and ``taxonomy``) in manifest.json.

    Parameters
    ----------
    run : path or RunDir
    spec : TaxonomySpec, optional
        The packaged spec by default.
    batch_size : int
        Chains per spaCy batch.
    progress : bool
        Show a progress bar (a callable is also accepted and called with 1 per chain).
    equations : bool
        Also store ``equation_correct`` (nullable bool): for tokens inside an arithmetic equation
        the tagger found, whether its sides agree (see :mod:`.equations`); null elsewhere.
    overwrite : bool
        Re-tag every chain, replacing rule labels (also those of another taxonomy version).

    Returns
    -------
    TagResult
    """
    run = as_rundir(run)
    spec = spec or load_spec()
    indices = run.part_indices("tokens")
    if not indices:
        raise CotSurvivalError("E012", path=run.path, what="tokens", command="cotsurvival prune")
    chains = run.read_chains().set_index("chain_index")
    missing = [i for i in indices if i not in chains.index]
    if missing:
        raise CotSurvivalError("E020", path=run.path, chain=missing[0], reason="it is not in chains.parquet")

    warn_if_not_english([chains.loc[i, "chain_id"] for i in indices], [chains.loc[i, "reasoning"] for i in indices])
    done = set() if overwrite else already_labelled(run, RULE, spec.manifest_entry(), "rule labels")
    todo = [i for i in indices if i not in done]
    record_source(run, RULE, complete=False, kind="rule tagger", taxonomy=spec.manifest_entry())
    started = time.perf_counter()
    texts = [str(chains.at[i, "reasoning"]) for i in todo]
    questions = [chains.at[i, "question"] if isinstance(chains.at[i, "question"], str) else None for i in todo]
    counts: dict[str, int] = {}
    n_tokens = 0
    with progress_bar(progress, len(todo), "tag") as bar:
        for index, text, spans in zip(todo, texts, iter_tag(texts, questions, spec=spec, batch_size=batch_size)):
            tokens = run.read_part("tokens", index)
            _check_offsets(run, index, tokens, text)
            offsets = list(zip(tokens["char_start"].tolist(), tokens["char_end"].tolist()))
            labels = project_spans(spans, offsets, text, spec)
            rows = tokens[["chain_index", "chain_id", "position"]].copy()
            rows["label"] = pd.Series(labels, index=rows.index, dtype=object)
            rows["category"] = [spec.category(label) for label in labels]
            if equations:
                rows["equation_correct"] = _equation_column(text, spans, offsets).to_numpy()
            # the token's reasoning unit, from the splitter resample cuts at and the viewer marks
            rows["unit"] = token_units(offsets, split_units(text))
            write_labels(run, index, rows, RULE, spec.manifest_entry())
            for label in labels:
                counts[label] = counts.get(label, 0) + 1
            n_tokens += len(labels)
            bar.update(1)
    seconds = time.perf_counter() - started
    manifest = run.read_manifest()
    timings = dict(manifest.get("timings") or {})
    timings["tag"] = round(seconds, 3)
    run.update_manifest(taxonomy=spec.manifest_entry(), timings=timings)
    record_source(run, RULE, kind="rule tagger", taxonomy=spec.manifest_entry())
    return TagResult(target=str(run.path), source=RULE, n_chains=len(todo), n_tokens=n_tokens, n_skipped=len(done),
                     label_counts=counts, seconds=seconds, taxonomy=spec.manifest_entry())


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
    values: list = [None] * len(offsets)
    for equation in find_equations(text, spans):
        for k, (start, end) in enumerate(offsets):
            if start < equation.end and end > equation.start and text[start:end].strip():
                values[k] = equation.correct if values[k] is None else (values[k] and equation.correct)
    return pd.Series(values, dtype="boolean")
