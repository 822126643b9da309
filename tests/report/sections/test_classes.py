"""Class-impact section: significance counts and the most harmed classes per variant."""

from __future__ import annotations

import pandas as pd

from compaudit.report.sections import ReportOptions
from compaudit.report.sections.classes import render_classes

EVIL = "<script>alert(1)</script>"


def _classes(variant="gmp-90"):
    nrd = [-0.05, 0.02, -0.01, -0.2]
    return pd.DataFrame({
        "variant": variant, "class": [0, 1, 2, 3], "n": [1000, 50, 70, 2000],
        "dense_recall": [0.9, 0.8, 0.7, 0.95], "variant_recall": [0.84, 0.83, 0.68, 0.74],
        "normalized_recall_difference": nrd, "p_value": [0.01, 0.5, 0.04, 0.0001],
        "q_value": [0.03, 0.6, 0.08, 0.0004], "significant_raw": [True, False, True, True],
        "significant_bh": [True, False, False, True]})


def _render(run, top=10):
    return render_classes(run, ReportOptions(top_classes=top))


def test_missing_table_is_a_note(make_run, text_of, tables_of):
    html = _render(make_run())
    assert "Not available in this run: no tables/classes.csv" in text_of(html)
    assert tables_of(html) == []


def test_counts_come_from_the_metrics(make_run, tables_of):
    classes = {"gmp-90": {"classes_tested": 4, "significant_raw": 3, "significant_bh": 2,
                          "test": "welch"}}
    html = _render(make_run({"classes": classes}, tables={"classes": _classes()}))
    counts = tables_of(html)[0]
    assert counts.headers == ["variant", "classes tested", "p ≤ 0.05 (uncorrected)",
                              "q ≤ 0.05 (BH)", "test"]
    assert counts.rows == [["gmp-90", "4", "3", "2", "welch"]]
    assert html.count("<img") == 1


def test_most_harmed_classes_most_negative_first_limited_per_variant(make_run, tables_of):
    table = pd.concat([_classes("gmp-90"), _classes("gmp-50")])
    run = make_run(tables={"classes": table}, variants=("dense", "gmp-50", "gmp-90"),
                   class_names=["cat", "dog", "owl", "eel"])
    harmed = tables_of(_render(run, top=2))[-1]
    assert harmed.column("variant") == ["gmp-50", "gmp-50", "gmp-90", "gmp-90"]
    assert harmed.column("class") == ["eel", "cat", "eel", "cat"]
    assert harmed.records()[0] == {
        "variant": "gmp-50", "class": "eel", "n": "2,000", "dense recall": "95.0%",
        "compressed recall": "74.0%", "normalized recall difference": "-20.00 pp",
        "p": "<0.001†", "q": "<0.001", "sig.": "▲"}
    assert "The 2 classes with the most negative" in harmed.caption


def test_raw_significance_alone_gets_a_dagger_but_no_mark(make_run, tables_of):
    harmed = tables_of(_render(make_run(tables={"classes": _classes()}), top=4))[-1]
    owl = harmed.records()[2]
    assert owl["class"] == "2" and owl["p"] == "0.040†" and owl["sig."] == ""
    assert harmed.records()[3]["p"] == "0.500"  # the gain of class 1: no dagger


def test_hostile_class_names_are_escaped(make_run, tags_of, tables_of):
    run = make_run(tables={"classes": _classes()}, class_names=["a", "b", "c", EVIL])
    html = _render(run)
    assert "script" not in tags_of(html)
    assert tables_of(html)[-1].column("class")[0] == EVIL
