"""Trade-off curves: top-1 and subgroup error rates against sparsity, with intervals."""

from __future__ import annotations

import pandas as pd

from compaudit.report.html import Html, figure, join, note, tag
from compaudit.report.plots import tradeoff_plot
from compaudit.report.rundata import RunData
from compaudit.report.sections._common import METRIC_NAMES, NOT_AVAILABLE, ReportOptions, records

__all__ = ["render_tradeoff", "accuracy_points", "subgroup_points"]


def accuracy_points(run: RunData) -> pd.DataFrame:
    """Tidy (panel, series, variant, mean, lo, hi) of top-1 (and top-5) per variant."""
    rows = []
    for v, a in run.metrics.accuracy.items():
        for metric, panel in (("top1", "top-1 accuracy"), ("top5", "top-5 accuracy")):
            if a.get(f"{metric}_mean") is not None:
                rows.append({"panel": panel, "series": panel, "variant": v,
                             "mean": a[f"{metric}_mean"], "lo": a.get(f"{metric}_lo"),
                             "hi": a.get(f"{metric}_hi")})
    return _numeric(pd.DataFrame(rows, columns=["panel", "series", "variant", "mean", "lo", "hi"]))


def subgroup_points(run: RunData, metric: str) -> pd.DataFrame:
    """Tidy rows of ``subgroup_summary`` for ``metric``: one panel per grouping, the
    ``overall`` curve repeated in every panel as a reference."""
    summary = records(run.metrics.subgroups)
    cols = ["panel", "series", "variant", "mean", "lo", "hi"]
    if summary.empty:
        return pd.DataFrame(columns=cols)
    s = summary[summary["metric"] == metric]
    overall = s[s["grouping"] == "overall"]
    frames = []
    for grouping in dict.fromkeys(s["grouping"]):
        if grouping == "overall":
            continue
        part = pd.concat([overall, s[s["grouping"] == grouping]])
        frames.append(part.assign(panel=f"by {grouping}", series=part["subgroup"]))
    if not frames and not overall.empty:
        frames.append(overall.assign(panel="overall", series="overall"))
    if not frames:
        return pd.DataFrame(columns=cols)
    return _numeric(pd.concat(frames, ignore_index=True)[cols])


def _numeric(frame: pd.DataFrame) -> pd.DataFrame:
    for c in ("mean", "lo", "hi"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    return frame


def render_tradeoff(run: RunData, options: ReportOptions) -> Html:
    """Top-1 vs sparsity, then each subgroup metric vs sparsity."""
    if not run.compressed:
        return note(f"{NOT_AVAILABLE}: the run has only the dense variant, so there is no "
                    "trade-off to draw.")
    parts: list[Html] = [tag(
        "p", "Points are means over the replicas of each variant with ",
        f"{100 * run.level:g}% t-intervals (seed-to-seed variation). Variants without a "
        "sparsity (for example quantized ones) sit in the grey band at the right; the dotted "
        "line there is the dense value.")]
    repairs = {v: p.base for v, p in run.points.items() if p.base in run.points}
    if repairs:
        # The repair and its base share a sparsity: side by side, joined by a short line.
        parts.append(tag("p", "Repaired variants sit just right of the variant they start from "
                              "(the same sparsity), joined to it by a short line: ",
                         "; ".join(f"{v} from {b}" for v, b in repairs.items()), "."))
    acc = accuracy_points(run)
    panels = list(dict.fromkeys(acc["panel"]))
    img = tradeoff_plot(acc, points=run.points, dense=run.dense, panels=panels,
                        ylabel="accuracy", alt="Accuracy against sparsity per variant")
    parts.append(figure(img, "Accuracy against sparsity, one curve per compression method.")
                 if img is not None else note(f"{NOT_AVAILABLE}: no accuracy per variant."))
    metrics = ("fpr", "fnr") if run.binary else ("accuracy",)
    for metric in metrics:
        data = subgroup_points(run, metric)
        panels = list(dict.fromkeys(data["panel"]))
        name = METRIC_NAMES[metric]
        img = tradeoff_plot(data, points=run.points, dense=run.dense, panels=panels,
                            ylabel=name, alt=f"Subgroup {name} against sparsity")
        if img is None:
            parts.append(note(f"{NOT_AVAILABLE}: no subgroup {name} (the analysis had no "
                              "protected attributes)."))
            continue
        parts.append(tag("h3", f"Subgroup {name} against sparsity"))
        parts.append(figure(img, f"{name.capitalize()} per subgroup with {100 * run.level:g}% "
                                 "t-intervals over replicas; the overall rate is repeated in "
                                 "every panel."))
    return join(parts)
