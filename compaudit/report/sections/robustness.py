"""Robustness: corruption errors, accuracy against severity, calibration, subgroup
changes under shift."""

from __future__ import annotations

import pandas as pd

from compaudit.report.format import number, pct, pp_parts, pvalue, sort_key
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
from compaudit.report.plots_robustness import corruption_error_plot, severity_plot
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
from compaudit.report.sections.subgroups import forest_data

__all__ = ["render_robustness", "severity_points"]


def severity_points(table: pd.DataFrame) -> pd.DataFrame:
    """Points of the severity curves from the analysis table ``accuracy_by_severity``.

    Keeps the corrupted rows (severities 1-5) and repeats the clean rows (shift
    ``clean``) as severity 0 of every corruption; shifts without severities (natural shift
    sets) are left out. Means and intervals are the analysis's, unchanged.
    """
    cols = ["shift", "severity", "variant", "mean", "lo", "hi"]
    if table.empty or not set(cols) <= set(table.columns):
        return pd.DataFrame(columns=cols)
    corrupted = table[(table["shift"] != "clean") & (table["severity"] > 0)]
    clean = table[table["shift"] == "clean"]
    frames = [corrupted] + [clean.assign(shift=shift, severity=0)
                            for shift in dict.fromkeys(corrupted["shift"])]
    return pd.concat(frames, ignore_index=True)[cols]


def _severity(run: RunData) -> list[Html]:
    table = run.table("accuracy_by_severity")
    if table.empty:
        corrupted = [r for r in run.metrics.accuracy_by_shift
                     if r.get("shift") != "clean" and (r.get("severity") or 0) > 0]
        if not corrupted:
            return []
        return [tag("h3", "Accuracy against severity"),
                note(f"{NOT_AVAILABLE}: the run directory has no "
                     "tables/accuracy_by_severity.csv (written by newer versions of "
                     "'compaudit analyze'); re-run analyze into this folder to draw it.")]
    img = severity_plot(severity_points(table), variants=run.variants,
                        alt="Top-1 accuracy against severity")
    if img is None:
        return []
    return [tag("h3", "Accuracy against severity"),
            figure(img, f"Top-1 per corruption and severity, mean over replicas with "
                        f"{100 * run.level:g}% t-intervals; 'clean' is severity 0.")]


def _corruption(run: RunData) -> list[Html]:
    ce = records(run.metrics.robustness.corruption_errors)
    if ce.empty:
        return []
    reference = run.metrics.robustness.reference
    ref = "AlexNet" if reference == "alexnet" else f"the dense population ({run.dense})"
    img = corruption_error_plot(ce, variants=run.variants, reference=reference,
                                alt="Corruption error per corruption and variant")
    parts = [tag("h3", "Corruption error")]
    if img is not None:
        parts.append(figure(img, f"Corruption error CE = 100 · Σ error / Σ error of {ref} over "
                                 "the severities evaluated (the reference's errors at those "
                                 "same severities); mCE is the mean over the corruptions "
                                 "present. Below 100 is better than the reference."))
    rows = [[r["variant"], r["corruption"],
             Cell(number(r.get("severities")), sort=sort_key(r.get("severities"))),
             Cell(pct(r.get("error")), sort=sort_key(r.get("error"))),
             Cell(number(r.get("ce"), 1), sort=sort_key(r.get("ce"))),
             Cell(number(r.get("relative_ce"), 1), sort=sort_key(r.get("relative_ce")))]
            for r in ce.to_dict("records")]
    parts.append(sortable_table(["variant", "corruption", "severities", "mean error", "CE",
                                 "relative CE"], rows, caption=f"Reference: {ref}."))
    return parts


def _calibration(run: RunData) -> list[Html]:
    sm = records(run.metrics.robustness.shift_metrics)
    if sm.empty:
        return []
    rows = [[r["variant"], r["shift"], Cell(pct(r.get("top1"), 2), sort=sort_key(r.get("top1"))),
             Cell(pct(r.get("rms_calibration_error"), 2),
                  sort=sort_key(r.get("rms_calibration_error"))),
             Cell(pct(r.get("aurra"), 2), sort=sort_key(r.get("aurra")))]
            for r in sm.to_dict("records")]
    return [tag("h3", "Calibration and selective prediction"),
            sortable_table(["variant", "shift", "top-1", "RMS calibration error", "AURRA"], rows,
                           caption="Means over replicas. RMS calibration error uses adaptive "
                                   "bins of 100 examples (lower is better); AURRA is the area "
                                   "under the response-rate/accuracy curve (higher is better). "
                                   "n/a: the predictions carry no confidence.")]


def _shift_deltas(run: RunData) -> list[Html]:
    sd = records(run.metrics.robustness.shift_deltas)
    if sd.empty:
        return []
    metrics = ["fpr", "fnr"] if run.binary else ["accuracy"]
    clean = records(run.metrics.deltas)
    both = pd.concat([clean.assign(shift=run.metrics.shift),
                      sd], ignore_index=True)
    both = both[both["metric"].isin(metrics)]
    both = both.assign(panel=both["variant"] + " · " + both["metric"].map(
        lambda m: METRIC_NAMES.get(m, m)))
    img = forest_plot(forest_data(both, metrics, run.alpha, panel_by="panel", hue="shift"),
                      xlabel="change under compression (pp)",
                      alt="Subgroup changes under compression, clean and shifted")
    parts = [tag("h3", "Subgroup changes under shift"),
             tag("p", "Does compression hurt a subgroup more when images are shifted? Each "
                      "row is a subgroup's change (compressed − dense) on the clean examples "
                      "and on each shift (severities pooled). q-values are Benjamini-Hochberg "
                      "within each shift: one family per shift, holding every variant, "
                      "subgroup and metric of that shift (as in tables/shift_deltas.csv); the "
                      "clean rows keep the family of tables/deltas.csv.")]
    if img is not None:
        parts.append(figure(img, f"Filled markers: q ≤ {run.alpha:g}."))
    parts.append(sig_legend(run.alpha, run.level))
    rows = []
    for r in sd[sd["metric"].isin(metrics)].to_dict("records"):
        mark = mark_cell(r.get("abs_diff"), r.get("abs_diff_q"), r["metric"], run.alpha)
        rows.append([r["shift"], r["variant"], r["subgroup"], METRIC_SHORT.get(r["metric"]),
                     Cell(pct(r.get("dense"), 2), sort=sort_key(r.get("dense"))),
                     Cell(pct(r.get("compressed"), 2), sort=sort_key(r.get("compressed"))),
                     interval_cell(pp_parts(r.get("abs_diff"), r.get("abs_diff_lo"),
                                            r.get("abs_diff_hi")),
                                   sort=sort_key(r.get("abs_diff")), cls=mark.cls),
                     Cell(pvalue(r.get("abs_diff_q")), sort=sort_key(r.get("abs_diff_q"))), mark])
    parts.append(sortable_table(["shift", "variant", "subgroup", "metric", "dense", "compressed",
                                 "change (pp)", "q", "sig."], rows,
                                numeric=[False] * 4 + [True] * 4 + [False]))
    return parts


def render_robustness(run: RunData, options: ReportOptions) -> Html:
    """Every robustness view the run has data for."""
    parts: list[Html] = _corruption(run) + _severity(run)
    parts += _calibration(run) + _shift_deltas(run)
    shifts = [s for s in run.metrics.task.shifts if s != "clean"]
    if not shifts:
        parts.insert(0, note(f"{NOT_AVAILABLE}: the examples hold no shifted or corrupted "
                             "copies, so there are no corruption errors or shift comparisons; "
                             "only clean calibration is shown."))
    return join(parts) if parts else note(f"{NOT_AVAILABLE}.")
