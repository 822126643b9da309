"""PIE section: counts per variant, the over-index heatmap values and table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from compaudit.report.sections import ReportOptions
from compaudit.report.sections.pie import overindex_matrix, render_pie

EVIL = "<script>alert(1)</script>"
PIE = {"gmp-90": {"n_pie": 1234, "pie_rate": 0.01234, "dense_top1_pie": 0.45,
                  "dense_top1_non_pie": 0.91, "variant_top1_pie": 0.3,
                  "variant_top1_non_pie": 0.905}}


def _over(growth=100.0, q=0.004, *, variant="gmp-90", male=True, label=1, n_pie=10, **kw):
    return {"variant": variant, "label": label, "attr.Male": male, "n_pie": n_pie,
            "n_non_pie": 90, "pie_pct": 25.0, "non_pie_pct": 12.5,
            "relative_growth_pct": growth, "odds_ratio": 2.3333, "p_value": 0.001,
            "q_value": q} | kw


def _render(run):
    return render_pie(run, ReportOptions())


def test_no_pies_is_a_note(make_run, text_of, tables_of):
    html = _render(make_run())
    assert "Not available in this run: no compressed variant, so no PIEs." in text_of(html)
    assert tables_of(html) == []


def test_summary_numbers_come_from_the_metrics(make_run, text_of, tables_of):
    html = _render(make_run({"pie": PIE}))
    [summary] = tables_of(html)
    assert summary.records() == [{
        "variant": "gmp-90", "PIEs": "1,234", "share of examples": "1.23%",
        "dense top-1 on PIEs": "45.0%", "dense top-1 on non-PIEs": "91.0%",
        "compressed top-1 on PIEs": "30.0%", "compressed top-1 on non-PIEs": "90.5%"}]
    assert "no over-index table" in text_of(html)


def test_overindex_table_row(make_run, tables_of):
    run = make_run({"pie": PIE, "overindex": [_over()]}, class_names=["dark", "blond"])
    html = _render(run)
    table = tables_of(html)[1]
    assert table.records() == [{
        "variant": "gmp-90", "cell": "label=blond · Male=True", "# PIE": "10",
        "# non-PIE": "90", "PIE %": "25.00%", "non-PIE %": "12.50%",
        "relative growth": "+100.0%", "odds ratio": "2.33", "p": "0.001", "q": "0.004",
        "sig.": "▲"}]
    assert html.count("<img") == 1  # the heatmap


def test_a_variant_without_pies_has_no_shares(make_run, tables_of):
    over = [_over(variant="gmp-90", n_pie=0, male=m) for m in (True, False)]
    table = tables_of(_render(make_run({"pie": PIE, "overindex": over})))[1]
    assert table.column("relative growth") == ["n/a", "n/a"]
    assert table.column("PIE %") == ["n/a", "n/a"]
    assert table.column("sig.") == ["", ""]


def test_overindex_matrix_is_log2_of_the_share_ratio(make_run):
    run = make_run(variants=("dense", "gmp-50", "gmp-90"))
    over = pd.DataFrame([_over(100.0, 0.01, variant="gmp-90"),
                         _over(5.0, 0.5, variant="gmp-90", male=False),
                         _over(-100.0, 0.01, variant="gmp-50"),
                         _over(None, None, variant="gmp-50", male=False)])
    values, text = overindex_matrix(over, run)
    assert list(values.columns) == ["gmp-50", "gmp-90"]  # the run's order
    # Rows by growth, largest first; a missing growth last.
    assert list(values.index) == ["label=1 · Male=True", "label=1 · Male=False"]
    assert values.loc["label=1 · Male=True", "gmp-90"] == pytest.approx(1.0)  # log2(2)
    assert values.loc["label=1 · Male=False", "gmp-90"] == pytest.approx(math.log2(1.05))
    assert values.loc["label=1 · Male=True", "gmp-50"] == -4.0  # share 0: clipped
    assert np.isnan(values.loc["label=1 · Male=False", "gmp-50"])
    assert text.loc["label=1 · Male=True", "gmp-90"] == "+100%*"
    assert text.loc["label=1 · Male=False", "gmp-90"] == "+5.0%"
    assert text.loc["label=1 · Male=False", "gmp-50"] == "n/a"


def test_hostile_attribute_values_are_escaped(make_run, tags_of, tables_of):
    over = [_over(**{"attr.Male": EVIL})]
    html = _render(make_run({"pie": PIE, "overindex": over}))
    assert "script" not in tags_of(html)
    assert tables_of(html)[1].column("cell") == [f"label=1 · Male={EVIL}"]
    assert "Male=&lt;script&gt;alert(1)&lt;/script&gt;" in html


def _mh(growth=107.3, lo=63.0, hi=163.7, q=1e-8, *, variant="gmp-90", strata=2, **kw):
    return {"variant": variant, "attr.Male": True, "attr.Young": False, "n_pie": 65,
            "n_pie_fixed": 7, "n_non_pie": 3754, "strata": strata, "rr_mh": None if growth is None else 1 + growth / 100,
            "relative_growth_pct": growth, "log_rr_se": 0.12, "lo": lo, "hi": hi,
            "cmh_chi2": 33.6, "p_value": 6.7e-9, "q_value": q} | kw


def test_within_label_table(make_run, text_of, tables_of):
    run = make_run({"pie": PIE, "overindex": [_over()],
                    "overindex_mh": [_mh(), _mh(None, None, None, None, variant="float16",
                                             strata=0)]})
    html = _render(run)
    assert "Over-index within the true label" in text_of(html)
    table = tables_of(html)[2]
    assert table.records() == [{
        "variant": "gmp-90", "cell": "Male=True · Young=False", "# PIE": "65",
        "of them corrections": "7", "# non-PIE": "3,754", "labels": "2", "pooled relative growth": "+107.3% [+63.0, +163.7]",
        "CMH p": "<0.001", "q": "<0.001", "sig.": "▲"}]  # float16 (no PIEs) left out


def test_no_within_label_table_without_rows(make_run, text_of):
    html = _render(make_run({"pie": PIE, "overindex": [_over()]}))
    assert "within the true label" not in text_of(html)
