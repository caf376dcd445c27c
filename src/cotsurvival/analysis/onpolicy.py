"""On-policy (resampling) importance beside greedy survival: the statistics of ``cotsurvival resample``.

Inputs are the rows of ``RUN/resample.parquet/`` and ``RUN/regeneration.parquet/``
(:mod:`cotsurvival.resampling`), the run's tokens (survival) and, when tagged, their categories.

* **Unit importance** (:meth:`OnPolicyResult.importance`): for unit k of a chain, the *kept* arm is
  the rollouts from the cut after it, the *resampled* arm the rollouts from the cut before it.
  ``d_logprob`` = mean answer log-probability kept − resampled (nats); ``d_correct`` = share correct
  among the rollouts that reached an answer, kept − resampled (NaN when an arm has none);
  ``failed_kept`` / ``failed_resampled`` = share of rollouts that ended without an answer (counted
  apart, never as wrong). Each difference has a 95% percentile interval from resampling the
  rollouts of each arm with replacement (rollout bootstrap, ``n_boot`` draws, seeded per unit).
* **Counterfactual filter** (:meth:`OnPolicyResult.replacements`), as in Thought Anchors: a
  resampled rollout whose replacement unit says the same thing as the original is no
  counterfactual. A rollout's *replacement* is the first unit (the same splitter) of its own
  reasoning, before any answer line (empty when it answers at once); its ``similarity`` to the
  original unit is :func:`unit_similarity`. Rollouts with similarity above
  ``similarity_threshold`` (default :data:`SIMILARITY_THRESHOLD`, 0.8) leave the resampled arm:
  ``d_logprob`` / ``d_correct`` are computed on the dissimilar replacements only (``n_resampled``
  of ``n_resampled_all``; ``n_similar`` excluded; NaN when none is left), beside
  ``d_logprob_unfiltered`` on every replacement (Thought Anchors' "resampling importance"). The
  kept arm is never filtered.
* **Units** (:meth:`units`): token survival aggregated per unit (min, mean, max over its
  non-whitespace tokens), the share of each category among them and the dominant category.
* **Agreement** (:meth:`agreement`): per chain, Spearman's rho between unit mean survival and unit
  importance (chains with fewer than 3 units or a constant column give none); across chains the
  mean rho with a t-interval, a sign-flip test (exact up to 16 chains) and a one-sample t test.
* **By category** (:meth:`by_category`): per chain and category, the mean of the category's units
  minus the mean of the chain's other units, for greedy survival and for on-policy importance
  alike, each tested across chains with the sign-flip test (Holm within each measure).
* **Regeneration** (:meth:`regeneration`): at each keep ratio, the share of deleted tokens (by
  category) whose text the model writes back in its continuation before the answer (bag-of-tokens
  match, each continuation token used once, case and surrounding spaces ignored), beside the same
  share for the kept tokens as a reference (the model repeats what it still sees), with chain-
  bootstrap intervals, and the share of continuations that reach a right / wrong / no answer.

Chains, not units or rollouts, are the unit of inference for every across-chain statement; the
citations (:mod:`cotsurvival.reports.onpolicy`) are withheld below ``min_chains`` chains, the same
minimum as ``analyze``'s citations.
"""
from __future__ import annotations

import difflib
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import CotSurvivalError
from ..registry import view
from ..results import frame_html, read_json, to_jsonable, write_json, write_table, write_text
from ..rundir import RunDir, atomic_write_parquet
from .chainlevel import MIN_CHAINS
from .inference import bootstrap_ci, holm, sign_flip_test

FAILED = ("truncated", "no_answer")
MEASURES = ("d_logprob", "d_correct")
MIN_UNITS = 3
#: The inputs :meth:`OnPolicyResult.save` writes as Parquet so that :meth:`OnPolicyResult.load`
#: recomputes the same statistics (the statistics themselves are seeded, hence reproducible).
INPUTS = ("rollouts", "regeneration_rows", "tokens", "chains")
JSON_FILE = "onpolicy.json"
#: A replacement unit more similar than this to the original (:func:`unit_similarity`) is not a
#: counterfactual. Thought Anchors uses 0.8 on sentence-embedding cosine similarity; the same number
#: on this lexical ratio excludes verbatim and near-verbatim regenerations (one changed number in a
#: ten-token step scores 0.8 and is kept: it computes something else).
SIMILARITY_THRESHOLD = 0.8
#: The similarity measure, recorded with the results.
SIMILARITY_MEASURE = "difflib ratio over lower-cased word/number/symbol tokens"
_SIMILARITY_TOKENS = re.compile(r"\w+|[^\w\s]")


@dataclass
class OnPolicyResult:
    """Rollouts, regeneration rows and the side-by-side statistics of one run.

    Attributes
    ----------
    rollouts : pandas.DataFrame
        ``resample.parquet`` rows (one per cut and rollout).
    regeneration_rows : pandas.DataFrame
        ``regeneration.parquet`` rows (one per chain and keep ratio); may be empty.
    tokens : pandas.DataFrame
        The run's tokens of the resampled chains (``survival``, ``category`` when tagged).
    chains : pandas.DataFrame
        ``chains.parquet`` rows of the resampled chains.
    run : str
    config : dict
        ``min_chains`` (citation minimum), ``n_boot``, ``seed``, ``similarity_threshold`` (the
        counterfactual filter; a missing key means :data:`SIMILARITY_THRESHOLD`).

    Make one from a run with :meth:`from_run`; :meth:`save` writes a folder that :meth:`load` reads back.
    """

    rollouts: pd.DataFrame
    regeneration_rows: pd.DataFrame
    tokens: pd.DataFrame
    chains: pd.DataFrame
    run: str = ""
    manifest: dict = field(default_factory=dict)
    config: dict = field(default_factory=lambda: {"min_chains": MIN_CHAINS, "n_boot": 2000, "seed": 0,
                                                  "similarity_threshold": SIMILARITY_THRESHOLD})
    _cache: dict = field(default_factory=dict, repr=False)
    #: What :meth:`save` wrote (name -> path); empty otherwise.
    files: dict = field(default_factory=dict, repr=False)

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_run(cls, run, chains=None, *, labels: str = "rule", min_chains: int = MIN_CHAINS, n_boot: int = 2000,
                 seed: int = 0, similarity_threshold: float | None = None) -> "OnPolicyResult":
        """Read a run's ``resample.parquet`` (E161 when there is none) and what it is compared with.

        ``similarity_threshold`` defaults to the one the run's last ``resample`` recorded, else
        :data:`SIMILARITY_THRESHOLD`."""
        from .data import load_run

        run = run if isinstance(run, RunDir) else RunDir(run)
        manifest = run.require().read_manifest()
        indices = run.part_indices("resample")
        if chains is not None:
            indices = [i for i in indices if i in set(int(c) for c in chains)]
        if not indices:
            raise CotSurvivalError("E161", path=run.path)
        settings = (manifest.get("resample") or {}).get("settings")
        rollouts = run.read_table("resample", indices)
        if settings:
            rollouts = rollouts[rollouts["settings"] == settings].reset_index(drop=True)
        regen_indices = [i for i in run.part_indices("regeneration") if i in indices]
        regen = run.read_table("regeneration", regen_indices) if regen_indices else pd.DataFrame()
        if settings and not regen.empty:
            regen = regen[regen["settings"] == settings].reset_index(drop=True)
        tokens = run.read_table("tokens", indices)
        try:
            labelled = load_run(run, labels=labels, require_tags=False, baselines=False, attention=False)
        except CotSurvivalError:  # e.g. labels="judge" on a run without a judge: compare without categories
            labelled = None
        if labelled is not None and "category" in labelled:
            tokens = tokens.drop(columns=[c for c in ("category", "label") if c in tokens]).merge(
                labelled[["chain_index", "position", "category"]], on=["chain_index", "position"], how="left")
        chain_rows = run.read_chains()
        chain_rows = chain_rows[chain_rows["chain_index"].isin(indices)].reset_index(drop=True)
        if similarity_threshold is None:
            similarity_threshold = (manifest.get("resample") or {}).get("similarity_threshold", SIMILARITY_THRESHOLD)
        return cls(rollouts=rollouts, regeneration_rows=regen, tokens=tokens, chains=chain_rows, run=str(run.path),
                   manifest=manifest, config={"min_chains": min_chains, "n_boot": n_boot, "seed": seed,
                                              "similarity_threshold": float(similarity_threshold)})

    @property
    def n_chains(self) -> int:
        return int(self.rollouts["chain_index"].nunique())

    @property
    def settings(self) -> dict:
        return dict(self.manifest.get("resample") or {})

    # ---------------------------------------------------------------- units
    def units(self) -> pd.DataFrame:
        """One row per unit: token span, text, survival min/mean/max, ``share_<category>``, dominant category."""
        if "units" not in self._cache:
            from ..taxonomy.units import unit_spans

            rows = []
            has_categories = "category" in self.tokens and self.tokens["category"].notna().any()
            categories = sorted(self.tokens["category"].dropna().unique()) if has_categories else []
            for _, chain in self.chains.iterrows():
                toks = self.tokens[self.tokens["chain_index"] == chain["chain_index"]].sort_values("position")
                offsets = list(zip(toks["char_start"].astype(int), toks["char_end"].astype(int)))
                for k, (first, end, unit) in enumerate(unit_spans(offsets, chain["reasoning"])):
                    part = toks.iloc[first:end]
                    words = part[~part["is_whitespace"].astype(bool)] if "is_whitespace" in part else part
                    words = words if len(words) else part
                    row = {"chain_index": int(chain["chain_index"]), "chain_id": chain["chain_id"], "unit": k,
                           "first_token": first, "end_token": end, "n_tokens": end - first, "text": unit.text,
                           "position": (first + end) / 2 / max(len(toks), 1),
                           "survival_min": float(words["survival"].min()),
                           "survival_mean": float(words["survival"].mean()),
                           "survival_max": float(words["survival"].max())}
                    if categories:
                        shares = words["category"].value_counts(normalize=True)
                        for c in categories:
                            row[f"share_{c}"] = float(shares.get(c, 0.0))
                        row["category"] = str(shares.idxmax()) if len(shares) else None
                    else:
                        row["category"] = None
                    rows.append(row)
            self._cache["units"] = pd.DataFrame(rows)
        return self._cache["units"]

    # ---------------------------------------------------------------- importance
    @property
    def similarity_threshold(self) -> float:
        return float(self.config.get("similarity_threshold", SIMILARITY_THRESHOLD))

    def replacements(self) -> pd.DataFrame:
        """One row per resampled rollout: the original unit, the rollout's replacement, their similarity.

        ``counterfactual`` is ``similarity <= similarity_threshold`` (the rollouts the importance
        uses); ``cut_off`` marks a rollout that hit its token bound inside its first unit (its
        replacement is compared with as many tokens of the original, see :func:`unit_similarity`).
        Rollouts from the end cut replace nothing and are not listed.
        """
        if "replacements" not in self._cache:
            columns = ["chain_index", "unit", "cut", "rollout", "outcome", "original", "replacement", "cut_off",
                       "similarity", "counterfactual"]
            units = self.units()
            text_of = {(int(r.chain_index), int(r.unit)): r.text for r in units.itertuples()} if len(units) else {}
            styles = {int(r.chain_index): answer_style(str(getattr(r, "answer", ""))) for r in self.chains.itertuples()}
            rows = []
            for r in self.rollouts.itertuples():
                original = text_of.get((int(r.chain_index), int(r.unit)))
                if original is None:  # the end cut
                    continue
                if isinstance(getattr(r, "text", None), str):
                    replacement, cut_off = replacement_unit(r.text, styles.get(int(r.chain_index), "gsm8k"),
                                                            r.outcome == "truncated")
                    similarity = unit_similarity(original, replacement, cut_off=cut_off)
                else:  # rows without the rollout's text (made by hand): nothing to compare, nothing filtered
                    replacement, cut_off, similarity = None, False, np.nan
                rows.append({"chain_index": int(r.chain_index), "unit": int(r.unit), "cut": int(r.cut),
                             "rollout": int(r.rollout), "outcome": r.outcome, "original": original,
                             "replacement": replacement, "cut_off": cut_off, "similarity": similarity,
                             "counterfactual": bool(np.isnan(similarity) or similarity <= self.similarity_threshold)})
            self._cache["replacements"] = pd.DataFrame(rows, columns=columns)
        return self._cache["replacements"]

    def importance(self) -> pd.DataFrame:
        """One row per unit: importance (kept − dissimilar resampled) with rollout-bootstrap 95% intervals."""
        if "importance" not in self._cache:
            n_boot, seed = int(self.config["n_boot"]), int(self.config["seed"])
            similar = self.replacements()
            similar = similar.loc[~similar["counterfactual"].astype(bool), ["chain_index", "cut", "rollout"]]
            excluded = set(map(tuple, similar.to_numpy().tolist()))
            rows = []
            for (index, unit), resampled in self.rollouts.groupby(["chain_index", "unit"]):
                kept = self.rollouts[(self.rollouts["chain_index"] == index) & (self.rollouts["unit"] == unit + 1)]
                if kept.empty:  # the end cut: there is no unit after it
                    continue
                rng = np.random.default_rng([seed, int(index), int(unit)])
                drop = np.array([(int(index), int(c), int(k)) in excluded
                                 for c, k in zip(resampled["cut"], resampled["rollout"])], dtype=bool)
                unfiltered = float(kept["answer_logprob"].mean() - resampled["answer_logprob"].mean())
                rows.append({"chain_index": int(index), "unit": int(unit),
                             **unit_importance(kept, resampled[~drop], n_boot=n_boot, rng=rng),
                             "n_resampled_all": len(resampled), "n_similar": int(drop.sum()),
                             "d_logprob_unfiltered": unfiltered})
            frame = pd.DataFrame(rows)
            self._cache["importance"] = frame.merge(self.units(), on=["chain_index", "unit"], how="left")
        return self._cache["importance"]

    def agreement(self, measure: str = "d_logprob") -> dict:
        """Per-chain Spearman rho (unit mean survival vs ``measure``), tested across chains."""
        key = f"agreement:{measure}"
        if key not in self._cache:
            per_chain = per_chain_spearman(self.importance(), "survival_mean", measure)
            rho = per_chain["rho"].to_numpy(dtype=float)
            flip = sign_flip_test(rho, seed=int(self.config["seed"]))
            valid = rho[~np.isnan(rho)]
            t = stats.ttest_1samp(valid, 0.0) if len(valid) >= 2 else None
            self._cache[key] = {"measure": measure, "per_chain": per_chain, "min_units": MIN_UNITS,
                                "n_chains": flip["n_chains"],
                                "n_chains_excluded": int(np.isnan(rho).sum()), "mean_rho": flip["estimate"],
                                "ci_low": flip["ci_low"], "ci_high": flip["ci_high"], "p_sign_flip": flip["p_value"],
                                "exact": flip["exact"],
                                "p_t": float(t.pvalue) if t is not None else np.nan}
        return self._cache[key]

    def by_category(self) -> pd.DataFrame:
        """Per category: the category's units minus the chain's other units, greedy and on-policy, across chains."""
        if "by_category" not in self._cache:
            table = self.importance()
            rows = []
            for category in sorted(table["category"].dropna().unique()):
                for measure, column in (("greedy survival", "survival_mean"), ("on-policy d_logprob", "d_logprob"),
                                        ("on-policy d_correct", "d_correct")):
                    contrasts = category_contrasts(table, category, column)
                    test = sign_flip_test(contrasts["contrast"].to_numpy(dtype=float), seed=int(self.config["seed"]))
                    rows.append({"category": category, "measure": measure, "estimate": test["estimate"],
                                 "ci_low": test["ci_low"], "ci_high": test["ci_high"], "p_value": test["p_value"],
                                 "n_chains": test["n_chains"], "n_units": int((table["category"] == category).sum())})
            frame = pd.DataFrame(rows, columns=["category", "measure", "estimate", "ci_low", "ci_high", "p_value",
                                                "n_chains", "n_units"])
            frame["p_holm"] = np.nan
            for _, index in frame.groupby("measure").groups.items():
                frame.loc[index, "p_holm"] = holm(frame.loc[index, "p_value"].to_numpy())
            self._cache["by_category"] = frame
        return self._cache["by_category"]

    # ---------------------------------------------------------------- regeneration
    def regeneration(self) -> pd.DataFrame:
        """Per keep ratio and category: share of deleted (and, for reference, kept) tokens written back."""
        if "regeneration" not in self._cache:
            per_chain = self.regeneration_per_chain()
            rows = []
            if not per_chain.empty:
                for (ratio, category), sub in per_chain.groupby(["keep_ratio", "category"], sort=True):
                    deleted = bootstrap_ci(sub["rewritten_deleted"], n_resamples=int(self.config["n_boot"]),
                                           seed=int(self.config["seed"]))
                    kept = bootstrap_ci(sub["rewritten_kept"], n_resamples=int(self.config["n_boot"]),
                                        seed=int(self.config["seed"]))
                    rows.append({"keep_ratio": ratio, "category": category, "n_chains": deleted["n_chains"],
                                 "n_deleted": int(sub["n_deleted"].sum()),
                                 "rewritten_deleted": deleted["estimate"], "ci_low": deleted["ci_low"],
                                 "ci_high": deleted["ci_high"], "rewritten_kept": kept["estimate"],
                                 "kept_ci_low": kept["ci_low"], "kept_ci_high": kept["ci_high"]})
            self._cache["regeneration"] = pd.DataFrame(rows)
        return self._cache["regeneration"]

    def regeneration_per_chain(self) -> pd.DataFrame:
        """Per chain, keep ratio and category (``all`` included): shares of deleted / kept tokens written back."""
        if "regen_chain" not in self._cache:
            rows = []
            if not self.regeneration_rows.empty:
                from ..recovery import kept_positions

                for _, row in self.regeneration_rows.iterrows():
                    toks = self.tokens[self.tokens["chain_index"] == row["chain_index"]].sort_values("position")
                    words = toks["text"].astype(str).str.strip().str.lower().to_numpy()
                    steps = toks["deleted_step"].to_numpy(dtype="float64", na_value=np.nan)
                    kept = np.zeros(len(toks), dtype=bool)
                    kept[kept_positions(steps, float(row["keep_ratio"]))] = True
                    written = list(row["continuation_words"])
                    categories = (toks["category"].fillna("unlabelled").astype(str).to_numpy()
                                  if "category" in toks else np.array(["unlabelled"] * len(toks)))
                    real = words != ""
                    for category in ["all", *sorted(set(categories[real]))]:
                        member = real & ((categories == category) if category != "all" else True)
                        deleted, kept_c = member & ~kept, member & kept
                        if not deleted.any():
                            continue
                        # Deleted and kept tokens are matched against fresh copies of the continuation.
                        hit_deleted = rewritten_mask(words[deleted], written)
                        hit_kept = rewritten_mask(words[kept_c], written)
                        rows.append({"chain_index": int(row["chain_index"]), "keep_ratio": float(row["keep_ratio"]),
                                     "category": category, "n_deleted": int(deleted.sum()),
                                     "rewritten_deleted": float(hit_deleted.mean()),
                                     "rewritten_kept": float(hit_kept.mean()) if kept_c.any() else np.nan})
            self._cache["regen_chain"] = pd.DataFrame(rows)
        return self._cache["regen_chain"]

    def regeneration_outcomes(self) -> pd.DataFrame:
        """Per keep ratio: share of continuations correct / wrong / failed (chain-bootstrap 95% intervals)."""
        rows = []
        frame = self.regeneration_rows
        for ratio, sub in (frame.groupby("keep_ratio") if not frame.empty else []):
            row = {"keep_ratio": float(ratio), "n_chains": int(sub["chain_index"].nunique())}
            for outcome in ("correct", "wrong", "failed"):
                hit = sub["outcome"].isin(FAILED) if outcome == "failed" else sub["outcome"] == outcome
                ci = bootstrap_ci(hit.astype(float), n_resamples=int(self.config["n_boot"]), seed=int(self.config["seed"]))
                row.update({outcome: ci["estimate"], f"{outcome}_ci_low": ci["ci_low"],
                            f"{outcome}_ci_high": ci["ci_high"]})
            rows.append(row)
        return pd.DataFrame(rows)

    def filter_summary(self) -> dict:
        """The counterfactual filter in numbers: measure, threshold, resampled rollouts, near-copies excluded."""
        table = self.importance()
        n_all = int(table["n_resampled_all"].sum()) if len(table) else 0
        n_similar = int(table["n_similar"].sum()) if len(table) else 0
        return {"measure": SIMILARITY_MEASURE, "threshold": self.similarity_threshold, "n_resampled": n_all,
                "n_similar_excluded": n_similar,
                "n_units_without_counterfactual": int((table["n_resampled"] == 0).sum()) if len(table) else 0}

    # ---------------------------------------------------------------- output
    def citations(self) -> list[str]:
        """Citable sentences (chain-level, with the number of chains; withheld below ``min_chains``)."""
        return view("onpolicy_sentences")(self)

    def figure(self, stem: str | Path, width: str = "two") -> list[Path]:
        """Write the figure as ``stem.png`` and ``stem.pdf``."""
        return view("onpolicy_figure")(self, Path(stem), width=width)

    def to_frame(self) -> pd.DataFrame:
        """The natural table: one row per unit with its importance and greedy survival (:meth:`importance`)."""
        return self.importance().copy()

    def to_dict(self) -> dict:
        """Machine-readable form (``onpolicy.json``): the run, settings, chain-level statistics and sentences."""
        return to_jsonable({"run": self.run, "n_chains": self.n_chains, "n_rollouts": len(self.rollouts),
                            "settings": self.settings, "config": self.config,
                            "counterfactual_filter": self.filter_summary(),
                            "agreement": {m: {k: v for k, v in self.agreement(m).items() if k != "per_chain"}
                                          for m in MEASURES},
                            "by_category": self.by_category(), "regeneration": self.regeneration(),
                            "regeneration_outcomes": self.regeneration_outcomes(), "citations": self.citations()})

    def save(self, folder: str | Path, figure: bool = True) -> Path:
        """Write ``onpolicy.json``, the ``onpolicy_*.csv`` tables, ``onpolicy_citations.md``, the inputs
        (``onpolicy_inputs/*.parquet``, what :meth:`load` reads) and, unless ``figure=False``,
        ``fig_onpolicy.{png,pdf}`` into ``folder``; return the folder (what each file is: ``self.files``)."""
        folder = Path(folder)
        (folder / "onpolicy_inputs").mkdir(parents=True, exist_ok=True)
        files = {}
        for name in INPUTS:
            files[f"input_{name}"] = folder / "onpolicy_inputs" / f"{name}.parquet"
            atomic_write_parquet(files[f"input_{name}"], getattr(self, name))
        files["json"] = write_json(folder / JSON_FILE, {"manifest": self.manifest, **self.to_dict()})
        tables = {"units": self.importance(), "replacements": self.replacements(), "by_category": self.by_category(),
                  "agreement": self.agreement()["per_chain"], "regeneration": self.regeneration(),
                  "regeneration_outcomes": self.regeneration_outcomes()}
        for name, table in tables.items():
            files[name] = write_table(folder, f"onpolicy_{name}", table, formats=("csv",))["csv"]
        files["agreement_json"] = write_json(folder / "onpolicy_agreement.json", self.to_dict()["agreement"])
        files["citations"] = write_text(folder / "onpolicy_citations.md",
                                        "".join(f"- {s}\n" for s in self.citations()))
        if figure:
            files["figure"] = self.figure(folder / "fig_onpolicy")[0]
        self.files = files
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "OnPolicyResult":
        """Read back a folder written by :meth:`save` (a run directory: :meth:`from_run`)."""
        folder = Path(folder)
        inputs = {name: folder / "onpolicy_inputs" / f"{name}.parquet" for name in INPUTS}
        if not (folder / JSON_FILE).is_file() or not all(p.is_file() for p in inputs.values()):
            raise CotSurvivalError("E161", path=folder)
        meta = read_json(folder / JSON_FILE)
        return cls(**{name: pd.read_parquet(path) for name, path in inputs.items()}, run=meta.get("run", ""),
                   manifest=meta.get("manifest") or {}, config=meta.get("config") or {})

    def __repr__(self) -> str:
        s = self.settings
        return (f"OnPolicyResult(run={self.run!r}, chains={self.n_chains}, rollouts={len(self.rollouts)}, "
                f"rollouts_per_cut={s.get('rollouts')}, temperature={s.get('temperature')}, top_p={s.get('top_p')})")

    def _repr_html_(self) -> str:
        table = frame_html(self.by_category(), ".3f")
        items = "".join(f"<li>{html.escape(s)}</li>" for s in self.citations())
        return (f"<div><b>On-policy importance</b> — {html.escape(self.run)}: {self.n_chains} chains</div>"
                f"{table}<ul>{items}</ul>")


# ---------------------------------------------------------------------------------------- pieces

def unit_importance(kept: pd.DataFrame, resampled: pd.DataFrame, *, n_boot: int = 2000,
                    rng: np.random.Generator | None = None) -> dict:
    """Kept − resampled for one unit, with rollout-bootstrap 95% intervals (each arm resampled on its own)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    out = {"n_kept": len(kept), "n_resampled": len(resampled)}
    arms = []
    for arm in (kept, resampled):
        lp = arm["answer_logprob"].to_numpy(dtype=float)
        answered = ~arm["outcome"].isin(FAILED).to_numpy()
        correct = (arm["outcome"] == "correct").to_numpy()
        arms.append((lp, answered, correct))
    (lp_k, ans_k, cor_k), (lp_r, ans_r, cor_r) = arms
    if not len(lp_k) or not len(lp_r):  # every replacement was a near-copy of the unit: no counterfactual
        names = ("failed_kept", "failed_resampled", "logprob_kept", "logprob_resampled", "accuracy_kept",
                 "accuracy_resampled", "d_logprob", "d_correct", "d_logprob_ci_low", "d_logprob_ci_high",
                 "d_correct_ci_low", "d_correct_ci_high")
        return {**out, **dict.fromkeys(names, np.nan)}
    out.update(failed_kept=float(1 - ans_k.mean()), failed_resampled=float(1 - ans_r.mean()),
               logprob_kept=float(lp_k.mean()), logprob_resampled=float(lp_r.mean()),
               accuracy_kept=_ratio(cor_k.sum(), ans_k.sum()), accuracy_resampled=_ratio(cor_r.sum(), ans_r.sum()))
    out["d_logprob"] = out["logprob_kept"] - out["logprob_resampled"]
    out["d_correct"] = out["accuracy_kept"] - out["accuracy_resampled"]
    ik = rng.integers(0, len(lp_k), size=(n_boot, len(lp_k)))
    ir = rng.integers(0, len(lp_r), size=(n_boot, len(lp_r)))
    boot_lp = lp_k[ik].mean(axis=1) - lp_r[ir].mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot_acc = cor_k[ik].sum(axis=1) / ans_k[ik].sum(axis=1) - cor_r[ir].sum(axis=1) / ans_r[ir].sum(axis=1)
    out["d_logprob_ci_low"], out["d_logprob_ci_high"] = (float(q) for q in np.quantile(boot_lp, [0.025, 0.975]))
    finite = boot_acc[np.isfinite(boot_acc)]
    if np.isnan(out["d_correct"]) or len(finite) < n_boot / 2:  # an arm too often without answers: no interval
        out["d_correct_ci_low"] = out["d_correct_ci_high"] = np.nan
    else:
        out["d_correct_ci_low"], out["d_correct_ci_high"] = (float(q) for q in np.quantile(finite, [0.025, 0.975]))
    return out


def answer_style(answer: str) -> str:
    """The answer style of a chain's answer field (``#### 18`` -> gsm8k, ``\\boxed{}`` -> math, ``Answer:`` -> mcq)."""
    from ..generation.prompting import detect_style

    try:
        return detect_style(answer)
    except CotSurvivalError:
        return "gsm8k"  # a bare answer: rollouts are read for a ``####`` line, as GSM8K prompts ask


def answer_line_start(text: str, style: str) -> int:
    """Where the answer line starts in a continuation (its whole length when it has none)."""
    from ..generation.prompting import find_answer

    found = find_answer(text, style)
    return len(text) if found is None else found[0]


def replacement_unit(text: str, style: str, truncated: bool = False) -> tuple[str, bool]:
    """``(first unit of a rollout's own reasoning, cut_off)``.

    The reasoning is the rollout's text before its answer line; its first unit comes from the one
    splitter (:func:`cotsurvival.taxonomy.units.split_units`), ``""`` when the rollout answers at
    once. ``cut_off`` is true when the rollout hit its token bound (``truncated``) with no second
    unit begun, so its first unit may be unfinished.
    """
    from ..taxonomy.units import split_units

    units = split_units(text[:answer_line_start(text, style)])
    if not units:
        return "", False
    return units[0].text, bool(truncated and len(units) == 1)


def unit_similarity(original: str, replacement: str, cut_off: bool = False) -> float:
    """Lexical similarity in [0, 1] of a replacement unit to the original unit.

    Both are lower-cased and cut into word, number and symbol tokens (``16*3=48`` -> ``16 * 3 = 48``,
    so spacing does not count); the similarity is difflib's ``SequenceMatcher.ratio`` over the two
    token lists, ``2·M / (len(a) + len(b))`` with M the tokens of its matching blocks (1 for equal
    units, 0 for units with no token in common). When the replacement was ``cut_off`` by the
    rollout's token bound it is compared with as many tokens of the original, so an unfinished
    copy still counts as a copy.

    Why lexical: Thought Anchors compares sentence embeddings, which would need a separate model
    (a download); the pruner's own mean-pooled hidden states are a poor sentence similarity (a
    decoder's states are anisotropic: nearly every pair scores high). In a reasoning step the
    numbers carry the content, and a token match keeps them whole: "3 + 2 = 5" against "3 + 3 = 6"
    differs in two of five tokens, where a paraphrase-tolerant embedding would call the two the
    same. What it misses is a paraphrase in other words, which counts as a counterfactual here.
    """
    a = _SIMILARITY_TOKENS.findall(original.lower())
    b = _SIMILARITY_TOKENS.findall(replacement.lower())
    if cut_off:
        a = a[:len(b)]
    if not a and not b:
        return 1.0
    return float(difflib.SequenceMatcher(None, a, b, autojunk=False).ratio())


def _ratio(a, b) -> float:
    return float(a) / float(b) if b else np.nan


def per_chain_spearman(table: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Spearman's rho of ``x`` and ``y`` over each chain's units (NaN below ``MIN_UNITS`` or for a constant column).

    Rho is Pearson's r of the average ranks (what ``scipy.stats.spearmanr`` computes), taken for all
    chains at once with pandas' grouped ranks: a loop calling scipy per chain costs milliseconds a
    chain, which simulations over thousands of chains feel.
    """
    chains = pd.Index(sorted(table["chain_index"].unique()), name="chain_index")
    data = table[["chain_index", x, y]].dropna()
    groups = data.groupby("chain_index")
    ranks = pd.DataFrame({"chain_index": data["chain_index"], "x": groups[x].rank(), "y": groups[y].rank()})
    centred = ranks[["x", "y"]] - ranks.groupby("chain_index")[["x", "y"]].transform("mean")
    sums = pd.DataFrame({"xy": centred["x"] * centred["y"], "xx": centred["x"] ** 2, "yy": centred["y"] ** 2,
                         "chain_index": data["chain_index"]}).groupby("chain_index").sum()
    n_units = groups.size().reindex(chains, fill_value=0)
    valid = (n_units >= MIN_UNITS) & (groups[x].nunique().reindex(chains) > 1) & \
        (groups[y].nunique().reindex(chains) > 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (sums["xy"] / np.sqrt(sums["xx"] * sums["yy"])).reindex(chains)
    rho = rho.where(valid.fillna(False).astype(bool))
    return pd.DataFrame({"chain_index": chains.astype(int), "n_units": n_units.to_numpy(dtype=int),
                         "rho": rho.to_numpy(dtype=float)}, columns=["chain_index", "n_units", "rho"])


def category_contrasts(table: pd.DataFrame, category: str, column: str) -> pd.DataFrame:
    """Per chain: mean ``column`` of the category's units minus that of the chain's other units."""
    rows = []
    for index, sub in table.groupby("chain_index"):
        sub = sub.dropna(subset=[column])
        inside, outside = sub[sub["category"] == category][column], sub[sub["category"] != category][column]
        if len(inside) and len(outside):
            rows.append({"chain_index": int(index), "contrast": float(inside.mean() - outside.mean())})
    return pd.DataFrame(rows, columns=["chain_index", "contrast"])


def rewritten_mask(deleted_words, written_words) -> np.ndarray:
    """Which of ``deleted_words`` appear among ``written_words`` (a multiset: each written word matches once)."""
    from collections import Counter

    pool = Counter(w for w in written_words if w)
    out = np.zeros(len(deleted_words), dtype=bool)
    for i, word in enumerate(deleted_words):
        if word and pool[word] > 0:
            pool[word] -= 1
            out[i] = True
    return out
