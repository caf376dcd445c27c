"""Answer recovery: does a pruned chain still lead the model to the answer?

For every committed chain of a run, every ordering (``greedy`` and the run's baselines) and
every keep ratio R, the pruned chain keeps the reasoning tokens the ordering has not deleted
after ``N − floor(N·R)`` steps (the same rule as ``prune --keep-ratio`` and ``export``; R = 1
is the unpruned chain). The sequence is built exactly as the engine builds it, from the run's
own token ids (``prefix_ids ⊕ kept reasoning ids ⊕ answer_ids``, the model's chat template
already in the prefix), and two things are measured:

* ``answer_logprob``: the teacher-forced ``Σ log p(answer_ids | everything before)``, the
  pruning objective's answer term (nats; at R = 1 it equals ``steps.parquet`` step 0 of a run
  pruned with ``--objective answer``);
* ``correct``: greedy decoding from ``prefix ⊕ kept ⊕ cue``, where the cue is the answer's
  tokens before its value (``\\n####`` for GSM8K's ``#### 18``; the separator newline alone for a
  bare ``18``), for at most ``max_new_tokens`` tokens, stopping at the end of the answer line or
  an end-of-sequence token. The decoded answer line is checked against the chain's answer with
  the project's verifier (:func:`cotsurvival.generation.verify.answers_match`, on the values
  after ``####`` / inside ``\\boxed{}``).

Results go to ``RUN/recovery.parquet/`` (one part per chain, written atomically). A chain whose
part already holds every asked (ordering, keep ratio) with the same settings is skipped, so an
interrupted call resumes. The chain is the unit of inference: accuracy and mean log P(answer)
per ordering and keep ratio carry chain-bootstrap intervals, and greedy is compared with each
baseline by a paired sign-flip test over chains (:mod:`cotsurvival.analysis.inference`).
"""
from __future__ import annotations

import hashlib
import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .encoding import ANSWER_SEPARATOR
from .errors import CotSurvivalError
from .generation.generate import _stop_token_ids
from .generation.questions import gold_from_answer
from .generation.verify import NO_FINAL_ANSWER, answers_match, final_answer
from .outputs import check_output, is_recovery_folder, run_inputs
from .progress import make_bar
from .pruning.engine import n_deletions
from .registry import view
from .results import read_json, to_jsonable, write_json, write_table, write_text
from .rundir import RunDir, atomic_write_parquet

DEFAULT_KEEP_RATIOS = (0.9, 0.7, 0.5, 0.3)
TABLE = "recovery.parquet"
COLUMNS = ["chain_index", "chain_id", "ordering", "keep_ratio", "n_tokens", "n_kept", "answer_logprob",
           "answer_tokens", "predicted", "correct", "settings", "excluded"]


# ---------------------------------------------------------------------------------------- result

@dataclass
class RecoveryResult:
    """Per-chain recovery rows and their chain-level summaries.

    Attributes
    ----------
    frame : pandas.DataFrame
        One row per (chain, ordering, keep ratio); columns ``COLUMNS``.
    run : str
        The run directory the rows came from.
    n_boot, seed : int
        Chain-bootstrap resamples and seed for the intervals.
    """

    frame: pd.DataFrame
    run: str = ""
    n_boot: int = 2000
    seed: int = 0
    _cache: dict = field(default_factory=dict, repr=False)
    #: What :func:`recover` wrote with ``out=`` (name -> path); empty otherwise.
    files: dict = field(default_factory=dict, repr=False)

    # ---------------------------------------------------------------- tables
    def to_frame(self) -> pd.DataFrame:
        """The per-chain rows (a copy)."""
        return self.frame.copy()

    @property
    def orderings(self) -> list[str]:
        names = list(dict.fromkeys(self.frame["ordering"]))
        return sorted(names, key=lambda o: (o != "greedy", names.index(o)))

    @property
    def keep_ratios(self) -> list[float]:
        return sorted(set(self.frame["keep_ratio"].astype(float)), reverse=True)

    @property
    def n_chains(self) -> int:
        return int(self.frame["chain_index"].nunique())

    @property
    def scored(self) -> pd.DataFrame:
        """The rows that are scored: all but those flagged ``excluded`` (answer without a final answer)."""
        if "excluded" not in self.frame:
            return self.frame
        return self.frame[self.frame["excluded"].fillna("") == ""]

    def exclusions(self) -> dict[str, dict]:
        """Per reason a chain was left out of the scores: ``{reason: {"n_chains", "chain_ids"}}``."""
        if "excluded" not in self.frame:
            return {}
        out: dict[str, dict] = {}
        flagged = self.frame[self.frame["excluded"].fillna("") != ""]
        for reason, rows in flagged.groupby("excluded", sort=True):
            ids = list(dict.fromkeys(rows["chain_id"].astype(str)))
            out[str(reason)] = {"n_chains": len(ids), "chain_ids": ids}
        return out

    def summary(self) -> pd.DataFrame:
        """Accuracy and mean log P(answer) per ordering and keep ratio, with chain-bootstrap 95% CIs."""
        if "summary" not in self._cache:
            from .analysis.inference import bootstrap_ci

            rows = []
            for ordering in self.orderings:
                for ratio in self.keep_ratios:
                    sub = self.scored[(self.scored["ordering"] == ordering) & (self.scored["keep_ratio"] == ratio)]
                    if sub.empty:
                        continue
                    acc = bootstrap_ci(sub["correct"].astype(float), n_resamples=self.n_boot, seed=self.seed)
                    lp = bootstrap_ci(sub["answer_logprob"], n_resamples=self.n_boot, seed=self.seed)
                    rows.append({"ordering": ordering, "keep_ratio": ratio, "n_chains": acc["n_chains"],
                                 "mean_kept_fraction": float((sub["n_kept"] / sub["n_tokens"]).mean()),
                                 "accuracy": acc["estimate"], "accuracy_ci_low": acc["ci_low"],
                                 "accuracy_ci_high": acc["ci_high"], "answer_logprob": lp["estimate"],
                                 "answer_logprob_ci_low": lp["ci_low"], "answer_logprob_ci_high": lp["ci_high"]})
            self._cache["summary"] = pd.DataFrame(rows)
        return self._cache["summary"]

    def tests(self) -> pd.DataFrame:
        """Paired chain-level tests, greedy minus each baseline, per keep ratio below 1.

        ``metric`` is ``correct`` (difference in the share of chains recovered) or
        ``answer_logprob`` (nats); ``p_value`` is the sign-flip test over chains (exact up to 16
        chains), ``p_holm`` Holm-adjusted within each metric.
        """
        if "tests" not in self._cache:
            from .analysis.inference import holm, paired_sign_flip_test

            rows = []
            wide = self.scored.pivot_table(index=["chain_index", "keep_ratio"], columns="ordering",
                                          values=["correct", "answer_logprob"], aggfunc="first")
            for baseline in [o for o in self.orderings if o != "greedy"]:
                if "greedy" not in self.orderings:
                    break
                for ratio in [r for r in self.keep_ratios if r < 1.0]:
                    for metric in ("correct", "answer_logprob"):
                        try:
                            block = wide.xs(ratio, level="keep_ratio")[metric][["greedy", baseline]].dropna()
                        except KeyError:
                            continue
                        test = paired_sign_flip_test(block["greedy"].astype(float), block[baseline].astype(float),
                                                     seed=self.seed)
                        rows.append({"baseline": baseline, "keep_ratio": ratio, "metric": metric,
                                     "difference": test["estimate"], "ci_low": test["ci_low"],
                                     "ci_high": test["ci_high"], "p_value": test["p_value"],
                                     "n_chains": test["n_chains"], "exact": test["exact"]})
            tests = pd.DataFrame(rows, columns=["baseline", "keep_ratio", "metric", "difference", "ci_low", "ci_high",
                                                "p_value", "n_chains", "exact"])
            tests["p_holm"] = np.nan
            for metric, index in tests.groupby("metric").groups.items():
                tests.loc[index, "p_holm"] = holm(tests.loc[index, "p_value"].to_numpy())
            self._cache["tests"] = tests
        return self._cache["tests"]

    def citations(self) -> list[str]:
        """Citable sentences, each with its chain-level interval and the number of chains."""
        return recovery_sentences(self)

    # ---------------------------------------------------------------- output
    def figure(self, stem: str | Path, width: str = "two") -> list[Path]:
        """Write the figure (accuracy and log P(answer) vs keep ratio) as ``stem.png`` and ``stem.pdf``."""
        return view("recovery_figure")(self, Path(stem), width=width)  # drawn by the presentation layer

    def to_dict(self) -> dict:
        """Machine-readable form (``recovery.json``): the run, the chain-level summary and tests, the sentences."""
        return to_jsonable({"run": self.run, "n_chains": self.n_chains, "orderings": self.orderings,
                            "keep_ratios": self.keep_ratios, "n_boot": self.n_boot, "seed": self.seed,
                            "excluded": self.exclusions(), "summary": self.summary(), "tests": self.tests(),
                            "citations": self.citations()})

    def save(self, folder: str | Path, figure: bool = True) -> Path:
        """Write ``recovery_rows.parquet``, ``recovery.json``, ``recovery_summary.{csv,md,tex}``,
        ``recovery_tests.{csv,md,tex}``, ``recovery_citations.md`` and (unless ``figure=False``)
        ``fig_recovery.{png,pdf}`` into ``folder``; return the folder (what each file is: ``self.files``)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.files = {"rows": folder / "recovery_rows.parquet"}
        atomic_write_parquet(self.files["rows"], self.frame)
        self.files["json"] = write_json(folder / "recovery.json", self.to_dict())
        for name, table in (("summary", self.summary()), ("tests", self.tests())):
            self.files[name] = write_table(folder, f"recovery_{name}", table)["csv"]
        self.files["citations"] = write_text(folder / "recovery_citations.md", "# Answer recovery\n\n" + "\n\n".join(
            f"- {s}" for s in self.citations()) + "\n")
        if figure:
            self.files["figure"] = self.figure(folder / "fig_recovery")[0]
        return folder

    @classmethod
    def load(cls, path: str | Path, **kwargs) -> "RecoveryResult":
        """Read a result back: a run directory (its ``recovery.parquet/``) or a folder written by :meth:`save`."""
        path = Path(path)
        if (path / TABLE).is_dir():
            run = RunDir(path)
            if not run.part_indices("recovery"):
                raise CotSurvivalError("E136", path=path)
            return cls(frame=run.read_table("recovery"), run=str(path), **kwargs)
        if (path / "recovery_rows.parquet").is_file():
            frame = pd.read_parquet(path / "recovery_rows.parquet")
            meta = read_json(path / "recovery.json") if (path / "recovery.json").is_file() else {}
            kwargs = {**{k: meta[k] for k in ("n_boot", "seed") if k in meta}, **kwargs}
            return cls(frame=frame, run=meta.get("run", ""), **kwargs)
        raise CotSurvivalError("E136", path=path)

    def __repr__(self) -> str:
        return (f"RecoveryResult(run={self.run!r}, chains={self.n_chains}, orderings={self.orderings}, "
                f"keep_ratios={self.keep_ratios})")

    def _repr_html_(self) -> str:
        table = self.summary().to_html(index=False, float_format=lambda v: f"{v:.3f}", escape=True, border=0)
        sentences = "".join(f"<li>{html.escape(s)}</li>" for s in self.citations())
        return (f"<div><b>Answer recovery</b> — {html.escape(self.run)}: {self.n_chains} chains "
                f"(95% chain-bootstrap intervals)</div>{table}<ul>{sentences}</ul>")


# ---------------------------------------------------------------------------------------- sentences

def _pct(value: float) -> str:
    return "n/a" if value is None or np.isnan(value) else f"{100 * value:.1f}%"


def recovery_sentences(result) -> list[str]:
    """One sentence per keep ratio below 1 (greedy vs each baseline), plus the unpruned reference."""
    from .analysis.citations import support_shortfall, withheld_note

    summary = result.summary()
    tests = result.tests()
    out = []
    row_of = {(r.ordering, r.keep_ratio): r for r in summary.itertuples()}
    full = row_of.get(("greedy", 1.0)) or next((r for r in summary.itertuples() if r.keep_ratio == 1.0), None)
    if full is not None and support_shortfall(full.n_chains):  # one minimum-support rule (analysis.citations)
        out.append(withheld_note(f"unpruned answer accuracy ({full.n_chains} chains)"))
    elif full is not None:
        out.append(f"Unpruned (keep ratio 1.0), the model's greedy-decoded answer was correct in {_pct(full.accuracy)} "
                   f"of chains [95% CI {_pct(full.accuracy_ci_low)}–{_pct(full.accuracy_ci_high)}, chain bootstrap, "
                   f"n = {full.n_chains} chains], mean log P(answer) {full.answer_logprob:.2f} nats.")
    if "greedy" not in result.orderings:
        return out
    for ratio in [r for r in result.keep_ratios if r < 1.0]:
        greedy = row_of.get(("greedy", ratio))
        if greedy is None:
            continue
        for baseline in [o for o in result.orderings if o != "greedy"]:
            other = row_of.get((baseline, ratio))
            if other is None:
                continue
            if support_shortfall(min(greedy.n_chains, other.n_chains)):
                out.append(withheld_note(f"greedy vs {baseline} answer recovery at keep ratio {ratio:g} "
                                         f"({min(greedy.n_chains, other.n_chains)} chains)"))
                continue
            acc = tests[(tests.baseline == baseline) & (tests.keep_ratio == ratio) & (tests.metric == "correct")]
            lp = tests[(tests.baseline == baseline) & (tests.keep_ratio == ratio) & (tests.metric == "answer_logprob")]
            sentence = (f"At keep ratio {ratio:g} the greedy-pruned chains kept the answer recoverable in "
                        f"{_pct(greedy.accuracy)} of chains [95% CI {_pct(greedy.accuracy_ci_low)}–"
                        f"{_pct(greedy.accuracy_ci_high)}, chain bootstrap, n = {greedy.n_chains} chains] versus "
                        f"{_pct(other.accuracy)} [{_pct(other.accuracy_ci_low)}–{_pct(other.accuracy_ci_high)}] "
                        f"for {baseline}")
            if not acc.empty:
                t = acc.iloc[0]
                sentence += (f" (paired difference {100 * t.difference:+.1f} points, sign-flip p = {t.p_value:.3g}, "
                             f"n = {int(t.n_chains)} chains)")
            sentence += (f"; mean log P(answer) {greedy.answer_logprob:.2f} versus {other.answer_logprob:.2f} nats")
            if not lp.empty:
                t = lp.iloc[0]
                sentence += (f" (paired difference {t.difference:+.2f} nats [95% CI {t.ci_low:+.2f} to {t.ci_high:+.2f}], "
                             f"p = {t.p_value:.3g}, Holm p = {t.p_holm:.3g})")
            out.append(sentence + ".")
    return out


# ---------------------------------------------------------------------------------------- compute

def recover(
    run: str | Path | RunDir,
    *,
    keep_ratios: Sequence[float] = DEFAULT_KEEP_RATIOS,
    orderings: Sequence[str] | None = None,
    model: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    max_new_tokens: int = 16,
    batch_size: int = 16,
    loaded_model=None,
    progress: bool = True,
    trust_remote_code: bool = False,
    allow_unsafe_weights: bool = False,
    out: str | Path | None = None,
) -> RecoveryResult:
    """Measure answer recovery of a run's pruned chains (module docstring); writes ``RUN/recovery.parquet/``.

    Parameters
    ----------
    run : path or RunDir
    keep_ratios : sequence of float
        In (0, 1); 1.0 (the unpruned chain) is always added. Each must be at or above the ratio
        the run reached.
    orderings : sequence of str, optional
        ``greedy`` and any baselines of the run (default: all of them).
    model : str, optional
        Model spec (default: the one that pruned the run). It must tokenize like the run's model.
    max_new_tokens : int
        Bound on the decoded answer line.
    batch_size : int
        Sequences per forward pass / ``generate`` call.
    loaded_model : tuple, optional
        ``(model, tokenizer, info)`` already loaded.
    out : str or Path, optional
        Also save the tables, citations and figure there (:meth:`RecoveryResult.save`; paths in
        ``result.files``). Never one of the run's files or tables (E080); an existing folder only
        when it is empty or an earlier recovery output (E081).

    Returns
    -------
    RecoveryResult
        All rows of the asked orderings and keep ratios (including those resumed from disk).
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    manifest = run.require().read_manifest()
    if out is not None:
        check_output(out, inputs=run_inputs(run.path), ours=is_recovery_folder, command="recover", folder=True)
    ratios = _check_ratios(keep_ratios, manifest, run)
    available = ["greedy"] + list(manifest.get("baselines") or [])
    orderings = list(dict.fromkeys(orderings or available))
    for name in orderings:
        if name not in available:
            raise CotSurvivalError("E134", path=run.path, ordering=name, available=", ".join(available))
    if max_new_tokens < 1 or batch_size < 1:
        raise CotSurvivalError("E133", reason="--max-new-tokens and --batch-size must be positive")
    indices = run.part_indices("tokens")
    if not indices:
        raise CotSurvivalError("E012", path=run.path, what="pruned chains", command="cotsurvival prune")
    if loaded_model is None:
        from .models import load_model

        loaded_model = load_model(model or manifest["model"]["spec"], device=device, dtype=dtype,
                                  trust_remote_code=trust_remote_code, allow_unsafe_weights=allow_unsafe_weights)
    lm, tokenizer, info = loaded_model
    chains = run.read_chains().set_index("chain_index")
    _check_tokenizer(tokenizer, chains.loc[indices[0]], run)
    settings = _settings_key(info, manifest, max_new_tokens)
    wanted = {(o, r) for o in orderings for r in ratios}
    began = time.perf_counter()
    frames = []
    bar = make_bar(total=len(indices), desc="recover", unit="chain", disable=not progress)  # plain lines in a log
    try:
        for index in indices:
            old = _read_part(run, index)
            old = old[old["settings"] == settings] if old is not None else None
            have = set() if old is None else set(zip(old["ordering"], old["keep_ratio"].astype(float)))
            todo = sorted(wanted - have)
            bar.set_postfix_str(f"chain {chains.loc[index, 'chain_id']}")  # the chain being decoded now
            if todo:
                new = _recover_chain(run, index, chains.loc[index], todo, lm, tokenizer, max_new_tokens, batch_size,
                                     settings)
                old = new if old is None or old.empty else pd.concat([old, new], ignore_index=True)
                old = old.sort_values(["ordering", "keep_ratio"], ascending=[True, False], kind="stable")
                run.write_part("recovery", index, old.reset_index(drop=True))
            frames.append(old[[(o, float(r)) in wanted for o, r in zip(old["ordering"], old["keep_ratio"])]])
            bar.update(1)
    finally:
        bar.close()
    frame = pd.concat(frames, ignore_index=True)
    from .provenance import fingerprint

    result = RecoveryResult(frame=frame.reset_index(drop=True), run=str(run.path))
    run.update_manifest(recovery={"fingerprint": fingerprint(run), "excluded": result.exclusions(), "model": info.spec, "model_sha256": info.sha256, "max_new_tokens": max_new_tokens,
                                  "keep_ratios": ratios, "orderings": orderings, "settings": settings,
                                  "n_chains": int(frame["chain_index"].nunique()),
                                  "seconds_last_invocation": round(time.perf_counter() - began, 3)})
    if out is not None:
        result.save(out)
    return result


def _check_ratios(keep_ratios, manifest, run) -> list[float]:
    ratios = sorted({float(r) for r in keep_ratios} | {1.0}, reverse=True)
    for r in ratios:
        if not 0.0 < r <= 1.0:
            raise CotSurvivalError("E133", reason=f"keep ratios must be in (0, 1], not {r}")
        if r < 1.0 and r < float(manifest["keep_ratio"]):
            raise CotSurvivalError("E135", path=run.path, reached=manifest["keep_ratio"], asked=r)
    return ratios


def _check_tokenizer(tokenizer, chain, run) -> None:
    """The run's token ids must be what this tokenizer makes (else the sequences would be garbage)."""
    ids = tokenizer(chain["reasoning"], add_special_tokens=False)["input_ids"]
    if list(ids) != list(chain["reasoning_ids"]):
        raise CotSurvivalError("E133", reason=f"this model's tokenizer does not reproduce the token ids of {run.path} "
                                              "(use the model that pruned the run)")


def _settings_key(info, manifest, max_new_tokens: int) -> str:
    blob = json.dumps([info.spec, info.sha256, info.dtype, manifest.get("settings", {}).get("chains_fingerprint"),
                       max_new_tokens, "greedy-decode-v2-final-answer"])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_part(run: RunDir, index: int) -> pd.DataFrame | None:
    """A chain's stored rows, or None; a part that cannot be read is E008 (naming the file), never deleted here."""
    return run.read_part("recovery", index) if run.has_part("recovery", index) else None


def kept_positions(deleted_step, keep_ratio: float) -> np.ndarray:
    """Positions kept at ``keep_ratio`` given each token's 1-based deletion step (NaN/NA = never deleted)."""
    steps = pd.Series(deleted_step, dtype="float64").fillna(np.inf).to_numpy()
    return np.nonzero(steps > n_deletions(len(steps), keep_ratio))[0]


def _deletion_steps(run: RunDir, index: int, orderings) -> dict[str, np.ndarray]:
    tokens = run.read_part("tokens", index, columns=["position", "deleted_step"]).sort_values("position")
    out = {"greedy": tokens["deleted_step"].to_numpy(dtype="float64", na_value=np.nan)}
    baselines = [o for o in orderings if o != "greedy"]
    if baselines:
        table = run.read_part("baselines", index, columns=["ordering", "position", "deleted_step"])
        for name in baselines:
            rows = table[table["ordering"] == name].sort_values("position")
            if len(rows) != len(tokens):
                raise CotSurvivalError("E134", path=run.path, ordering=name, available="see manifest baselines")
            out[name] = rows["deleted_step"].to_numpy(dtype="float64", na_value=np.nan)
    return out


def answer_cue(tokenizer, answer: str, answer_ids: list[int]) -> list[int]:
    """The answer tokens before its value (``\\n####`` of ``\\n#### 18``): decoding starts after them."""

    text = ANSWER_SEPARATOR + answer
    value = gold_from_answer(answer)
    start = text.rfind(value) if value else -1
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if start < 0 or list(encoded["input_ids"]) != list(answer_ids):
        start = len(ANSWER_SEPARATOR)
    cue = []
    for token_id, (_, end) in zip(answer_ids, encoded["offset_mapping"]):
        if end > start:
            break
        cue.append(token_id)
    return cue


def _recover_chain(run, index, chain, todo, lm, tokenizer, max_new_tokens, batch_size, settings) -> pd.DataFrame:
    steps = _deletion_steps(run, index, sorted({o for o, _ in todo}))
    prefix, reasoning, answer = (list(chain["prefix_ids"]), list(chain["reasoning_ids"]), list(chain["answer_ids"]))
    cue = answer_cue(tokenizer, chain["answer"], answer)
    kept_of = {(o, r): tuple(kept_positions(steps[o], r).tolist()) for o, r in todo}
    unique = list(dict.fromkeys(kept_of.values()))  # e.g. every ordering at R = 1 is the same chain
    bodies = [prefix + [reasoning[i] for i in kept] for kept in unique]
    logprobs = answer_logprobs(lm, bodies, answer, batch_size)
    lines = greedy_answer_lines(lm, tokenizer, [b + cue for b in bodies], max_new_tokens, batch_size)
    cue_text = tokenizer.decode(cue, skip_special_tokens=True).lstrip("\n")
    # The chain's own answer: marked (####, \boxed{}) or one bare value; anything else (prose) cannot be
    # checked, so its rows are flagged and left out of accuracy, with the reason (verify.final_answer).
    gold, gold_rule = final_answer(chain["answer"])
    excluded = "" if gold is not None else f"answer {NO_FINAL_ANSWER.removeprefix('no final answer: ')}"
    rows = []
    for (ordering, ratio), kept in kept_of.items():
        u = unique.index(kept)
        predicted = (cue_text + lines[u]).strip()
        value = final_answer(predicted, gold)[0] if gold is not None else None
        rows.append({"chain_index": int(index), "chain_id": chain["chain_id"], "ordering": ordering,
                     "keep_ratio": float(ratio), "n_tokens": len(reasoning), "n_kept": len(kept),
                     "answer_logprob": float(logprobs[u]), "answer_tokens": len(answer), "predicted": predicted,
                     "correct": bool(gold is not None and answers_match(value, gold)), "settings": settings,
                     "excluded": excluded})
    return pd.DataFrame(rows, columns=COLUMNS)


@torch.inference_mode()
def answer_logprobs(model, bodies: list[list[int]], answer: list[int], batch_size: int = 16) -> np.ndarray:
    """Teacher-forced ``Σ log p(answer | body)`` for each body (right-padded batches; float64 sums)."""
    device = next(model.parameters()).device
    out = np.zeros(len(bodies))
    order = sorted(range(len(bodies)), key=lambda i: len(bodies[i]))
    a = len(answer)
    for first in range(0, len(order), batch_size):
        batch = order[first: first + batch_size]
        width = max(len(bodies[i]) for i in batch) + a
        ids = torch.zeros((len(batch), width), dtype=torch.long, device=device)
        mask = torch.zeros((len(batch), width), dtype=torch.long, device=device)
        for row, i in enumerate(batch):
            seq = bodies[i] + answer
            ids[row, : len(seq)] = torch.tensor(seq, device=device)
            mask[row, : len(seq)] = 1
        # Right padding: real tokens keep positions 0..L-1 and never attend to the padding after them.
        logits = model(input_ids=ids, attention_mask=mask).logits
        for row, i in enumerate(batch):
            b = len(bodies[i])
            rows = torch.log_softmax(logits[row, b - 1: b - 1 + a].double(), dim=-1)
            out[i] = float(rows.gather(1, torch.tensor(answer, device=device)[:, None]).sum())
    return out


class _LineEnded:
    """Stopping criterion: a row is done once its generated text holds a newline after some text."""

    def __init__(self, tokenizer, width: int) -> None:
        self.tokenizer, self.width = tokenizer, width

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for row in range(input_ids.shape[0]):
            text = self.tokenizer.decode(input_ids[row, self.width:], skip_special_tokens=True)
            done[row] = bool(text.strip()) and "\n" in text.lstrip()
        return done


@torch.inference_mode()
def greedy_answer_lines(model, tokenizer, prompts: list[list[int]], max_new_tokens: int = 16,
                        batch_size: int = 16) -> list[str]:
    """Greedy continuation of each prompt up to the end of its first non-empty line (or EOS / the bound)."""
    from transformers import StoppingCriteriaList

    device = next(model.parameters()).device
    stop_ids = _stop_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    out = [""] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for first in range(0, len(order), batch_size):
        batch = order[first: first + batch_size]
        width = max(len(prompts[i]) for i in batch)
        # Left padding: each row's next token follows its own prompt directly.
        ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in batch], device=device)
        mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in batch], device=device)
        generated = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                   pad_token_id=pad, eos_token_id=stop_ids,
                                   stopping_criteria=StoppingCriteriaList([_LineEnded(tokenizer, width)]))
        for row, i in enumerate(batch):
            new = generated[row, width:].tolist()
            cut = next((k for k, t in enumerate(new) if t in stop_ids), len(new))
            text = tokenizer.decode(new[:cut], skip_special_tokens=True)
            out[i] = next((line for line in text.split("\n") if line.strip()), "")
    return out

