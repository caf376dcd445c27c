"""Numbered, actionable errors (in the manner of spaCy's ``Errors``).

Every error a user can cause carries a stable code (``E0xx``) so it can be searched for in the
docs and in issue trackers. The CLI prints ``error[E0xx]: message`` on one line and exits with 2.

Each code also maps to the built-in exception it stands for (:data:`BUILTIN`): E001 is a
:class:`FileNotFoundError`, an invalid option a :class:`ValueError`, an unknown chain id a
:class:`LookupError`, ... so ``except FileNotFoundError`` sees a missing chains file while
``except CotSurvivalError`` still sees every error of the package.

Warnings have classes of their own (:class:`ApproximationWarning`, :class:`PrecisionWarning`,
:class:`NonEnglishWarning`, :class:`CheckpointWarning`; all :class:`CotSurvivalWarning`, a
:class:`UserWarning`), so a user can silence or escalate one kind::

    import warnings
    from cotsurvival.errors import PrecisionWarning
    warnings.simplefilter("ignore", PrecisionWarning)
"""
from __future__ import annotations


class Errors:
    """Message templates; format with ``str.format``."""

    # --- inputs, models and run directories (E001-E014)
    E001 = "{path}: file not found."
    E002 = "{path}:{line}: {reason}"
    E003 = "{path}: unsupported chain format (use .jsonl, .json, .csv or .parquet, or the built-in corpus 'gsm8k')."
    E004 = "Missing asset '{asset}'. Install it with: {command}"
    E005 = "Cannot load model '{model}': {reason}"
    # E006 is no longer raised (E083/E084 replaced it); kept so that old references still resolve.
    E006 = "Run directory {path} was made with a different {what} ({old!r}); this run asks for {new!r}. Use a new --out directory."
    E007 = "{path}: not a cotsurvival run directory (no manifest.json). Run `cotsurvival prune` first."
    E008 = "{path}: cannot read Parquet file ({reason}). Delete it and re-run the stage that writes it."
    # E009 is the generic fallback; an option error with a shape of its own uses E086-E093.
    E009 = "Invalid option: {reason}"
    E010 = "Cannot write to {path}: {reason}. Committed chains are intact; free space and re-run the same command to resume."
    E011 = "Refusing to load '{path}': pickled weights can run code. Convert to safetensors, or pass --allow-unsafe-weights if you trust the file."
    E012 = "{path}: the run has no {what} yet. Run `{command}` first."
    E013 = "Taxonomy spec {path} is invalid: {reason}"
    E014 = "No chains to process: {reason}"
    # --- labels table (E015-E018)
    E015 = "{path}: no labels from source {source!r} (stored: {present}). Run `{command}` first."
    E016 = "{path}: several judge label sources ({sources}); name one, e.g. labels='judge:MODEL'."
    E017 = "{path}: {what} are from taxonomy {old!r}; this run asks for {new!r}. Pass --overwrite (overwrite=True) to replace them, or use the same taxonomy."
    E018 = "{path}: labels of chain {chain} from source {source!r} do not match its tokens ({reason}). Re-run `{command}` with --overwrite."
    # --- tagging and the judge (E020-E022)
    E020 = "{path}: cannot tag chain {chain}: {reason}. Re-run `cotsurvival prune` for this run."
    E021 = "Judge {judge}: {reason}"
    E022 = "{path}: the run has no judge labels yet. Run `cotsurvival tag {path} --judge MODEL` first."
    # --- tagger evaluation (E030-E032)
    E030 = "{path}:{line}: bad gold record ({reason})."
    E031 = "No predicted spans for gold chain {chain_id!r}; tag every gold reasoning before evaluating."
    E032 = "Predicted span {span!r} of chain {chain_id!r} is outside its reasoning ({length} characters)."
    # --- analysis and power (E040-E049)
    E040 = "{path}: tokens have no category labels ({detail}). Run `cotsurvival tag {path}` first, or load with require_tags=False to analyse untagged tokens."
    E041 = "Cannot analyse: {reason}"
    E042 = "Column {column!r} not in the table (available: {available})."
    E043 = "Cannot compute power: {reason}"
    E044 = "Unknown primary contrast {value!r}: the run's {group} values are {available}."
    E045 = "Unknown position adjustment {value!r} (choose one of: {available})."
    # --- reports and chain selection (E050-E059)
    E050 = "Unknown figure width {value!r}; choose from: {allowed}."
    E051 = "Chain {chain} is not in the run ({n_chains} chains; chain_index runs from 0 to {last})."
    E052 = "{path}: the run has no pruned tokens to show. Run `cotsurvival prune` first."
    E053 = "Chain id(s) {ids} not in the run ({n_chains} chains, ids such as {examples}); ids are the chains file's `id` values."
    E054 = "Choose chains with either {first} or {second}, not both."
    E055 = "{source} names no chain ids; give ids separated by commas, or a file with one id per line."
    E056 = "{path}: cannot read the stored statistics ({reason}). Re-run `cotsurvival analyze {run}`."
    # --- generation (E060-E069)
    E060 = "Cannot read questions from {source!r}: {reason}"
    E061 = "'{source}' is not a file or a built-in corpus (gsm8k); reading it as a Hugging Face dataset needs the `datasets` package: pip install datasets (and network access)."
    E062 = "Cannot load the Hugging Face dataset '{source}': {reason}"
    E063 = "Unknown prompt '{prompt}': use one of {choices} or the path of a prompt file."
    E064 = "Prompt file {path} is invalid: {reason}"
    E065 = "{path} was generated with a different {what} ({old!r}); this run asks for {new!r}. Use a new --out file or the same settings."
    E066 = "{path}:{line}: cannot resume from this line ({reason}). Fix or delete the line and re-run."
    # --- Ray backend (E070-E079)
    E070 = "The Ray backend needs the `ray` package: pip install cotsurvival[cluster]"
    E071 = "Chain {chain}: its Ray worker died {attempts} times (last: {reason}). Committed chains are intact; re-run the same command to resume."
    E072 = "Cannot start Ray workers: {reason}"
    E073 = "Cannot connect to the Ray cluster at {address}: {reason}"
    E074 = "A Ray worker failed: {reason}"
    # --- outputs, resume settings, option values (E080-E099)
    E080 = "Refusing to write {path}: it is {role}. Choose another --out."
    E081 = "Refusing to replace {path}: it {what} and was not written by `cotsurvival {command}`. Choose another --out, or pass --overwrite to replace it."
    E082 = "Cannot write {path}: {reason}."
    E083 = "Run directory {path} was made with {what} {old}; this command asks for {new}. {hint}"
    E084 = "Run directory {path} was made from another set of chains: {detail}. {hint}"
    E085 = "No such chain id{s}: {ids}{suggestion} ({n_available} chains in {source}; ids such as {examples})."
    E086 = "{option} must be {rule}, not {value!r}."
    E087 = "File system error on {path}: {reason}."
    E088 = "Unknown {option} {value!r}; choose from: {choices}."
    E089 = "Conflicting options: {reason}."
    E090 = "{path}: the run reaches keep ratio {reached}; export at {asked} needs `cotsurvival prune ... --keep-ratio {asked}` first."
    E091 = "--judge-url must be an http(s) URL, not {url!r}."
    E092 = "{what} must be non-empty and of equal length ({detail})."
    E093 = "--keep-ratios takes numbers in [0, 1] separated by commas, got {value!r}."
    # --- engine reach and memory (E100-E109)
    E100 = "--method {method} cannot prune {architecture}: {reason}. Use --method naive (exact, any architecture) or --method auto."
    E101 = "Invalid --max-memory {value!r}: {reason} (e.g. 8GB, 512MiB, 2e9)."
    E102 = "Chain {chain} does not fit in {budget}: even naive scoring one candidate at a time needs about {needed}. Raise --max-memory or use a larger device."
    # --- approximate greedy survival (E110-E119)
    E110 = "Invalid --approx {spec!r}: {reason}. Examples: auto, lazy, lazy:radius=2,batch=2,refresh=0.5, lazy:refresh=0 (exact), topk:0.1, topk:0.1,window=64, topk:k=1 (exact)."
    E111 = "Chain {chain!r} has {n} reasoning tokens: exact greedy pruning above {limit} tokens costs about n^3/6 = {rows} decoder token rows. Use --approx auto (or e.g. --approx topk:0.1,window=64), or raise the limit with {env}=N."
    E112 = "--approx window=W needs the joint objective (the {objective!r} objective's signal lies at the end of the chain, beyond any window); drop window= or use --objective joint."
    E113 = "--approx {spec} needs prefix reuse, which {architecture} lacks ({reason}); use --approx topk:... (any architecture)."
    E114 = "Chain {chain!r}: the model gave non-finite log-probabilities at step {step} (an overflow: float16 holds values only up to 65,504, and some models exceed it); re-run with --dtype float32 (prune's default)."
    # --- comparison and study (E120-E129)
    E120 = "Cannot compare: {reason}"
    E121 = "{path}: the run has no {ordering!r} ordering (baselines.parquet has: {available}). Prune with --baselines {ordering}."
    E122 = "The runs share no chain with identical reasoning text: {detail}"
    E123 = "{path}: invalid study file ({reason})."
    E124 = "Setting {name!r} already has results in {path} made with different settings ({changed}). Re-run with --overwrite to discard them, or give the new setting another name."
    E125 = "{path}: not a comparison folder (no comparison.json). Run `cotsurvival compare` first."
    # --- answer recovery and the llmlingua2 baseline (E130-E139)
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
    E137 = ("Run directory {path} has llmlingua2 orderings made with the {old} framing; this run asks for the {new} "
            "framing. {fix}.")
    E138 = "Invalid LLMLingua-2 framing {value!r}: choose one of {choices}."
    # --- rank stability (E140-E149): replicate paths and their agreement
    E140 = "Invalid replicate option: {reason}"
    E141 = ("--replicates needs the exact engine: an approximation's path is not the greedy one, so perturbing it "
            "measures the approximation, not the ranks. Drop --approx, or prune replicates in a run of their own.")
    # --- one story across commands (E150-E159): stale results, options checked at the edge, skips, fields
    E150 = "{what} no longer describes {run} ({reason}). Re-run `{command}`."
    E151 = "Unknown {what} {value!r}{suggestion}; the run has: {available}."
    E152 = "Invalid {option} {value}: {reason}."
    E153 = "Invalid --fields {value!r}: {reason}. Example: --fields question=problem,reasoning=rationale,answer=final,id=uid."
    # --- on-policy resampling (E160-E169)
    E160 = "Invalid resample option: {reason}"
    E161 = "{path}: no resampling results yet. Run `cotsurvival resample {path}` first."
    E162 = "Resampling chain {chain!r} failed on a Ray worker: {reason}"


#: Code -> the built-in exception class it stands for; codes not listed are ValueErrors.
BUILTIN: dict[str, type[Exception]] = {
    # a file, folder or table that is not there
    **dict.fromkeys(["E001", "E007", "E012", "E015", "E022", "E052", "E125", "E136", "E161"], FileNotFoundError),
    # refusing to replace what exists
    "E081": FileExistsError,
    # reading or writing failed in the file system
    **dict.fromkeys(["E008", "E010", "E082", "E087"], OSError),
    # something names an item that is not there
    **dict.fromkeys(["E042", "E053", "E085", "E121", "E134"], LookupError),
    "E051": IndexError,
    # a missing optional package or asset
    **dict.fromkeys(["E004", "E061", "E070"], ImportError),
    # a model, dataset or worker that could not be loaded or run
    **dict.fromkeys(["E005", "E062", "E130"], OSError),
    **dict.fromkeys(["E020", "E021", "E071", "E072", "E073", "E074", "E162"], RuntimeError),
    "E102": RuntimeError,  # not MemoryError: its allocator refuses subclasses with another base
    "E114": FloatingPointError,
}


class CotSurvivalError(Exception):
    """An error with a stable code and a one-line message meant for the user.

    ``CotSurvivalError(code, ...)`` is also an instance of the built-in class :data:`BUILTIN` maps
    ``code`` to (``ValueError`` by default): the instance's class is ``CotSurvivalError`` (or the
    subclass called) combined with that built-in.

    Parameters
    ----------
    code : str
        Attribute name in :class:`Errors`, e.g. ``"E001"``.
    **fields
        Values substituted into the message template.
    """

    def __new__(cls, code: str, **fields: object):
        builtin = BUILTIN.get(code, ValueError)
        combined = cls if issubclass(cls, builtin) else _combined(cls, builtin)
        # OSError takes its arguments in __new__ (its __init__ ignores them in subclasses that
        # override __new__), so the formatted message goes to the built-in's __new__ too
        return builtin.__new__(combined, f"[{code}] {getattr(Errors, code).format(**fields)}")

    def __init__(self, code: str, **fields: object) -> None:
        self.code = code
        self.fields = fields
        template = getattr(Errors, code)
        self.message = template.format(**fields)
        super().__init__(f"[{code}] {self.message}")

    def one_line(self) -> str:
        """The message as the CLI prints it (newlines folded)."""
        return f"error[{self.code}]: " + " ".join(self.message.split())

    def __reduce__(self):
        # the combined class is made at run time and cannot be found by name: rebuild from the code
        public = type(self).__mro__[1] if getattr(type(self), "_combined", False) else type(self)
        return (_rebuild, (public, self.code, self.fields))


_COMBINED: dict[tuple[type, type], type] = {}


def _combined(cls: type, builtin: type) -> type:
    key = (cls, builtin)
    if key not in _COMBINED:
        _COMBINED[key] = type(cls.__name__, (cls, builtin),
                              {"__module__": cls.__module__, "__qualname__": cls.__qualname__, "_combined": True})
    return _COMBINED[key]


def _rebuild(cls: type, code: str, fields: dict) -> CotSurvivalError:
    return cls(code, **fields)


class ChainInputError(CotSurvivalError):
    """Bad chain input: a file or one of its lines."""


# ----------------------------------------------------------------------------------- warnings
class CotSurvivalWarning(UserWarning):
    """Base class of the package's warnings."""


class ApproximationWarning(CotSurvivalWarning):
    """An exact computation would be very costly; an approximation (``--approx``) is advised or used."""


class PrecisionWarning(CotSurvivalWarning):
    """Scoring in reduced precision (float16, bfloat16) can reorder near-tied deletions."""


class NonEnglishWarning(CotSurvivalWarning):
    """Texts that do not look English: the taxonomy's rules are written for English."""


class CheckpointWarning(CotSurvivalWarning):
    """A checkpoint that cannot be read is ignored; the work it held is redone."""
