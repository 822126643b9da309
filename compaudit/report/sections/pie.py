"""PIE counts and the over-index table: which attribute cells PIEs concentrate in."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from compaudit.report.format import (
    finite,
    number,
    pct,
    pvalue,
    signed_pct,
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
from compaudit.report.plots import heatmap_plot
from compaudit.report.rundata import RunData
from compaudit.report.sections._common import (
    NOT_AVAILABLE,
    ReportOptions,
    cell_label,
    mark_cell,
    records,
)

__all__ = ["render_pie", "overindex_matrix"]


def _summary(run: RunData) -> Html:
    pies = run.metrics.pie
    rows = []
    for v, p in pies.items():
        rows.append([v, Cell(number(p.get("n_pie")), sort=sort_key(p.get("n_pie"))),
                     Cell(pct(p.get("pie_rate"), 2), sort=sort_key(p.get("pie_rate"))),
                     *(Cell(pct(p.get(k), 1), sort=sort_key(p.get(k))) for k in (
                         "dense_top1_pie", "dense_top1_non_pie", "variant_top1_pie",
                         "variant_top1_non_pie"))])
    return sortable_table(
        ["variant", "PIEs", "share of examples", "dense top-1 on PIEs",
         "dense top-1 on non-PIEs", "compressed top-1 on PIEs", "compressed top-1 on non-PIEs"],
        rows, caption="PIEs per compressed variant: examples whose modal prediction changed.")


def overindex_matrix(over: pd.DataFrame, run: RunData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(log2 ratio, annotation) matrices, cells x variants, for the heatmap.

    The colour is log2(PIE share / non-PIE share) = log2(1 + growth/100), so doubling and
    halving sit symmetrically around 0; the text is the relative growth in %, with ``*``
    where q <= alpha.
    """
    over = over.assign(cell=[cell_label(r, run) for r in over.to_dict("records")])
    cells = list(dict.fromkeys(over.sort_values(
        "relative_growth_pct", ascending=False, na_position="last")["cell"]))
    variants = [v for v in run.compressed if (over["variant"] == v).any()]
    values = pd.DataFrame(np.nan, index=cells, columns=variants)
    text = pd.DataFrame("", index=cells, columns=variants)
    without = _variants_without_pies(over)
    for r in over.to_dict("records"):
        if r["variant"] in without:
            text.loc[r["cell"], r["variant"]] = "no PIEs"
            continue
        growth = finite(r.get("relative_growth_pct"))
        q = finite(r.get("q_value"))
        star = "*" if q is not None and q <= run.alpha else ""
        if growth is None:
            text.loc[r["cell"], r["variant"]] = "n/a"
            continue
        ratio = 1 + growth / 100
        values.loc[r["cell"], r["variant"]] = math.log2(ratio) if ratio > 0 else -np.inf
        digits = 0 if abs(growth) >= 10 else 1
        text.loc[r["cell"], r["variant"]] = f"{growth:+.{digits}f}%{star}"
    return values.replace(-np.inf, -4.0), text


def _share(value: object) -> str:
    v = finite(value)
    return "n/a" if v is None else f"{v:.2f}%"


def _variants_without_pies(over: pd.DataFrame) -> set[str]:
    """Variants with no PIE at all: their cells' shares among PIEs are undefined (0/0),
    whatever growth the table carries."""
    totals = over.groupby("variant")["n_pie"].sum()
    return set(totals[totals == 0].index)


def _within_label(run: RunData) -> Html:
    """The Mantel-Haenszel pooled over-index within the true label, per variant and cell."""
    mh = records(run.metrics.overindex_mh)
    if mh.empty:
        return Html("")
    rows = []
    for r in mh.to_dict("records"):
        if not r.get("strata"):
            continue  # a variant without PIEs: nothing to pool
        mark = mark_cell(r.get("relative_growth_pct"), r.get("q_value"), "pie_rate", run.alpha)
        rows.append([r["variant"], cell_label(r, run),
                     Cell(number(r.get("n_pie")), sort=sort_key(r.get("n_pie"))),
                     Cell(number(r.get("n_pie_fixed")), sort=sort_key(r.get("n_pie_fixed"))),
                     Cell(number(r.get("n_non_pie")), sort=sort_key(r.get("n_non_pie"))),
                     Cell(number(r.get("strata")), sort=sort_key(r.get("strata"))),
                     interval_cell(signed_pct_parts(r.get("relative_growth_pct"), r.get("lo"),
                                                    r.get("hi")),
                                   sort=sort_key(r.get("relative_growth_pct")), cls=mark.cls),
                     Cell(pvalue(r.get("p_value")), sort=sort_key(r.get("p_value"))),
                     Cell(pvalue(r.get("q_value")), sort=sort_key(r.get("q_value"))), mark])
    if not rows:
        return Html("")
    return join([
        tag("h3", "Over-index within the true label"),
        tag("p", "The table above crosses the label with the attributes, so PIEs that "
                 "concentrate on one class (the harder one, in every group) make all of that "
                 "class's cells look over-indexed. Here each cell is compared with the rest "
                 "of the same label, and the labels are pooled: the Mantel-Haenszel ratio of "
                 "the cell's share among PIEs to its share among non-PIEs, minus 1, with its "
                 f"{100 * run.level:g}% Greenland-Robins interval and the Cochran-Mantel-"
                 "Haenszel test (q: Benjamini-Hochberg across the variant's cells). Per-label "
                 "tables: tables/overindex_within_label.csv. A PIE is any change of the "
                 "modal prediction: \"of them corrections\" counts the PIEs on which the "
                 "variant's modal prediction is the true label and the dense population's "
                 "is not (a repair that beats the dense model makes such PIEs)."),
        sortable_table(
            ["variant", "cell", "# PIE", "of them corrections", "# non-PIE", "labels",
             "pooled relative growth", "CMH p", "q", "sig."], rows,
            numeric=[False, False] + [True] * 7 + [False],
            caption="PIE over-index by attribute cell within the true label (Mantel-Haenszel "
                    "over labels)."),
    ])


def render_pie(run: RunData, options: ReportOptions) -> Html:
    """PIE summary, over-index heatmap and table."""
    if not run.metrics.pie:
        return note(f"{NOT_AVAILABLE}: no compressed variant, so no PIEs.")
    parts: list[Html] = [
        tag("p", "A pruning-identified exemplar (PIE) is an example whose most frequent "
                 "prediction across the compressed population differs from the most frequent "
                 "prediction across the dense population."),
        _summary(run),
    ]
    over = records(run.metrics.overindex)
    if over.empty:
        parts.append(note(f"{NOT_AVAILABLE}: no over-index table (the examples had no "
                          "protected attributes)."))
        return join(parts)
    parts.append(tag("h3", "Over-index of PIEs by attribute cell"))
    parts.append(tag("p", "Relative growth = (cell's share of PIEs) / (cell's share of "
                          "non-PIEs) − 1. Positive: PIEs concentrate in the cell. Fisher's exact "
                          "test per cell against the rest; q is Benjamini-Hochberg across the "
                          "variant's cells."))
    values, text = overindex_matrix(over, run)
    img = heatmap_plot(values, text, alt="PIE over-index by attribute cell and variant",
                       colorbar="PIE share / non-PIE share")
    if img is not None:
        parts.append(figure(img, "Relative growth of each cell's share among PIEs; * marks "
                                 f"q ≤ {run.alpha:g}. Orange: over-represented among PIEs; "
                                 "purple: under-represented."))
    parts.append(tag("p", tag("span", "▲", class_="sig-harm"),
                     f" over-represented among PIEs (q ≤ {run.alpha:g}) · ",
                     tag("span", "▼", class_="sig-good"),
                     " under-represented · blank: not significant.", class_="legend"))
    rows = []
    without = _variants_without_pies(over)
    for r in over.to_dict("records"):
        if r["variant"] in without:
            r = {**r, "relative_growth_pct": None, "pie_pct": None}
        mark = mark_cell(r.get("relative_growth_pct"), r.get("q_value"), "pie_rate", run.alpha)
        rows.append([r["variant"], cell_label(r, run),
                     Cell(number(r.get("n_pie")), sort=sort_key(r.get("n_pie"))),
                     Cell(number(r.get("n_non_pie")), sort=sort_key(r.get("n_non_pie"))),
                     Cell(_share(r.get("pie_pct")), sort=sort_key(r.get("pie_pct"))),
                     Cell(_share(r.get("non_pie_pct")), sort=sort_key(r.get("non_pie_pct"))),
                     Cell(signed_pct(r.get("relative_growth_pct"), 1),
                          sort=sort_key(r.get("relative_growth_pct")), cls=mark.cls),
                     Cell(f"{r['odds_ratio']:.2f}" if finite(r.get("odds_ratio")) is not None
                          else "n/a", sort=sort_key(r.get("odds_ratio"))),
                     Cell(pvalue(r.get("p_value")), sort=sort_key(r.get("p_value"))),
                     Cell(pvalue(r.get("q_value")), sort=sort_key(r.get("q_value"))), mark])
    parts.append(sortable_table(
        ["variant", "cell", "# PIE", "# non-PIE", "PIE %", "non-PIE %", "relative growth",
         "odds ratio", "p", "q", "sig."], rows,
        numeric=[False, False] + [True] * 8 + [False],
        caption="PIEs by attribute combination (as in Hooker et al., CelebA Table 1). A "
                "variant without PIEs has no PIE shares: n/a."))
    parts.append(_within_label(run))
    return join(parts)
