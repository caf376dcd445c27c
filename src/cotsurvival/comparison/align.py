"""Aligning runs on the reasoning text, so runs made with different tokenizers can be compared.

A *run view* is one ordering of one run: the greedy order (``RUN``) or a baseline ordering
(``RUN:random``, ``RUN:surprisal`` ...). Two views are compared on *units*, spans of the
reasoning text both runs share:

* **Same tokenization** (every common chain has the same token ids at the same character
  offsets in both runs): the units are the tokens themselves, compared token by token.
* **Different tokenizations**: the units are *words*, maximal runs of non-whitespace characters
  (``\\S+``). Words are the finest units every tokenizer respects up to whitespace, need no
  model or tagger at comparison time, and give every run the same units. A token overlaps a word
  when their character ranges ``[char_start, char_end)`` intersect; whitespace-only tokens overlap
  no word and are left out.

**Unit survival rule.** A unit survives as long as *any* of its overlapping tokens does: its
deletion step is the latest deletion step among them (a survivor of the run counts as later than
every deletion), its survival the largest of their normalized survivals (``deleted_step / N``,
N = the run's reasoning tokens in that chain), and it is censored when any of them is. Its
category is the character-weighted majority category of its overlapping tokens in the *first*
view of the pair (ties: the earliest token's category).

Chains are matched by ``chain_id`` and must have identical reasoning text; chains only in some
runs, and chains whose text differs, are reported in the matching table and left out.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis.data import as_rundir, load_run
from ..errors import CotSurvivalError

GREEDY = "greedy"
BASELINE_ORDERINGS = ("random", "surprisal", "loo", "attention")
_WORD = re.compile(r"\S+")

UNIT_RULE = ("a unit survives as long as any of its overlapping tokens (its deletion step is the latest among "
             "them; censored if any is)")
WORD_UNITS = "words (maximal runs of non-whitespace characters)"
TOKEN_UNITS = "tokens (same tokenizer: compared token by token)"


@dataclass
class RunView:
    """One ordering of one run, ready to align.

    Attributes
    ----------
    name : str
        Display name (the run folder's name, with ``:ordering`` for a baseline ordering).
    path : Path
    ordering : str
        ``greedy`` or a baseline ordering.
    manifest : dict
    tokens : DataFrame
        ``chain_id, chain_index, position, token_id, char_start, char_end, n_tokens, category,
        deleted_step (float, NaN = survived), survival, censored``.
    chains : DataFrame
        ``chain_id, chain_index, reasoning``.
    """

    name: str
    path: Path
    ordering: str
    manifest: dict
    tokens: pd.DataFrame
    chains: pd.DataFrame

    @property
    def model(self) -> str:
        return str((self.manifest.get("model") or {}).get("spec") or "unknown model")

    @property
    def objective(self) -> str:
        """The objective that made this ordering (a baseline ordering names itself)."""
        if self.ordering == GREEDY:
            return f"{self.manifest.get('objective', '?')} objective"
        return f"{self.ordering} ordering"

    @property
    def keep_ratio(self) -> float:
        return float(self.manifest.get("keep_ratio") or 0.0)

    def describe(self) -> str:
        """``'joint' (smollm2-135m, joint objective)``: how sentences name a run."""
        return f"'{self.name}' ({self.model}, {self.objective})"

    def info(self) -> dict:
        return {"name": self.name, "path": str(self.path), "ordering": self.ordering, "model": self.model,
                "objective": self.objective, "greedy_objective": self.manifest.get("objective"),
                "keep_ratio": self.keep_ratio, "n_chains": int(self.chains["chain_id"].nunique()),
                "n_tokens": int(len(self.tokens)), "tagged": bool(self.tokens["category"].notna().any())}


def parse_run_spec(spec: str | os.PathLike) -> tuple[Path, str]:
    """``RUN`` -> (RUN, "greedy"); ``RUN:random`` -> (RUN, "random") when RUN is a folder."""
    text = str(spec)
    head, sep, tail = text.rpartition(":")
    if sep and tail in (GREEDY,) + BASELINE_ORDERINGS and head and not Path(text).exists():
        return Path(head), tail
    return Path(text), GREEDY


def load_view(spec: str | os.PathLike, name: str | None = None) -> RunView:
    """Read one run (``RUN`` or ``RUN:ORDERING``) for comparison; nothing is written."""

    path, ordering = parse_run_spec(spec)
    run = as_rundir(path)
    manifest = run.read_manifest()
    table = load_run(run, require_tags=False, attention=False, baselines=ordering != GREEDY)
    if ordering != GREEDY:
        if f"survival_{ordering}" not in table.columns:
            from ..analysis.data import baseline_orderings

            available = sorted(baseline_orderings(table))
            raise CotSurvivalError("E121", path=path, ordering=ordering, available=", ".join(available) or "none")
        table = table.assign(survival=table[f"survival_{ordering}"].astype(float),
                             censored=table[f"censored_{ordering}"].astype(bool),
                             deleted_step=table[f"deleted_step_{ordering}"])
    offsets = run.read_table("tokens", columns=["chain_index", "position", "token_id", "char_start", "char_end"])
    table = table.merge(offsets, on=["chain_index", "position"], how="left", validate="1:1")
    table["deleted_step"] = pd.to_numeric(table["deleted_step"], errors="coerce").astype(float)
    columns = ["chain_id", "chain_index", "position", "token_id", "char_start", "char_end", "n_tokens", "text",
               "category", "deleted_step", "survival", "censored"]
    chains = run.read_chains()[["chain_id", "chain_index", "reasoning"]]
    chains["chain_id"] = chains["chain_id"].astype(str)
    table["chain_id"] = table["chain_id"].astype(str)
    default = path.resolve().name + ("" if ordering == GREEDY else f":{ordering}")
    return RunView(name=name or default, path=path, ordering=ordering, manifest=manifest, tokens=table[columns],
                   chains=chains)


def match_chains(views: list[RunView]) -> pd.DataFrame:
    """Which chains each run has and whether their reasoning text is identical.

    Returns
    -------
    DataFrame
        One row per chain id in any run: ``chain_id``, one boolean column per run name, and
        ``status``: ``common`` (in every run, identical text), ``only in: a, b`` or ``text differs``.
    """
    texts: dict[str, dict[str, str]] = {}
    for view in views:
        for chain_id, reasoning in zip(view.chains["chain_id"], view.chains["reasoning"]):
            texts.setdefault(chain_id, {})[view.name] = str(reasoning)
    rows = []
    for chain_id, by_run in texts.items():
        row = {"chain_id": chain_id, **{v.name: v.name in by_run for v in views}}
        if len(by_run) < len(views):
            row["status"] = "only in: " + ", ".join(n for n in by_run)
        elif len(set(by_run.values())) > 1:
            row["status"] = "text differs"
        else:
            row["status"] = "common"
        rows.append(row)
    return pd.DataFrame(rows, columns=["chain_id"] + [v.name for v in views] + ["status"])


def common_chains(a: RunView, b: RunView) -> list[str]:
    """Chain ids both views hold with identical reasoning text, in ``a``'s order."""
    text_b = dict(zip(b.chains["chain_id"], b.chains["reasoning"]))
    return [c for c, t in zip(a.chains["chain_id"], a.chains["reasoning"]) if c in text_b and text_b[c] == t]


def same_tokenization(a: RunView, b: RunView, chain_ids: list[str]) -> bool:
    """True when every chain has the same token ids at the same offsets in both views."""
    cols = ["chain_id", "position", "token_id", "char_start", "char_end"]
    ta = a.tokens.loc[a.tokens["chain_id"].isin(chain_ids), cols].sort_values(["chain_id", "position"])
    tb = b.tokens.loc[b.tokens["chain_id"].isin(chain_ids), cols].sort_values(["chain_id", "position"])
    return len(ta) == len(tb) and bool((ta.to_numpy() == tb.to_numpy()).all())


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character ranges ``[start, end)`` of the words (maximal non-whitespace runs) of ``text``."""
    return [(m.start(), m.end()) for m in _WORD.finditer(text)]


def align(a: RunView, b: RunView, chain_ids: list[str] | None = None) -> tuple[pd.DataFrame, str]:
    """Units of the common chains with their survival in both views.

    Returns
    -------
    (DataFrame, str)
        The unit table — ``chain_id, unit, char_start, char_end, text, category, n_units,
        deleted_a, survival_a, censored_a, n_tokens_a`` (and ``_b``), where ``n_tokens_*`` is the
        run's reasoning tokens in the chain and ``deleted_*`` is NaN for a unit that survived —
        and the unit kind: ``"token"`` or ``"word"``.
    """
    chain_ids = common_chains(a, b) if chain_ids is None else chain_ids
    if same_tokenization(a, b, chain_ids):
        return _token_units(a, b, chain_ids), "token"
    return _word_units(a, b, chain_ids), "word"


def _token_units(a: RunView, b: RunView, chain_ids: list[str]) -> pd.DataFrame:
    keep = ["chain_id", "position", "char_start", "char_end", "text", "category", "n_tokens", "deleted_step",
            "survival", "censored"]
    ta = a.tokens.loc[a.tokens["chain_id"].isin(chain_ids), keep]
    tb = b.tokens.loc[b.tokens["chain_id"].isin(chain_ids), ["chain_id", "position", "n_tokens", "deleted_step",
                                                             "survival", "censored"]]
    units = ta.merge(tb, on=["chain_id", "position"], suffixes=("_a", "_b"), validate="1:1")
    units = units.rename(columns={"position": "unit", "deleted_step_a": "deleted_a", "deleted_step_b": "deleted_b"})
    return _finish(units, chain_ids)


def _word_units(a: RunView, b: RunView, chain_ids: list[str]) -> pd.DataFrame:
    text_of = dict(zip(a.chains["chain_id"], a.chains["reasoning"]))
    groups_a = dict(tuple(a.tokens[a.tokens["chain_id"].isin(chain_ids)].groupby("chain_id", sort=False)))
    groups_b = dict(tuple(b.tokens[b.tokens["chain_id"].isin(chain_ids)].groupby("chain_id", sort=False)))
    frames = []
    for chain_id in chain_ids:
        text = str(text_of[chain_id])
        spans = word_spans(text)
        if not spans or chain_id not in groups_a or chain_id not in groups_b:
            continue
        frame = pd.DataFrame({"chain_id": chain_id, "unit": np.arange(len(spans)),
                              "char_start": [s for s, _ in spans], "char_end": [e for _, e in spans],
                              "text": [text[s:e] for s, e in spans]})
        side_a = _unit_survival(groups_a[chain_id], spans, len(text), with_category=True)
        side_b = _unit_survival(groups_b[chain_id], spans, len(text), with_category=False)
        frame["category"] = side_a.pop("category")
        frames.append(pd.concat([frame, side_a.add_suffix("_a"), side_b.add_suffix("_b")], axis=1))
    columns = ["chain_id", "unit", "char_start", "char_end", "text", "category", "deleted_a", "survival_a",
               "censored_a", "n_tokens_a", "deleted_b", "survival_b", "censored_b", "n_tokens_b"]
    if not frames:
        return pd.DataFrame(columns=columns + ["n_units"])
    return _finish(pd.concat(frames, ignore_index=True), chain_ids)


def _unit_survival(tokens: pd.DataFrame, spans: list[tuple[int, int]], length: int, with_category: bool) -> pd.DataFrame:
    """Survival of each word from the tokens overlapping it (the rule in the module docstring)."""
    # Hand-written interval overlap: a character -> word map makes each token's words a slice lookup.
    owner = np.full(length, -1, dtype=np.int64)
    for u, (s, e) in enumerate(spans):
        owner[s:e] = u
    n_units = len(spans)
    inf = np.inf
    deleted = np.full(n_units, -1.0)       # latest deletion step; inf = a token survived
    survival = np.full(n_units, np.nan)
    censored = np.zeros(n_units, dtype=bool)
    covered = np.zeros(n_units, dtype=bool)
    weight: list[dict] = [dict() for _ in range(n_units)]
    first_cat: list = [None] * n_units
    n_tokens = int(tokens["n_tokens"].iloc[0])
    for start, end, step, surv, cens, cat in zip(tokens["char_start"].to_numpy(), tokens["char_end"].to_numpy(),
                                                 tokens["deleted_step"].to_numpy(float), tokens["survival"].to_numpy(float),
                                                 tokens["censored"].to_numpy(bool), tokens["category"].to_numpy(object)):
        chars = owner[int(start):int(end)]
        for u in np.unique(chars[chars >= 0]):
            covered[u] = True
            step_value = inf if np.isnan(step) else step
            deleted[u] = max(deleted[u], step_value)
            survival[u] = surv if np.isnan(survival[u]) else max(survival[u], surv)
            censored[u] |= bool(cens)
            if with_category and isinstance(cat, str):
                overlap = int(np.sum(chars == u))
                weight[u][cat] = weight[u].get(cat, 0) + overlap
                if first_cat[u] is None:
                    first_cat[u] = cat
    out = pd.DataFrame({"deleted": np.where(np.isinf(deleted) | ~covered, np.nan, deleted), "survival": survival,
                        "censored": censored, "n_tokens": n_tokens, "covered": covered})
    if with_category:
        out["category"] = [max(w.items(), key=lambda kv: (kv[1], kv[0] == first_cat[u]))[0] if w else None
                           for u, w in enumerate(weight)]
    return out


def _finish(units: pd.DataFrame, chain_ids: list[str]) -> pd.DataFrame:
    units = units.copy()
    order = {c: i for i, c in enumerate(chain_ids)}
    units["_order"] = units["chain_id"].map(order)
    units = units.sort_values(["_order", "unit"]).drop(columns="_order").reset_index(drop=True)
    units["n_units"] = units.groupby("chain_id")["unit"].transform("size").astype(int)
    for side in ("a", "b"):
        if f"covered_{side}" not in units:
            units[f"covered_{side}"] = True   # token units: every unit is its own token
        units[f"covered_{side}"] = units[f"covered_{side}"].astype(bool)
        units[f"censored_{side}"] = units[f"censored_{side}"].astype(bool)
        units[f"survival_{side}"] = units[f"survival_{side}"].astype(float)
        units[f"deleted_{side}"] = units[f"deleted_{side}"].astype(float)
    return units
