"""Helpers shared by the sections: options, significance marks, cell labels, records."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from compaudit.errors import AuditInputError
from compaudit.report.format import finite, pp_parts, signed_pct_parts
from compaudit.report.html import Cell, Html, tag
from compaudit.report.rundata import RunData
from compaudit.schema.gate import amount

__all__ = ["ReportOptions", "Section", "records", "harm_sign", "mark_cell", "sig_legend",
           "cell_label", "check_interval", "check_tolerance", "METRIC_NAMES", "METRIC_SHORT",
           "NOT_AVAILABLE"]

NOT_AVAILABLE = "Not available in this run"

#: Short names for table cells (the legend spells them out).
METRIC_SHORT = {"fpr": "FPR", "fnr": "FNR", "tpr": "TPR", "tnr": "TNR", "accuracy": "accuracy",
                "selection_rate": "selection rate", "pie_rate": "PIE rate"}

METRIC_NAMES = {
    "fpr": "false-positive rate", "fnr": "false-negative rate", "tpr": "true-positive rate",
    "tnr": "true-negative rate", "accuracy": "accuracy", "selection_rate": "selection rate",
    "base_rate": "base rate", "pie_rate": "PIE rate",
}


@dataclass(frozen=True)
class ReportOptions:
    """Rendering options.

    Parameters
    ----------
    gallery_size
        PIE thumbnails shown per compressed variant (highest taxicab score first).
    thumbnail_px
        Longest side of a gallery thumbnail, in pixels.
    top_classes
        Most harmed classes listed per variant in the class-impact table.
    """

    gallery_size: int = 12
    thumbnail_px: int = 64
    top_classes: int = 10

    def check(self) -> None:
        """Raise :class:`AuditInputError` for options out of range."""
        problems = []
        if not isinstance(self.gallery_size, int) or self.gallery_size < 0:
            problems.append(f"report option gallery_size: got {self.gallery_size!r}; expected "
                            "an integer >= 0 (0 hides the gallery)")
        if not isinstance(self.thumbnail_px, int) or not 8 <= self.thumbnail_px <= 512:
            problems.append(f"report option thumbnail_px: got {self.thumbnail_px!r}; expected "
                            "an integer from 8 to 512")
        if not isinstance(self.top_classes, int) or self.top_classes < 1:
            problems.append(f"report option top_classes: got {self.top_classes!r}; expected "
                            "an integer >= 1")
        if problems:
            raise AuditInputError(problems)


@dataclass(frozen=True)
class Section:
    """One report section: its anchor ``id``, its ``<h2>`` title and its renderer."""

    id: str
    title: str
    render: Callable[[RunData, ReportOptions], Html]


def records(rows: Any) -> pd.DataFrame:
    """Rows of a :class:`~compaudit.schema.Metrics` (records, or mappings for the blocks
    it keeps untyped) as a DataFrame in their CSV form (empty for none)."""
    return (pd.DataFrame([r if isinstance(r, Mapping) else r.as_dict() for r in rows])
            if rows else pd.DataFrame())


def harm_sign(metric: str) -> int:
    """+1 when an increase of ``metric`` harms (error rates), -1 when a decrease harms
    (accuracy, TPR, TNR), 0 when neither direction is a harm (selection rate)."""
    if metric in ("fpr", "fnr", "pie_rate"):
        return 1
    if metric in ("accuracy", "tpr", "tnr", "top1", "top5"):
        return -1
    return 0


def mark_cell(change: Any, q: Any, metric: str, alpha: float) -> Cell:
    """Significance mark of a change: ▲ harm, ▼ improvement, ◆ change, blank otherwise."""
    c, qv = finite(change), finite(q)
    if c is None or qv is None or qv > alpha or c == 0:
        return Cell("", sort=0, title="not significant")
    direction = harm_sign(metric) * (1 if c > 0 else -1)
    if direction > 0:
        return Cell("▲", sort=2, cls="sig-harm", title=f"significant harm (q ≤ {alpha:g})")
    if direction < 0:
        return Cell("▼", sort=-1, cls="sig-good", title=f"significant improvement (q ≤ {alpha:g})")
    return Cell("◆", sort=1, cls="sig-neutral", title=f"significant change (q ≤ {alpha:g})")


def sig_legend(alpha: float, level: float) -> Html:
    """The significance legend shown above tables that use :func:`mark_cell`."""
    return tag(
        "p", tag("span", "▲", class_="sig-harm"), f" significant harm (q ≤ {alpha:g}, "
        "Benjamini-Hochberg) · ", tag("span", "▼", class_="sig-good"),
        " significant improvement · ", tag("span", "◆", class_="sig-neutral"),
        " significant change with no harmful direction · blank: not significant. "
        f"Intervals are {100 * level:g}%; pp = percentage points; FPR / FNR = false-positive "
        "/ false-negative rate.",
        class_="legend")


def cell_label(row: dict[str, Any], run: RunData) -> str:
    """``label=Blond · Male=True · Young=False`` for an over-index row."""
    parts = []
    if "label" in row and row["label"] is not None and row["label"] == row["label"]:
        parts.append(f"label={run.class_name(row['label'])}")
    for key, value in row.items():
        if str(key).startswith("attr."):
            parts.append(f"{str(key)[5:]}={value}")
    return " · ".join(parts) or "all"



def check_interval(c: Any) -> tuple[str, str]:
    """A gate check's estimate and interval as (text, interval text): rate changes in
    percentage points (``unit == "points"``), ratios as signed percentages."""
    if c.unit == "points":
        return pp_parts(c.estimate, c.lo, c.hi)
    return signed_pct_parts(c.estimate, c.lo, c.hi)


def check_tolerance(c: Any) -> str:
    """A gate check's tolerance in the unit its interval is shown in."""
    t = finite(c.tolerance)
    if t is None:
        return "n/a"
    return amount(t, c.unit)
