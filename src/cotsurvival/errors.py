"""Numbered, actionable errors (in the manner of spaCy's ``Errors``).

Every error a user can cause carries a stable code (``E0xx``) so it can be searched for in the
docs and in issue trackers. The CLI prints ``error[E0xx]: message`` on one line and exits with 2.
"""
from __future__ import annotations


class Errors:
    """Message templates; format with ``str.format``."""

    E001 = "{path}: file not found."
    E002 = "{path}:{line}: {reason}"
    E003 = "{path}: unsupported chain format (use .jsonl, .json, .csv or .parquet, or the built-in corpus 'gsm8k')."
    E004 = "Missing asset '{asset}'. Install it with: {command}"
    E005 = "Cannot load model '{model}': {reason}"
    E006 = "Run directory {path} was made with a different {what} ({old!r}); this run asks for {new!r}. Use a new --out directory."
    E007 = "{path}: not a cotsurvival run directory (no manifest.json). Run `cotsurvival prune` first."
    E008 = "{path}: cannot read Parquet file ({reason}). Delete it and re-run the stage that writes it."
    E009 = "Invalid option: {reason}"
    E010 = "Cannot write to {path}: {reason}. Committed chains are intact; free space and re-run the same command to resume."
    E011 = "Refusing to load '{path}': pickled weights can run code. Convert to safetensors, or pass --allow-unsafe-weights if you trust the file."
    E012 = "{path}: the run has no {what} yet. Run `{command}` first."
    E013 = "Taxonomy spec {path} is invalid: {reason}"
    E014 = "No chains to process: {reason}"
    # labels table and stage API (integrity: E015-E019, E023-E029)
    E015 = "{path}: no labels from source {source!r} (stored: {present}). Run `{command}` first."
    E016 = "{path}: several judge label sources ({sources}); name one, e.g. labels='judge:MODEL'."
    E017 = "{path}: {what} are from taxonomy {old!r}; this run asks for {new!r}. Pass --overwrite (overwrite=True) to replace them, or use the same taxonomy."
    E018 = "{path}: labels of chain {chain} from source {source!r} do not match its tokens ({reason}). Re-run `{command}` with --overwrite."
    E040 = "{path}: tokens have no category labels ({detail}). Run `cotsurvival tag {path}` first, or load with require_tags=False to analyse untagged tokens."
    E041 = "Cannot analyse: {reason}"
    E042 = "Column {column!r} not in the table (available: {available})."
    # --- stats (E043-E049): chain-level tests and power
    E043 = "Cannot compute power: {reason}"
    E044 = "Unknown primary contrast {value!r}: the run's {group} values are {available}."
    E045 = "Unknown position adjustment {value!r} (choose one of: {available})."
    E050 = "Unknown figure width {value!r}; choose from: {allowed}."
    E051 = "Chain {chain} is not in the run ({n_chains} chains; chain_index runs from 0 to {last})."
    E052 = "{path}: the run has no pruned tokens to show. Run `cotsurvival prune` first."
    # reports and chain selection (E053-E059)
    E053 = "Chain id(s) {ids} not in the run ({n_chains} chains, ids such as {examples}); ids are the chains file's `id` values."
    E054 = "Choose chains with either {first} or {second}, not both."
    E055 = "{source} names no chain ids; give ids separated by commas, or a file with one id per line."
    E056 = "{path}: cannot read the stored statistics ({reason}). Re-run `cotsurvival analyze {run}`."
    E060 = "Cannot read questions from {source!r}: {reason}"
    E061 = "'{source}' is not a file or a built-in corpus (gsm8k); reading it as a Hugging Face dataset needs the `datasets` package: pip install datasets (and network access)."
    E062 = "Cannot load the Hugging Face dataset '{source}': {reason}"
    E063 = "Unknown prompt '{prompt}': use one of {choices} or the path of a prompt file."
    E064 = "Prompt file {path} is invalid: {reason}"
    E065 = "{path} was generated with a different {what} ({old!r}); this run asks for {new!r}. Use a new --out file or the same settings."
    E066 = "{path}:{line}: cannot resume from this line ({reason}). Fix or delete the line and re-run."
    E030 = "{path}:{line}: bad gold record ({reason})."
    E031 = "No predicted spans for gold chain {chain_id!r}; tag every gold reasoning before evaluating."
    E032 = "Predicted span {span!r} of chain {chain_id!r} is outside its reasoning ({length} characters)."
    E020 = "{path}: cannot tag chain {chain}: {reason}. Re-run `cotsurvival prune` for this run."
    E021 = "Judge {judge}: {reason}"
    E022 = "{path}: the run has no judge labels yet. Run `cotsurvival tag {path} --judge MODEL` first."
    E070 = "The Ray backend needs the `ray` package: pip install cotsurvival[cluster]"
    E071 = "Chain {chain}: its Ray worker died {attempts} times (last: {reason}). Committed chains are intact; re-run the same command to resume."
    E072 = "Cannot start Ray workers: {reason}"
    E073 = "Cannot connect to the Ray cluster at {address}: {reason}"
    E074 = "A Ray worker failed: {reason}"
    # --- comparison and study (engineer "compare": E120-E129)
    E120 = "Cannot compare: {reason}"
    E121 = "{path}: the run has no {ordering!r} ordering (baselines.parquet has: {available}). Prune with --baselines {ordering}."
    E122 = "The runs share no chain with identical reasoning text: {detail}"
    E123 = "{path}: invalid study file ({reason})."
    E124 = "Setting {name!r} already has results in {path} made with different settings ({changed}). Re-run with --overwrite to discard them, or give the new setting another name."
    E125 = "{path}: not a comparison folder (no comparison.json). Run `cotsurvival compare` first."
    # ---- safety: outputs, resume settings, model lookup, chain selection (E080-E099)
    E080 = "Refusing to write {path}: it is {role}. Choose another --out."
    E081 = "Refusing to replace {path}: it {what} and was not written by `cotsurvival {command}`. Choose another --out, or pass --overwrite to replace it."
    E082 = "Cannot write {path}: {reason}."
    E083 = "Run directory {path} was made with {what} {old}; this command asks for {new}. {hint}"
    E084 = "Run directory {path} was made from another set of chains: {detail}. {hint}"
    E087 = "File system error on {path}: {reason}."
    E085 = "No such chain id{s}: {ids}{suggestion} ({n_available} chains in {source}; ids such as {examples})."
    # --- engine reach and memory (families: E100-E109)
    E100 = "--method {method} cannot prune {architecture}: {reason}. Use --method naive (exact, any architecture) or --method auto."
    E101 = "Invalid --max-memory {value!r}: {reason} (e.g. 8GB, 512MiB, 2e9)."
    E102 = "Chain {chain} does not fit in {budget}: even naive scoring one candidate at a time needs about {needed}. Raise --max-memory or use a larger device."
    # --- recover (E130-E139): the llmlingua2 baseline and answer recovery
    E130 = ("Cannot load the LLMLingua-2 classifier '{model}': {reason}. Download it where there is network "
            "(huggingface-cli download {model}) and pass --llmlingua-model with its local directory.")
    E131 = ("Refusing to load the LLMLingua-2 classifier '{model}' from {path}: pickled weights can run code. "
            "Convert it to safetensors, or pass --allow-unsafe-weights if you trust the file.")
    E132 = ("Run directory {path} has llmlingua2 orderings from classifier {old!r}; this run asks for {new!r}. "
            "Use a new --out directory or the same --llmlingua-model.")
    E133 = "Invalid recovery option: {reason}"
    E134 = "{path}: the run has no {ordering!r} ordering. Available: {available}. Prune with --baselines {ordering} first."
    E135 = "{path}: the run reaches keep ratio {reached}; recovery at {asked} needs `cotsurvival prune ... --keep-ratio {asked}` first."
    E136 = "{path}: no recovery results yet. Run `cotsurvival recover {path}` first."
    # approximate greedy survival (engineer approx: E110-E119)
    E110 = "Invalid --approx {spec!r}: {reason}. Examples: auto, lazy, lazy:radius=2,batch=2,refresh=0.5, lazy:refresh=0 (exact), topk:0.1, topk:0.1,window=64, topk:k=1 (exact)."
    E111 = "Chain {chain!r} has {n} reasoning tokens: exact greedy pruning above {limit} tokens costs about n^3/6 = {rows} decoder token rows. Use --approx auto (or e.g. --approx topk:0.1,window=64), or raise the limit with {env}=N."
    E112 = "--approx window=W needs the joint objective (the {objective!r} objective's signal lies at the end of the chain, beyond any window); drop window= or use --objective joint."
    E113 = "--approx {spec} needs prefix reuse, which {architecture} lacks ({reason}); use --approx topk:... (any architecture)."
    E114 = "Chain {chain!r}: the model gave non-finite log-probabilities at step {step} (an overflow: float16 holds values only up to 65,504, and some models exceed it); re-run with --dtype float32 (prune's default)."

class CotSurvivalError(Exception):
    """An error with a stable code and a one-line message meant for the user.

    Parameters
    ----------
    code : str
        Attribute name in :class:`Errors`, e.g. ``"E001"``.
    **fields
        Values substituted into the message template.
    """

    def __init__(self, code: str, **fields: object) -> None:
        self.code = code
        self.fields = fields
        template = getattr(Errors, code)
        self.message = template.format(**fields)
        super().__init__(f"[{code}] {self.message}")

    def one_line(self) -> str:
        """The message as the CLI prints it (newlines folded)."""
        return f"error[{self.code}]: " + " ".join(self.message.split())


class ChainInputError(CotSurvivalError):
    """Bad chain input: a file or one of its lines."""
