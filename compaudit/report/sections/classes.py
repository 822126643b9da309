"""Class impact: normalized recall difference per class, significant classes marked."""

from __future__ import annotations

import pandas as pd

from compaudit.report.format import number, pct, pp, pvalue, sort_key
from compaudit.report.html import Cell, Html, figure, join, note, sortable_table, tag
from compaudit.report.plots import class_impact_plot
from compaudit.report.rundata import RunData
from compaudit.report.sections._common import NOT_AVAILABLE, ReportOptions, mark_cell, sig_legend

__all__ = ["render_classes"]


def _counts(run: RunData) -> Html:
    rows = []
    for v, c in run.metrics.classes.items():
        counts = [Cell(number(c.get(k)), sort=sort_key(c.get(k)))
                  for k in ("classes_tested", "significant_raw", "significant_bh")]
        rows.append([v, *counts, c.get("test", "n/a")])
    return sortable_table(["variant", "classes tested", f"p ≤ {run.alpha:g} (uncorrected)",
                           f"q ≤ {run.alpha:g} (BH)", "test"], rows,
                          caption="Significantly impacted classes per compressed variant.")


def _most_harmed(table: pd.DataFrame, run: RunData, n: int) -> Html:
    rows = []
    for v in run.compressed:
        sub = table[table["variant"] == v].nsmallest(n, "normalized_recall_difference")
        for r in sub.to_dict("records"):
            # Class tests are per class, so the mark uses the BH q of the class test.
            mark = mark_cell(r["normalized_recall_difference"], r.get("q_value"), "accuracy",
                             run.alpha)
            raw = "†" if bool(r.get("significant_raw")) else ""
            rows.append([v, run.class_name(r["class"]), Cell(number(r.get("n")),
                                                              sort=sort_key(r.get("n"))),
                         Cell(pct(r.get("dense_recall")), sort=sort_key(r.get("dense_recall"))),
                         Cell(pct(r.get("variant_recall")), sort=sort_key(r.get("variant_recall"))),
                         Cell(pp(r["normalized_recall_difference"]),
                              sort=sort_key(r["normalized_recall_difference"]), cls=mark.cls),
                         Cell(pvalue(r.get("p_value")) + raw, sort=sort_key(r.get("p_value"))),
                         Cell(pvalue(r.get("q_value")), sort=sort_key(r.get("q_value"))), mark])
    return sortable_table(
        ["variant", "class", "n", "dense recall", "compressed recall",
         "normalized recall difference", "p", "q", "sig."], rows,
        numeric=[False, False] + [True] * 6 + [False],
        caption=f"The {n} classes with the most negative normalized recall difference per "
                f"variant; † marks p ≤ {run.alpha:g} before correction.")


def render_classes(run: RunData, options: ReportOptions) -> Html:
    """Sorted class-impact plot, significance counts, most harmed classes."""
    table = run.table("classes")
    if table.empty or "normalized_recall_difference" not in table:
        return note(f"{NOT_AVAILABLE}: no tables/classes.csv (no compressed variant).")
    labels = {int(c): run.class_name(c) for c in pd.unique(table["class"])}
    img = class_impact_plot(table, variants=run.compressed, labels=labels, alpha=run.alpha,
                            alt="Normalized recall difference per class")
    parts: list[Html] = [
        tag("p", "For class c and replica k, shifted recall = recall of c − top-1 of the "
                 "replica. The normalized recall difference is the mean shifted recall of the "
                 "compressed population minus that of the dense population: negative means the "
                 "class lost more than the model as a whole. Each class is tested with a "
                 "two-sided Welch t-test across replicas."),
    ]
    if img is not None:
        parts.append(figure(img, "Classes sorted by normalized recall difference. Dark "
                                 f"markers: q ≤ {run.alpha:g} after Benjamini-Hochberg; light: "
                                 f"p ≤ {run.alpha:g} before correction only; warm colours lost "
                                 "recall, blue gained."))
    parts += [_counts(run), sig_legend(run.alpha, run.level),
              _most_harmed(table, run, options.top_classes)]
    return join(parts)
