"""Robustness section: corruption errors, severity curves from the analysis table,
calibration, and subgroup changes under shift."""

from __future__ import annotations

import pandas as pd

from compaudit.report.sections import ReportOptions
from compaudit.report.sections.robustness import render_robustness, severity_points

EVIL = "<script>alert(1)</script>"
SHIFTED = {"task": {"binary": True, "shifts": ["clean", "fog"]}}


def _severity_table():
    rows = [("dense", "clean", 0, 0.9), ("dense", "fog", 1, 0.8), ("dense", "fog", 3, 0.6),
            ("dense", "imagenet-a", 0, 0.1), ("dense", "snow", 2, 0.7),
            ("gmp-90", "clean", 0, 0.88), ("gmp-90", "fog", 1, 0.7)]
    return pd.DataFrame([{"variant": v, "shift": s, "severity": sev, "replicas": 3,
                          "mean": m, "std": 0.01, "lo": m - 0.02, "hi": m + 0.02}
                         for v, s, sev, m in rows])


def _render(run):
    return render_robustness(run, ReportOptions())


def test_severity_points_repeat_clean_as_severity_0_of_each_corruption():
    pts = severity_points(_severity_table())
    assert list(pts.columns) == ["shift", "severity", "variant", "mean", "lo", "hi"]
    assert "imagenet-a" not in set(pts["shift"])  # no severities: not a curve
    keys = list(zip(pts["shift"], pts["severity"], pts["variant"]))
    assert keys == [("fog", 1, "dense"), ("fog", 3, "dense"), ("snow", 2, "dense"),
                    ("fog", 1, "gmp-90"), ("fog", 0, "dense"), ("fog", 0, "gmp-90"),
                    ("snow", 0, "dense"), ("snow", 0, "gmp-90")]
    zero = pts[(pts["shift"] == "snow") & (pts["severity"] == 0)].set_index("variant")
    assert zero.loc["gmp-90", "mean"] == 0.88 and zero.loc["gmp-90", "lo"] == 0.88 - 0.02


def test_severity_points_of_an_empty_or_foreign_table_are_empty():
    assert severity_points(pd.DataFrame()).empty
    assert severity_points(pd.DataFrame({"shift": ["fog"]})).empty


def test_clean_only_run_says_there_is_no_shift(make_run, text_of, tables_of):
    html = _render(make_run())
    text = text_of(html)
    assert "Not available in this run: the examples hold no shifted or corrupted copies" in text
    assert "Accuracy against severity" not in text and tables_of(html) == []


def test_severity_curve_is_drawn_from_the_analysis_table(make_run, text_of):
    html = _render(make_run(SHIFTED, tables={"accuracy_by_severity": _severity_table()}))
    assert "Accuracy against severity" in text_of(html)
    assert "mean over replicas with 95% t-intervals" in text_of(html)
    assert html.count("<img") == 1


def test_older_run_without_the_table_gets_a_note_not_a_plot(make_run, text_of):
    acc = [{"variant": "dense", "replica": 0, "shift": "fog", "severity": 2, "top1": 0.5}]
    html = _render(make_run(SHIFTED | {"accuracy_by_shift": acc}))
    assert "tables/accuracy_by_severity.csv" in text_of(html)
    assert "<img" not in html
    # A run without corrupted rows needs no note about them.
    clean = [{"variant": "dense", "replica": 0, "shift": "clean", "severity": 0, "top1": 0.9}]
    assert "accuracy_by_severity" not in _render(make_run(SHIFTED | {"accuracy_by_shift":
                                                                       clean}))


def _ce(variant, corruption, ce, rel):
    return {"variant": variant, "corruption": corruption, "severities": 5, "error": 0.3,
            "ce": ce, "relative_ce": rel}


def test_corruption_error_table_and_reference(make_run, tables_of):
    robustness = {"reference": "dense",
                  "corruption_errors": [_ce("gmp-90", "fog", 123.45, None),
                                        _ce("gmp-90", "mCE", 110.0, 150.0)]}
    html = _render(make_run(SHIFTED | {"robustness": robustness}))
    [table] = tables_of(html)
    assert table.rows == [["gmp-90", "fog", "5", "30.0%", "123.5", "n/a"],
                          ["gmp-90", "mCE", "5", "30.0%", "110.0", "150.0"]]
    assert table.caption == "Reference: the dense population (dense)."
    robustness["reference"] = "alexnet"
    html = _render(make_run(SHIFTED | {"robustness": robustness}))
    assert tables_of(html)[0].caption == "Reference: AlexNet."


def test_calibration_table(make_run, tables_of):
    sm = [{"variant": "gmp-90", "shift": "fog", "top1": 0.9, "rms_calibration_error": 0.05,
           "aurra": None}]
    [table] = tables_of(_render(make_run(SHIFTED | {"robustness": {"shift_metrics": sm}})))
    assert table.records() == [{"variant": "gmp-90", "shift": "fog", "top-1": "90.00%",
                                "RMS calibration error": "5.00%", "AURRA": "n/a"}]


def test_shift_deltas_keep_the_task_metrics_only(make_run, tables_of):
    def delta(metric, shift="fog"):
        return {"shift": shift, "variant": "gmp-90", "subgroup": "Male=True", "metric": metric,
                "dense": 0.1, "compressed": 0.2, "abs_diff": 0.1, "abs_diff_lo": 0.05,
                "abs_diff_hi": 0.15, "abs_diff_q": 0.01}
    metrics = SHIFTED | {"robustness": {"shift_deltas": [delta("fpr"), delta("accuracy")]},
                         "deltas": [{k: v for k, v in delta("fpr").items() if k != "shift"}]}
    html = _render(make_run(metrics))
    [table] = tables_of(html)
    assert table.records() == [{
        "shift": "fog", "variant": "gmp-90", "subgroup": "Male=True", "metric": "FPR",
        "dense": "10.00%", "compressed": "20.00%", "change (pp)": "+10.00 pp [+5.00, +15.00]",
        "q": "0.010", "sig.": "▲"}]
    assert html.count("<img") == 1  # forest plot of clean and shifted changes


def test_hostile_variant_names_are_escaped(make_run, tags_of, tables_of):
    robustness = {"corruption_errors": [_ce(EVIL, "fog", 100.0, 100.0)]}
    html = _render(make_run(SHIFTED | {"robustness": robustness}, variants=("dense", EVIL)))
    assert "script" not in tags_of(html)
    assert tables_of(html)[0].column("variant") == [EVIL]
