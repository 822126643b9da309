"""The report's sections, in reading order: verdict first, methodology last.

Each entry pairs an anchor ``id`` and an ``<h2>`` title with a renderer
``render(run, options) -> Html``. A renderer never raises for missing optional data; it
returns a short "not available in this run" note instead.
"""

from __future__ import annotations

from compaudit.report.sections._common import ReportOptions, Section
from compaudit.report.sections.classes import render_classes
from compaudit.report.sections.dissection import render_dissection
from compaudit.report.sections.footprint import render_footprint
from compaudit.report.sections.gallery import render_gallery
from compaudit.report.sections.methodology import render_methodology
from compaudit.report.sections.pie import render_pie
from compaudit.report.sections.robustness import render_robustness
from compaudit.report.sections.screen import render_screen
from compaudit.report.sections.slices import render_slices
from compaudit.report.sections.subgroups import render_subgroups
from compaudit.report.sections.tradeoff import render_tradeoff
from compaudit.report.sections.verdict import render_verdict

__all__ = ["SECTIONS", "Section", "ReportOptions"]

SECTIONS: tuple[Section, ...] = (
    Section("verdict", "Verdict and key findings", render_verdict),
    Section("footprint", "Compression footprint", render_footprint),
    Section("tradeoff", "Trade-off curves", render_tradeoff),
    Section("subgroups", "Subgroup harm", render_subgroups),
    Section("pie", "PIE over-index", render_pie),
    Section("screen", "Pre-compression risk screen", render_screen),
    Section("gallery", "PIE gallery", render_gallery),
    Section("slices", "Slices compression breaks", render_slices),
    Section("classes", "Class impact", render_classes),
    Section("robustness", "Robustness under shift", render_robustness),
    Section("dissection", "Interpretability (network dissection)", render_dissection),
    Section("methodology", "Methodology and reproducibility", render_methodology),
)
