"""Cohen's kappa: the one implementation behind ``tag-eval`` (tagger vs gold) and ``tag-agree`` (judge vs rule)."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import CotSurvivalError


def kappa_from_table(table: pd.DataFrame | np.ndarray) -> float:
    """Cohen's kappa of a square confusion table (statsmodels), NaN where it is undefined.

    Kappa is ``(p_o - p_e) / (1 - p_e)``. It is undefined (0/0) when there are no units, or when
    chance agreement ``p_e`` is 1, i.e. both raters used one and the same label for every unit;
    statsmodels would divide by zero there, so NaN is returned (as scikit-learn does).
    """
    from statsmodels.stats.inter_rater import cohens_kappa

    observed = np.asarray(table, dtype=float)
    n = observed.sum()
    if n == 0:
        return math.nan
    expected = float((observed.sum(axis=1) * observed.sum(axis=0)).sum() / n**2)
    if expected >= 1.0:
        return math.nan
    return float(cohens_kappa(observed, return_results=False))


def cohen_kappa(first: Sequence[str], second: Sequence[str], labels: Sequence[str] | None = None
                ) -> tuple[float, pd.DataFrame]:
    """Cohen's kappa of two label sequences and their square confusion table (rows ``first``).

    ``labels`` fixes the table's rows and columns (default: every label seen, sorted).
    """
    if len(first) != len(second) or not len(first):
        raise CotSurvivalError("E092", what="kappa's two label sequences", detail=f"{len(first)} and {len(second)} labels")
    labels = list(labels) if labels is not None else sorted(set(first) | set(second))
    table = pd.crosstab(pd.Categorical(list(first), categories=labels), pd.Categorical(list(second), categories=labels),
                        dropna=False)
    table.index.name, table.columns.name = "judge", "rule"
    return kappa_from_table(table), table
