"""Synthetic token tables for calibrating the statistics (no model, no run directory).

:func:`simulate_token_table` returns a table with the columns :func:`~cotsurvival.analysis.load_run`
returns, for the two null scenarios under which token-level tests were shown to fail (issue 11):

* ``"runs"``: labels come in runs (an equation is several tokens in a row), importance varies
  smoothly with position (a random low-frequency wave per chain) and every label run shares a
  random shift, so neighbouring tokens are dependent.
* ``"drift"``: the share of symbolic-math tokens grows along the chain while importance is ordered
  by position (plus noise) only; labels carry no information once position is known.

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
SCENARIOS = ("runs", "drift")


def _labels(n: int, rng: np.random.Generator, scenario: str) -> np.ndarray:
    """Category per token, in runs of geometric length (mean 3)."""
    out = np.empty(n, dtype=object)
    i = 0
    while i < n:
        length = int(rng.geometric(1 / 3))
        rel = i / max(n - 1, 1)
        if scenario == "drift":  # symbolic-math share rises from 0.05 to 0.6 along the chain
            sym = 0.05 + 0.55 * rel
            shares = np.r_[sym, _SHARES[1:] / _SHARES[1:].sum() * (1 - sym)]
        else:
            shares = _SHARES
        out[i:i + length] = CATEGORIES[rng.choice(len(CATEGORIES), p=shares)]
        i += length
    return out


def _latent(categories: np.ndarray, rel: np.ndarray, rng: np.random.Generator, scenario: str) -> np.ndarray:
    n = len(rel)
    # One shared shift per label run: tokens of a run are dependent.
    run_id = np.r_[0, np.cumsum(categories[1:] != categories[:-1])]
    run_shift = rng.normal(0, 0.5, run_id.max() + 1)[run_id]
    if scenario == "runs":
        amplitude, freq, phase = rng.uniform(0.5, 1.5), rng.uniform(0.5, 1.5), rng.uniform(0, 2 * np.pi)
        return amplitude * np.sin(2 * np.pi * freq * rel + phase) + run_shift + rng.normal(0, 1, n)
    return 3.0 * rel + 0.3 * run_shift + rng.normal(0, 0.3, n)


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
    scenario : {"runs", "drift"}
        The null structure (see the module docstring).
    effect : float, default 0
        True difference in normalized survival between ``target`` tokens and the rest, shared by
        all chains (0 = null: labels carry no information about importance within a chain).
    min_tokens, max_tokens : int
        Chain lengths are uniform in this range.
    seed : int or numpy Generator

    Returns
    -------
    pandas.DataFrame
        The columns of :func:`~cotsurvival.analysis.load_run` (no censoring: every token deleted).
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, not {scenario!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    frames = []
    for index in range(n_chains):
        n = int(rng.integers(min_tokens, max_tokens + 1))
        position = np.arange(n)
        rel = position / (n - 1)
        categories = _labels(n, rng, scenario)
        latent = _latent(categories, rel, rng, scenario)
        # Put the latent importance on a uniform scale within the chain so that an additive shift is a
        # shift in normalized survival (ranks of a uniform sample are its empirical CDF); the factor
        # 1.17 offsets the shrinkage of a shift at the ends of [0, 1] (calibrated in the tests).
        uniform = stats.rankdata(latent) / n
        score = uniform + 1.17 * effect * (categories == target)
        deleted_step = stats.rankdata(score, method="ordinal").astype(int)  # lowest score deleted first
        frames.append(pd.DataFrame({
            "chain_index": index, "chain_id": f"sim-{index}", "position": position, "n_tokens": n,
            "rel_position": rel, "text": [f" t{i}" for i in position], "token_len": 3, "is_whitespace": False,
            "label": [_LABEL[c] for c in categories], "category": categories,
            "deleted_step": pd.array(deleted_step, dtype="Int64"), "survival": deleted_step / n,
            "censored": False, "deletion_cost": np.nan,
        }))
    return pd.concat(frames, ignore_index=True)
