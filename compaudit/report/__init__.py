"""The HTML audit report: one self-contained file a reviewer reads top to bottom.

``render_report(run_dir)`` reads a run directory (``metrics.json``, ``tables/`` and the
optional ``gate/gate.json``, ``variants.json``, ``run.json``, ``class_names.json``,
``examples.parquet``) and writes ``RUN_DIR/report.html``: verdict and key findings,
footprint, trade-off curves, subgroup tables, PIE over-index and gallery, class impact,
robustness, methodology. Optional PDF through headless Chromium.
"""

from __future__ import annotations

from compaudit.report.pdf import find_chromium, print_pdf
from compaudit.report.render import render_html, render_report
from compaudit.report.rundata import RunData, load_run
from compaudit.report.sections import SECTIONS, ReportOptions

__all__ = ["render_report", "render_html", "load_run", "RunData", "ReportOptions", "SECTIONS",
           "print_pdf", "find_chromium"]
