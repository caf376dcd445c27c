"""Approximate greedy survival for long chains (``prune --approx SPEC``).

Exact greedy survival scores every remaining token at every step: about n³/6 decoder token rows
per chain (prefix reuse; cross-step reuse runs about as many), out of reach beyond a few hundred
tokens. Two families of approximation, each with a setting at which it *is* the exact engine:

``topk:F``  (or ``topk:k=K``)
    Score every remaining token once per *round*, then delete the ``k = max(1, floor(F·m))``
    cheapest of the ``m`` remaining (ascending cost; ties to the lowest position) before
    re-scoring. ``k = 1`` (``topk:k=1``) is the exact engine. Rounds ≈ ln(n)/F, so the work drops
    from n steps of scoring to a few dozen.
``topk:...,window=W``
    A candidate's cost counts the change of log-probabilities over the ``W`` tokens after the
    block it lies in only (tokens further right are assumed unchanged by the deletion). The
    remaining tokens are scored in blocks of ``block`` tokens, each block one call of the scorer
    on ``prefix ⊕ kept[:s]`` | ``kept[s:e]`` | ``kept[e:e+W]``; the last block sees the real
    answer. A window reaching the end of the chain is exact. Only the ``joint`` objective
    (the answer objective's whole signal lies at the end of the sequence).
``lazy:radius=R,batch=B,refresh=F,same=S,age=A``  (:mod:`.lazy`)
    One deletion per step, like the exact engine, but only some costs are re-measured: the ``R``
    tokens each side of the last deletion, other copies of the deleted token (``same=1``), the
    ``A`` stalest, then the ``B`` cheapest stale ones until the cheapest is freshly measured; a full
    re-score whenever the chain has shrunk by ``F``. ``refresh=0`` is the exact engine. Every
    deletion's cost and every objective is exact; only the choice can differ.
``lazy:window=W,refresh=F``
    Every step re-measures every token's cost over the ``W`` targets after it, keeping the part
    beyond the window from the last full re-score (joint objective only).

Specs: ``lazy``, ``lazy:radius=2,batch=1,refresh=0.5``, ``lazy:refresh=0`` (exact), ``topk:0.1``,
``topk:0.1,window=64``, ``topk:k=1`` (exact), ``auto`` (the measured recommendation,
:class:`AutoSpec`), ``exact``. The engine records which steps were fully scored: traces hold only
those steps. After a ``topk`` step that was not scored, ``steps.objective`` is the round's additive
estimate (the scored objective minus the costs of the tokens deleted so far in the round); ``lazy``
objectives are exact at every step.

What citations, captions and comparisons say about an approximate run (the setting's measured
fidelity) is worded from the manifest's ``engine.approx`` record by :mod:`cotsurvival.provenance`.
"""
from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from ..encoding import EncodedChain
from ..errors import ApproximationWarning, CotSurvivalError
from .crossstep import CrossStepScorer
from .forward import unsupported_reason
from .methods import make_scorer
from .scoring import Scorer, check_finite
from .scoring import PrefixReuseScorer

# The recommendation behind ``--approx auto`` (:func:`auto_spec`, the rule; docs/pruning.md). Exact up
# to EXACT_MAX_TOKENS reasoning tokens, where K exact replicate paths are affordable. Above it, the
# approximation that meets the ensemble target in the measured figures (fidelity.json "ensemble"):
# its tau to the exact replicate ensemble's mean survival within ENSEMBLE_TAU_MARGIN of the exact
# replicates' own tau to it, every category effect's sign kept, at >= MIN_ROW_RATIO fewer token rows
# than one exact path; of those, the one with the fewest rows. When none meets it, top-k rounds with a
# local window (FALLBACK): at 101-159 tokens it ranks about as faithfully against one exact path as
# lazy re-scoring (tau 0.51 vs 0.54, both ~4x fewer rows) and unlike lazy (O(n^2) rows) it stays near
# 2e6 rows at 2,000 tokens; auto then says that no approximation met the target.
ENSEMBLE_TAU_MARGIN = 0.05
MIN_ROW_RATIO = 3.0
EXACT_MAX_TOKENS = 150
AUTO_FRACTION = 0.1
AUTO_WINDOW = 64
DEFAULT_BLOCK = 64

# Exact runs cost about n³/6 decoder token rows per chain (cross-step reuse runs ~1.1× the
# Σ-of-suffixes bound, BENCHMARKS.md issue 3). Above
# EXACT_WARN_TOKENS they warn, naming --approx; above EXACT_REFUSE_TOKENS (1.3·10⁹ rows: weeks on a
# CPU, hours for an 8B model on one H100) they are refused unless the limit is raised with the
# environment variable below.
EXACT_LIMIT_ENV = "COTSURVIVAL_EXACT_MAX_TOKENS"
EXACT_WARN_TOKENS = 500
EXACT_REFUSE_TOKENS = 2000


@dataclass(frozen=True)
class ApproxSpec:
    """One approximation: top-k rounds of ``fraction`` (or fixed ``k``), optional local ``window``."""

    fraction: float | None = None
    k: int | None = None
    window: int | None = None
    block: int = DEFAULT_BLOCK

    @property
    def is_exact(self) -> bool:
        return self.window is None and (self.k == 1 or (self.fraction is None and self.k is None))

    def deletions(self, remaining: int) -> int:
        if self.k is not None:
            return max(1, self.k)
        if self.fraction is None:
            return 1
        return max(1, math.floor(self.fraction * remaining))

    def describe(self) -> str:
        size = f"k={self.k}" if self.k is not None else f"{self.fraction:g}" if self.fraction is not None else "k=1"
        window = f",window={self.window},block={self.block}" if self.window is not None else ""
        return f"topk:{size}{window}"

    def to_dict(self) -> dict:
        return {"method": "topk", "spec": self.describe(), **asdict(self)}


@dataclass(frozen=True)
class LazySpec:
    """Lazy re-scoring (:mod:`.lazy`): re-score ``radius`` tokens each side of the last deletion
    (with ``same``, every other copy of the deleted token; the ``age`` stalest), then the ``batch``
    cheapest stale tokens until the cheapest is fresh; a full re-score whenever the chain has shrunk
    by ``refresh`` since the last one (``refresh=0``: every step, exact). With ``window``, every
    token is re-measured each step over its next ``window`` targets instead."""

    radius: int = 2
    batch: int = 1
    refresh: float = 0.99
    same: bool = True
    age: int = 0
    window: int | None = None

    @property
    def is_exact(self) -> bool:
        return self.refresh == 0.0

    def describe(self) -> str:
        if self.window is not None:
            return f"lazy:window={self.window},refresh={self.refresh:g}"
        return (f"lazy:radius={self.radius},batch={self.batch},refresh={self.refresh:g},same={int(self.same)},"
                f"age={self.age}")

    def to_dict(self) -> dict:
        return {"method": "lazy", "spec": self.describe(), **asdict(self)}


@dataclass(frozen=True)
class AutoSpec:
    """``--approx auto``: exact for chains up to ``exact_max`` reasoning tokens, ``long`` above.

    ``target_met`` says whether ``long`` met the ensemble target in the measured figures
    (:func:`auto_spec`); ``basis`` is the sentence saying why it was chosen."""

    exact_max: int = EXACT_MAX_TOKENS
    long: "ApproxSpec | LazySpec" = ApproxSpec(fraction=AUTO_FRACTION, window=AUTO_WINDOW)
    target_met: bool = False
    basis: str = ""

    def for_length(self, n_tokens: int) -> "ApproxSpec | LazySpec | None":
        return None if n_tokens <= self.exact_max else self.long

    def describe(self) -> str:
        return f"auto(exact<= {self.exact_max} tokens, else {self.long.describe()})"

    def to_dict(self) -> dict:
        return {"method": "auto", "spec": self.describe(), "exact_max_tokens": self.exact_max,
                "long": self.long.to_dict(), "ensemble_target_met": self.target_met, "chosen_by": self.basis}


def meets_ensemble_target(row: dict) -> bool:
    """One measured row of fidelity.json ``ensemble.approximations`` against the target of ``--approx auto``:
    tau to the exact replicate ensemble within :data:`ENSEMBLE_TAU_MARGIN` of the exact replicates' own
    tau, every category effect's sign kept, at least :data:`MIN_ROW_RATIO` fewer token rows than one
    exact path."""
    try:
        return (float(row["own_tau"]) - float(row["tau"]) <= ENSEMBLE_TAU_MARGIN
                and int(row["same_sign"]) == int(row["n_categories"])
                and float(row["row_ratio"]) >= MIN_ROW_RATIO)
    except (KeyError, TypeError, ValueError):  # a row without the figures the rule needs meets nothing
        return False


def auto_spec(fidelity: dict | None = None) -> AutoSpec:
    """The setting ``--approx auto`` runs, chosen from the measured figures (default: the package's
    ``fidelity.json``, :func:`cotsurvival.provenance.fidelity_data`) by the ensemble rule above."""
    if fidelity is None:
        from ..provenance import fidelity_data

        fidelity = fidelity_data()
    ensemble = fidelity.get("ensemble") or {}
    rows = [r for r in ensemble.get("approximations", []) if meets_ensemble_target(r)]
    if rows:
        best = max(rows, key=lambda r: float(r["row_ratio"]))
        long = parse_approx(best["spec"])
        basis = (f"{long.describe()} met the ensemble target (tau {best['tau']:.2f} to the mean of {best['k']} exact "
                 f"replicate paths against their own {best['own_tau']:.2f}, {best['same_sign']} of {best['n_categories']} "
                 f"category signs, {best['row_ratio']:.1f}x fewer token rows; {best['n_chains']} {best['chains']}) "
                 f"with the fewest rows of those that did")
        return AutoSpec(long=long, target_met=True, basis=basis)
    measured = ensemble.get("approximations", [])
    if measured:
        # the closest of those that save enough rows (of all, when none does)
        saving = [r for r in measured if float(r.get("row_ratio", 0)) >= MIN_ROW_RATIO] or measured
        closest = max(saving, key=lambda r: float(r["tau"]) - float(r["own_tau"]))
        basis = (f"no approximation met the ensemble target (tau to the exact replicate ensemble within "
                 f"{ENSEMBLE_TAU_MARGIN:g} of the exact replicates' own, category signs kept, >= {MIN_ROW_RATIO:g}x fewer rows): "
                 f"of {len(measured)} measured, the closest at >= {MIN_ROW_RATIO:g}x fewer rows, {closest['spec']}, scored tau {closest['tau']:.2f} against "
                 f"their own {closest['own_tau']:.2f} ({closest['n_chains']} {closest['chains']}); ranks above "
                 f"{EXACT_MAX_TOKENS} tokens are approximate at the fidelity measured against one exact path")
    else:
        basis = ("no approximation has been measured against the exact replicate ensemble; ranks above "
                 f"{EXACT_MAX_TOKENS} tokens are approximate at the fidelity measured against one exact path")
    return AutoSpec(basis=basis)


def parse_approx(spec: "str | ApproxSpec | LazySpec | AutoSpec | None") -> "ApproxSpec | LazySpec | AutoSpec | None":
    """``None``/``"exact"``/``"none"`` → None (exact engine); else an :class:`ApproxSpec` or :class:`AutoSpec`."""
    if spec is None or isinstance(spec, (ApproxSpec, LazySpec, AutoSpec)):
        return spec
    text = str(spec).strip().lower()
    if text in ("", "exact", "none"):
        return None
    if text == "auto":
        return auto_spec()
    method, _, rest = text.partition(":")
    if method == "lazy":
        return _parse_lazy(spec, rest)
    if method != "topk":
        raise CotSurvivalError("E110", spec=spec, reason=f"unknown method {method!r}; use lazy, topk or auto")
    fields = _spec_fields(spec, rest, {"fraction": float, "k": int, "window": int, "block": int},
                          bare="fraction", aliases={"frac": "fraction", "f": "fraction"})
    if "fraction" in fields and "k" in fields:
        raise CotSurvivalError("E110", spec=spec, reason="give a fraction or k, not both")
    if "fraction" in fields and not 0.0 < fields["fraction"] < 1.0:
        raise CotSurvivalError("E110", spec=spec, reason="the fraction must lie in (0, 1)")
    for key in ("k", "window", "block"):
        if key in fields and fields[key] < 1:
            raise CotSurvivalError("E110", spec=spec, reason=f"{key} must be at least 1")
    return ApproxSpec(**fields)


def _spec_fields(spec, rest: str, types: dict, bare: str | None = None, aliases: dict | None = None) -> dict:
    """``key=value`` parameters of a spec (``rest``, comma-separated) converted by ``types``; a value
    without a key is ``bare``'s. E110 names an unknown parameter or a value that is not a number."""
    fields: dict = {}
    for part in [p.strip() for p in rest.split(",") if p.strip()]:
        key, eq, value = part.partition("=")
        if not eq and bare is not None:
            key, value = bare, key
        key = (aliases or {}).get(key, key)
        if (not eq and bare is None) or key not in types:
            raise CotSurvivalError("E110", spec=spec, reason=f"unknown parameter {part!r} ({', '.join(types)})")
        try:
            fields[key] = types[key](value)
        except ValueError:
            raise CotSurvivalError("E110", spec=spec, reason=f"{key}={value!r} is not a number") from None
    return fields


def _parse_lazy(spec: str, rest: str) -> LazySpec:
    fields = _spec_fields(spec, rest, {"radius": int, "batch": int, "refresh": float, "same": int, "age": int,
                                       "window": int})
    if "same" in fields:
        if fields["same"] not in (0, 1):
            raise CotSurvivalError("E110", spec=spec, reason="same must be 0 or 1")
        fields["same"] = bool(fields["same"])
    if fields.get("window", 1) < 1:
        raise CotSurvivalError("E110", spec=spec, reason="window must be at least 1")
    if "window" in fields and set(fields) & {"radius", "batch", "same", "age"}:
        raise CotSurvivalError("E110", spec=spec, reason="window= re-measures every token; it takes only refresh=")
    if fields.get("radius", 0) < 0 or fields.get("age", 0) < 0 or fields.get("batch", 1) < 1:
        raise CotSurvivalError("E110", spec=spec, reason="radius and age must be at least 0, batch at least 1")
    if not 0.0 <= fields.get("refresh", 0.5) < 1.0:
        raise CotSurvivalError("E110", spec=spec, reason="refresh must lie in [0, 1)")
    return LazySpec(**fields)


def approx_record(spec: "ApproxSpec | LazySpec | AutoSpec | None") -> dict | None:
    """What the manifest records as ``engine.approx`` (None for an exact run)."""
    return None if spec is None else spec.to_dict()


def check_exact_feasible(n_tokens: int, chain_id: str, limit: int | None = None) -> None:
    """Refuse an exact run of a chain so long that it would take days, naming ``--approx``; warn
    above :data:`EXACT_WARN_TOKENS`."""

    limit = limit if limit is not None else int(os.environ.get(EXACT_LIMIT_ENV, EXACT_REFUSE_TOKENS))
    rows = n_tokens ** 3 / 6
    if n_tokens > limit:
        raise CotSurvivalError("E111", chain=chain_id, n=n_tokens, limit=limit, rows=f"{rows:.1e}",
                               env=EXACT_LIMIT_ENV)
    if n_tokens > min(limit, EXACT_WARN_TOKENS):
        warnings.warn(f"chain {chain_id!r} has {n_tokens} reasoning tokens: exact greedy pruning costs about "
                      f"n^3/6 = {rows:.1e} decoder token rows; --approx auto is much cheaper (BENCHMARKS.md)",
                      ApproximationWarning, stacklevel=3)


def rounds_scorer(scorer: Scorer, spec: "ApproxSpec | LazySpec | None" = None) -> Scorer:
    """The scorer approximate rounds use: cross-step reuse only pays when one token goes per step,
    and keeps n²/2 rows of keys and values, so its model is scored with prefix reuse instead.
    Lazy re-scoring needs prefix reuse (its sequence cache); on other architectures it is refused."""

    if isinstance(spec, LazySpec) and not isinstance(scorer, PrefixReuseScorer):
        reason = unsupported_reason(scorer.model)
        if reason is not None:
            raise CotSurvivalError("E113", spec=spec.describe(), architecture=type(scorer.model).__name__,
                                   reason=reason)
    elif not isinstance(scorer, CrossStepScorer):
        return scorer
    cached = getattr(scorer, "_approx_rounds_scorer", None)
    if cached is None:
        cached = make_scorer(scorer.model, method="prefix", objective=scorer.objective,
                             max_batch_tokens=scorer.max_batch_tokens)
        scorer._approx_rounds_scorer = cached
    return cached


@dataclass
class RoundScores:
    objective: float
    costs: np.ndarray
    next_logprobs: np.ndarray


def score_round(scorer: Scorer, encoded: EncodedChain, alive: list[int], spec: ApproxSpec) -> RoundScores:
    """Costs of deleting each alive token, exact or windowed (blocks of ``spec.block``)."""
    prefix, answer = encoded.prefix_ids, encoded.answer_ids
    kept = [encoded.reasoning_ids[i] for i in alive]
    m = len(kept)
    if spec.window is None or spec.block >= m:
        scores = scorer.score(prefix, kept, answer)
        return RoundScores(scores.objective, scores.objective - scores.candidate_objectives, scores.next_logprobs)
    if scorer.objective != "joint":
        raise CotSurvivalError("E112", objective=scorer.objective)
    costs = np.zeros(m)
    next_lp = np.zeros(m)
    answer_part = 0.0
    for start in range(0, m, spec.block):
        end = min(m, start + spec.block)
        # Blocks whose window reaches the end see the real rest of the chain: exact costs.
        tail = kept[end:] + answer if end + spec.window >= m else kept[end:end + spec.window]
        scores = scorer.score(prefix + kept[:start], kept[start:end], tail)
        costs[start:end] = scores.objective - scores.candidate_objectives
        next_lp[start:end] = scores.next_logprobs
        if end == m:  # the last block's targets are its own tokens and the answer
            answer_part = scores.objective - float(np.sum(scores.next_logprobs))
    objective = float(np.sum(next_lp)) + answer_part
    return RoundScores(objective, costs, next_lp)


def approx_prune(
    scorer: Scorer,
    encoded: EncodedChain,
    n_steps: int,
    spec: ApproxSpec,
    trace,
    on_step: Callable | None = None,
):
    """Top-k rounds until ``n_steps`` deletions; ``trace`` is a :class:`~.engine.ChainTrace` (continued)."""
    deleted = set(trace.order)
    alive = [i for i in range(len(encoded.reasoning_ids)) if i not in deleted]
    if trace.scored_steps is None:
        trace.scored_steps = list(range(1, trace.n_steps + 1))
    began = time.perf_counter()
    while trace.n_steps < n_steps:
        rows_before = scorer.token_rows
        scores = score_round(scorer, encoded, alive, spec)
        trace.token_rows += scorer.token_rows - rows_before
        check_finite(encoded, trace.n_steps + 1, scores.objective, scores.costs)
        if not trace.objectives:
            trace.objectives.append(scores.objective)
        else:
            trace.objectives[-1] = scores.objective  # the scored value replaces the round's estimate
        if trace.static_logprobs is None and not trace.order:
            trace.static_logprobs = np.asarray(scores.next_logprobs, dtype=np.float64).copy()
        trace.scored_steps.append(trace.n_steps + 1)
        trace.step_costs.append(scores.costs.astype(np.float32))
        trace.step_positions.append(np.asarray(alive, dtype=np.int32))
        k = min(spec.deletions(len(alive)), n_steps - trace.n_steps)
        # Stable sort: equal costs go to the lowest position, as in the exact definition.
        chosen = np.argsort(scores.costs, kind="stable")[:k]
        objective = scores.objective
        for index in chosen:
            objective -= float(scores.costs[index])
            trace.order.append(alive[int(index)])
            trace.objectives.append(objective)
            if on_step is not None:
                on_step(trace)
        gone = set(int(i) for i in chosen)
        alive = [a for i, a in enumerate(alive) if i not in gone]
    trace.seconds += time.perf_counter() - began
    return trace


def estimate_rows(n_tokens: int, prompt: int, answer: int, spec: ApproxSpec | None) -> int:
    """Decoder token rows a full ranking costs with prefix-reuse scoring (no padding, no duplicate
    tokens): the cost model behind the projections in BENCHMARKS.md.

    A scorer call on ``left | middle (b tokens) | tail (t tokens)`` runs one pass over all of it
    (``left + b + t`` rows) and, per candidate ``j``, its suffix of ``b + t - j - 2`` rows.
    ``spec=None`` is the exact engine with prefix reuse only (cross-step reuse runs fewer rows).
    """
    spec = spec or ApproxSpec(k=1)

    def call(left: int, middle: int, tail: int) -> int:
        return left + middle + tail + sum(max(0, middle + tail - j - 2) for j in range(middle))

    total, remaining = 0, n_tokens
    while remaining > 0:
        if spec.window is None or spec.block >= remaining:
            total += call(prompt, remaining, answer)
        else:
            for start in range(0, remaining, spec.block):
                end = min(remaining, start + spec.block)
                tail = remaining - end + answer if end + spec.window >= remaining else spec.window
                total += call(prompt + start, end - start, tail)
        remaining -= min(spec.deletions(remaining), remaining)
    return total
