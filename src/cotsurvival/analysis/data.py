"""The joined token table every analysis starts from.

:func:`load_run` reads ``tokens.parquet`` chain by chain and joins, when present, the baseline
orderings (as wide ``survival_<ordering>`` / ``censored_<ordering>`` columns) and the attention
features. :func:`orderings_long` stacks the greedy order and the baselines into one long table
with ``ordering`` as a factor.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from ..errors import CotSurvivalError
from ..labels import RULE, read_labels, resolve_source, stored_sources
from ..rundir import RunDir, as_rundir  # noqa: F401  (as_rundir: re-exported for older imports)

TOKEN_COLUMNS = [
    "chain_index", "chain_id", "position", "n_tokens", "rel_position", "text", "token_len", "is_whitespace",
    "label", "category", "deleted_step", "survival", "censored", "deletion_cost",
]
_READ_COLUMNS = ["chain_index", "chain_id", "position", "n_tokens", "text", "is_whitespace", "deleted_step",
                 "survival", "censored", "deletion_cost", "deletion_gap", "static_logprob", "char_start", "char_end"]
# The token's static log-probability in the unpruned chain (a covariate of the primary test's
# sensitivity block; absent from runs that do not store it), and the reasoning unit the token belongs
# to (cotsurvival.taxonomy.units, the splitter resampling cuts at) with whether that unit is the
# chain's last: the primary test allows a jump in importance where the final unit starts.
OPTIONAL_COLUMNS = ["static_logprob", "unit", "final_unit"]
# Stability columns (present when the run stores them): the gap of the step that deleted the token and
# whether that step was a near-tie (cotsurvival.pruning.diagnostics), then the replicate summary.
STABILITY_COLUMNS = ["deletion_gap", "near_tie"]
GREEDY = "greedy"


def load_run(
    run: str | os.PathLike | RunDir,
    *,
    labels: str = RULE,
    require_tags: bool = True,
    baselines: bool = True,
    attention: bool = True,
    replicates: bool = True,
) -> pd.DataFrame:
    """One row per reasoning token, with its survival, labels and (when present) extra features.

    Parameters
    ----------
    run : str, PathLike or RunDir
        The run directory.
    labels : str, default "rule"
        Which labels fill ``label``/``category``: ``"rule"`` (the rule tagger), ``"judge"`` (the
        run's only LLM judge) or an exact source such as ``"judge:MODEL"`` (see
        :mod:`cotsurvival.labels`). The source used is in ``frame.attrs["labels_source"]``
        (``None`` when the run has none and ``require_tags`` is False).
    require_tags : bool, default True
        Raise E040 when tokens have no ``label``/``category`` from that source (E015 when the
        source does not exist). With ``False`` missing labels are left missing instead.
    baselines : bool, default True
        Join ``baselines.parquet`` when it exists, as ``survival_<ordering>``,
        ``censored_<ordering>`` and ``deleted_step_<ordering>``.
    attention : bool, default True
        Join ``attention.parquet`` (``surprisal``, ``attn_answer_LXX``, ``attn_later_LXX``) when it exists.
    replicates : bool, default True
        For a run pruned with ``--replicates K``: add ``survival_mean``, ``survival_sd``,
        ``survival_min``, ``survival_max`` and ``n_replicates`` over the K paths
        (:mod:`cotsurvival.analysis.stability`) beside replicate 0's ``survival``, still one row per token.

    Returns
    -------
    pandas.DataFrame
        Columns ``chain_index, chain_id, position, n_tokens, rel_position, text, token_len,
        is_whitespace, label, category, deleted_step, survival, censored, deletion_cost`` and
        the optional joined columns. ``rel_position`` is ``position / (n_tokens - 1)`` (0 for a
        one-token chain); ``token_len`` is the token's length in characters. Runs that store it
        also have ``deletion_gap`` (nats between the two cheapest distinct deletions of the step
        that deleted the token) and ``near_tie`` (that gap below ``frame.attrs["near_tie_threshold"]``,
        the run dtype's measured cost error). Survival and ranks are replicate 0's, the greedy path.
        ``unit`` is the token's reasoning unit (0-based; sentences or lines, by
        :func:`cotsurvival.taxonomy.units.split_units`; -1 for whitespace before the first) and
        ``final_unit`` whether it is the chain's last unit (both derived from the text, absent when
        the run stores no character offsets).
    """
    run = as_rundir(run)
    indices = run.part_indices("tokens")
    if not indices:
        raise CotSurvivalError("E012", path=run.path, what="tokens", command="cotsurvival prune")
    # Part by part keeps memory flat.
    frames = [_read_tokens_part(run, i) for i in indices]
    tokens = pd.concat(frames, ignore_index=True)
    source = _label_source(run, labels, require_tags)
    tokens = join_labels(run, tokens, source)
    _check_tags(tokens, run, require_tags, source)
    tokens = _derive(_unit_columns(run, tokens))
    tokens, threshold = _stability_columns(run, tokens, replicates)
    if baselines and run.part_indices("baselines"):
        tokens = tokens.merge(_wide_baselines(run), on=["chain_index", "position"], how="left", validate="1:1")
    if attention and run.part_indices("attention"):
        features = run.read_table("attention").drop(columns=["chain_id"], errors="ignore")
        tokens = tokens.merge(features, on=["chain_index", "position"], how="left", validate="1:1")
    tokens.attrs["labels_source"] = source
    if threshold is not None:
        tokens.attrs["near_tie_threshold"] = threshold
    return tokens


def join_labels(run: RunDir, tokens: pd.DataFrame, source: str | None) -> pd.DataFrame:
    """``tokens`` (rows of tokens.parquet) with ``label``/``category`` from ``source`` (missing where absent).

    E018 when stored labels belong to another chain (their ``chain_id`` differs): a stale or
    copied part. Within a run a chain's positions never change (its ``reasoning_ids`` are fixed),
    so labels are matched by ``(chain_index, position)``.
    """
    tokens = tokens.drop(columns=["label", "category"], errors="ignore")
    if source is None:
        return tokens.assign(label=pd.Series([None] * len(tokens), dtype="object", index=tokens.index),
                             category=pd.Series([None] * len(tokens), dtype="object", index=tokens.index))
    stored = read_labels(run, source, sorted(tokens["chain_index"].unique()))
    joined = tokens.merge(stored[["chain_index", "position", "chain_id", "label", "category"]],
                          on=["chain_index", "position"], how="left", suffixes=("", "_labels"), validate="1:1")
    stray = joined[joined["chain_id_labels"].notna() & (joined["chain_id"] != joined["chain_id_labels"])]
    if len(stray):
        raise CotSurvivalError("E018", path=run.path, chain=int(stray["chain_index"].iloc[0]), source=source,
                               reason=f"they are of chain {stray['chain_id_labels'].iloc[0]!r}, the tokens of "
                                      f"{stray['chain_id'].iloc[0]!r}", command=f"cotsurvival tag {run.path}")
    return joined.drop(columns=["chain_id_labels"])

def baseline_orderings(frame: pd.DataFrame) -> list[str]:
    """Names of the baseline orderings joined in a :func:`load_run` table."""
    from .stability import SUMMARY_COLUMNS

    return [c[len("survival_"):] for c in frame.columns if c.startswith("survival_") and c not in SUMMARY_COLUMNS]


def attention_layers(frame: pd.DataFrame, kind: str = "answer") -> list[str]:
    """The ``attn_<kind>_LXX`` columns of a table, in layer order."""
    return sorted(c for c in frame.columns if c.startswith(f"attn_{kind}_L"))


def orderings_long(run: str | os.PathLike | RunDir | pd.DataFrame, *, require_tags: bool = True,
                   labels: str = RULE) -> pd.DataFrame:
    """Greedy and baseline orderings stacked, one row per (ordering, token).

    Parameters
    ----------
    run : str, PathLike, RunDir or DataFrame
        A run directory, or a table from :func:`load_run`.
    require_tags, labels
        As in :func:`load_run`.

    Returns
    -------
    pandas.DataFrame
        Columns ``ordering`` (``greedy`` first, then the baselines), ``chain_index, chain_id,
        position, n_tokens, rel_position, token_len, label, category``, then ``unit, final_unit`` when
        the table has them, then ``deleted_step, survival, censored``.
    """
    frame = run if isinstance(run, pd.DataFrame) else load_run(run, labels=labels, require_tags=require_tags, attention=False)
    keys = ["chain_index", "chain_id", "position", "n_tokens", "rel_position", "token_len", "label", "category"]
    # the reasoning units travel too: the orderings' contrasts use the primary's final-unit jump
    keys += [c for c in ("unit", "final_unit") if c in frame.columns]
    blocks = [frame[keys + ["deleted_step", "survival", "censored"]].assign(ordering=GREEDY)]
    for name in baseline_orderings(frame):
        block = frame[keys].assign(deleted_step=frame[f"deleted_step_{name}"], survival=frame[f"survival_{name}"],
                                   censored=frame[f"censored_{name}"], ordering=name)
        blocks.append(block.dropna(subset=["survival"]))
    long = pd.concat(blocks, ignore_index=True)
    order = [GREEDY] + baseline_orderings(frame)
    long["ordering"] = pd.Categorical(long["ordering"], categories=order)
    return long[["ordering"] + keys + ["deleted_step", "survival", "censored"]]


# --------------------------------------------------------------------------- helpers
def _read_tokens_part(run: RunDir, index: int) -> pd.DataFrame:
    names = run.part_columns("tokens", index)
    return run.read_part("tokens", index, columns=[c for c in _READ_COLUMNS if c in names])


def _label_source(run: RunDir, labels: str, require_tags: bool) -> str | None:
    """The exact stored source ``labels`` names.

    None when the run has no rule labels and tags are optional (an untagged run); a source asked
    for by name (``"judge"``, ``"judge:MODEL"``) that is not stored is always an error (E015).
    """
    try:
        return resolve_source(run, labels)
    except CotSurvivalError as exc:
        if exc.code != "E015" or labels != RULE:
            raise
        if require_tags:
            if not stored_sources(run):
                raise CotSurvivalError("E040", path=run.path, detail="no labels.parquet") from None
            raise
        return None


def _check_tags(tokens: pd.DataFrame, run: RunDir, require_tags: bool, source: str | None) -> None:
    if not require_tags:
        return
    missing = tokens["category"].isna()
    if missing.any():
        n_chains = tokens.loc[missing, "chain_index"].nunique()
        raise CotSurvivalError("E040", path=run.path,
                               detail=f"{int(missing.sum())} tokens in {n_chains} chains have no {source!r} labels")


def _stability_columns(run: RunDir, tokens: pd.DataFrame, replicates: bool) -> tuple[pd.DataFrame, float | None]:
    """``deletion_gap``/``near_tie`` when the run stores gaps; the replicate summary when it has replicates."""
    from ..pruning.diagnostics import near_tie
    from ..precision import near_tie_threshold
    from .stability import replicate_survival, replicates_of, token_summary

    threshold = None
    if "deletion_gap" in tokens and tokens["deletion_gap"].notna().any():
        manifest = run.read_manifest()
        threshold = (manifest.get("diagnostics") or {}).get("near_tie_threshold") or \
            near_tie_threshold((manifest.get("model") or {}).get("dtype", "float32"))
        tokens["deletion_gap"] = tokens["deletion_gap"].astype(float)
        tokens["near_tie"] = near_tie(tokens["deletion_gap"], threshold)
    else:
        tokens = tokens.drop(columns=["deletion_gap"], errors="ignore")
    if replicates and replicates_of(run).get("k", 1) > 1:
        summary = token_summary(replicate_survival(run))
        tokens = tokens.merge(summary, on=["chain_index", "position"], how="left", validate="1:1")
    return tokens, threshold


def _unit_columns(run: RunDir, tokens: pd.DataFrame) -> pd.DataFrame:
    """``unit`` and ``final_unit`` per token, from the chain's reasoning text and the token offsets."""
    from ..rundir import _read_parquet
    from ..taxonomy.units import split_units, token_units

    if not {"char_start", "char_end"} <= set(tokens.columns) or not run.chains_path.exists():
        return tokens
    reasoning = _read_parquet(run.chains_path, columns=["chain_index", "reasoning"]).set_index("chain_index")["reasoning"]
    tokens = tokens.sort_values(["chain_index", "position"], kind="stable").reset_index(drop=True)
    unit = np.full(len(tokens), -1, dtype=np.int64)
    final = np.zeros(len(tokens), dtype=bool)
    for index, rows in tokens.groupby("chain_index", sort=False).indices.items():
        if index not in reasoning.index:
            continue
        units = split_units(str(reasoning[index]))
        chain = tokens.iloc[rows]
        of = token_units(list(zip(chain["char_start"].astype(int), chain["char_end"].astype(int))), units)
        unit[rows] = of
        final[rows] = (of == len(units) - 1) & (len(units) > 0)
    return tokens.assign(unit=unit, final_unit=final)


def _derive(tokens: pd.DataFrame) -> pd.DataFrame:
    n = tokens["n_tokens"].to_numpy()
    position = tokens["position"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(n > 1, position / np.maximum(n - 1, 1), 0.0)
    tokens["rel_position"] = rel.astype(float)
    tokens["token_len"] = tokens["text"].fillna("").str.len().astype(int)
    tokens["censored"] = tokens["censored"].astype(bool)
    tokens["survival"] = tokens["survival"].astype(float)
    tokens["deletion_cost"] = tokens["deletion_cost"].astype(float)
    for column in ("label", "category"):
        tokens[column] = tokens[column].astype("object")
    return tokens[TOKEN_COLUMNS + [c for c in OPTIONAL_COLUMNS + STABILITY_COLUMNS if c in tokens]]


def _wide_baselines(run: RunDir) -> pd.DataFrame:
    columns = ["chain_index", "ordering", "position", "deleted_step", "survival", "censored"]
    long = run.read_table("baselines", columns=columns)
    wide = long.pivot(index=["chain_index", "position"], columns="ordering",
                      values=["survival", "censored", "deleted_step"])
    wide.columns = [f"{value}_{ordering}" for value, ordering in wide.columns]
    wide = wide.reset_index()
    for column in wide.columns:
        if column.startswith("censored_"):
            wide[column] = wide[column].astype("boolean")
        elif column.startswith("survival_"):
            wide[column] = wide[column].astype(float)
        elif column.startswith("deleted_step_"):
            wide[column] = wide[column].astype("Int64")
    return wide
