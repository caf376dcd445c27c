"""``compare``: two or more runs (or orderings) side by side, with chain-level statistics.

For every pair of views (``RUN`` or ``RUN:ORDERING``) the common chains are aligned on units
(:mod:`cotsurvival.comparison.align`: tokens when the tokenization is the same, words otherwise)
and the pair gets

* **agreement of rankings**: per chain Kendall's τ-b and Spearman's ρ between the unit survivals
  of the two views, their mean over chains with a chain-bootstrap 95% CI; the Jaccard overlap of
  the units kept at each keep ratio (a unit is kept at ratio r when its deletion step — see the
  unit rule — is later than the run's ``N - floor(N r)`` deletions, or it survived); the units whose
  survival moves most;
* **category effects**: per chain and category the mean unit survival in each view, the per-chain
  paired difference ``a - b``, its mean with a chain-bootstrap CI, a sign-flip test over chains
  (:func:`cotsurvival.analysis.inference.paired_sign_flip_test`, exact up to 16 chains) and Holm's
  adjustment over categories (:func:`~cotsurvival.analysis.inference.holm`).

Every statistic treats the chain as the unit of inference. Nothing is written into the runs.
"""
from __future__ import annotations

import base64
import html
import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis import kaplan_meier
from ..analysis.citations import fmt_p
from ..analysis.citations import fmt_number
from ..analysis.inference import bootstrap_ci
from ..errors import CotSurvivalError
from ..provenance import scoring_notes
from ..reports.data import display_name
from ..reports.figures import KaplanMeierDisplay
from ..reports.style import figure_style, save_figure
from ..reports.style import WIDTHS
from ..reports.style import COARSE, order_present
from ..reports.style import palette_for
from ..results import read_json, to_jsonable, write_json, write_table, write_text
from .align import TOKEN_UNITS, UNIT_RULE, WORD_UNITS, RunView, align, common_chains, load_view, match_chains

DEFAULT_KEEP_RATIOS = (0.5, 0.25)
N_MOVERS = 20
FIGURES = ("fig_km_by_run", "fig_scatter", "fig_forest")


@dataclass
class ComparisonResult:
    """Everything :func:`compare` computed; saves, loads, and renders in Jupyter.

    Attributes
    ----------
    runs : list of dict
        One entry per view: ``name, path, ordering, model, objective, keep_ratio, n_chains, ...``.
    pairs : list of dict
        One entry per pair (the content of ``comparison.json``'s ``pairs``): ``a``, ``b``,
        ``n_chains``, ``units``, ``alignment``, ``kendall_tau`` / ``spearman_rho``
        (``mean, ci_low, ci_high, n_chains``), ``jaccard`` (per keep ratio), ``categories``
        (per category ``mean_a, mean_b, difference, ci_low, ci_high, p_value, p_holm, n_chains``).
    tables : dict of str to DataFrame
        ``chain_matching``, ``agreement_per_chain``, ``jaccard_per_chain``, ``category_survival``
        (each view on its own tokens), ``category_differences``, ``movers``, ``units``,
        ``km_category``, and ``recovery`` when a run has ``recovery.parquet``.
    citations : list of str
        Citable sentences naming runs, models, objectives, the alignment rule and n chains.
    notes : list of str
    """

    runs: list[dict]
    pairs: list[dict]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    citations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    # compatibility with the naming of AnalysisResult
    @property
    def citations_(self) -> list[str]:
        return self.citations

    def to_dict(self) -> dict:
        """Machine-readable form: the content of ``comparison.json`` (NaN becomes null)."""
        return to_jsonable({"runs": self.runs, "pairs": self.pairs, "alignment_rule": UNIT_RULE,
                          "config": self.config, "citations": self.citations, "notes": self.notes})

    def to_frame(self) -> pd.DataFrame:
        """Per pair and category: mean survival in each view, paired difference, CI, p and Holm p."""
        return self.tables.get("category_differences", pd.DataFrame()).copy()

    def save(self, out: str | os.PathLike, *, figures: bool = True) -> Path:
        """Write ``comparison.json``, tables (CSV, Markdown, LaTeX), figures (PNG+PDF), ``citations.md``, ``index.html``."""
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "comparison.json", self.to_dict())
        for name, table in self.tables.items():
            write_table(folder, name, table, formats=("csv",) if name in ("units", "km_category") else ("csv", "md", "tex"))
        lines = ["# Comparison: citable sentences", ""] + [f"- {c}" for c in self.citations]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        write_text(folder / "citations.md", "\n".join(lines) + "\n")
        drawn = draw_figures(self, folder) if figures else {}
        write_text(folder / "index.html", _page(self, folder, drawn))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "ComparisonResult":
        """Read a folder written by :meth:`save`."""
        folder = Path(folder)
        path = folder / "comparison.json"
        if not path.is_file():
            raise CotSurvivalError("E125", path=folder)
        data = read_json(path)
        tables = {}
        for csv in sorted(folder.glob("*.csv")):
            try:
                tables[csv.stem] = pd.read_csv(csv, keep_default_na=True, dtype={"chain_id": str})
            except pd.errors.EmptyDataError:
                tables[csv.stem] = pd.DataFrame()
        return cls(runs=data["runs"], pairs=data["pairs"], tables=tables, citations=data.get("citations", []),
                   notes=data.get("notes", []), config=data.get("config", {}))

    def stale(self) -> dict[str, str]:
        """``{run: why}`` for each compared run that changed since the comparison (empty when none did)."""
        from ..provenance import stale_reason
        from .align import parse_run_spec

        out = {}
        for spec, state in (self.config.get("fingerprints") or {str(r): None for r in self.config.get("runs", [])}).items():
            path = parse_run_spec(spec)[0]
            if Path(path, "manifest.json").is_file():
                reason = stale_reason(state, path)
                if reason:
                    out[spec] = reason
        return out

    def _repr_html_(self) -> str:
        """Jupyter: runs, per pair agreement and category differences, citations; all text escaped.

        A comparison whose runs changed since says so first, naming the command that updates it."""
        stale = self.stale()
        warning = "".join(f'<p class="cs-stale"><b>Stale:</b> {html.escape(spec)} changed since this comparison '
                          f"({html.escape(why)}); re-run <code>cotsurvival compare</code>.</p>"
                          for spec, why in stale.items())
        return warning + _summary_html(self)


def compare(
    runs: list[str | os.PathLike],
    out: str | os.PathLike | None = None,
    *,
    keep_ratios: tuple[float, ...] | list[float] = DEFAULT_KEEP_RATIOS,
    names: list[str] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    figures: bool = True,
    overwrite: bool = False,
) -> ComparisonResult:
    """Compare two or more runs (or orderings of runs) on the same chains.

    Parameters
    ----------
    runs : list of str or PathLike
        Run directories; ``RUN:ORDERING`` (e.g. ``runs/a:random``) compares a baseline ordering
        stored in ``RUN/baselines.parquet``. Every pair is compared.
    out : str or PathLike, optional
        Write everything there (:meth:`ComparisonResult.save`).
    keep_ratios : sequence of float
        Keep ratios of the Jaccard overlap of kept sets (ratios below a run's keep ratio are skipped).
    names : list of str, optional
        Display names (default: the run folder's name, ``:ORDERING`` appended).
    n_boot, seed : int
        Chain-bootstrap resamples and seed of the CIs.
    overwrite : bool
        Write into ``out`` even if it holds files that are not an earlier comparison (E081). ``out``
        may never be a compared run or lie inside one (E080).

    Returns
    -------
    ComparisonResult
    """
    if len(runs) < 2:
        raise CotSurvivalError("E120", reason="give at least two runs (RUN or RUN:ORDERING)")
    if out is not None:  # before any work: a refused comparison writes nothing
        from ..outputs import check_output, is_comparison_folder
        from .align import parse_run_spec

        compared = [parse_run_spec(spec)[0] for spec in runs]
        check_output(out, inputs=[(path, f"the compared run {path}") for path in compared], overwrite=overwrite,
                     ours=is_comparison_folder, command="compare", folder=True)
    if names is not None and len(names) != len(runs):
        raise CotSurvivalError("E120", reason=f"{len(names)} names for {len(runs)} runs")
    from ..provenance import fingerprint
    from .align import parse_run_spec

    # What the comparison is computed from, taken before reading: a run changed since makes it stale.
    states = {str(spec): fingerprint(parse_run_spec(spec)[0]) for spec in runs}
    views = [load_view(spec, name=names[i] if names else None) for i, spec in enumerate(runs)]
    _unique_names(views)
    result = ComparisonResult(runs=[v.info() for v in views], pairs=[],
                              config={"keep_ratios": [float(r) for r in keep_ratios], "n_boot": n_boot, "seed": seed,
                                      "unit_rule": UNIT_RULE, "runs": [str(r) for r in runs],
                                      "fingerprints": states})
    matching = match_chains(views)
    result.tables["chain_matching"] = matching
    for status, count in matching["status"].value_counts().items():
        if status != "common":
            result.notes.append(f"{count} chain(s) {status}: left out of the pairs that lack them.")
    for view in views:
        if view.tokens["censored"].any():
            result.notes.append(f"'{view.name}' stopped at keep ratio {view.keep_ratio:g}: its survivors are censored "
                                "and enter the survival means at the run's last step (a lower bound).")
        if not view.tokens["category"].notna().any():
            result.notes.append(f"'{view.name}' is not tagged: no category statistics (run `cotsurvival tag {view.path}`).")
    result.tables["category_survival"] = _category_survival(views, n_boot, seed)
    result.tables["km_category"] = _km_tables(views)
    tables: dict[str, list[pd.DataFrame]] = {k: [] for k in ("agreement_per_chain", "jaccard_per_chain",
                                                               "category_differences", "movers", "units",
                                                               "stability_per_chain")}
    for a, b in itertools.combinations(views, 2):
        pair, pair_tables = _compare_pair(a, b, keep_ratios, n_boot, seed, result.notes)
        result.pairs.append(pair)
        for key, table in pair_tables.items():
            tables[key].append(table)
        result.citations.extend(_sentences(a, b, pair))
    for key, frames in tables.items():
        frames = [f for f in frames if not f.empty]
        result.tables[key] = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    recovery = _recovery(views)
    if recovery is not None:
        result.tables["recovery"] = recovery
    # A comparison's citations open with how each greedy run was scored where that limits its ranks:
    # an approximation, half precision, its rank stability (token-level agreement includes its path noise).
    # A run with replicates quotes its own replicate τ, as measured in the first pair it is in.
    own = {}
    for pair in result.pairs:
        for side in ("a", "b"):
            stability = pair.get("stability") or {}
            if stability.get(f"k_{side}", 1) > 1:
                own.setdefault(pair[side], {"tau": stability[f"own_tau_{side}"], "n_replicates": stability[f"k_{side}"]})
    said = [f"Note: '{view.name}': {note.text}" for view in views if view.ordering == "greedy"
            for note in scoring_notes(view.manifest, stability=own.get(view.name))]
    result.citations[:0] = said
    result.notes.extend(said)
    result.notes = list(dict.fromkeys(result.notes))
    if out is not None:
        result.save(out, figures=figures)
    return result


# Heavy modules (scipy, the analysis package) are imported inside the functions that use them, so that
# `import cotsurvival` (which exports `compare`) stays light.

# --------------------------------------------------------------------------- one pair
def _compare_pair(a: RunView, b: RunView, keep_ratios, n_boot: int, seed: int, notes: list[str]):
    chain_ids = common_chains(a, b)
    if not chain_ids:
        ids_a, ids_b = set(a.chains["chain_id"]), set(b.chains["chain_id"])
        detail = (f"'{a.name}' and '{b.name}' have no chain_id in common" if not ids_a & ids_b
                  else f"the {len(ids_a & ids_b)} chain ids '{a.name}' and '{b.name}' share all have different reasoning text")
        raise CotSurvivalError("E122", detail=detail)
    units, kind = align(a, b, chain_ids)
    rule = TOKEN_UNITS if kind == "token" else f"{WORD_UNITS}; {UNIT_RULE}"
    label = f"{a.name} vs {b.name}"
    uncovered = int((~units["covered_a"]).sum() + (~units["covered_b"]).sum())
    if uncovered:
        notes.append(f"{label}: {uncovered} unit(s) overlap no token of one run (their survival is missing).")
    if len(chain_ids) < 10:
        notes.append(f"{label}: only {len(chain_ids)} chains. Percentile chain-bootstrap intervals from fewer than 10 "
                     f"chains understate the uncertainty, and the smallest possible two-sided sign-flip p-value is "
                     f"2/2^{len(chain_ids)} = {min(1.0, 2 / 2 ** len(chain_ids)):.3g}.")
    agreement = _agreement(units)
    tau = bootstrap_ci(agreement["kendall_tau"], n_resamples=n_boot, seed=seed)
    rho = bootstrap_ci(agreement["spearman_rho"], n_resamples=n_boot, seed=seed)
    undefined = int(agreement["kendall_tau"].isna().sum())
    if undefined:
        notes.append(f"{label}: Kendall's tau is undefined in {undefined} chain(s) (fewer than 3 units or constant "
                     "survival) and those chains are left out of its mean.")
    jaccard, jaccard_table = {}, []
    for ratio in keep_ratios:
        if ratio < max(a.keep_ratio, b.keep_ratio) or not 0 < ratio < 1:
            notes.append(f"{label}: no Jaccard overlap at keep ratio {ratio:g} (a run stopped at "
                         f"{max(a.keep_ratio, b.keep_ratio):g}, or the ratio is not in (0, 1)).")
            continue
        per_chain = _jaccard(units, ratio)
        jaccard_table.append(per_chain)
        ci = bootstrap_ci(per_chain["jaccard"], n_resamples=n_boot, seed=seed)
        jaccard[f"{ratio:g}"] = {"mean": ci["estimate"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"],
                                 "n_chains": ci["n_chains"]}
    from .replicates import pair_stability  # each setting's own replicate stability (runs with --replicates)

    stability, stability_table = pair_stability(a, b, chain_ids, n_boot, seed)
    differences = _category_differences(units, n_boot, seed)
    movers = units.assign(shift=units["survival_a"] - units["survival_b"])
    movers = movers.reindex(movers["shift"].abs().sort_values(ascending=False, kind="stable").index).head(N_MOVERS)
    movers = movers[["chain_id", "unit", "text", "category", "survival_a", "survival_b", "shift"]]
    categories = {row.category: {"mean_a": row.mean_a, "mean_b": row.mean_b, "difference": row.difference,
                                 "ci_low": row.ci_low, "ci_high": row.ci_high, "p_value": row.p_value,
                                 "p_holm": row.p_holm, "n_chains": int(row.n_chains), "exact": bool(row.exact)}
                  for row in differences.itertuples()}
    pair = {"a": a.name, "b": b.name, "model_a": a.model, "model_b": b.model, "objective_a": a.objective,
            "objective_b": b.objective, "path_a": str(a.path), "path_b": str(b.path),
            "n_chains": len(chain_ids), "units": kind, "n_units": int(len(units)), "alignment": rule,
            "kendall_tau": {"mean": tau["estimate"], "ci_low": tau["ci_low"], "ci_high": tau["ci_high"],
                            "n_chains": tau["n_chains"]},
            "spearman_rho": {"mean": rho["estimate"], "ci_low": rho["ci_low"], "ci_high": rho["ci_high"],
                             "n_chains": rho["n_chains"]},
            "jaccard": jaccard, "categories": categories, "stability": stability,
            "test": "chain-bootstrap CI of the mean per-chain difference; sign-flip test over chains; Holm over categories"}
    tag = {"a": a.name, "b": b.name}
    tables = {"agreement_per_chain": agreement.assign(**tag),
              "jaccard_per_chain": pd.concat(jaccard_table, ignore_index=True).assign(**tag) if jaccard_table else pd.DataFrame(),
              "category_differences": differences.assign(**tag), "movers": movers.assign(**tag),
              "units": units.assign(**tag), "stability_per_chain": stability_table.assign(**tag)}
    for key in tables:
        if not tables[key].empty:
            tables[key] = tables[key][["a", "b"] + [c for c in tables[key].columns if c not in ("a", "b")]]
    return pair, tables


def _agreement(units: pd.DataFrame) -> pd.DataFrame:
    from scipy import stats
    rows = []
    for chain_id, chain in units.groupby("chain_id", sort=False):
        ok = chain.dropna(subset=["survival_a", "survival_b"])
        x, y = ok["survival_a"].to_numpy(), ok["survival_b"].to_numpy()
        tau = rho = np.nan
        if len(ok) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
            tau = float(stats.kendalltau(x, y).statistic)          # tau-b: ties (word units) are corrected for
            rho = float(stats.spearmanr(x, y).statistic)
        rows.append({"chain_id": chain_id, "n_units": int(len(ok)), "kendall_tau": tau, "spearman_rho": rho})
    return pd.DataFrame(rows)


def kept_units(deleted: pd.Series, n_tokens: pd.Series, ratio: float) -> np.ndarray:
    """Units kept at keep ratio ``ratio``: deleted after the run's ``N - floor(N r)`` deletions, or never."""
    deletions = n_tokens.to_numpy(float) - np.floor(n_tokens.to_numpy(float) * ratio)
    step = deleted.to_numpy(float)
    return np.isnan(step) | (step > deletions)


def _jaccard(units: pd.DataFrame, ratio: float) -> pd.DataFrame:
    rows = []
    for chain_id, chain in units.groupby("chain_id", sort=False):
        kept_a = kept_units(chain["deleted_a"], chain["n_tokens_a"], ratio) & chain["covered_a"].to_numpy()
        kept_b = kept_units(chain["deleted_b"], chain["n_tokens_b"], ratio) & chain["covered_b"].to_numpy()
        union = int(np.sum(kept_a | kept_b))
        rows.append({"chain_id": chain_id, "keep_ratio": ratio, "kept_a": int(kept_a.sum()), "kept_b": int(kept_b.sum()),
                     "jaccard": np.sum(kept_a & kept_b) / union if union else np.nan})
    return pd.DataFrame(rows)


def chain_category_means(units: pd.DataFrame) -> pd.DataFrame:
    """Per chain and category: mean unit survival in view a and in view b (units of both views only)."""
    ok = units.dropna(subset=["category", "survival_a", "survival_b"])
    return ok.groupby(["category", "chain_id"], sort=True)[["survival_a", "survival_b"]].mean().reset_index()


def _category_differences(units: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    # The one implementation of the chain-level tests (shared with `analysis`).
    from ..analysis.inference import bootstrap_ci, holm, paired_sign_flip_test

    means = chain_category_means(units)
    rows = []
    for category, chains in means.groupby("category", sort=True):
        diff = (chains["survival_a"] - chains["survival_b"]).to_numpy()
        boot = bootstrap_ci(diff, n_resamples=n_boot, seed=seed)
        test = paired_sign_flip_test(chains["survival_a"], chains["survival_b"], seed=seed)
        rows.append({"category": category, "n_chains": int(len(chains)), "mean_a": float(chains["survival_a"].mean()),
                     "mean_b": float(chains["survival_b"].mean()), "difference": boot["estimate"],
                     "ci_low": boot["ci_low"], "ci_high": boot["ci_high"], "p_value": test["p_value"],
                     "exact": bool(test["exact"])})
    table = pd.DataFrame(rows, columns=["category", "n_chains", "mean_a", "mean_b", "difference", "ci_low", "ci_high",
                                        "p_value", "exact"])
    table["p_holm"] = holm(table["p_value"].to_numpy(float)) if len(table) else []
    return table


# --------------------------------------------------------------------------- per run
def _category_survival(views: list[RunView], n_boot: int, seed: int) -> pd.DataFrame:
    """Each view on its own tokens: mean normalized survival per category, the one definition analyze uses too
    (:func:`cotsurvival.analysis.survival.mean_normalized_survival`: mean over chains of per-chain means)."""
    from ..analysis.survival import mean_normalized_survival

    rows = []
    for view in views:
        tokens = view.tokens.dropna(subset=["category"])
        tokens = tokens[tokens["n_tokens"] > 1]           # a one-token chain carries no ranking
        for row in mean_normalized_survival(tokens, "category", n_boot=n_boot, seed=seed).itertuples():
            rows.append({"run": view.name, "model": view.model, "objective": view.objective, "category": row.group,
                         "n_chains": row.n_chains, "n_tokens": row.n_tokens,
                         "mean_survival": row.mean, "ci_low": row.ci_low, "ci_high": row.ci_high})
    return pd.DataFrame(rows, columns=["run", "model", "objective", "category", "n_chains", "n_tokens",
                                       "mean_survival", "ci_low", "ci_high"])


def _km_tables(views: list[RunView]) -> pd.DataFrame:
    frames = []
    for view in views:
        tokens = view.tokens.dropna(subset=["category"])
        tokens = tokens[tokens["n_tokens"] > 1]
        if tokens.empty:
            continue
        frames.append(kaplan_meier(tokens, group="category").assign(run=view.name))
    if not frames:
        return pd.DataFrame(columns=["run", "group", "time", "survival", "lower", "upper", "at_risk", "events"])
    table = pd.concat(frames, ignore_index=True)
    return table[["run"] + [c for c in table.columns if c != "run"]]


def _recovery(views: list[RunView]) -> pd.DataFrame | None:
    """Answer recovery per view, side by side, when a run has ``recovery.parquet`` (skipped silently otherwise)."""
    frames = []
    for view in views:
        path = view.path / "recovery.parquet"
        if not path.exists():
            continue
        try:
            table = pd.read_parquet(path)
        except (OSError, ValueError):
            continue
        needed = {"ordering", "keep_ratio", "answer_logprob", "correct", "chain_id"}
        if not needed <= set(table.columns):
            continue
        if "greedy" in set(table["ordering"]) or view.ordering != "greedy":
            table = table[table["ordering"] == view.ordering]
        summary = (table.groupby(["ordering", "keep_ratio"])
                   .agg(n_chains=("chain_id", "nunique"), accuracy=("correct", "mean"),
                        mean_answer_logprob=("answer_logprob", "mean")).reset_index())
        frames.append(summary.assign(run=view.name))
    if not frames:
        return None
    table = pd.concat(frames, ignore_index=True)
    return table[["run", "ordering", "keep_ratio", "n_chains", "accuracy", "mean_answer_logprob"]]


def _unique_names(views: list[RunView]) -> None:
    seen: dict[str, int] = {}
    for view in views:
        count = seen.get(view.name, 0)
        seen[view.name] = count + 1
        if count:
            view.name = f"{view.name}#{count + 1}"


# --------------------------------------------------------------------------- sentences
# The wording of p-values and numbers is the analysis's (one home: analysis.citations), imported
# when first used so that `import cotsurvival` stays light.
def _fmt_p(p) -> str:
    return fmt_p(p)


def _num(value, digits: int = 2) -> str:
    return fmt_number(value, digits)


def _sentences(a: RunView, b: RunView, pair: dict) -> list[str]:
    from ..analysis.citations import support_shortfall, withheld_note

    n = pair["n_chains"]
    how = ("token by token (same tokenizer)" if pair["units"] == "token"
           else "on words of the reasoning text (a word survives as long as any of its overlapping tokens)")
    tau, rho = pair["kendall_tau"], pair["spearman_rho"]
    out = []
    # One minimum-support rule and wording for every citations.md (analysis.citations).
    if support_shortfall(tau["n_chains"]):
        out.append(withheld_note(f"rank agreement of {a.describe()} and {b.describe()} ({tau['n_chains']} chains)"))
    else:
        out.append(f"Comparing {a.describe()} with {b.describe()}, aligned {how}, the rankings agreed with mean Kendall "
                   f"τ = {_num(tau['mean'])} (95% chain-bootstrap CI [{_num(tau['ci_low'])}, {_num(tau['ci_high'])}]; "
                   f"Spearman ρ = {_num(rho['mean'])}) over n = {tau['n_chains']} of {n} chains.")
    for ratio, j in pair["jaccard"].items():
        if support_shortfall(j["n_chains"]):
            out.append(withheld_note(f"overlap of kept units at keep ratio {ratio} ({j['n_chains']} chains)"))
            continue
        out.append(f"At keep ratio {ratio}, the units kept by {a.describe()} and by {b.describe()}, aligned {how}, "
                   f"overlapped with mean Jaccard {_num(j['mean'])} (95% CI [{_num(j['ci_low'])}, {_num(j['ci_high'])}], "
                   f"n = {j['n_chains']} chains).")
    for category, c in pair["categories"].items():
        if support_shortfall(c["n_chains"]):
            out.append(withheld_note(f"{display_name(category)} survival difference ({c['n_chains']} chains)"))
            continue
        out.append(f"Under {b.describe()}, {display_name(category)} units survived to a mean normalized time of "
                   f"{_num(c['mean_b'])} versus {_num(c['mean_a'])} under {a.describe()} (paired difference "
                   f"{a.name} − {b.name} = {_num(c['difference'], 3)}, 95% chain-bootstrap CI [{_num(c['ci_low'], 3)}, "
                   f"{_num(c['ci_high'], 3)}], sign-flip {_fmt_p(c['p_value'])}, Holm-adjusted {_fmt_p(c['p_holm'])}; "
                   f"aligned {how}; n = {c['n_chains']} chains).")
    from .replicates import sentence

    stable = sentence(a, b, pair.get("stability") or {}, _num)
    return out[:1] + ([stable] if stable else []) + out[1:]


# --------------------------------------------------------------------------- figures
def draw_figures(result: ComparisonResult, folder: Path) -> dict[str, list[Path]]:
    """KM by category per run (one panel grid, shared axes), unit scatter per pair, forest plot of differences."""
    import matplotlib

    matplotlib.use("Agg")

    drawn = {}
    for stem, draw in (("fig_km_by_run", _fig_km), ("fig_scatter", _fig_scatter), ("fig_forest", _fig_forest)):
        with figure_style():
            fig = draw(result)
            if fig is not None:
                drawn[stem] = save_figure(fig, folder / stem)
    return drawn


def _grid(n: int, height: float):
    import matplotlib.pyplot as plt

    cols = min(n, 3)
    rows = math.ceil(n / cols)
    # Fewer than three panels get a narrower figure, so one pair's panel stays roughly square.
    width = min(WIDTHS["two"], 2.3 * cols + 1.6)
    fig, axes = plt.subplots(rows, cols, figsize=(width, height * rows), layout="constrained",
                             sharex=True, sharey=True, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _categories(values) -> list[str]:
    return order_present(values, COARSE)


def _fig_km(result: ComparisonResult):
    km = result.tables.get("km_category")
    if km is None or km.empty:
        return None
    names = [r["name"] for r in result.runs if r["name"] in set(km["run"])]
    fig, axes = _grid(len(names), 2.3)
    for ax, name in zip(axes, names):
        # the report's Kaplan–Meier figure, one panel per run
        KaplanMeierDisplay.from_result(result, run=name).plot(ax=ax, band_alpha=0.15, median_line=False)
        info = next(r for r in result.runs if r["name"] == name)
        ax.set_title(f"{name}\n{info['model']}, {info['objective']}", fontsize=7)
        ax.set(xlim=(0, 1), ylim=(0, 1.02))
    for ax in axes[: len(names)]:
        ax.set_xlabel("deletion time (step / N)")
        ax.set_ylabel("share of tokens still kept")
        ax.tick_params(labelleft=True, labelbottom=True)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", title="category")
    return fig


def _fig_scatter(result: ComparisonResult):
    units = result.tables.get("units")
    if units is None or units.empty:
        return None
    pairs = result.pairs
    groups = _categories(units["category"].dropna().unique())
    colours = palette_for(groups)
    fig, axes = _grid(len(pairs), 2.4)
    rng = np.random.default_rng(0)
    for ax, pair in zip(axes, pairs):
        sub = units[(units["a"] == pair["a"]) & (units["b"] == pair["b"])].dropna(subset=["survival_a", "survival_b"])
        if len(sub) > 4000:
            sub = sub.iloc[rng.choice(len(sub), 4000, replace=False)]
        for group in groups:
            g = sub[sub["category"] == group]
            ax.scatter(g["survival_a"], g["survival_b"], s=6, alpha=0.6, color=colours[group], linewidths=0,
                       label=display_name(group))
        ax.plot([0, 1], [0, 1], color="#888888", linewidth=0.6, linestyle="--")
        tau = pair["kendall_tau"]["mean"]
        ax.set_title(f"{pair['a']} vs {pair['b']} ({pair['units']} units)\nmean τ = {_num(tau)}, "
                     f"n = {pair['n_chains']} chains", fontsize=7)
        ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel=f"survival in {pair['a']}", ylabel=f"survival in {pair['b']}")
        ax.tick_params(labelleft=True, labelbottom=True)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", title="category", markerscale=2)
    return fig


def _fig_forest(result: ComparisonResult):
    table = result.tables.get("category_differences")
    if table is None or table.empty:
        return None
    pairs = result.pairs
    groups = _categories(table["category"].unique())
    colours = palette_for(groups)
    fig, axes = _grid(len(pairs), 0.8 + 0.32 * len(groups))
    low_all = np.nanmin(np.r_[table["ci_low"].to_numpy(float), table["difference"].to_numpy(float), 0.0])
    high_all = np.nanmax(np.r_[table["ci_high"].to_numpy(float), table["difference"].to_numpy(float), 0.0])
    span = max(high_all - low_all, 0.05)
    for ax, pair in zip(axes, pairs):
        sub = table[(table["a"] == pair["a"]) & (table["b"] == pair["b"])].set_index("category")
        for y, group in enumerate(groups):
            if group not in sub.index:
                continue
            row = sub.loc[group]
            low = row["difference"] - row["ci_low"] if pd.notna(row["ci_low"]) else 0
            high = row["ci_high"] - row["difference"] if pd.notna(row["ci_high"]) else 0
            ax.errorbar(row["difference"], y, xerr=[[low], [high]], fmt="o", color=colours[group], markersize=3.5,
                        capsize=2, linewidth=1)
            # Inside the axes (right margin kept free below), so neighbouring panels never collide.
            ax.text(0.99, y, _fmt_p(row["p_holm"]).replace("p", "Holm p", 1), transform=ax.get_yaxis_transform(),
                    ha="right", va="center", fontsize=5.5, color="#444444")
        ax.axvline(0, color="#888888", linewidth=0.6, linestyle="--")
        ax.set_yticks(range(len(groups)), [display_name(g) for g in groups])
        ax.set_ylim(len(groups) - 0.5, -0.5)
        ax.set_xlim(low_all - 0.08 * span, high_all + 1.0 * span)
        ax.set_title(f"{pair['a']} − {pair['b']}\nn = {pair['n_chains']} chains", fontsize=7)
        ax.tick_params(labelleft=True, labelbottom=True)
    fig.supxlabel("difference in mean survival, a − b (95% chain-bootstrap CI)", fontsize=7)
    return fig


# --------------------------------------------------------------------------- HTML
def _summary_html(result: ComparisonResult) -> str:
    esc = html.escape
    runs = pd.DataFrame(result.runs)
    pairs = pd.DataFrame([{"a": p["a"], "b": p["b"], "chains": p["n_chains"], "units": p["units"],
                           "Kendall τ": _num(p["kendall_tau"]["mean"]),
                           "τ 95% CI": f"[{_num(p['kendall_tau']['ci_low'])}, {_num(p['kendall_tau']['ci_high'])}]",
                           "Spearman ρ": _num(p["spearman_rho"]["mean"]), **_stability_cells(p)} for p in result.pairs])
    items = "".join(f"<li>{esc(c)}</li>" for c in result.citations) or "<li>none</li>"
    notes = "".join(f"<li>{esc(n)}</li>" for n in result.notes)
    return (f'<div class="cs-comparison"><p><b>Runs</b></p>{runs.to_html(index=False, escape=True)}'
            f"<p><b>Agreement</b></p>{pairs.to_html(index=False, escape=True)}"
            f"<p><b>Category differences</b> (chain-level; Holm over categories)</p>"
            f"{result.to_frame().to_html(index=False, escape=True, float_format=lambda v: f'{v:.3g}')}"
            f"<p><b>Citations</b></p><ul>{items}</ul>" + (f"<p><b>Notes</b></p><ul>{notes}</ul>" if notes else "")
            + "</div>")


def _stability_cells(pair: dict) -> dict:
    """Own replicate τ of each side and the noise-corrected agreement (runs with --replicates)."""
    stability = pair.get("stability") or {}
    if not stability:
        return {}
    corrected = stability["noise_corrected"]
    return {"own τ a": _num(stability["own_tau_a"]["mean"]), "own τ b": _num(stability["own_tau_b"]["mean"]),
            "noise-corrected": f"{_num(corrected['ratio'])} [{_num(corrected['ci_low'])}, {_num(corrected['ci_high'])}]"}


def _page(result: ComparisonResult, folder: Path, drawn: dict[str, list[Path]]) -> str:
    esc = html.escape
    figures = []
    captions = {"fig_km_by_run": "Kaplan–Meier survival by category, one panel per run (shared axes; 95% log–log bands).",
                "fig_scatter": "Survival of each aligned unit in run a (x) against run b (y), coloured by category.",
                "fig_forest": "Per-category difference of mean survival (a − b) with 95% chain-bootstrap CIs; Holm-adjusted sign-flip p-values."}
    for stem, paths in drawn.items():
        png = next((p for p in paths if p.suffix == ".png"), None)
        if png is None:
            continue
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        figures.append(f'<figure><img alt="{esc(stem, quote=True)}" src="data:image/png;base64,{data}" style="max-width:100%">'
                       f"<figcaption>{esc(captions.get(stem, stem))} "
                       f'<a href="{esc(stem, quote=True)}.pdf">PDF</a></figcaption></figure>')
    tables = []
    for name in ("category_survival", "category_differences", "agreement_per_chain", "movers", "chain_matching", "recovery"):
        table = result.tables.get(name)
        if table is None or table.empty:
            continue
        tables.append(f"<h3>{esc(name)}</h3>" + table.to_html(index=False, escape=True, float_format=lambda v: f"{v:.3g}")
                      + f'<p><a href="{esc(name, quote=True)}.csv">CSV</a></p>')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Comparison: {esc(' vs '.join(r['name'] for r in result.runs))}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}}
table{{border-collapse:collapse;font-size:.85rem}}td,th{{border-bottom:1px solid #ddd;padding:.2rem .5rem;text-align:left}}
li{{margin:.3rem 0}}figure{{margin:1.5rem 0}}</style></head><body>
<h1>Comparison: {esc(' vs '.join(r['name'] for r in result.runs))}</h1>
<p>Alignment: {esc(UNIT_RULE)}; same-tokenizer pairs compare token by token, others on {esc(WORD_UNITS)}.
Machine-readable: <a href="comparison.json">comparison.json</a>; sentences: <a href="citations.md">citations.md</a>.</p>
{_summary_html(result)}
<h2>Figures</h2>
{''.join(figures) or '<p>none</p>'}
<h2>Tables</h2>
{''.join(tables)}
</body></html>
"""
