"""Verdict section: the gate banner, the checks that did not pass, and the key findings."""

from __future__ import annotations

import pytest

from compaudit.report.sections import ReportOptions
from compaudit.report.sections.verdict import render_verdict

EVIL = "<script>alert(1)</script>"


def _check(verdict, lo, *, variant="gmp-90", subject="Male=True", unit="points", **kw):
    return {"verdict": verdict, "variant": variant, "subject": subject, "metric": "fpr",
            "kind": "subgroup", "estimate": lo + 0.02, "lo": lo, "hi": lo + 0.04,
            "tolerance": 0.02, "unit": unit, "reason": f"{verdict} reason", **kw}


def _render(run):
    return render_verdict(run, ReportOptions())


def test_without_gate_the_banner_says_so(make_run, text_of, tables_of):
    html = _render(make_run())
    text = text_of(html)
    assert "Gate not run" in text and "compaudit gate RUN_DIR" in text
    assert "Gate verdict" not in text
    assert tables_of(html) == []


def test_banner_counts_the_checks_by_verdict(make_run, text_of):
    gate = {"verdict": "fail", "z": 2.394, "exit_code": 1,
            "checks": [_check("fail", 0.01), _check("inconclusive", -0.01),
                       _check("pass", -0.05), _check("pass", -0.06)]}
    text = text_of(_render(make_run(gate=gate)))
    assert "Gate verdict: FAIL" in text
    assert ("1 failed · 1 inconclusive · 2 passed of 4 checks (simultaneous intervals, "
            "z = 2.39; exit code 1)") in text


def test_failing_checks_are_listed_most_severe_first_without_passes(make_run, tables_of):
    checks = [_check("inconclusive", -0.01, subject="a"), _check("pass", -0.05, subject="b"),
              _check("fail", 0.01, subject="c"), _check("fail", 0.03, subject="d"),
              _check("inconclusive", 0.0, subject="e")]
    html = _render(make_run(gate={"verdict": "fail", "checks": checks}))
    [table] = tables_of(html)
    # Failures before inconclusive checks; within each, the highest lower bound first.
    assert table.column("subject") == ["d", "c", "e", "a"]
    assert table.column("verdict") == ["fail", "fail", "inconclusive", "inconclusive"]
    row = table.records()[0]
    # estimate 0.05, interval [0.03, 0.07] in points; tolerance 0.02 -> 2.00 pp.
    assert row["increase [interval]"] == "+5.00 pp [+3.00, +7.00]"
    assert row["tolerance"] == "2.00 pp"
    assert row["reason"] == "fail reason"
    assert table.attr(0, "increase [interval]", "data-sort") == repr(0.05)


def test_relative_checks_are_percent_and_the_list_is_capped_at_ten(make_run, tables_of):
    checks = [_check("fail", float(i), unit="%", tolerance=10.0, subject=f"s{i}")
              for i in range(12)]
    [table] = tables_of(_render(make_run(gate={"verdict": "fail", "checks": checks})))
    assert len(table.rows) == 10
    assert "(the 10 most severe of 12)" in table.caption
    assert table.column("subject")[0] == "s11"
    # estimate 11 + 0.02 %, interval [11, 11.04]: one decimal; tolerance 10 -> "10%".
    assert table.records()[0]["increase [interval]"] == "+11.0% [+11.0, +11.0]"
    assert table.records()[0]["tolerance"] == "10%"


def test_key_findings_quote_accuracy_from_the_metrics(make_run, text_of):
    accuracy = {"dense": {"top1_mean": 0.92, "replicas": 3},
                "gmp-90": {"top1_mean": 0.9, "top1_lo": 0.89, "top1_hi": 0.91, "replicas": 3},
                "gmp-50": {"top1_mean": 0.925, "replicas": 1}}
    run = make_run({"accuracy": accuracy}, variants=("dense", "gmp-50", "gmp-90"))
    text = text_of(_render(run))
    assert "gmp-90 top-1 90.00% [89.00, 91.00] vs dense 92.00% (-2.00 pp; 3 replicas)." in text
    assert "gmp-50 top-1 92.50% vs dense 92.00% (+0.50 pp; 1 replica)." in text


def _delta(subgroup, metric, dense, compressed, q, variant="gmp-90"):
    diff = compressed - dense
    return {"variant": variant, "subgroup": subgroup, "metric": metric, "dense": dense,
            "compressed": compressed, "abs_diff": diff, "abs_diff_lo": diff - 0.01,
            "abs_diff_hi": diff + 0.01, "abs_diff_q": q}


def test_largest_significant_harms_only_in_order_of_harm(make_run, text_of):
    deltas = [
        _delta("Male=True", "fpr", 0.1, 0.2, 0.01),        # harm 0.10
        _delta("Young=False", "fnr", 0.1, 0.15, 0.02),     # harm 0.05
        _delta("Old", "accuracy", 0.8, 0.6, 0.0004),       # accuracy fell: harm 0.20
        _delta("overall", "fpr", 0.1, 0.5, 0.0),           # the model as a whole: left out
        _delta("Bald", "fpr", 0.1, 0.6, 0.5),              # not significant
        _delta("Pale", "fpr", 0.3, 0.2, 0.001),            # an improvement
    ]
    text = text_of(_render(make_run({"deltas": deltas})))
    harms = text.split("Largest significant subgroup harms:")[1]
    assert "Bald" not in harms and "Pale" not in harms and "overall" not in harms
    assert harms.index("Old") < harms.index("Male=True") < harms.index("Young=False")
    assert ("gmp-90 changes the accuracy of Old from 80.0% to 60.0%: "
            "-20.00 pp [-21.00, -19.00] (q < 0.001).") in harms
    assert ("gmp-90 changes the false-positive rate of Male=True from 10.0% to 20.0%: "
            "+10.00 pp [+9.00, +11.00] (q = 0.010).") in harms


def test_at_most_five_harms_and_a_line_when_none_is_significant(make_run, text_of):
    deltas = [_delta(f"g{i}", "fpr", 0.1, 0.1 + 0.01 * (i + 1), 0.01) for i in range(7)]
    text = text_of(_render(make_run({"deltas": deltas})))
    assert [f"g{i}" in text for i in range(7)] == [False, False, True, True, True, True, True]
    calm = [_delta("g", "fpr", 0.1, 0.3, 0.2)]
    text = text_of(_render(make_run({"deltas": calm})))
    assert "No subgroup shows a significant harmful change (q ≤ 0.05)." in text


def test_pie_class_and_overindex_findings(make_run, text_of):
    pie = {"gmp-90": {"n_pie": 1234, "pie_rate": 0.01234, "n_examples": 100000,
                      "dense_top1_pie": 0.45, "dense_top1_all": 0.9}}
    classes = {"gmp-90": {"significant_raw": 3, "classes_tested": 10, "significant_bh": 1}}
    over = [{"variant": "gmp-90", "label": 1, "attr.Male": True, "relative_growth_pct": g,
             "q_value": q} for g, q in ((50.0, 0.01), (80.0, 0.2), (-30.0, 0.001), (20.0, 0.04),
                                        (10.0, 0.03), (5.0, 0.02))]
    run = make_run({"pie": pie, "classes": classes, "overindex": over},
                   class_names=["dark", "blond"])
    text = text_of(_render(run))
    assert ("gmp-90: 1,234 PIEs (1.23% of 100,000 examples); dense top-1 on PIEs 45.0% vs "
            "90.0% overall.") in text
    assert ("gmp-90: 3 of 10 classes significantly impacted at p ≤ 0.05 (uncorrected, as in "
            "the paper); 1 after Benjamini-Hochberg.") in text
    # The three largest significant positive growths, largest first.
    found = [g for g in ("+50.0%", "+20.0%", "+10.0%", "+5.0%", "+80.0%", "-30.0%")
             if f"PIEs over-index on label=blond · Male=True by {g}" in text]
    assert found == ["+50.0%", "+20.0%", "+10.0%"]
    assert text.index("+50.0%") < text.index("+20.0%") < text.index("+10.0%")


def test_no_compressed_variant_means_no_findings(make_run, text_of):
    text = text_of(_render(make_run(variants=("dense",))))
    assert "No findings: the metrics hold no compressed variant." in text


@pytest.mark.parametrize("where", ["accuracy", "gate"])
def test_hostile_variant_names_are_escaped(make_run, tags_of, text_of, where):
    metrics, fields = {}, {}
    if where == "accuracy":
        metrics["accuracy"] = {"dense": {"top1_mean": 0.9}, EVIL: {"top1_mean": 0.8}}
    else:
        fields["gate"] = {"verdict": "fail", "checks": [_check("fail", 0.1, variant=EVIL,
                                                               subject=EVIL)]}
    html = _render(make_run(metrics, variants=("dense", EVIL), **fields))
    assert "script" not in tags_of(html)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert EVIL in text_of(html)


def test_operating_points_come_from_the_gate(make_run, tables_of, text_of):
    gate = {"verdict": "fail", "z": 2.0, "exit_code": 1, "checks": [_check("fail", 0.01)],
            "operating_points": [{
                "family": "gmp", "recommended": None, "first_failing": "gmp-90",
                "without_failure": "gmp-50",
                "variants": [{"name": "gmp-50", "status": "inconclusive", "sparsity": 0.5},
                             {"name": "gmp-90", "status": "fail", "sparsity": 0.9}]}]}
    html = _render(make_run(gate=gate))
    assert "Recommended operating point" in text_of(html)
    table = tables_of(html)[0]
    assert table.records() == [{
        "method family": "gmp", "most compressed, every check passes": "none",
        "first failing": "gmp-90 (90% sparse)",
        "most compressed before it, no failure": "gmp-50 (50% sparse)",
        "variants, least to most compressed": "gmp-50 (inconclusive), gmp-90 (fail)"}]
    # Before the key findings: at the top of the report.
    assert text_of(html).index("Recommended operating point") < text_of(html).index("Key findings")
