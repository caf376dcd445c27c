"""cotsurvival: which tokens of a chain-of-thought carry the load, and what kind of tokens are they?

Stages (each also a CLI command of the same name, calling the same function)::

    generate -> prune -> tag -> attention -> analyze -> report / view / export

>>> import cotsurvival                                           # doctest: +SKIP
>>> run = cotsurvival.prune("gsm8k", "runs/demo", limit=2, keep_ratio=0.5)
>>> cotsurvival.tag(run)                                         # labels.parquet
>>> cotsurvival.analyze(run)                                     # RUN/stats/

See README.md and docs/run-directory.md for the run-directory contract between stages.
"""
from __future__ import annotations

from importlib import import_module

from ._version import __version__
from .errors import CotSurvivalError
from .registry import VIEWS

# The presentation that lower layers show (registry.VIEWS), wired in here at the top, imported on use.
VIEWS.register("run_html", "cotsurvival.reports.notebook:run_summary_html")
VIEWS.register("chain_view", "cotsurvival.reports.notebook:ChainView")
VIEWS.register("recovery_figure", "cotsurvival.reports.recovery:save_recovery_figure")
VIEWS.register("onpolicy_sentences", "cotsurvival.reports.onpolicy:onpolicy_sentences")
VIEWS.register("onpolicy_figure", "cotsurvival.reports.onpolicy:save_onpolicy_figure")

#: Stage name -> "module:function". Adding a stage (here and as ``cotsurvival.<name>``) is one line.
STAGES = {
    "generate": "cotsurvival.generation.generate:generate",
    "prune": "cotsurvival.pruning.run:prune",
    "tag": "cotsurvival.taxonomy.runs:tag",
    "attention": "cotsurvival.stages:attention",
    "analyze": "cotsurvival.analysis.analyze:analyze",
    "report": "cotsurvival.reports.report:build_report",
    "view": "cotsurvival.stages:view",
    "export": "cotsurvival.stages:export",
    "recover": "cotsurvival.recovery:recover",  # answer recovery of pruned chains
    "resample": "cotsurvival.resampling:resample",  # on-policy resampling importance beside greedy survival
}
#: Other public names, imported on first use too so that ``import cotsurvival`` stays fast.
_LAZY = {
    **STAGES,
    "Chain": "cotsurvival.chains:Chain",
    "ChainCorpus": "cotsurvival.chains:ChainCorpus",
    "read_chains": "cotsurvival.chains:read_chains",
    "RunDir": "cotsurvival.rundir:RunDir",
    "load_run": "cotsurvival.analysis.data:load_run",
    "compare": "cotsurvival.comparison.compare:compare",
}

__all__ = ["CotSurvivalError", "STAGES", "__version__", *_LAZY]


def __getattr__(name: str):
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'cotsurvival' has no attribute {name!r}")
    module, attribute = target.split(":")
    value = getattr(import_module(module), attribute)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
