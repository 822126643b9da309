"""Repairs beside their base: the base's checks that did not pass, each with the repair's
twin check, and both variants' sparsity and top-1."""

from __future__ import annotations

from compaudit.report.sections.repairs import render_repairs
from compaudit.schema import VARIANT_FIELDS, VariantRecord

ACCURACY = {name: {"top1_mean": top1, "top1_lo": top1 - 0.01, "top1_hi": top1 + 0.01}
            for name, top1 in (("dense", 0.97), ("gmp-90", 0.9449), ("gmp-90-r", 0.9698))}


def _record(method, sparsity, **fields):
    return VariantRecord(**{**dict.fromkeys(VARIANT_FIELDS), "method": method,
                            "family": "gradual_magnitude", "axis": "sparsity", "parameters": {},
                            "sparsity": sparsity, **fields})


INFO = {"dense": _record("dense", 0.0), "gmp-90": _record("gradual_magnitude", 0.9),
        "gmp-90-r": _record("constrained_finetune", 0.9, base="gmp-90")}


def _check(variant, tail, verdict, estimate, unit="points", tolerance=0.05, **kw):
    spread = 0.1 if unit == "points" else 100.0
    return {"id": f"{variant}/{tail}", "variant": variant, "subject": tail.split("/")[0],
            "metric": tail.split("/")[1], "verdict": verdict, "estimate": estimate, **kw,
            "lo": estimate - spread, "hi": estimate + spread, "tolerance": tolerance, "unit": unit}


def _mh(variant, n_pie, n_fixed):
    return {"variant": variant, "attr.Male": True, "attr.Young": True, "n_pie": n_pie,
            "n_pie_fixed": n_fixed, "n_non_pie": 5000, "strata": 2}


def _run(make_run, checks):
    mh = [_mh("gmp-90", 304, 12), _mh("gmp-90-r", 35, 18)]
    return make_run({"accuracy": ACCURACY, "overindex_mh": mh},
                    variants=("dense", "gmp-90", "gmp-90-r"),
                    variants_info=INFO, gate={"verdict": "fail", "checks": checks})


def test_each_check_the_base_did_not_pass_beside_the_repairs(make_run, tables_of, text_of):
    pie = dict(unit="%", tolerance=75.0, kind="pie_within_label",
               subject="Male=True & Young=True (within label)")
    checks = [_check("gmp-90", "young men/fnr", "inconclusive", 0.15),
              _check("gmp-90", "young men/pie", "fail", 124.6, **pie),
              _check("gmp-90", "old men/fnr", "pass", 0.01),
              _check("gmp-90", "women/fnr", "fail", 0.3),
              _check("gmp-90-r", "young men/pie", "inconclusive", 46.3, **pie),
              _check("gmp-90-r", "young men/fnr", "pass", -0.02),
              _check("gmp-90-r", "old men/fnr", "fail", 0.4)]  # the base passed it: not shown
    html = render_repairs(_run(make_run, checks))
    [table] = tables_of(html)
    # Failures first (by id), then inconclusive; the base's passes are left out.
    assert table.column("subject") == ["women", "Male=True & Young=True (within label)",
                                       "young men"]
    assert table.column("gmp-90 verdict") == ["fail", "fail", "inconclusive"]
    assert table.column("gmp-90-r verdict") == ["unchecked", "inconclusive", "pass"]
    pie = table.records()[1]
    assert pie["gmp-90 [interval]"] == "+124.6% [+24.6, +224.6]"
    assert pie["gmp-90-r [interval]"] == "+46.3% [-53.7, +146.3]" and pie["tolerance"] == "75%"
    assert table.records()[0]["gmp-90-r [interval]"] == "n/a"
    # The cell's PIEs and their corrections, base -> repair, on the PIE check only.
    assert table.column("PIEs (corrections)") == ["", "304 (12) → 35 (18)", ""]
    assert table.records()[2]["gmp-90-r [interval]"] == "-2.00 pp [-12.00, +8.00]"
    text = text_of(html)
    assert ("gmp-90-r starts from gmp-90's replicas and keeps their zeros (sparsity 90% and "
            "90%); top-1 94.49% → 96.98% (dense 97.00%). Of the 2 check(s) gmp-90 fails, "
            "gmp-90-r passes 0, is inconclusive on 1, fails 0 and is not checked on 1.") in text


def test_nothing_without_a_repair_or_a_gate(make_run):
    info = {k: v for k, v in INFO.items() if k != "gmp-90-r"}
    assert render_repairs(make_run(variants=("dense", "gmp-90"), variants_info=info,
                                   gate={"verdict": "pass", "checks": []})) == ""
    assert render_repairs(make_run({"accuracy": ACCURACY},
                                   variants=("dense", "gmp-90", "gmp-90-r"),
                                   variants_info=INFO)) == ""
