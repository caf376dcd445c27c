"""Comparing runs: alignment across tokenizers, agreement of rankings, category effects side by side.

Entry points (each mirrored by a CLI command)::

    compare([RUN_A, RUN_B, ...])    ComparisonResult            (cotsurvival compare RUN_A RUN_B --out DIR)
    run_study(STUDY.toml, ROOT)     every setting, compared     (cotsurvival study STUDY.toml --out ROOT)

Data flows one way: compared runs are only read, never written.
"""
from __future__ import annotations

from .align import RunView, align, load_view, match_chains, parse_run_spec, word_spans
from .compare import ComparisonResult, compare
from .study import Setting, Study, StudyResult, load_study, run_study

__all__ = ["ComparisonResult", "RunView", "Setting", "Study", "StudyResult", "align", "compare", "load_study",
           "load_view", "match_chains", "parse_run_spec", "run_study", "word_spans"]
