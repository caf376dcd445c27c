"""``build_viewer``: one self-contained HTML page to watch chains shrink, step by step.

The run's data is embedded as JSON in a ``<script type="application/json">`` block with ``<``,
``>`` and ``&`` written as ``\\u003c`` etc., so chain text can never close the block; the page's
script inserts text with ``textContent`` only, and a Content-Security-Policy allows no script but
the page's own (by hash) and no network at all.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..errors import CotSurvivalError
from ..labels import RULE, resolve_source, stored_sources
from ..provenance import scoring_notes
from ..rundir import RunDir, as_rundir, atomic_write_bytes
from .data import display_name, resolve_chain_ids, token_segments
from .notebook import read_chain_tokens
from .style import COARSE, FINE, category_colours, order_present

ORDERINGS = ("random", "surprisal", "loo", "attention", "llmlingua2")


def build_viewer(
    run: str | os.PathLike | RunDir,
    out: str | os.PathLike,
    *,
    chains: Iterable[int] | None = None,
    chain_ids: Iterable[str] | None = None,
    max_chains: int = 50,
    traces: bool = True,
    labels: str = "rule",
) -> Path:
    """Write an interactive, offline HTML viewer of a run.

    Parameters
    ----------
    run : str, PathLike or RunDir
        The run directory.
    out : str or PathLike
        The HTML file to write.
    chains : iterable of int, optional
        ``chain_index`` values to include (default: the first ``max_chains`` pruned chains).
    chain_ids : iterable of str, optional
        Chain ids (the chains file's ``id``) to include instead; E053 names ids the run lacks,
        E054 if ``chains`` is given too.
    max_chains : int, default 50
        Cap on the chains embedded when ``chains`` is not given; traces grow as N² per chain.
    traces : bool, default True
        Embed per-step costs (shown on hover). Off makes the file much smaller.
    labels : str, default "rule"
        The label source shown (``"rule"``, ``"judge"`` or an exact source such as ``"judge:MODEL"``);
        E015 when the run has no such labels (``"rule"`` on an untagged run shows no labels).

    Returns
    -------
    Path
        The file written.
    """
    run = as_rundir(run)
    available = run.part_indices("tokens")
    if not available:
        raise CotSurvivalError("E052", path=run.path)
    if chains is not None and chain_ids is not None:
        raise CotSurvivalError("E054", first="chains", second="chain_ids")
    if chain_ids is not None:
        chains = resolve_chain_ids(run, list(chain_ids))
    selected = list(chains) if chains is not None else available[:max_chains]
    for index in selected:
        if index not in available:
            raise CotSurvivalError("E051", chain=index, n_chains=len(available), last=available[-1])

    # The default on an untagged run shows no labels; any other source the user names must exist.
    source = None if labels == RULE and RULE not in stored_sources(run) else resolve_source(run, labels)
    rows = run.read_chains().set_index("chain_index")
    payload = _payload(run, rows, selected, len(available), traces, source)
    page = _render(payload, f"cotsurvival viewer: {run.path.name}")
    out = Path(out)
    atomic_write_bytes(out, page.encode("utf-8"))
    return out


# ----------------------------------------------------------------------------- data
def _payload(run: RunDir, rows: pd.DataFrame, selected: list[int], n_available: int, traces: bool,
             source: str | None) -> dict[str, Any]:
    chains = [_chain_payload(run, rows.loc[i], i, traces, source) for i in selected]
    present_coarse = order_present({c for ch in chains for c in ch["category"]}, COARSE)
    present_fine = order_present({lab for ch in chains for lab in ch["label"]}, FINE)
    manifest = run.read_manifest()
    labels = source or "none"
    note = (f"model {(manifest.get('model') or {}).get('spec', '?')} · objective {manifest.get('objective', '?')} · "
            f"labels {labels} · {len(chains)} of {n_available} chains shown{_primary_note(run)}")
    if any(ch["tie"] and any(g is not None for g in ch["tie"]) for ch in chains):
        note += " · dotted underline: deleted at a near-tie step (two cheapest deletions within the dtype's rounding error)"
    return {
        "run": {"name": run.path.name, "note": note,
                # how the ranks were scored (approximation, precision, stability), as citations say it
                "scoring_notes": [n.text for n in scoring_notes(manifest)]},
        "categories": present_coarse,
        "labels": present_fine,
        "display": {name: display_name(name) for name in present_coarse + present_fine},
        "colours": category_colours(),
        "chains": chains,
    }


def _primary_note(run: RunDir) -> str:
    """The stored primary result with its sensitivity range and placement (``stats.json``), if analysed."""
    from ..analysis import AnalysisResult

    try:
        stats = AnalysisResult.load(run)
    except CotSurvivalError:  # not analysed yet (E012), or unreadable (E056): no primary to show
        return ""
    # never a stale number: a run changed since analyze shows no primary, only the command that updates it
    stale = stats.stale()
    if stale is not None:
        return f" · primary result not shown: stats/stats.json is stale ({stale}); run `cotsurvival analyze`"
    primary = getattr(stats, "primary_", None) or {}
    if "estimate" not in primary or not isinstance(primary["estimate"], (int, float)):
        return ""
    text = f" · primary {primary.get('contrast', '')}: {primary['estimate']:+.3f} ({primary.get('n_chains', '?')} chains)"
    others = {k: v.get("estimate") for k, v in (primary.get("sensitivity") or {}).items()
              if isinstance(v.get("estimate"), (int, float))}
    if others:
        text += "; sensitivity " + ", ".join(f"{'unadjusted' if k == 'none' else k} {v:+.3f}" for k, v in others.items())
    place = primary.get("placement") or {}
    if "share_target_last_15pct" in place:
        text += (f"; targets in first/last 15%: {place['share_target_first_15pct']:.0%}/"
                 f"{place['share_target_last_15pct']:.0%}")
        if place.get("high_leverage_chains"):
            text += f"; high-leverage chains {place['high_leverage_chains']}"
    return text


def _chain_payload(run: RunDir, row: pd.Series, index: int, traces: bool, source: str | None) -> dict[str, Any]:
    tokens = read_chain_tokens(run, index, labels=source or "none")
    segments, tail = token_segments(row["reasoning"], tokens)
    steps = run.read_part("steps", index).sort_values("step") if run.has_part("steps", index) else None
    n_steps = int(steps["step"].max()) if steps is not None else int(tokens["deleted_step"].max() or 0)
    orderings = {"greedy": _steps_list(tokens["deleted_step"])}
    if run.has_part("baselines", index):
        baselines = run.read_part("baselines", index, columns=["ordering", "position", "deleted_step"])
        names = [o for o in ORDERINGS if o in set(baselines["ordering"])]
        names += sorted(set(baselines["ordering"]) - set(names))
        for name in names:
            block = baselines[baselines["ordering"] == name].set_index("position")["deleted_step"]
            orderings[name] = _steps_list(block.reindex(tokens["position"]))
    return {
        "index": int(index),
        "id": str(row["chain_id"]),
        "question": str(row["question"]),
        "n": int(len(tokens)),
        "steps": n_steps,
        "seg": segments,
        "tail": tail,
        "text": [str(t) for t in tokens["text"]],
        # reasoning unit of each token (sentence or line; the units ``resample`` cuts at), -1 before the first
        "unit": _token_units(str(row["reasoning"]), tokens),
        "label": [lab if isinstance(lab, str) else None for lab in tokens["label"]],
        "category": [c if isinstance(c, str) else None for c in tokens["category"]],
        "orderings": orderings,
        "objective": [_round(v) for v in steps["objective"]] if steps is not None else [],
        "costs": _costs(run, index, tokens, n_steps) if traces and run.has_part("traces", index) else None,
        # near-tie deletions (cotsurvival.pruning.diagnostics): the step's gap in nats, else null
        "tie": ([_round(g) if t else None for g, t in zip(tokens["deletion_gap"], tokens["near_tie"])]
                if "near_tie" in tokens else None),
    }


def _token_units(reasoning: str, tokens: pd.DataFrame) -> list[int] | None:
    """Each token's unit from the one splitter (:mod:`cotsurvival.taxonomy.units`); None without offsets."""
    from ..taxonomy.units import split_units, token_units

    if "char_start" not in tokens or "char_end" not in tokens or tokens[["char_start", "char_end"]].isna().any().any():
        return None
    offsets = list(zip(tokens["char_start"].astype(int), tokens["char_end"].astype(int)))
    return [int(u) for u in token_units(offsets, split_units(reasoning))]


def _costs(run: RunDir, index: int, tokens: pd.DataFrame, n_steps: int) -> list[list[float | None]]:
    """``costs[s]``: step ``s + 1``'s candidate costs, in position order of the tokens alive then."""
    trace = run.read_part("traces", index, columns=["step", "position", "cost"]).sort_values(["step", "position"])
    by_step = {int(s): block["cost"].to_numpy(float) for s, block in trace.groupby("step", sort=True)}
    return [[_round(c) for c in by_step.get(s, np.array([]))] for s in range(1, n_steps + 1)]


def _steps_list(values: pd.Series) -> list[int | None]:
    return [None if pd.isna(v) else int(v) for v in values]


def _round(value: float, digits: int = 4) -> float | None:
    """4 significant digits: enough to read on hover, a third of the bytes of a full float."""
    if value is None or not math.isfinite(float(value)):
        return None
    return float(f"{float(value):.{digits}g}")


# ----------------------------------------------------------------------------- page
def embed_json(data: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">`` (no ``<``, ``>``, ``&`` left)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _render(payload: dict[str, Any], title: str) -> str:
    folder = resources.files("cotsurvival.reports").joinpath("templates")
    template = folder.joinpath("viewer.html").read_text(encoding="utf-8")
    script = folder.joinpath("viewer.js").read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    page = template.replace("@SCRIPT_HASH@", f"sha256-{digest}").replace("@TITLE@", html.escape(title))
    before, after = page.split("@SCRIPT@")
    page = before + script + after
    before, after = page.split("@DATA@")
    return before + embed_json(payload) + after
