"""Command line: one command per stage, each mirroring a Python function one to one.

Every command that fails because of its input prints ``error[E0xx]: ...`` on one line and exits
with status 2; no traceback reaches the user.

Each command imports its stage inside its body: ``cotsurvival --help`` and every command start
without loading torch, transformers or matplotlib (only the choices are read at import, from the
light registries).
"""
from __future__ import annotations

import errno
import sys

import click

from ._version import __version__
from .errors import CotSurvivalError
from .chains import ON_ERROR
from .pruning.registry import BACKENDS, BASELINES, LLMLINGUA_FRAMINGS, OBJECTIVES, SCORING_METHODS
from .reports.style import FIGURE_WIDTHS
from .taxonomy.spec import LEVELS

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="cotsurvival")
def cli() -> None:
    """cotsurvival: greedy survival pruning of chains of thought, token taxonomy, statistics, reports."""


# ----------------------------------------------------------------------------- pruning (engine)
_MODEL_HELP = "Hugging Face id, local directory, .gguf file, or 'smollm2-135m' (default)."
_FIELDS_HELP = ("Your file's names for the chain fields, e.g. question=problem,reasoning=rationale,answer=final,id=uid "
                "(fields not named keep their own name).")


@cli.command()
@click.argument("chains")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run directory (created or resumed).")
@click.option("--model", default="smollm2-135m", show_default=True, help=_MODEL_HELP)
@click.option("--objective", type=click.Choice(list(OBJECTIVES)), default="joint", show_default=True,
              help="; ".join(f"{k}: {v}" for k, v in OBJECTIVES.items()))
@click.option("--keep-ratio", type=float, default=0.0, show_default=True, help="Stop after N - floor(N*R) deletions; 0 ranks every token.")
@click.option("--limit", type=int, default=None, help="Only the first N valid chains.")
@click.option("--chains", "chain_ids", default=None, help="Only these chain ids (comma-separated), e.g. gsm8k-test-269,gsm8k-test-579.")
@click.option("--ids", "ids_file", type=click.Path(dir_okay=False), default=None, help="Only the chain ids listed in this file (one a line).")
@click.option("--baselines", default="", help=f"Comma-separated: {','.join(BASELINES)}.")
@click.option("--max-batch-tokens", type=int, default=4096, show_default=True, help="Token rows per forward batch.")
@click.option("--method", type=click.Choice(list(SCORING_METHODS)), default="auto", show_default=True,
              help="; ".join(f"{k}: {v}" for k, v in SCORING_METHODS.items()))
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True,
              help="auto: float32 on every device (half precision rounds costs and can switch the greedy path).")
@click.option("--on-error", type=click.Choice(list(ON_ERROR)), default=None,
              help="Bad input lines: fail (default) or skip. Chains the model cannot take: skip (default) or fail.")
@click.option("--keep-annotations", is_flag=True, help="Keep GSM8K <<...>> calculator annotations (stripped by "
              "default, by prune and tag alike).")
@click.option("--fields", "fields", default=None, help=_FIELDS_HELP)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random baseline and of the replicates' noise.")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code from the model's repository.")
@click.option("--allow-unsafe-weights", is_flag=True, help="Allow pickled (.bin) weights, which can run code.")
@click.option("--backend", type=click.Choice(list(BACKENDS)), default="local", show_default=True,
              help="; ".join(f"{k}: {v}" for k, v in BACKENDS.items()))
@click.option("--ray-address", default=None, help="Ray cluster to join (default: $RAY_ADDRESS, a running cluster, "
                                                  "else a new local one).")
@click.option("--workers", type=int, default=None, help="Ray actors (default: one per GPU, else one per CPU).")
@click.option("--gpus-per-worker", type=float, default=None,
              help="GPUs each Ray actor reserves (default: 1 when the cluster has GPUs, else 0).")
@click.option("--llmlingua-model", default=None,
              help="LLMLingua-2 classifier for the llmlingua2 baseline: hub id or local directory "
                   "(default: microsoft/llmlingua-2-xlm-roberta-large-meetingbank).")
@click.option("--llmlingua-framing", type=click.Choice(list(LLMLINGUA_FRAMINGS)), default=None,
              help="How llmlingua2 frames classifier chunks: " + "; ".join(f"{k}: {v}" for k, v in LLMLINGUA_FRAMINGS.items())
                   + ". Default: the run's, else package.")
# -- families: memory that fits the chain
@click.option("--max-memory", default=None, help="Memory a chain may use beyond the weights (e.g. 8GB); default: "
              "what the device has free. Chains that would not fit fall back to prefix reuse, smaller batches, naive.")
# --approx: approximate greedy survival for long chains
@click.option("--approx", default=None,
              help="Approximate greedy survival for long chains: auto (exact up to 150 tokens; above, the approximation "
                   "that met the exact-replicate-ensemble target in BENCHMARKS.md, if any, else topk:0.1,window=64), lazy[:radius=R,batch=B,refresh=F,same=0|1,age=A], lazy:window=W,refresh=F, "
                   "topk:F[,window=W][,block=B], topk:k=K. Fidelity: BENCHMARKS.md. Default: exact.")
# -- rank stability: replicate paths
@click.option("--replicates", type=int, default=1, show_default=True,
              help="Paths per chain: replicate 0 is the greedy path, the others perturb each step's costs with Gumbel "
                   "noise (sampling each deletion from softmin(cost/T)); load_run and analyze report how stable ranks are.")
@click.option("--perturbation-scale", type=float, default=None,
              help="T in nats for --replicates (default 0.05, about float16's rounding error of a cost; 0 = greedy).")
def prune(chains, out, model, objective, keep_ratio, limit, chain_ids, ids_file, baselines, max_batch_tokens, method, device, dtype,
          on_error, keep_annotations, fields, seed, trust_remote_code, allow_unsafe_weights, backend, ray_address, workers,
          gpus_per_worker, max_memory, llmlingua_model, llmlingua_framing, approx, replicates, perturbation_scale):
    """Greedy survival pruning of CHAINS (a file or 'gsm8k') into a run directory."""
    from .chains import parse_chain_selection
    from .pruning import prune as run_prune

    names = [b.strip() for b in baselines.split(",") if b.strip()]
    ids = parse_chain_selection(chain_ids, ids_file)
    run = run_prune(chains, out, model=model, objective=objective, keep_ratio=keep_ratio, limit=limit, ids=ids,
                    baselines=names, max_batch_tokens=max_batch_tokens, method=method, device=device, dtype=dtype,
                    on_error=on_error, keep_annotations=keep_annotations, seed=seed,
                    trust_remote_code=trust_remote_code, allow_unsafe_weights=allow_unsafe_weights,
                    backend=backend, ray_address=ray_address, workers=workers, gpus_per_worker=gpus_per_worker,
                    max_memory=max_memory, llmlingua_model=llmlingua_model, llmlingua_framing=llmlingua_framing,
                    approx=approx, fields=fields, replicates=replicates,
                    perturbation_scale=perturbation_scale)
    manifest = run.read_manifest()
    last = (manifest.get("timings") or {}).get("last_invocation") or {}
    done = f"; resumed: {last['chains_already_done']} already done" if last.get("resumed") else ""
    click.echo(f"pruned {_plural(manifest['n_chains'], 'chain')} into {run.path} "
               f"({len(manifest['skipped'])} skipped{done})")
    from .provenance import NO_NEAR_TIE_DIAGNOSTIC, near_tie_sentence

    replicated = (manifest.get("replicates") or {}).get("k", 1) > 1
    ties = near_tie_sentence(manifest.get("diagnostics"), manifest["n_chains"], suggest_replicates=not replicated)
    click.echo(f"stability: {ties or NO_NEAR_TIE_DIAGNOSTIC}"
               + (f"; {manifest['replicates']['k']} replicate paths per chain (T = {manifest['replicates']['scale_nats']:g} "
                  f"nats; see load_run / analyze)" if replicated else ""))


@cli.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--keep-ratio", type=float, required=True, help="Keep ratio to export (the run must reach it).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Output JSONL.")
@click.option("--overwrite", is_flag=True, help="Replace OUT even if it is not an earlier export.")
def export(run, keep_ratio, out, overwrite):
    """Write the pruned chains of RUN as text at a keep ratio."""
    from .stages import export as run_export

    result = run_export(run, keep_ratio=keep_ratio, out=out, overwrite=overwrite)
    click.echo(f"wrote {_plural(result.n_chains, 'pruned chain')} to {out}")


# ----------------------------------------------------------------------------- taxonomy
@cli.command("tag-eval")
@click.argument("gold")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None, help="Write every metric to this JSON file.")
@click.option("--taxonomy", "taxonomy", type=click.Path(dir_okay=False), default=None, help="Taxonomy spec JSON (default: the packaged spec).")
@click.option("--top", type=int, default=10, show_default=True, help="How many top confusions to print.")
def tag_eval(gold, out, taxonomy, top):
    """Score the rule tagger on a gold file (GOLD.jsonl, or 'builtin' for the packaged gold set)."""
    from .taxonomy.evaluate import evaluate_tagger

    report = evaluate_tagger(gold, taxonomy=taxonomy, out=out)
    click.echo(report.to_text(top=top))
    if out:
        click.echo(f"\nwrote {out}")


@cli.command("tag")
@click.argument("source")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="With a chains file: write spans here as JSONL ({id, spans}). Omit when SOURCE is a run directory.")
@click.option("--taxonomy", "taxonomy", type=click.Path(dir_okay=False), default=None,
              help="Taxonomy spec JSON (default: the packaged spec).")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Texts per spaCy batch.")
@click.option("--keep-annotations", is_flag=True, help="With a chains file: keep GSM8K <<...>> calculator annotations "
              "(stripped by default, as prune does, so offsets index the text prune prunes).")
@click.option("--fields", "fields", default=None, help="With a chains file: " + _FIELDS_HELP)
@click.option("--judge", "judge", default=None,
              help="Also label RUN's tokens with an LLM judge: a model spec (local chat model) or, with --judge-url, "
                   "the model name at that endpoint.")
@click.option("--judge-url", default=None, help="OpenAI-compatible endpoint base URL (.../v1) for --judge.")
@click.option("--judge-retries", type=int, default=2, show_default=True, help="Re-asks per chain after invalid output.")
@click.option("--device", default="auto", show_default=True, help="Device of a local judge model.")
@click.option("--overwrite", is_flag=True, help="Re-label chains that already have labels (also from another taxonomy version); "
                                             "with a chains file, replace --out even if it is not an earlier spans file.")
def tag_command(source, out, taxonomy, batch_size, keep_annotations, fields, judge, judge_url, judge_retries, device,
                overwrite):
    """Label reasoning tokens: SOURCE is a run directory (writes RUN/labels.parquet) or a chains file / 'gsm8k'."""
    from .taxonomy.runs import tag

    result = tag(source, out=out, taxonomy=taxonomy, batch_size=batch_size, judge=judge, judge_url=judge_url,
                 judge_retries=judge_retries, device=device, overwrite=overwrite, progress=True,
                 keep_annotations=keep_annotations, fields=fields)
    if out:
        click.echo(f"wrote spans of {_plural(result.n_chains, 'chain')} to {out}")
        return
    taxonomy_name = " ".join(str(result.taxonomy.get(k, "")) for k in ("name", "version"))
    click.echo(f"labelled {_plural(result.n_tokens, 'token')} of {_plural(result.n_chains, 'chain')} in {source}/labels.parquet "
               f"({taxonomy_name}; {_plural(result.n_skipped, 'chain')} already labelled)")
    if result.judge:
        judged = result.judge
        click.echo(f"{judged['source']}: labelled {judged['n_tokens']} tokens of {judged['n_chains']} chains "
                   f"({judged['n_skipped']} already labelled); {judged['n_fallback']} fell back to the rule label "
                   f"(flagged judge_fallback) in {source}/labels.parquet")


@cli.command("tag-agree")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--level", type=click.Choice(list(LEVELS)), default="label", show_default=True,
              help="; ".join(f"{k}: {v}" for k, v in LEVELS.items()))
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None, help="Write kappa and confusion as JSON.")
def tag_agree(run, level, out):
    """Agreement (Cohen's kappa, confusion matrix) between judge and rule labels of RUN."""
    from .taxonomy.judge import judge_agreement

    result = judge_agreement(run, level=level)
    click.echo(result.to_text())
    if out:
        result.to_json(out)
        click.echo(f"wrote {out}")


# ----------------------------------------------------------------------------- analysis
# Which stored labels a stage reads: analyze, report and view share it.
_LABELS_OPTION = click.option(
    "--labels", default="rule", show_default=True,
    help="Label source: 'rule', 'judge' (the run's only LLM judge) or an exact source such as 'judge:MODEL'.")


@cli.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--out", "out", type=click.Path(file_okay=False), default=None, help="Output folder (default: RUN/stats).")
@click.option("--n-boot", type=int, default=1000, show_default=True, help="Chain-bootstrap resamples for CIs (0: none).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap and the probe's folds.")
@click.option("--no-mixed", is_flag=True, hidden=True, help="Ignored (the mixed model was dropped).")
@click.option("--level", "levels", type=click.Choice(list(LEVELS)), multiple=True,
              help="Label columns to analyse (repeatable; default both).")
@click.option("--reference", default=None, help="Reference category of the Cox model (default: the largest).")
# --- stats: the pre-specified primary contrast and the minimum support for citing
@click.option("--primary", default="symbolic_math", show_default=True,
              help="Primary contrast: this category vs the rest of each chain (chain-level, position-adjusted).")
@click.option("--min-chains", type=int, default=6, show_default=True, help="Cite nothing resting on fewer chains (6: the fewest with which an exact sign-flip test can reach p < 0.05).")
@click.option("--min-tokens", type=int, default=20, show_default=True, help="Cite nothing resting on fewer tokens.")
@_LABELS_OPTION
def analyze(run, out, n_boot, seed, no_mixed, levels, reference, primary, min_chains, min_tokens, labels):
    """Statistics of RUN: survival by category, dynamics, attention; writes RUN/stats/."""
    from .analysis import analyze as run_analysis

    result = run_analysis(run, out, n_boot=n_boot, seed=seed, levels=tuple(levels) or ("category", "label"),
                          reference=reference, primary=primary, min_chains=min_chains, min_tokens=min_tokens,
                          labels=labels)
    folder = out or result.run / "stats"
    click.echo(f"wrote {len(result.tables_)} tables, stats.json and citations.md to {folder}")
    for note in result.notes_:
        click.echo(f"  note: {note}")


# ----------------------------------------------------------------------------- stats: power
@cli.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--delta", type=float, default=0.1, show_default=True,
              help="Difference in mean normalized survival to detect (primary contrast).")
@click.option("--primary", default="symbolic_math", show_default=True, help="Category contrasted with the rest.")
@click.option("--power", "target_power", type=float, default=0.8, show_default=True)
@click.option("--alpha", type=float, default=0.05, show_default=True)
def power(run, delta, primary, target_power, alpha):
    """Chains needed to detect DELTA in the primary contrast, from RUN's between-chain spread."""
    from .analysis import power as chains_needed
    from .options import check_contrast, check_ratio
    from .rundir import as_rundir

    check_ratio("--power", target_power, low_open=True, high_open=True)
    check_ratio("--alpha", alpha, low_open=True, high_open=True)
    check_contrast("--primary", primary, as_rundir(run).read_manifest())
    result = chains_needed(run, delta, contrast=primary, target_power=target_power, alpha=alpha)
    click.echo(f"{result['contrast']}: between-chain SD {result['sd_between_chains']:.3f} "
               f"({result['n_chains_observed']} chains); to detect a difference of {delta:g} with "
               f"{target_power:.0%} power at alpha {alpha:g}: {result['n_chains_needed']} chains")
    if result["power_at_observed"] is not None:
        click.echo(f"  power with the run's {result['n_chains_observed']} chains: {result['power_at_observed']:.0%}")
    click.echo(f"  method: {result['method']}")


@cli.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--model", "model", default=None, help="Model spec (default: the model recorded in RUN/manifest.json).")
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="Recompute chains that already have attention features.")
def attention(run, model, device, dtype, overwrite):
    """Attention received (from answer / later reasoning tokens, per layer) and surprisal per token of RUN."""
    from .stages import attention as run_attention

    result = run_attention(run, model=model, device=device, dtype=dtype, overwrite=overwrite, progress=True)
    click.echo(f"wrote attention features for {_plural(result.n_chains, 'chain')} to {run}/attention.parquet")


# ----------------------------------------------------------------------------- reports
_CHAINS_HELP = "Chain ids (the chains file's `id`), separated by commas."
_IDS_HELP = "A text file of chain ids, one per line (# comments allowed)."


@cli.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Output folder (figures and index.html).")
@click.option("--width", type=click.Choice([*FIGURE_WIDTHS, "both"]), default="both", show_default=True,
              help="Figure layout: " + "; ".join(f"{k}: {v}" for k, v in FIGURE_WIDTHS.items()) + "; both.")
@click.option("--chains", "chain_ids", default=None, help=_CHAINS_HELP + " Drawn as text (figure 8), one figure each.")
@click.option("--ids", "ids_file", default=None, type=click.Path(dir_okay=False), help=_IDS_HELP)
@click.option("--chain", "chain_index", type=int, default=None,
              help="chain_index drawn as text (default: the chain of median length).")
@click.option("--no-analyze", is_flag=True, help="Do not run `analyze` when RUN/stats/ is missing.")
@click.option("--overwrite", is_flag=True, help="Write into OUT even if it holds files that are not an earlier report.")
@_LABELS_OPTION
def report(run, out, width, chain_ids, ids_file, chain_index, no_analyze, overwrite, labels):
    """Figures (PNG 300 dpi + PDF) and a self-contained OUT/index.html for RUN, quoting RUN/stats/stats.json."""
    from .chains import parse_chain_selection
    from .reports.report import build_report

    widths = tuple(FIGURE_WIDTHS) if width == "both" else (width,)
    selected = parse_chain_selection(chain_ids, ids_file)
    result = build_report(run, out, widths=widths, chain_index=chain_index, chain_ids=selected,
                          run_analysis=not no_analyze, labels=labels, overwrite=overwrite)
    click.echo(f"wrote {len(result.figures)} figures and {result.index}")
    for stem, reason in result.skipped.items():
        click.echo(f"  skipped {stem}: {reason}")
    if result.stats_note:
        click.echo(f"  {result.stats_note}")


@cli.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="HTML file to write.")
@click.option("--chains", "chain_ids", default=None, help=_CHAINS_HELP + " Default: the first --max-chains.")
@click.option("--ids", "ids_file", default=None, type=click.Path(dir_okay=False), help=_IDS_HELP)
@click.option("--max-chains", type=int, default=50, show_default=True, help="Chains embedded when no chains are chosen.")
@click.option("--no-traces", is_flag=True, help="Leave out per-step costs (hover); a much smaller file.")
@click.option("--overwrite", is_flag=True, help="Replace OUT even if it is not an earlier viewer page.")
@_LABELS_OPTION
def view(run, out, chain_ids, ids_file, max_chains, no_traces, overwrite, labels):
    """One self-contained, offline HTML page to watch RUN's chains shrink step by step."""
    from .chains import parse_chain_selection
    from .stages import view as run_view

    selected = parse_chain_selection(chain_ids, ids_file)
    result = run_view(run, out=out, chain_ids=selected, max_chains=max_chains, traces=not no_traces, labels=labels,
                      overwrite=overwrite)
    click.echo(f"wrote {result.path} ({result.n_bytes / 1e6:.1f} MB)")


# ----------------------------------------------------------------------------- generation
@cli.command()
@click.argument("questions")
@click.option("--model", default="smollm2-135m", show_default=True,
              help="Hugging Face id, local directory, .gguf file, or 'smollm2-135m' (default).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="JSONL of accepted chains (appended to; re-running resumes).")
@click.option("--rejected-out", type=click.Path(dir_okay=False), default=None,
              help="JSONL of questions never answered correctly (default: OUT with .rejected.jsonl).")
@click.option("--samples", type=int, default=10, show_default=True, help="Most samples per question.")
@click.option("--temperature", type=float, default=0.7, show_default=True, help="Sampling temperature (0: greedy).")
@click.option("--max-new-tokens", type=int, default=1536, show_default=True, help="Longest reply.")
@click.option("--prompt", default="gsm8k", show_default=True, help="gsm8k, math, mcq, or a prompt file with {question}.")
@click.option("--batch-size", type=int, default=None, help="Sequences per generate call (default: --samples).")
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True)
@click.option("--limit", type=int, default=None, help="Only the first N questions.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
@click.option("--no-resume", is_flag=True, help="Start OUT afresh instead of skipping questions already done.")
@click.option("--overwrite", is_flag=True, help="With --no-resume: replace OUT even if it is not an earlier generate output.")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code from the model's repository.")
@click.option("--allow-unsafe-weights", is_flag=True, help="Allow pickled (.bin) weights, which can run code.")
def generate(questions, model, out, rejected_out, samples, temperature, max_new_tokens, prompt, batch_size, device,
             dtype, limit, seed, no_resume, overwrite, trust_remote_code, allow_unsafe_weights):
    """Teacher chains by rejection sampling: the first correct of up to --samples replies per question.

    QUESTIONS is a JSONL/CSV/Parquet file with question and answer, 'gsm8k' (built in), or a
    Hugging Face dataset NAME[:CONFIG][@SPLIT] (needs `datasets` and network).
    """
    from .generation.generate import generate as run_generate

    result = run_generate(questions, model=model, out=out, rejected_out=rejected_out, samples=samples,
                          temperature=temperature, max_new_tokens=max_new_tokens, prompt=prompt, batch_size=batch_size,
                          device=device, dtype=dtype, limit=limit, seed=seed, resume=not no_resume,
                          overwrite=overwrite, trust_remote_code=trust_remote_code, allow_unsafe_weights=allow_unsafe_weights)
    click.echo(f"accepted {len(result.accepted)}/{result.n_questions} questions ({result.acceptance_rate:.1%}; "
               f"{result.n_resumed} resumed) in {result.seconds:.0f} s on {result.device}: "
               f"{result.out}, rejected: {result.rejected_out}")


# ----------------------------------------------------------------------------- demo
@cli.command()
@click.option("--out", "out", default="demo-run", show_default=True, type=click.Path(file_okay=False))
@click.option("--limit", type=int, default=6, show_default=True, help="How many (shortest) built-in chains.")
@click.option("--keep-ratio", type=float, default=0.0, show_default=True)
@click.option("--model", default="smollm2-135m", show_default=True, help=_MODEL_HELP)
def demo(out, limit, keep_ratio, model):
    """Run the whole study (prune, tag, attention, analyze, report, view) on the built-in corpus."""
    from .demo import run_demo

    paths = run_demo(out, limit=limit, keep_ratio=keep_ratio, model=model)
    click.echo(f"\ndone in {paths['seconds']:.0f} s")
    for name in ("run", "stats", "citations", "report", "viewer"):
        click.echo(f"  {name:<10} {paths[name]}")


# ----------------------------------------------------------------------------- comparison and study
@cli.command("compare")
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Output folder: comparison.json, tables, figures, citations.md, index.html.")
@click.option("--keep-ratios", default="0.5,0.25", show_default=True,
              help="Comma-separated keep ratios for the Jaccard overlap of kept sets.")
@click.option("--name", "names", multiple=True, help="Display name per run, in order (repeatable; default: folder names).")
@click.option("--n-boot", type=int, default=2000, show_default=True, help="Chain-bootstrap resamples for the CIs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Write into OUT even if it holds files that are not an earlier comparison.")
def compare_command(runs, out, keep_ratios, names, n_boot, seed, overwrite):
    """Compare RUNS side by side (two or more; RUN:random compares a baseline ordering of RUN)."""
    from .comparison import compare

    from .options import check_ratio

    try:
        ratios = [float(r) for r in keep_ratios.split(",") if r.strip()]
    except ValueError:
        raise CotSurvivalError("E093", value=keep_ratios) from None
    if not ratios:
        raise CotSurvivalError("E152", option="--keep-ratios", value=repr(keep_ratios), reason="no ratio given")
    for ratio in ratios:
        check_ratio("--keep-ratios", ratio)
    # compare() refuses an OUT that is a compared run, lies inside one, or holds foreign files (E080/E081).
    result = compare(list(runs), out, keep_ratios=ratios, names=list(names) or None, n_boot=n_boot, seed=seed,
                     overwrite=overwrite)
    for pair in result.pairs:
        tau = pair["kendall_tau"]["mean"]
        shown = "undefined" if tau is None or tau != tau else f"{tau:.3f}"   # NaN != NaN
        click.echo(f"{pair['a']} vs {pair['b']}: {_plural(pair['n_chains'], 'chain')}, {_plural(pair['units'], 'unit')}, mean Kendall tau {shown}")
    for note in result.notes:
        click.echo(f"  note: {note}")
    click.echo(f"wrote {out}/comparison.json, citations.md and index.html")


@cli.command("study")
@click.argument("study", type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Study root (created or continued).")
@click.option("--overwrite", is_flag=True, help="Discard results of settings whose declaration changed (default: refuse); "
              "also write into an OUT that is not an earlier study root.")
@click.option("--backend", type=click.Choice(list(BACKENDS)), default=None,
              help="Override every setting's backend (ray: passed through to prune).")
@click.option("--ray-address", default=None, help="Ray cluster to join with --backend ray.")
def study_command(study, out, overwrite, backend, ray_address):
    """Run every setting of a STUDY.toml (prune, tag, analyze, report), compare them, write OUT/index.html."""
    from .comparison import run_study

    result = run_study(study, out, overwrite=overwrite, backend=backend, ray_address=ray_address)
    click.echo(f"\ndone in {result.seconds:.0f} s: {result.index}")
    for name, page in result.reports.items():
        click.echo(f"  setting    {name:<16} {page}")
    for name, page in result.comparisons.items():
        click.echo(f"  comparison {name:<16} {page}")



# ----------------------------------------------------------------------------- recover (answer recovery)
@cli.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--keep-ratios", default="0.9,0.7,0.5,0.3", show_default=True,
              help="Comma-separated keep ratios in (0, 1); 1.0 (the unpruned chain) is always added.")
@click.option("--orderings", default=None, help="Comma-separated: greedy and the run's baselines (default: all).")
@click.option("--model", default=None, help="Model (default: the one that pruned the run). " + _MODEL_HELP)
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True)
@click.option("--max-new-tokens", type=int, default=16, show_default=True, help="Bound on the decoded answer line.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Sequences per forward / generate call.")
@click.option("--out", "out", default=None, type=click.Path(file_okay=False),
              help="Folder for the figure, tables and citations (default: RUN/recovery).")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code from the model's repository.")
@click.option("--allow-unsafe-weights", is_flag=True, help="Allow pickled (.bin) weights, which can run code.")
def recover(run, keep_ratios, orderings, model, device, dtype, max_new_tokens, batch_size, out, trust_remote_code,
            allow_unsafe_weights):
    """Answer recovery of RUN's pruned chains: log P(answer) and greedy-decoded answers per ordering and keep ratio."""
    from pathlib import Path

    from .errors import CotSurvivalError
    from .recovery import recover as run_recover

    try:
        ratios = [float(r) for r in keep_ratios.split(",") if r.strip()]
    except ValueError:
        raise CotSurvivalError("E133", reason=f"--keep-ratios must be numbers, not {keep_ratios!r}") from None
    names = [o.strip() for o in orderings.split(",") if o.strip()] if orderings else None
    result = run_recover(run, keep_ratios=ratios, orderings=names, model=model, device=device, dtype=dtype,
                         max_new_tokens=max_new_tokens, batch_size=batch_size, trust_remote_code=trust_remote_code,
                         allow_unsafe_weights=allow_unsafe_weights, out=Path(out) if out else Path(run) / "recovery")
    paths = result.files
    click.echo(f"recovery of {_plural(result.n_chains, 'chain')} x {_plural(len(result.orderings), 'ordering')} x "
               f"{len(result.keep_ratios)} keep ratios: {Path(run) / 'recovery.parquet'}")
    for name in ("figure", "summary", "tests", "citations"):
        if name in paths:
            click.echo(f"  {name:<10} {paths[name]}")
    for reason, flagged in result.exclusions().items():
        shown = ", ".join(flagged["chain_ids"][:3]) + (", ..." if flagged["n_chains"] > 3 else "")
        click.echo(f"  excluded {_plural(flagged['n_chains'], 'chain')} from the scores: {reason} ({shown})")


def _plural(n: int, noun: str) -> str:
    """``1 chain``, ``2 chains``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


# ----------------------------------------------------------------------------- resample (on-policy importance)
@cli.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--rollouts", type=int, default=8, show_default=True, help="Continuations per cut (per unit and arm).")
@click.option("--temperature", type=float, default=0.7, show_default=True)
@click.option("--top-p", type=float, default=0.95, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Base seed (recorded in the manifest).")
@click.option("--max-new-tokens", type=int, default=256, show_default=True,
              help="Bound on each rollout; one that reaches it without an answer is 'truncated'.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Rollouts per generate call.")
@click.option("--chains", default=None, help="Comma-separated chain_index values (default: every pruned chain).")
@click.option("--regeneration-keep-ratios", default="0.9,0.7,0.5,0.3", show_default=True,
              help="Keep ratios for the regeneration check ('' to skip it).")
@click.option("--model", default=None, help="Model (default: the one that pruned the run). " + _MODEL_HELP)
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True)
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--workers", type=int, default=None, help="Ray actors (default: one per GPU, else per CPU).")
@click.option("--ray-address", default=None, help="Ray cluster to join with --backend ray.")
@click.option("--similarity-threshold", type=float, default=None,
              help="Resampled units more similar than this to the original are no counterfactual and leave the "
                   "importance (lexical ratio in [0, 1]; default 0.8, or the run's recorded one).")
@click.option("--out", "out", default=None, type=click.Path(file_okay=False),
              help="Folder for the figure, tables and citations (default: RUN/onpolicy).")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code from the model's repository.")
@click.option("--allow-unsafe-weights", is_flag=True, help="Allow pickled (.bin) weights, which can run code.")
def resample(run, rollouts, temperature, top_p, seed, max_new_tokens, batch_size, chains, regeneration_keep_ratios,
             model, device, dtype, backend, workers, ray_address, similarity_threshold, out, trust_remote_code,
             allow_unsafe_weights):
    """On-policy importance of RUN's reasoning units (kept vs resampled rollouts) beside greedy survival."""
    from pathlib import Path

    from .errors import CotSurvivalError
    from .resampling import resample as run_resample

    try:
        picked = [int(c) for c in chains.split(",") if c.strip()] if chains else None
        ratios = [float(r) for r in regeneration_keep_ratios.split(",") if r.strip()]
    except ValueError:
        raise CotSurvivalError("E160", reason="--chains takes integers and --regeneration-keep-ratios numbers") from None
    result = run_resample(run, rollouts=rollouts, temperature=temperature, top_p=top_p, seed=seed,
                          max_new_tokens=max_new_tokens, batch_size=batch_size, chains=picked,
                          regeneration_keep_ratios=ratios, model=model, device=device, dtype=dtype, backend=backend,
                          workers=workers, ray_address=ray_address, trust_remote_code=trust_remote_code,
                          allow_unsafe_weights=allow_unsafe_weights, similarity_threshold=similarity_threshold,
                          out=Path(out) if out else Path(run) / "onpolicy")
    click.echo(f"resampled {result.n_chains} chains ({len(result.rollouts):,} rollouts): {Path(run) / 'resample.parquet'}")
    for name in ("figure", "units", "replacements", "by_category", "regeneration", "citations"):
        click.echo(f"  {name:<13} {result.files[name]}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the CLI and turns known errors into one line and exit status 2."""
    import warnings

    # A warning is one line on the command line ("warning: ..."), not Python's file:line and source echo.
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"
    try:
        cli.main(args=argv, prog_name="cotsurvival", standalone_mode=False)
    except CotSurvivalError as exc:
        click.echo(exc.one_line(), err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("interrupted; re-run the same command to resume", err=True)
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return 2
    except KeyboardInterrupt:
        click.echo("interrupted; re-run the same command to resume", err=True)
        return 130
    except OSError as exc:
        # Anything the filesystem refuses (a read-only or full output folder, a missing parent) that no
        # stage turned into its own error yet: still one line and status 2, never a traceback.
        reason = {errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                  errno.EROFS: "read-only file system"}.get(exc.errno, exc.strerror or str(exc))
        error = CotSurvivalError("E087", path=exc.filename or "(no path)", reason=reason)
        click.echo(error.one_line(), err=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
