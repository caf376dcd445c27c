"""Synthetic token tables for calibrating the statistics (no model, no run directory).

:func:`simulate_token_table` returns a table with the columns :func:`~cotsurvival.analysis.load_run`
returns. Every scenario is a *null* unless ``effect`` is set: within a chain, a token's importance
depends on its position (and on noise shared by a label run), never on its label once position is
known. Every chain is cut into reasoning units as :mod:`cotsurvival.taxonomy.units` cuts a real one
(sentences or lines): two to five units of random length, then a final unit spanning the last 12-18%
of the chain (the answer sentence); the table's ``unit`` and ``final_unit`` columns say which. The
scenarios are built to break a chain-level test's assumptions:

* ``"runs"``: labels come in runs (an equation is several tokens in a row), importance varies
  smoothly with position (a random low-frequency wave per chain) and every label run shares a
  random shift, so neighbouring tokens are dependent.
* ``"drift"``: the share of symbolic-math tokens grows along the chain while importance is ordered
  by position (plus noise) only; labels carry no information once position is known.
* ``"answer_jump"``: importance jumps up where the final unit starts (a chain-specific boundary
  at 82-88% of the chain) and the target category sits almost only after it (the last ~15%).
* ``"answer_offset"``: as ``"answer_jump"``, but the jump (and the category with it) sits 3-6% of
  the chain away from the final unit's start, before it (inside the previous unit) or after it (inside
  the final unit), at random: importance structure that the text's units do not mark.
* ``"u_shape"``: importance is U-shaped in position and the target category crowds both ends.
* ``"tied"``: labels tied to position (target share 5% -> 90% along the chain) with a sharp
  sigmoid rise of importance in the second half.
* ``"few_targets"``: two or three target tokens per chain, at random positions, under ``"runs"``.
* ``"heteroscedastic"``: noise that differs between chains and grows along each chain, with
  drifting label shares and a chain-specific position slope.
* ``"short_long"``: half the chains have 20 tokens and half 300, answer-region structure as in
  ``"answer_jump"`` but milder (the jump at the final unit's start), target share drifting.

``effect`` adds a true category effect shared by every chain, on the normalized-survival scale:
``effect=0.1`` makes ``target`` tokens survive about 0.1 longer than the rest of their chain.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ..taxonomy.spec import CATEGORIES, CATEGORY_OF_LABEL

# The simulation's design: the share of tokens in each of the taxonomy's categories, and one fine
# label standing for each category (simulated tokens carry a label column too).
_CATEGORY_SHARES = {"symbolic_math": 0.3, "narration": 0.3, "referential": 0.15, "grammar": 0.25}
_SHARES = np.array([_CATEGORY_SHARES[c] for c in CATEGORIES])
_STAND_IN = {"narration": "CONTENT"}
_LABEL = {c: _STAND_IN.get(c) or next(lab for lab, cat in CATEGORY_OF_LABEL.items() if cat == c) for c in CATEGORIES}
_REST_CDF = np.cumsum(_SHARES[1:] / _SHARES[1:].sum())
SCENARIOS = ("runs", "drift", "answer_jump", "u_shape", "tied", "few_targets", "heteroscedastic", "short_long",
             "answer_offset")
_ANSWER = ("answer_jump", "answer_offset")  # the category sits after the jump; label runs do not cross it


def _units(n: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Unit index of each token and the first token of the final unit: two to five units of random
    length (Dirichlet shares of the body), then a final unit of 12-18% of the chain (at least 2 tokens)."""
    final_start = n - max(2, int(round(rng.uniform(0.12, 0.18) * n)))
    k = int(rng.integers(2, 6))
    cuts = np.round(np.cumsum(rng.dirichlet(np.full(k, 4.0)))[:-1] * final_start).astype(int)
    unit = np.searchsorted(cuts, np.arange(n), side="right")
    unit[final_start:] = k
    return np.unique(unit, return_inverse=True)[1], final_start  # renumbered if a unit came out empty


def _target_share(rel: float, scenario: str, boundary: float) -> float:
    """Share of symbolic-math label runs starting at relative position ``rel``."""
    if scenario in ("drift", "heteroscedastic", "short_long"):
        return 0.05 + 0.55 * rel
    if scenario in _ANSWER:
        return 0.6 if rel >= boundary else 0.03
    if scenario == "u_shape":
        return 0.6 if (rel < 0.15 or rel > 0.85) else 0.1
    if scenario == "tied":
        return 0.05 + 0.85 * rel
    if scenario == "few_targets":
        return 0.0  # placed afterwards
    return float(_SHARES[0])


def _labels(n: int, rng: np.random.Generator, scenario: str, boundary: float) -> np.ndarray:
    """Category per token, in runs of geometric length (mean 3, mean 2 in the answer region)."""
    out = np.empty(n, dtype=object)
    i = 0
    while i < n:
        rel = i / max(n - 1, 1)
        length = int(rng.geometric(1 / 2 if scenario in _ANSWER and rel >= boundary else 1 / 3))
        if scenario in _ANSWER and rel < boundary:  # label runs do not cross the answer boundary
            length = min(length, max(1, int(np.ceil(boundary * (n - 1))) - i))
        sym = _target_share(rel, scenario, boundary)
        u = rng.random()  # the target with probability sym, else one of the others in their fixed shares
        pick = 0 if u < sym else 1 + min(int(np.searchsorted(_REST_CDF, (u - sym) / (1 - sym), side="right")), 2)
        out[i:i + length] = CATEGORIES[pick]
        i += length
    if scenario == "few_targets":
        out[rng.choice(n, size=int(rng.integers(2, 4)), replace=False)] = "symbolic_math"
    return out


def _latent(categories: np.ndarray, rel: np.ndarray, rng: np.random.Generator, scenario: str,
            boundary: float) -> np.ndarray:
    n = len(rel)
    # One shared shift per label run: tokens of a run are dependent.
    run_id = np.r_[0, np.cumsum(categories[1:] != categories[:-1])]
    run_shift = rng.normal(0, 0.5, run_id.max() + 1)[run_id]
    wave = rng.uniform(0.5, 1.5) * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * rel + rng.uniform(0, 2 * np.pi))
    noise = rng.normal(0, 1, n)
    if scenario in ("runs", "few_targets"):
        return wave + run_shift + noise
    if scenario == "drift":
        return 3.0 * rel + 0.3 * run_shift + 0.3 * noise
    if scenario in _ANSWER:
        return 0.5 * wave + 3.0 * (rel >= boundary) + 0.5 * run_shift + noise
    if scenario == "u_shape":
        return 3.0 * (np.exp(-rel / 0.08) + np.exp(-(1 - rel) / 0.08)) + 0.5 * run_shift + noise
    if scenario == "tied":
        return 4.0 / (1 + np.exp(-15 * (rel - 0.6))) + 0.3 * run_shift + 0.5 * noise
    if scenario == "heteroscedastic":
        scale = np.exp(rng.uniform(-1.5, 1.5))
        return rng.uniform(0.5, 4.0) * rel + 0.3 * run_shift + scale * (0.3 + 1.4 * rel) * noise
    if scenario == "short_long":
        return 1.5 * rel + 1.5 * (rel >= boundary) + 0.5 * wave + 0.3 * run_shift + 0.7 * noise
    raise ValueError(scenario)


def simulate_token_table(
    n_chains: int,
    *,
    scenario: str = "runs",
    effect: float = 0.0,
    target: str = "symbolic_math",
    min_tokens: int = 20,
    max_tokens: int = 150,
    seed: int | np.random.Generator = 0,
) -> pd.DataFrame:
    """A fully ranked synthetic run as a token table (one row per token).

    Parameters
    ----------
    n_chains : int
    scenario : str
        One of :data:`SCENARIOS` (see the module docstring).
    effect : float, default 0
        True difference in normalized survival between ``target`` tokens and the rest, shared by
        all chains (0 = null: labels carry no information about importance within a chain).
    min_tokens, max_tokens : int
        Chain lengths are uniform in this range (``"short_long"``: alternately ``min_tokens`` and 300).
    seed : int or numpy Generator

    Returns
    -------
    pandas.DataFrame
        The columns of :func:`~cotsurvival.analysis.load_run` (no censoring: every token deleted),
        plus ``static_logprob`` (a surprisal-like covariate, noisy but unrelated to the labels),
        and the unit columns :func:`~cotsurvival.analysis.load_run` adds (``unit``, ``final_unit``).
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, not {scenario!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    columns: dict[str, list] = {k: [] for k in ("chain_index", "position", "n_tokens", "rel_position", "category",
                                                "deleted_step", "survival", "static_logprob", "unit",
                                                "final_unit")}
    for index in range(n_chains):
        if scenario == "short_long":
            n = min_tokens if index % 2 == 0 else 300
        else:
            n = int(rng.integers(min_tokens, max_tokens + 1))
        position = np.arange(n)
        rel = position / (n - 1)
        unit, final_start = _units(n, rng)
        jump_at = final_start  # where importance jumps in the answer-region scenarios
        if scenario == "answer_offset":
            jump_at = final_start + int(rng.choice([-1, 1])) * max(1, int(round(rng.uniform(0.03, 0.06) * n)))
            jump_at = int(np.clip(jump_at, 2, n - 2))
        boundary = jump_at / (n - 1)
        categories = _labels(n, rng, scenario, boundary)
        latent = _latent(categories, rel, rng, scenario, boundary)
        # Put the latent importance on a uniform scale within the chain so that an additive shift is a
        # shift in normalized survival (ranks of a uniform sample are its empirical CDF); the factor
        # 1.17 offsets the shrinkage of a shift at the ends of [0, 1] (calibrated in the tests).
        uniform = stats.rankdata(latent) / n
        score = uniform + 1.17 * effect * (categories == target)
        deleted_step = stats.rankdata(score, method="ordinal").astype(int)  # lowest score deleted first
        for key, value in (("chain_index", np.full(n, index)), ("position", position), ("n_tokens", np.full(n, n)),
                           ("rel_position", rel), ("category", categories), ("deleted_step", deleted_step),
                           ("survival", deleted_step / n), ("static_logprob", -np.abs(rng.normal(2.0, 1.0, n))),
                             ("unit", unit), ("final_unit", position >= final_start)):
            columns[key].append(value)
    frame = pd.DataFrame({k: np.concatenate(v) for k, v in columns.items()})
    label = {c: _LABEL[c] for c in CATEGORIES}
    frame.insert(1, "chain_id", "sim-" + frame["chain_index"].astype(str))
    frame.insert(5, "text", " t" + frame["position"].astype(str))
    frame.insert(6, "token_len", 3)
    frame.insert(7, "is_whitespace", False)
    frame.insert(8, "label", frame["category"].map(label))
    frame["deleted_step"] = frame["deleted_step"].astype("Int64")
    frame["censored"] = False
    frame["deletion_cost"] = np.nan
    return frame
