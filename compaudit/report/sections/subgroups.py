"""Subgroup tables: change of each rate per subgroup with intervals, q-values and marks."""

from __future__ import annotations

from typing import Any

import pandas as pd

from compaudit.report.format import (
    finite,
    number,
    pct,
    pp_parts,
    pvalue,
    signed_pct_parts,
    sort_key,
)
from compaudit.report.html import (
    Cell,
    Html,
    figure,
    interval_cell,
    join,
    note,
    sortable_table,
    tag,
)
from compaudit.report.plots import forest_plot
from compaudit.report.rundata import RunData
from compaudit.report.sections._common import (
    METRIC_NAMES,
    METRIC_SHORT,
    NOT_AVAILABLE,
    ReportOptions,
    mark_cell,
    records,
    sig_legend,
)

__all__ = ["render_subgroups", "delta_rows", "forest_data"]

_HEADERS = ["subgroup", "metric", "n", "dense", "compressed", "change (pp)", "q", "sig.",
            "relative change", "normalized change", "q (normalized)"]
_NUMERIC = [False, False] + [True] * 5 + [False] + [True] * 3


def _q(value: Any) -> Cell:
    return Cell(pvalue(value), sort=sort_key(value))


def delta_rows(frame: pd.DataFrame, alpha: float) -> list[list[Any]]:
    """Table rows (see ``_HEADERS``) of ``deltas`` rows of one variant."""
    rows = []
    for r in frame.to_dict("records"):
        mark = mark_cell(r.get("abs_diff"), r.get("abs_diff_q"), r["metric"], alpha)
        norm_mark = mark_cell(r.get("norm_change_pct"), r.get("norm_change_pct_q"), r["metric"],
                              alpha)
        rows.append([
            r["subgroup"], METRIC_SHORT.get(r["metric"], r["metric"]),
            Cell(number(r.get("n")), sort=sort_key(r.get("n"))),
            Cell(pct(r.get("dense"), 2), sort=sort_key(r.get("dense"))),
            Cell(pct(r.get("compressed"), 2), sort=sort_key(r.get("compressed"))),
            interval_cell(pp_parts(r.get("abs_diff"), r.get("abs_diff_lo"), r.get("abs_diff_hi")),
                          sort=sort_key(r.get("abs_diff")), cls=mark.cls),
            _q(r.get("abs_diff_q")),
            # The absolute change decides the mark; a significant normalized change alone
            # (the subgroup fared worse than the model) shows its own mark.
            mark if mark.text else norm_mark,
            interval_cell(signed_pct_parts(r.get("rel_change_pct"), r.get("rel_change_pct_lo"),
                                           r.get("rel_change_pct_hi")),
                          sort=sort_key(r.get("rel_change_pct"))),
            interval_cell(signed_pct_parts(r.get("norm_change_pct"), r.get("norm_change_pct_lo"),
                                           r.get("norm_change_pct_hi")),
                          sort=sort_key(r.get("norm_change_pct")), cls=norm_mark.cls),
            _q_noted(r.get("norm_change_pct_q"), r.get("note")),
        ])
    return rows


def _q_noted(q: Any, text: Any) -> Cell:
    """The q-value; where the analysis left a note (a change not tested), a marker whose
    meaning the table's caption spells out."""
    if text and finite(q) is None:
        return Cell("n/a *", sort=float("nan"), title=str(text))
    return _q(q)


def _notes_caption(frame: pd.DataFrame) -> str | None:
    notes = [n for n in dict.fromkeys(frame.get("note", pd.Series(dtype=str)).dropna()) if n]
    return "* " + "; ".join(map(str, notes)) + "." if notes else None


def forest_data(deltas: pd.DataFrame, metrics: list[str], alpha: float, *,
                panel_by: str = "metric", hue: str = "variant") -> pd.DataFrame:
    """Rows for :func:`~compaudit.report.plots.forest_plot` from ``deltas`` rows."""
    d = deltas[deltas["metric"].isin(metrics)]
    if d.empty:
        return pd.DataFrame(columns=["panel", "row", "hue", "est", "lo", "hi", "sig"])
    q = pd.to_numeric(d["abs_diff_q"], errors="coerce") if "abs_diff_q" in d else None
    panel = (d["metric"].map(lambda m: f"change in {METRIC_NAMES.get(m, m)}")
             if panel_by == "metric" else d[panel_by].astype(str))
    return pd.DataFrame({
        "panel": panel, "row": d["subgroup"].astype(str), "hue": d[hue].astype(str),
        "est": pd.to_numeric(d["abs_diff"], errors="coerce"),
        "lo": pd.to_numeric(d.get("abs_diff_lo"), errors="coerce"),
        "hi": pd.to_numeric(d.get("abs_diff_hi"), errors="coerce"),
        "sig": (q <= alpha) if q is not None else False,
    })


def _disparity(run: RunData) -> Html:
    disp = records(run.metrics.disparity)
    if disp.empty:
        return Html("")
    rows = []
    for r in disp.to_dict("records"):
        mark = mark_cell(r.get("change"), r.get("change_q"), "fpr", run.alpha)
        rows.append([r["variant"], r["grouping"], METRIC_SHORT.get(r["metric"], r["metric"]),
                     Cell(pct(r.get("dense"), 2), sort=sort_key(r.get("dense"))),
                     Cell(pct(r.get("compressed"), 2), sort=sort_key(r.get("compressed"))),
                     interval_cell(pp_parts(r.get("change"), r.get("change_lo"),
                                            r.get("change_hi")),
                                   sort=sort_key(r.get("change")), cls=mark.cls),
                     _q(r.get("change_q")), mark, r.get("max_subgroup") or "",
                     r.get("min_subgroup") or ""])
    return join([
        tag("h3", "Disparity across subgroups"),
        tag("p", "Gap between the highest and the lowest subgroup rate within each grouping; "
                 "a growing gap (▲) means compression widened the disparity."),
        sortable_table(["variant", "grouping", "metric", "dense gap", "compressed gap",
                        "change (pp)", "q", "sig.", "highest (compressed)",
                        "lowest (compressed)"], rows,
                       numeric=[False] * 3 + [True] * 4 + [False] * 3),
    ])


def render_subgroups(run: RunData, options: ReportOptions) -> Html:
    """Forest plot of the changes, then one sortable table per compressed variant."""
    deltas = records(run.metrics.deltas)
    if deltas.empty:
        return note(f"{NOT_AVAILABLE}: no subgroup comparison (the examples had no protected "
                    "attributes, or the run has no compressed variant).")
    metrics = ["fpr", "fnr"] if run.binary else ["accuracy"]
    parts: list[Html] = [
        tag("p", "Each row compares a compressed population with the dense one on the same "
                 "examples. Change = compressed − dense rate (pp) with a paired-bootstrap "
                 "interval; relative change = change / dense rate; normalized change = the "
                 "subgroup's relative change minus the overall relative change (how much worse "
                 "the subgroup fared than the model as a whole). q-values are "
                 "Benjamini-Hochberg adjusted across every test of the run."),
        sig_legend(run.alpha, run.level),
    ]
    img = forest_plot(forest_data(deltas, metrics, run.alpha), xlabel="change (pp)",
                      alt="Change of subgroup error rates under compression")
    if img is not None:
        parts.append(figure(img, "Change per subgroup with intervals; filled markers are "
                                 f"significant (q ≤ {run.alpha:g})."))
    for v in run.compressed:
        sub = deltas[deltas["variant"] == v]
        if sub.empty:
            continue
        parts.append(tag("h3", f"{v} vs {run.dense}"))
        parts.append(sortable_table(_HEADERS, delta_rows(sub, run.alpha), numeric=_NUMERIC,
                                    caption=_notes_caption(sub)))
    parts.append(_disparity(run))
    return join(parts)
