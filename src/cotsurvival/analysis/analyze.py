"""``analyze``: every statistic of a run, written to ``RUN/stats/``.

Each section runs on its own; a section that the data cannot support (one category, no
events, no baselines, no traces, no attention, ...) leaves a sentence in ``notes_`` instead
of failing the whole analysis.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from . import attention as attn
from . import dynamics as dyn
from . import survival as surv
from . import chainlevel
from ..errors import CotSurvivalError
from ..outputs import check_output, run_inputs
from ..results import read_json, to_jsonable, write_json, write_table
from ..rundir import RunDir
from ..taxonomy.spec import LEVELS as TAXONOMY_LEVELS
from .citations import citations, fmt_p, write_citations
from .stability import replicate_mean, run_stability
from .data import as_rundir, baseline_orderings, load_run, orderings_long
from .inference import holm, mean_ci, paired_sign_flip_test, sign_flip_ci, smallest_p

LEVELS = tuple(TAXONOMY_LEVELS)  # label columns analysed by default: both levels of the taxonomy
# Tables too long for Markdown/LaTeX are written as CSV only.
CSV_ONLY = ("km_", "rank_shift_tokens", "attention_per_chain")


@dataclass
class AnalysisResult:
    """Everything :func:`analyze` computed.

    Attributes
    ----------
    run : Path
        The run directory.
    config : dict
        Settings used (``n_boot``, ``seed``, ``primary``, ``min_chains``, ``min_tokens`` ...).
    counts_ : dict
        ``n_tokens, n_chains, n_censored, full_ranking, keep_ratio, categories, labels, orderings``.
    tables_ : dict of str to DataFrame
        Named result tables (``km_category``, ``summary_category``, ``cox_category`` ...).
    tests_ : dict of str to dict
        Named scalar tests (``logrank_category``, ``kruskal_category``, ``tau`` ...), each with
        ``n_tokens`` and ``n_chains``, or a ``note`` saying why it was not computed.
    notes_ : list of str
        Why something was skipped or should be read with care.
    citations_ : list of str
        One sentence per finding, wording following significance; the first is the primary result.
    primary_ : dict
        The pre-specified primary test (:func:`~cotsurvival.analysis.chain_level_test`): the
        chain-level, position-adjusted contrast of ``config["primary"]`` against the rest of the chain,
        with ``power`` (chains needed for 80% power at a 0.1 difference).
    """

    run: Path
    config: dict
    counts_: dict = field(default_factory=dict)
    tables_: dict[str, pd.DataFrame] = field(default_factory=dict)
    tests_: dict[str, dict] = field(default_factory=dict)
    notes_: list[str] = field(default_factory=list)
    citations_: list[str] = field(default_factory=list)
    primary_: dict = field(default_factory=dict)
    stability_: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Machine-readable form (the content of ``stats.json``): NaN becomes null."""
        return to_jsonable({
            "run": str(self.run), "config": self.config, "counts": self.counts_, "primary": self.primary_,
            "tests": self.tests_,
            "tables": {name: table.to_dict(orient="records") for name, table in self.tables_.items()},
            "table_notes": {name: table.attrs.get("notes", []) for name, table in self.tables_.items()
                            if table.attrs.get("notes")},
            "notes": self.notes_, "citations": self.citations_, "stability": self.stability_,
        })

    def _repr_html_(self) -> str:
        """Jupyter: counts, the primary (chain-level) test and the citations; all text escaped."""

        counts = self.counts_
        rows = [("run", self.run), ("model", counts.get("model")), ("objective", counts.get("objective")),
                ("chains", counts.get("n_chains")), ("tokens", counts.get("n_tokens")),
                ("labels", self.config.get("labels_source")),
                ("censored tokens", counts.get("n_censored")),
                ("ranking", "full" if counts.get("full_ranking") else f"stopped at keep ratio {counts.get('keep_ratio')}"),
                ("categories", ", ".join(f"{k}: {v:,}" for k, v in (counts.get("categories") or {}).items()) or "not tagged"),
                ("baseline orderings", ", ".join(counts.get("orderings") or []) or "none"),
                ("tables", len(self.tables_))]
        info = "".join(f"<tr><th style=\"text-align:left\">{escape(k)}</th><td style=\"text-align:left\">"
                       f"{escape(f'{v:,}' if isinstance(v, int) and not isinstance(v, bool) else str(v))}</td></tr>"
                       for k, v in rows if v is not None)
        primary = self.primary_
        if not primary:
            main = "not computed"
        elif "p_value" in primary:
            main = (f"{primary['contrast']}: difference in mean normalized survival {primary['estimate']:+.3f} "
                    f"[95% CI {primary['ci_low']:+.3f}, {primary['ci_high']:+.3f}], {fmt_p(primary['p_value'])} "
                    f"({primary['n_chains']:,} chains, {primary['n_tokens']:,} tokens)"
                    + (f"; withheld: {primary['withheld']}" if "withheld" in primary else ""))
        else:
            main = f"not computed: {primary.get('note', '')}"
        items = "".join(f"<li>{escape(str(c))}</li>" for c in self.citations_) or "<li>none</li>"
        stale = self.stale()
        warning = (f'<p class="cs-stale"><b>Stale:</b> the run changed since these statistics were computed '
                   f"({escape(stale)}); re-run <code>cotsurvival analyze {escape(str(self.run))}</code>.</p>"
                   if stale else "")
        return (warning + f'<div class="cs-analysis"><table class="cs-analysis-counts">{info}</table>'
                f"<p><b>Primary (chain-level) test:</b> {escape(main)}</p>"
                f"<p><b>Citations</b> ({len(self.citations_)})</p><ul class=\"cs-citations\">{items}</ul></div>")

    def stale(self) -> str | None:
        """Why the run changed since these statistics were computed (``counts_["fingerprint"]``), or ``None``."""
        from ..provenance import stale_reason

        if not RunDir(self.run).exists():
            return None
        return stale_reason(self.counts_.get("fingerprint"), self.run, (self.config or {}).get("labels_source"))

    def to_frame(self) -> pd.DataFrame:
        """The scalar tests, one row each (``test`` and its fields; NaN where a field does not apply)."""
        # a test's own "test" field (the method's name) becomes "method", so it cannot overwrite the name
        rows = [{"test": name, **{("method" if k == "test" else k): v for k, v in fields.items()
                                  if not isinstance(v, (dict, list))}}
                for name, fields in self.tests_.items()]
        return pd.DataFrame(rows)

    def save(self, out: str | os.PathLike | None = None) -> Path:
        """Write ``stats.json`` (atomically), tables as CSV/Markdown/LaTeX, and ``citations.md`` to ``out``.

        Returns
        -------
        Path
            The folder written (default ``RUN/stats``); :meth:`load` reads it back.
        """
        folder = Path(out) if out is not None else RunDir(self.run).stats_dir
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "stats.json", self.to_dict())
        for name, table in self.tables_.items():
            write_table(folder, name, table, formats=("csv",) if name.startswith(CSV_ONLY) else ("csv", "md", "tex"))
        write_citations(folder / "citations.md", self)
        return folder

    @classmethod
    def load(cls, run: str | os.PathLike | RunDir, stats: str | os.PathLike | None = None) -> "AnalysisResult":
        """Read back what :meth:`save` wrote (``stats.json``), so reports show the stored numbers.

        Tables are rebuilt from ``stats.json`` (not the CSVs), so every figure and table reads the
        same file. Top-level keys this class has no field for (e.g. ``primary``) are kept as
        attributes with a trailing underscore (``result.primary_``).

        Parameters
        ----------
        run : str, PathLike or RunDir
            The run directory, or a folder :meth:`save` wrote (it holds ``stats.json``; its run is
            the one recorded there).
        stats : str or PathLike, optional
            The folder holding ``stats.json`` (default ``RUN/stats``).

        Returns
        -------
        AnalysisResult

        Raises
        ------
        CotSurvivalError
            E012 when the run has no ``stats.json`` yet, E056 when it cannot be read.
        """
        if stats is None and not isinstance(run, RunDir) and (Path(run) / "stats.json").is_file() \
                and not (Path(run) / "manifest.json").is_file():
            return cls._from_stats_json(Path(run) / "stats.json", run_path=None)
        run = as_rundir(run)
        path = (Path(stats) if stats is not None else run.stats_dir) / "stats.json"
        return cls._from_stats_json(path, run_path=run.path)

    @classmethod
    def _from_stats_json(cls, path: Path, run_path: Path | None) -> "AnalysisResult":
        shown_run = run_path if run_path is not None else path.parent
        if not path.is_file():
            raise CotSurvivalError("E012", path=shown_run, what="statistics (stats/stats.json)",
                                   command=f"cotsurvival analyze {shown_run}")
        try:
            data = read_json(path)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CotSurvivalError("E056", path=path, reason=" ".join(str(exc).split())[:200], run=shown_run) from None
        if not isinstance(data, dict):
            raise CotSurvivalError("E056", path=path, reason="not a JSON object", run=shown_run)
        run = run_path if run_path is not None else Path(data.get("run") or path.parent)
        result = cls(run=run, config=data.get("config") or {})
        result.counts_ = data.get("counts") or {}
        result.tests_ = data.get("tests") or {}
        result.notes_ = list(data.get("notes") or [])
        result.citations_ = list(data.get("citations") or [])
        table_notes = data.get("table_notes") or {}
        for name, records in (data.get("tables") or {}).items():
            table = pd.DataFrame.from_records(records) if records else pd.DataFrame()
            for column in table.columns[table.isna().all().to_numpy()]:
                table[column] = table[column].astype(float)  # a column of nulls was NaN when saved
            if name in table_notes:
                table.attrs["notes"] = list(table_notes[name])
            result.tables_[name] = table
        known = {"run", "config", "counts", "tests", "tables", "table_notes", "notes", "citations"}
        for key, value in data.items():
            if key not in known and key.isidentifier():
                setattr(result, f"{key}_", value)
        return result


def analyze(
    run: str | os.PathLike | RunDir,
    out: str | os.PathLike | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    mixed: bool | None = None,
    levels: tuple[str, ...] = LEVELS,
    reference: str | None = None,
    probe_alpha: float = 1.0,
    n_folds: int = 5,
    categories: list[str] | None = None,
    save: bool = True,
    labels: str = "rule",
    primary: str = chainlevel.DEFAULT_PRIMARY,
    min_chains: int = chainlevel.MIN_CHAINS,
    min_tokens: int = chainlevel.MIN_TOKENS,
) -> AnalysisResult:
    """Run every analysis of a run directory and (by default) write ``RUN/stats/``.

    Parameters
    ----------
    run : str, PathLike or RunDir
    out : str or PathLike, optional
        Output folder (default ``RUN/stats``).
    n_boot : int, default 1000
        Chain-bootstrap resamples for the median/mean CIs (0 = no CIs).
    seed : int, default 0
        Seed of the bootstrap and of the probe's folds.
    mixed : None
        Ignored (kept so old calls work): the linear mixed model was dropped, its random intercept is
        degenerate by construction (every chain's normalized survival averages (N+1)/2N).
    levels : tuple of str
        Label columns to analyse: ``category`` (coarse) and/or ``label`` (fine).
    reference : str, optional
        Reference category of the Cox model (default the largest).
    probe_alpha, n_folds : float, int
        Ridge penalty and number of chain-grouped folds of the attention probe.
    categories : list of str, optional
        Categories the taxonomy defines (default ``manifest["taxonomy"]["categories"]`` when
        recorded); any with no tokens is named in the notes.
    save : bool, default True
        Write the outputs.
    labels : str, default "rule"
        Label source (``"rule"``, ``"judge"``, ``"judge:MODEL"``; see :func:`load_run`); recorded
        as ``config["labels_source"]`` in stats.json.
    primary : str, default "symbolic_math"
        The pre-specified primary contrast: this category against the rest of each chain, tested at
        the chain level with position adjustment (:func:`~cotsurvival.analysis.chain_level_test`).
        It is ``stats.json["primary"]`` and the first sentence of ``citations.md``.
    min_chains, min_tokens : int, default 6 and 20
        Minimum support: a comparison resting on fewer chains or tokens is computed and stored but
        not cited (a note says what was withheld).

    Returns
    -------
    AnalysisResult
    """
    run = as_rundir(run)
    if out is not None and save:  # any folder but one of the run's own tables (RUN/stats is analyze's)
        check_output(out, inputs=[i for i in run_inputs(run.path) if i[0].name != "stats"], overwrite=True,
                     command="analyze", folder=True)
    from ..provenance import fingerprint

    state = fingerprint(run)  # taken before reading: what these numbers were computed from
    manifest = run.read_manifest()
    from ..options import check_contrast, check_positive

    if primary != chainlevel.DEFAULT_PRIMARY:  # the default may be absent from a custom taxonomy: a note then
        check_contrast("--primary", primary, manifest)  # a typo is an error before any work, not a note after it
    if reference is not None:
        check_contrast("--reference", reference, manifest)
    check_positive("--n-boot", n_boot, allow_zero=True)
    check_positive("--min-chains", min_chains, allow_zero=True)
    check_positive("--min-tokens", min_tokens, allow_zero=True)
    table = load_run(run, labels=labels, require_tags=False)
    config = {"labels_source": table.attrs.get("labels_source"),
              "n_boot": n_boot, "seed": seed, "primary": primary, "min_chains": min_chains,
              "min_tokens": min_tokens, "levels": list(levels), "reference": reference,
              "probe_alpha": probe_alpha, "n_folds": n_folds,
              "expected_categories": categories or ((manifest.get("taxonomy") or {}).get("categories"))}
    result = AnalysisResult(run=run.path, config=config)
    result.counts_ = _counts(table, manifest)
    result.counts_["fingerprint"] = state
    _note_degenerate(table, result)
    from ..quiet import captured_stderr, summarise

    with captured_stderr() as noise:  # LAPACK and friends write to fd 2 directly: summarised in a note instead
        _sections(result, run, table, levels, n_boot, seed, reference, primary, min_chains, min_tokens,
                  probe_alpha, n_folds)
    if summarise(noise):
        result.notes_.append(summarise(noise))
    result.notes_ = list(dict.fromkeys(result.notes_))

    result.citations_ = citations(result)
    _onpolicy(result, run, labels, seed, min_chains)
    if save:
        result.save(out)
    return result


def _sections(result, run, table, levels, n_boot, seed, reference, primary, min_chains, min_tokens,
              probe_alpha, n_folds) -> None:
    """Every section of the analysis, each leaving a note instead of failing the whole."""
    tagged = table["category"].notna().any()
    if not tagged:
        result.notes_.append(f"Tokens are not tagged, so no category statistics: run `cotsurvival tag {run.path}`.")
    # One-token chains carry no ranking (their token is always deleted at normalized time 1).
    ranked = table[table["n_tokens"] > 1]
    if tagged and ranked.empty:
        result.notes_.append("No chain has 2 or more reasoning tokens: no survival comparison is possible.")
    if tagged and not ranked.empty:  # on replicate-averaged survival when the run has replicates
        _primary(result, replicate_mean(ranked.dropna(subset=["category"])), primary, min_chains, min_tokens, seed)
    result.stability_ = run_stability(run, table, result, n_boot, seed, min_chains=min_chains, min_tokens=min_tokens,
                                      test=chainlevel.chain_level_test)
    for level in levels if tagged and not ranked.empty else ():
        _by_group(result, ranked.dropna(subset=[level]), level, n_boot, seed,
                  reference if level == "category" else None)
    if tagged and not ranked.empty:
        _orderings(result, ranked, primary)
    _dynamics(result, run, table)
    _attention(result, table, probe_alpha, n_folds, seed)


def power(run_or_table, delta: float = 0.1, **options) -> dict:
    """Chains needed to detect ``delta`` in the primary contrast (:func:`cotsurvival.analysis.chainlevel.power`),
    from a run directory (read with :func:`load_run`) or a token table.

    The run is loaded here, above the chain-level statistics, so that module never reads run
    directories (the statistics layer depends on the data loader, not the other way round).
    """
    table = run_or_table if isinstance(run_or_table, pd.DataFrame) or options.get("sd") is not None \
        else load_run(run_or_table)
    return chainlevel.power(table, delta, **options)


# --------------------------------------------------------------------------- sections
def _onpolicy(result, run, labels, seed, min_chains) -> None:
    """On-policy importance beside greedy survival, when ``cotsurvival resample`` has run (analysis/onpolicy.py)."""
    if not run.part_indices("resample"):
        return
    from .onpolicy import MEASURES, OnPolicyResult

    onpolicy = OnPolicyResult.from_run(run, labels=labels, min_chains=min_chains, seed=seed)
    result.tables_["onpolicy_units"] = onpolicy.importance().drop(columns=["text"])
    result.tables_["onpolicy_replacements"] = onpolicy.replacements()
    result.tables_["onpolicy_by_category"] = onpolicy.by_category()
    result.tables_["onpolicy_agreement"] = pd.DataFrame(
        [{k: v for k, v in onpolicy.agreement(m).items() if k != "per_chain"} for m in MEASURES])
    result.tables_["onpolicy_regeneration"] = onpolicy.regeneration()
    result.citations_ += [s.replace("Note: ", "Note (on-policy): ", 1) for s in onpolicy.citations()]


def _primary(result, table, primary, min_chains, min_tokens, seed) -> None:
    """The pre-specified primary test, then every category against the rest (Holm across them)."""
    try:
        test = chainlevel.chain_level_test(table, "category", primary, min_chains=min_chains,
                                           min_tokens=min_tokens, seed=seed, sensitivity=True)
    except CotSurvivalError as exc:
        result.primary_ = {"note": exc.message, "contrast": f"{primary} vs the rest of the chain"}
        result.notes_.append(f"primary: {exc.message}")
    else:
        result.tables_["primary_per_chain"] = pd.DataFrame(test.pop("per_chain"))
        sd = test["sd_between_chains"]
        if isinstance(sd, float) and math.isfinite(sd) and sd > 0:
            power = chainlevel.power(None, 0.1, contrast=primary, sd=sd, n_chains=test["n_chains"])
            test["power"] = {k: power[k] for k in ("delta", "power", "alpha", "n_chains_needed", "power_at_observed",
                                                   "method")}
        if "withheld" in test:
            result.notes_.append(f"primary: not cited, {test['withheld']}")
        result.primary_ = test
    rows, values = [], {}
    for name in sorted(map(str, table["category"].unique())):
        try:
            row = chainlevel.chain_level_test(table, "category", name, min_chains=min_chains, min_tokens=min_tokens,
                                              seed=seed)
        except CotSurvivalError:
            continue
        values[name] = pd.DataFrame(row.pop("per_chain"))[f"contrast_{name}"].dropna().to_numpy(float)
        rows.append({"group": name, **{k: row[k] for k in (
            "estimate", "ci_low", "ci_high", "p_value", "p_floor", "n_chains", "n_tokens", "n_target_tokens",
            "cliffs_delta", "test")}, "withheld": row.get("withheld", "")})
    if rows:
        frame = pd.DataFrame(rows)
        cited = frame["withheld"] == ""
        frame.insert(5, "p_holm", np.nan)
        frame.loc[cited, "p_holm"] = holm(frame.loc[cited, "p_value"])
        # The family is cited with Bonferroni p-values and the simultaneous intervals (level 1 - 0.05/m)
        # that invert them, so that no category is called "not significant" beside an interval excluding 0.
        m = int(cited.sum())
        frame.insert(6, "p_bonferroni", np.nan)
        frame.loc[cited, "p_bonferroni"] = np.minimum(1.0, frame.loc[cited, "p_value"] * m)
        for i in frame.index[cited]:
            low, high = sign_flip_ci(values[frame.at[i, "group"]], alpha=0.05 / m, seed=seed)
            frame.loc[i, ["ci_low", "ci_high"]] = [low, high]
        frame["ci_method"] = np.where(cited, f"sign-flip inversion, simultaneous over {m} (Bonferroni)",
                                      "sign-flip inversion, 95%")
        result.tables_["chain_level_category"] = frame
        for row in frame[~cited].itertuples():
            result.notes_.append(f"chain_level_category: not cited, {row.withheld}")


def _run(result: AnalysisResult, name: str, func: Callable, *args, **kwargs) -> Any:
    """Run one statistic; a reason it cannot be computed goes to ``notes_`` and ``tests_[name]``."""
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("always", ConvergenceWarning)
            value = func(*args, **kwargs)
        for message in sorted({str(w.message).split(chr(10))[0] for w in caught
                               if issubclass(w.category, ConvergenceWarning)}):
            result.notes_.append(f"{name}: {message}")
    except CotSurvivalError as exc:
        note = exc.message
    except (np.linalg.LinAlgError, ValueError, FloatingPointError, ZeroDivisionError) as exc:
        note = f"could not be computed ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
    else:
        if isinstance(value, pd.DataFrame):
            result.tables_[name] = value
            result.notes_.extend(f"{name}: {n}" for n in value.attrs.get("notes", []))
        elif isinstance(value, dict):
            result.tests_[name] = value
            if "note" in value:
                result.notes_.append(f"{name}: {value['note']}")
        return value
    result.tests_[name] = {"note": note}
    result.notes_.append(f"{name}: {note}")
    return None


def _by_group(result, table, level, n_boot, seed, reference) -> None:
    full = not table["censored"].any()
    result.tables_[f"km_{level}"] = surv.kaplan_meier(table, group=level)
    _run(result, f"logrank_{level}", surv.logrank_test, table, level)
    _run(result, f"logrank_pairwise_{level}", surv.pairwise_logrank, table, level)
    cox = _run(result, f"cox_{level}", surv.cox_ph, table, level, reference=reference)
    if cox is not None:
        result.tests_.setdefault("cox_reference", {})[level] = cox.attrs.get("reference")
        if cox.attrs.get("joint"):
            result.tests_[f"cox_joint_{level}"] = {**cox.attrs["joint"], "se_method": cox.attrs["se_method"],
                                                   "n_tokens": int(cox["n_tokens"].iloc[0]),
                                                   "n_chains": int(cox["n_chains"].iloc[0])}
    _run(result, f"ph_test_{level}", surv.ph_test, table, level, reference=reference)
    _run(result, f"summary_{level}", surv.survival_summary, table, level, n_boot=n_boot, seed=seed)
    if not full:
        result.notes_.append(
            f"{level}: the run stopped before every token was deleted (censored survivors), so the rank tests "
            "(Kruskal-Wallis, Mann-Whitney) are skipped; log-rank and Cox handle censoring.")
        return
    _run(result, f"kruskal_{level}", surv.kruskal_test, table, level)
    _run(result, f"mannwhitney_{level}", surv.pairwise_mannwhitney, table, level)


def _orderings(result, table, primary) -> None:
    names = baseline_orderings(table)
    if not names:
        result.notes_.append("No baseline orderings in the run (prune with --baselines), so no comparison with "
                             "random/surprisal/leave-one-out/attention orderings.")
        return
    long = orderings_long(table).dropna(subset=["category"])
    _run(result, "orderings_category", surv.ordering_effects, long, "category")
    _run(result, "ordering_interaction", surv.ordering_interaction, long, "category")
    _run(result, "orderings_chain_level", _orderings_chain_level, long, primary, names,
         int(result.config.get("min_chains", chainlevel.MIN_CHAINS)))
    if long["censored"].any():
        result.notes_.append("orderings_category: medians, Cliff's deltas and Kruskal-Wallis treat censored "
                             "survivors as tied at the run's end.")


def _orderings_chain_level(long: pd.DataFrame, primary: str, names: list[str],
                           min_chains: int = chainlevel.MIN_CHAINS) -> pd.DataFrame:
    """Greedy vs each baseline ordering: paired chain-level test of the primary contrast.

    Per chain, the position-adjusted contrast of ``primary`` vs the rest under greedy minus the same
    contrast under the baseline, tested with a paired sign flip over chains (Holm across baselines).
    For the random ordering the stored single draw is not used: under a uniformly random deletion
    order every token's survival has the same expectation, so the expected per-chain contrast is
    exactly 0 (the regression coefficient is unbiased), and greedy is compared with that expectation.
    """
    greedy = chainlevel.chain_contrasts(long[long["ordering"] == "greedy"], primary).set_index("chain_index")
    column = f"contrast_{primary}"
    rows, diffs = [], []
    for name in names:
        if name == "random":
            base = greedy[[column]] * 0.0
            how = "expected contrast under a uniformly random order (exactly 0), not the one stored draw"
        else:
            base = chainlevel.chain_contrasts(long[long["ordering"] == name], primary).set_index("chain_index")
            how = "per-chain contrast under the stored baseline order"
        both = greedy[[column]].join(base[[column]], rsuffix="_base", how="inner").dropna()
        test = paired_sign_flip_test(both[column], both[f"{column}_base"])
        diffs.append((both[column] - both[f"{column}_base"]).to_numpy(float))
        rows.append({"ordering": name, "contrast": f"{primary} vs rest, greedy minus {name}",
                     "estimate": test["estimate"], "ci_low": test["ci_low"], "ci_high": test["ci_high"],
                     "p_value": test["p_value"], "n_chains": test["n_chains"],
                     "baseline_mean_contrast": float(both[f"{column}_base"].mean()) if len(both) else np.nan,
                     "baseline": how, "test": "paired " + test["test"]})
    frame = pd.DataFrame(rows)
    frame.insert(5, "p_holm", holm(frame["p_value"]))
    # Cited family (citations.py): the non-random orderings with enough chains, Bonferroni-adjusted with
    # simultaneous sign-flip intervals; greedy vs random repeats the primary test and is not in it.
    family = (frame["ordering"] != "random") & (frame["n_chains"] >= min_chains)
    m = max(int(family.sum()), 1)
    frame["p_floor"] = [smallest_p(int(n)) for n in frame["n_chains"]]
    for i in frame.index:
        low, high = sign_flip_ci(diffs[i], alpha=0.05 / (m if family[i] else 1))
        frame.loc[i, ["ci_low", "ci_high"]] = [low, high]
    return frame


def _dynamics(result, run, table) -> None:
    try:
        per_token, per_chain = dyn.static_vs_greedy(run, table)
    except CotSurvivalError as exc:
        result.notes_.append(f"dynamics: {exc.message}")
        result.tests_["tau"] = {"note": exc.message}
    else:
        result.tables_["tau_per_chain"] = per_chain
        tau = mean_ci(per_chain["kendall_tau"])
        result.tests_["tau"] = {**tau, "n_chains": tau["n"], "n_tokens": int(per_chain["n_tokens"].sum())}
        if tau["n"] == 0:
            result.notes_.append("tau: no chain has 3 or more tokens with varying costs; Kendall's tau undefined.")
        if per_token["category"].notna().any():
            shift, test = dyn.rank_shift_by_group(per_token, "category")
            result.tables_["rank_shift_category"] = shift
            _run(result, "rank_shift_test", lambda: test)
            rescue, rtest = dyn.bottom_quartile_rescue(per_token, "category")
            result.tables_["rescue_category"] = rescue
            _run(result, "rescue_test", lambda: rtest)
        # The chain is the unit: each chain's mean absolute shift, then a t-interval over chains.
        shifted = per_token.dropna(subset=["rank_shift"])
        per_chain_shift = shifted.assign(abs_shift=shifted["rank_shift"].abs()).groupby("chain_index")["abs_shift"].mean()
        result.tests_["rank_shift_overall"] = {
            **mean_ci(per_chain_shift), "n_tokens": int(len(shifted)), "n_chains": int(len(per_chain_shift)),
            "unit": "chain (mean absolute shift per chain)"}
    try:
        _, pooled = dyn.degradation_curves(run)
    except CotSurvivalError as exc:
        result.notes_.append(f"degradation: {exc.message}")
    else:
        result.tables_["degradation"] = pooled


def _attention(result, table, alpha, n_folds, seed) -> None:
    if not attn.feature_columns(table):
        result.notes_.append(f"No attention features: run `cotsurvival attention {result.run}` for the "
                             "attention and surprisal predictor analysis.")
        return
    try:
        predictors = attn.attention_predictors(table, alpha=alpha, n_folds=n_folds, seed=seed)
    except (CotSurvivalError, np.linalg.LinAlgError, ValueError) as exc:
        result.notes_.append(f"attention: {getattr(exc, 'message', str(exc))}")
        return
    result.tables_["attention_correlations"] = predictors.pop("correlations")
    for name, value in predictors.items():
        result.tests_[f"attention_{name}"] = value
        if isinstance(value, dict) and "note" in value:
            result.notes_.append(f"attention_{name}: {value['note']}")


# --------------------------------------------------------------------------- helpers
def _counts(table: pd.DataFrame, manifest: dict) -> dict:
    return {"n_tokens": int(len(table)), "n_chains": int(table["chain_index"].nunique()),
            "n_censored": int(table["censored"].sum()), "full_ranking": bool(not table["censored"].any()),
            "keep_ratio": manifest.get("keep_ratio"), "model": (manifest.get("model") or {}).get("spec"),
            "objective": manifest.get("objective"),
            "categories": {str(k): int(v) for k, v in table["category"].value_counts().sort_index().items()},
            "labels": {str(k): int(v) for k, v in table["label"].value_counts().sort_index().items()},
            "orderings": baseline_orderings(table)}


def _note_degenerate(table: pd.DataFrame, result: AnalysisResult) -> None:
    if table["censored"].all():
        result.notes_.append("Every token is censored (no deletions): survival tests have no events.")
    singles = table.loc[table["n_tokens"] == 1, "chain_index"].nunique()
    if singles:
        result.notes_.append(f"{singles} chain(s) have a single reasoning token: they carry no ranking information "
                             "(rel_position 0, survival 1) and are left out of the category statistics.")
    if table["category"].nunique() == 1:
        result.notes_.append(f"Only one category ({table['category'].dropna().iloc[0]}): no between-category comparison.")
    taxonomy = result.config.get("expected_categories")
    for name in taxonomy or ():
        if name not in result.counts_["categories"]:
            result.notes_.append(f"Category {name!r} has no tokens in this run.")
