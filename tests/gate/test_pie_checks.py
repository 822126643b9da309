"""The gate's PIE checks: the Katz interval of a cell's over-index and the
Greenland-Robins interval of its Mantel-Haenszel over-index within the label."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import Table2x2

from compaudit.errors import AuditInputError
from compaudit.gate import run_gate
from compaudit.gate.policy import policy_from_dict
from compaudit.schema import Metrics, OverindexMHRow


def test_overindex_interval_is_the_katz_risk_ratio_interval(planted):
    result = run_gate(planted)
    rows = [r for r in planted.overindex if r.variant == "gmp-90"]
    n1 = sum(r.n_pie for r in rows)
    n2 = sum(r.n_non_pie for r in rows)
    row = max((r for r in rows if r.n_pie > 0), key=lambda r: r.n_pie)
    table = Table2x2(np.array([[row.n_pie, n1 - row.n_pie],
                               [row.n_non_pie, n2 - row.n_non_pie]]))
    checks = [c for c in result.checks if c.kind == "pie_overindex"]
    alpha = 2 * sps.norm.sf(result.z)
    lo, hi = table.riskratio_confint(alpha=alpha, method="normal")
    match = [c for c in checks if c.estimate == pytest.approx(row.relative_growth_pct)]
    assert match and match[0].lo == pytest.approx(100 * (lo - 1), rel=1e-6)
    assert match[0].hi == pytest.approx(100 * (hi - 1), rel=1e-6)


ONLY_WITHIN = policy_from_dict({"pie_within_label": {"max_relative_growth_pct": 25.0,
                                                     "min_cell_size": 30}})


def _mh_metrics(rr, log_se, *, n_pie=50, n_non_pie=500, strata=2):
    nan = math.nan
    return Metrics(options={"dense": "dense"}, variants={"dense": {}, "c": {}},
                   overindex_mh=(OverindexMHRow(
                       variant="c", cell={"attr.Male": True}, n_pie=n_pie,
                       n_non_pie=n_non_pie, strata=strata, rr_mh=nan if rr is None else rr,
                       log_rr_se=nan if log_se is None else log_se),))


@pytest.mark.parametrize("rr, se, verdict", [(2.0, 0.1, "fail"), (1.0, 0.05, "pass"),
                                             (1.3, 0.2, "inconclusive"), (0.0, None, "pass")])
def test_within_label_check_is_the_greenland_robins_interval(rr, se, verdict):
    (check,) = run_gate(_mh_metrics(rr, se), ONLY_WITHIN).checks
    assert (check.kind, check.subject) == ("pie_within_label", "Male=True (within label)")
    assert "pie" in check.kind and check.verdict == verdict
    assert check.estimate == pytest.approx(100 * (rr - 1))
    if rr > 0:
        z = sps.norm.ppf(0.975)  # one check: no widening
        assert check.lo == pytest.approx(100 * (rr * math.exp(-z * se) - 1))
        assert check.hi == pytest.approx(100 * (rr * math.exp(z * se) - 1))
    # The reason reads the tolerance in the check's unit (percent growth).
    tolerance = f"{ONLY_WITHIN.pie_within_label.max_relative_growth_pct:g}%"
    assert check.reason == {"fail": f"increase above {tolerance} with confidence",
                            "pass": "",
                            "inconclusive": f"interval contains the tolerance {tolerance}"
                            }[verdict]


def test_within_label_check_skips_variants_with_few_pies():
    # One PIE: its share among PIEs has no variance, the interval collapses (measured on
    # the demo's control: float16 with 1 PIE read as +2178% [+1622, +2914]).
    with pytest.raises(AuditInputError, match=r"\[gate.pie_within_label\] matched no check"):
        run_gate(_mh_metrics(22.8, 0.13, n_pie=1, n_non_pie=6228), ONLY_WITHIN)
    low = policy_from_dict({"pie_within_label": {"min_pies": 1}})
    assert run_gate(_mh_metrics(22.8, 0.13, n_pie=1, n_non_pie=6228), low).checks


def test_within_label_check_skips_small_cells_and_variants_without_pies():
    with pytest.raises(AuditInputError, match=r"\[gate.pie_within_label\] matched no check"):
        run_gate(_mh_metrics(2.0, 0.1, n_pie=5, n_non_pie=20), ONLY_WITHIN)
    with pytest.raises(AuditInputError, match=r"\[gate.pie_within_label\] matched no check"):
        run_gate(_mh_metrics(None, None, n_pie=0, strata=0), ONLY_WITHIN)


def test_within_label_check_on_a_planted_run(planted):
    result = run_gate(planted)
    checks = [c for c in result.checks if c.kind == "pie_within_label"]
    assert checks and all(c.subject.endswith("(within label)") for c in checks)
    row = next(r for r in planted.overindex_mh if r.variant == "gmp-90"
               and r.cell["attr.Male"] and not r.cell["attr.Young"])
    check = next(c for c in checks if c.id == "gmp-90/Male=True & Young=False/pie_within_label")
    assert check.lo == pytest.approx(
        100 * (row.rr_mh * math.exp(-result.z * row.log_rr_se) - 1))
