"""Subgroup section: one table per compressed variant, numbers and marks from ``deltas``."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from compaudit.report.sections import ReportOptions
from compaudit.report.sections.subgroups import delta_rows, forest_data, render_subgroups

EVIL = "<script>alert(1)</script>"


def _delta(subgroup="Male=True", metric="fpr", variant="gmp-90", *, diff=0.05, q=0.004,
           **kw):
    row = {"variant": variant, "subgroup": subgroup, "grouping": "Male", "metric": metric,
           "n": 1234, "dense": 0.1, "compressed": 0.1 + diff, "abs_diff": diff,
           "abs_diff_lo": diff - 0.03, "abs_diff_hi": diff + 0.03, "abs_diff_q": q,
           "rel_change_pct": 50.0, "rel_change_pct_lo": 20.0, "rel_change_pct_hi": 80.0,
           "norm_change_pct": 30.0, "norm_change_pct_lo": 5.0, "norm_change_pct_hi": 55.0,
           "norm_change_pct_q": 0.03, "note": None}
    return row | kw


def _render(run):
    return render_subgroups(run, ReportOptions())


def test_no_deltas_is_a_note(make_run, text_of, tables_of):
    html = _render(make_run())
    assert "Not available in this run: no subgroup comparison" in text_of(html)
    assert tables_of(html) == [] and "<img" not in html


def test_table_shows_the_metrics_numbers(make_run, tables_of):
    html = _render(make_run({"deltas": [_delta()]}))
    [table] = tables_of(html)
    assert table.records() == [{
        "subgroup": "Male=True", "metric": "FPR", "n": "1,234", "dense": "10.00%",
        "compressed": "15.00%", "change (pp)": "+5.00 pp [+2.00, +8.00]", "q": "0.004",
        "sig.": "▲", "relative change": "+50.0% [+20.0, +80.0]",
        "normalized change": "+30.0% [+5.0, +55.0]", "q (normalized)": "0.030"}]
    assert table.attr(0, "change (pp)", "data-sort") == repr(0.05)
    assert "sig-harm" in table.attr(0, "change (pp)", "class")
    assert html.count("<img") == 1  # the forest plot


def test_one_table_per_compressed_variant_in_run_order(make_run, text_of, tables_of):
    deltas = [_delta(variant="gmp-90", subgroup="a"), _delta(variant="gmp-50", subgroup="b")]
    run = make_run({"deltas": deltas}, variants=("dense", "gmp-50", "gmp-90", "gmp-99"))
    html = _render(run)
    text = text_of(html)
    assert text.index("gmp-50 vs dense") < text.index("gmp-90 vs dense")
    assert "gmp-99 vs dense" not in text  # no rows: no empty table
    assert [t.column("subgroup") for t in tables_of(html)] == [["b"], ["a"]]


def test_marks_follow_the_harmful_direction_of_each_metric():
    frame = pd.DataFrame([
        _delta(metric="fpr", diff=0.02, q=0.01),             # error rate up: harm
        _delta(metric="fpr", diff=-0.02, q=0.01),            # error rate down: improvement
        _delta(metric="accuracy", diff=-0.02, q=0.01),       # accuracy down: harm
        _delta(metric="selection_rate", diff=0.02, q=0.01),  # no harmful direction
        _delta(metric="fpr", diff=0.02, q=0.2, norm_change_pct_q=0.5),   # not significant
        # Only the normalized change is significant: its own mark shows.
        _delta(metric="fpr", diff=0.02, q=0.2, norm_change_pct=-40.0, norm_change_pct_q=0.01),
    ])
    marks = [row[7].text for row in delta_rows(frame, alpha=0.05)]
    assert marks == ["▲", "▼", "▲", "◆", "", "▼"]


def test_untested_normalized_change_is_starred_and_explained(make_run, tables_of):
    deltas = [_delta(norm_change_pct=None, norm_change_pct_q=None,
                     note="too few positives to test")]
    [table] = tables_of(_render(make_run({"deltas": deltas})))
    assert table.records()[0]["q (normalized)"] == "n/a *"
    assert table.attr(0, "q (normalized)", "title") == "too few positives to test"
    assert table.caption == "* too few positives to test."


def test_forest_data_marks_significant_rows_and_keeps_the_metrics():
    deltas = pd.DataFrame([_delta(q=0.01), _delta(subgroup="b", q=0.2),
                           _delta(metric="accuracy", q=0.0)])
    data = forest_data(deltas, ["fpr"], alpha=0.05)
    assert list(data["row"]) == ["Male=True", "b"]
    assert list(data["sig"]) == [True, False]
    assert set(data["panel"]) == {"change in false-positive rate"}
    assert list(data["est"]) == [0.05, 0.05]
    assert list(data["lo"]) == pytest.approx([0.02, 0.02])
    empty = forest_data(deltas, ["fnr"], alpha=0.05)
    assert empty.empty and list(empty.columns) == ["panel", "row", "hue", "est", "lo", "hi",
                                                   "sig"]


def test_disparity_table(make_run, tables_of, text_of):
    disparity = [{"variant": "gmp-90", "grouping": "Male", "metric": "fpr", "dense": 0.04,
                  "compressed": 0.1, "change": 0.06, "change_lo": 0.01, "change_hi": 0.11,
                  "change_q": 0.02, "max_subgroup": "Male=True", "min_subgroup": "Male=False"}]
    html = _render(make_run({"deltas": [_delta()], "disparity": disparity}))
    assert "Disparity across subgroups" in text_of(html)
    table = tables_of(html)[-1]
    assert table.records() == [{
        "variant": "gmp-90", "grouping": "Male", "metric": "FPR", "dense gap": "4.00%",
        "compressed gap": "10.00%", "change (pp)": "+6.00 pp [+1.00, +11.00]", "q": "0.020",
        "sig.": "▲", "highest (compressed)": "Male=True", "lowest (compressed)": "Male=False"}]


def test_hostile_names_are_escaped(make_run, tags_of, text_of, tables_of):
    deltas = [_delta(variant=EVIL, subgroup=f"{EVIL}=True")]
    html = _render(make_run({"deltas": deltas}, variants=("dense", EVIL)))
    assert "script" not in tags_of(html)
    assert f"{EVIL} vs dense" in text_of(html)
    assert tables_of(html)[0].column("subgroup") == [f"{EVIL}=True"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;=True" in html


def test_missing_numbers_show_na():
    frame = pd.DataFrame([_delta(dense=math.nan, abs_diff=None, abs_diff_q=None,
                                 norm_change_pct_q=None)])
    row = delta_rows(frame, alpha=0.05)[0]
    assert row[3].text == "n/a" and row[6].text == "n/a" and row[7].text == ""
