"""cotsurvival: which tokens of a chain-of-thought carry the load, and what kind of tokens are they?

Stages (each also a CLI command)::

    read_chains -> prune -> tag -> analyze -> report

See README.md for the run-directory contract between stages.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .chains import Chain, ChainCorpus, read_chains  # noqa: E402
from .errors import CotSurvivalError  # noqa: E402
from .rundir import RunDir  # noqa: E402
from .comparison import compare  # noqa: E402  (engineer "compare")

__all__ = ["Chain", "ChainCorpus", "CotSurvivalError", "RunDir", "read_chains", "__version__"]
__all__ += ["compare"]
