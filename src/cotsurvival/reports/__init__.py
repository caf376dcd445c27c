"""Figures, an HTML report and an interactive viewer for a pruned run.

Entry points (each mirrored by a CLI command)::

    build_report(RUN, OUT)       PNG + PDF figures and OUT/index.html   (cotsurvival report RUN --out OUT)
    build_viewer(RUN, OUT_HTML)  one self-contained HTML explorer       (cotsurvival view RUN --out FILE)
    chain_html, run_summary_html HTML fragments for Jupyter
"""
from __future__ import annotations

from .notebook import chain_html, run_summary_html
from .report import Report, build_report
from .style import category_colours
from .viewer import build_viewer

__all__ = ["Report", "build_report", "build_viewer", "category_colours", "chain_html", "run_summary_html"]
