"""Figures, an HTML report and an interactive viewer for a pruned run.

Entry points (each mirrored by a CLI command)::

    build_report(RUN, OUT)       PNG + PDF figures and OUT/index.html   (cotsurvival report RUN --out OUT)
    build_viewer(RUN, OUT_HTML)  one self-contained HTML explorer       (cotsurvival view RUN --out FILE)
    chain_html, run_summary_html HTML fragments for Jupyter

The names are imported on first use, so reading :mod:`cotsurvival.reports.style` (the CLI's
``--width`` choices) does not load the report machinery.
"""
from __future__ import annotations

from ..registry import lazy_attributes

#: Public name -> the module (relative) that defines it.
_LAZY = {
    "chain_html": ".notebook", "run_summary_html": ".notebook",
    "Report": ".report", "build_report": ".report",
    "category_colours": ".style",
    "build_viewer": ".viewer",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_attributes(__name__, _LAZY, globals())
