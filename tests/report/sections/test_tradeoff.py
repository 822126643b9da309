"""Trade-off section: the plotted points are the metrics' means and intervals."""

from __future__ import annotations

import math

from compaudit.report.sections import ReportOptions
from compaudit.report.sections.tradeoff import accuracy_points, render_tradeoff, subgroup_points

ACCURACY = {"dense": {"top1_mean": 0.92, "top1_lo": 0.91, "top1_hi": 0.93, "top5_mean": 0.99},
            "gmp-90": {"top1_mean": 0.9, "top1_lo": None, "top1_hi": None}}


def _sub(grouping, subgroup, mean, variant="dense", metric="fpr"):
    return {"variant": variant, "grouping": grouping, "subgroup": subgroup, "metric": metric,
            "mean": mean, "lo": mean - 0.01, "hi": mean + 0.01}


def test_accuracy_points_are_the_metrics_values(make_run):
    pts = accuracy_points(make_run({"accuracy": ACCURACY}))
    rows = {(r["panel"], r["variant"]): r for r in pts.to_dict("records")}
    assert set(rows) == {("top-1 accuracy", "dense"), ("top-5 accuracy", "dense"),
                         ("top-1 accuracy", "gmp-90")}
    assert rows[("top-1 accuracy", "dense")]["lo"] == 0.91
    assert rows[("top-5 accuracy", "dense")]["mean"] == 0.99
    assert math.isnan(rows[("top-1 accuracy", "gmp-90")]["hi"])


def test_subgroup_points_repeat_overall_in_each_grouping_panel(make_run):
    rows = [_sub("overall", "overall", 0.1), _sub("Male", "Male=True", 0.12),
            _sub("Male", "Male=False", 0.08), _sub("Young", "Young=True", 0.11),
            _sub("Male", "Male=True", 0.5, metric="fnr")]
    pts = subgroup_points(make_run({"subgroups": rows}), "fpr")
    assert list(dict.fromkeys(pts["panel"])) == ["by Male", "by Young"]
    by_male = pts[pts["panel"] == "by Male"]
    assert list(by_male["series"]) == ["overall", "Male=True", "Male=False"]
    assert list(pts[pts["panel"] == "by Young"]["series"]) == ["overall", "Young=True"]
    assert 0.5 not in set(pts["mean"])  # another metric


def test_subgroup_points_with_only_the_overall_rate(make_run):
    pts = subgroup_points(make_run({"subgroups": [_sub("overall", "overall", 0.1)]}), "fpr")
    assert list(pts["panel"]) == ["overall"] and list(pts["mean"]) == [0.1]
    assert subgroup_points(make_run(), "fpr").empty


def test_dense_only_run_has_no_tradeoff(make_run, text_of):
    html = render_tradeoff(make_run(variants=("dense",)), ReportOptions())
    assert "the run has only the dense variant" in text_of(html) and "<img" not in html


def test_plots_per_metric_and_notes_for_missing_ones(make_run, text_of):
    rows = [_sub("overall", "overall", 0.1, v) for v in ("dense", "gmp-90")]
    html = render_tradeoff(make_run({"accuracy": ACCURACY, "subgroups": rows}),
                           ReportOptions())
    text = text_of(html)
    assert html.count("<img") == 2  # accuracy, and FPR; FNR has no rows
    assert "Subgroup false-positive rate against sparsity" in text
    assert "Not available in this run: no subgroup false-negative rate" in text
    html = render_tradeoff(make_run(), ReportOptions())
    assert "Not available in this run: no accuracy per variant." in text_of(html)
