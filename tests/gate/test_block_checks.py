"""The gate's checks on metrics.json's optional blocks: dissection (t intervals over
replicas) and discovered slices."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from compaudit.errors import AuditInputError
from compaudit.gate import run_gate
from compaudit.gate.policy import GatePolicy, policy_from_dict
from compaudit.schema import DeltaRow, Dissection, DissectionReplicaRow, Metrics, SliceRow, Slices


def _dissected(dense_counts, variant_counts, accuracy_drop=0.0):
    """A metrics.json with a dissection block built from interpretable-unit counts."""
    import pandas as pd

    from compaudit.dissection.compare import compare_dissections

    rows = []
    for variant, counts in (("dense", dense_counts), ("c", variant_counts)):
        for k, count in enumerate(counts):
            for unit in range(20):
                rows.append({"variant": variant, "replica": k, "layer": "l", "unit": unit,
                             "threshold": 0.0, "concept": f"c{unit % 4}", "category": "part",
                             "iou": 0.1, "interpretable": unit < count})
    replicas = compare_dissections(pd.DataFrame(rows))["replicas"]
    return Metrics(options={"dense": "dense"}, variants={"dense": {}, "c": {}},
                   deltas=(DeltaRow(variant="c", subgroup="overall", grouping="overall",
                                    metric="accuracy", n=500, abs_diff=-accuracy_drop,
                                    abs_diff_se=0.01),),
                   dissection=Dissection(config={}, replicas=tuple(
                       DissectionReplicaRow.from_dict(r, where="replicas")
                       for r in replicas.to_dict("records"))))


ONLY_DISSECTION = policy_from_dict({"dissection": {"max_unit_drop": 0.25}})


@pytest.mark.parametrize(
    "variant_counts, verdict",
    [((8, 9, 8, 10), "fail"),       # drops 60, 55, 60, 50%
     ((20, 19, 20, 18), "pass"),    # drops 0, 5, 0, 10%
     ((20, 10, 20, 5), "inconclusive")],
)
def test_dissection_check_is_a_t_interval_over_replicas(variant_counts, verdict):
    metrics = _dissected((20, 20, 20, 20), variant_counts)
    (check,) = run_gate(metrics, ONLY_DISSECTION).checks
    drops = 100 * (1 - np.array(variant_counts) / 20)
    # A drop is at most 100%: scipy's t-interval on -log(100 - drop), mapped back.
    m = drops.mean()
    g_lo, g_hi = sps.t.interval(0.95, len(drops) - 1, loc=-np.log(100 - m),
                                scale=sps.sem(drops) / (100 - m))
    lo, hi = 100 - np.exp(-g_lo), 100 - np.exp(-g_hi)
    assert (check.kind, check.metric, check.unit) == ("dissection", "interpretable_drop", "%")
    assert check.estimate == pytest.approx(drops.mean())
    assert (check.lo, check.hi) == (pytest.approx(lo), pytest.approx(hi))
    assert check.tolerance == pytest.approx(25.0) and check.verdict == verdict


def test_dissection_check_options():
    metrics = _dissected((20, 20, 12), (8, 9, 6), accuracy_drop=0.04)
    both = policy_from_dict({"dissection": {"max_unit_drop": 0.25, "max_concept_drop": 0.5}})
    assert {c.metric for c in run_gate(metrics, both).checks} == {"interpretable_drop",
                                                                  "concept_drop"}
    # Accuracy fell by 4 points: out of scope under a 2-point tolerance, in under 5.
    holds = {"max_unit_drop": 0.25, "accuracy_tolerance": 0.02}
    with pytest.raises(AuditInputError, match=r"\[gate.dissection\] matched no check"):
        run_gate(metrics, policy_from_dict({"dissection": holds}))
    holds["accuracy_tolerance"] = 0.05
    assert len(run_gate(metrics, policy_from_dict({"dissection": holds})).checks) == 1
    off = policy_from_dict({"dissection": {"max_unit_drop": False}})
    with pytest.raises(AuditInputError, match="no gate check applies"):
        run_gate(metrics, off)


def test_dissection_check_without_replicas_or_interpretable_units_is_inconclusive(handmade):
    (one,) = run_gate(_dissected((20,), (5,)), ONLY_DISSECTION).checks
    assert one.verdict == "inconclusive" and "one replica" in one.reason
    (none,) = run_gate(_dissected((0, 0), (0, 0)), ONLY_DISSECTION).checks
    assert none.verdict == "inconclusive" and "no interpretable unit" in none.reason
    # Runs without a dissection block have no dissection checks at all: with nothing
    # else to check, the gate refuses rather than pass.
    with pytest.raises(AuditInputError, match=r"\[gate.dissection\] matched no check"):
        run_gate(handmade(0.0, 0.01), ONLY_DISSECTION)
    both = policy_from_dict({"dissection": {"max_unit_drop": 0.25},
                             "subgroup_rate": {"max_abs_increase": 0.02}})
    result = run_gate(handmade(0.0, 0.01), both)
    assert result.checks and result.notes == ["[gate.dissection] matched no check in this run"]


def _sliced(*rows):
    """A run with slice rows ``(variant, slice, change, se, df, n_test)``."""
    return Metrics(options={"dense": "dense"}, variants={"dense": {}, "c": {}, "d": {}},
                   slices=Slices(rows=tuple(
                       SliceRow(variant=v, slice=k, n=2 * n, n_test=n, change=c, change_se=se,
                                change_df=df, description=f"Male=True (s{k})")
                       for v, k, c, se, df, n in rows)))


ONLY_SLICE = policy_from_dict({"slice": {"max_increase": 0.05, "min_slice_size": 30}})


@pytest.mark.parametrize("change, se, df, verdict", [
    (0.20, 0.02, math.nan, "fail"), (0.0, 0.01, math.nan, "pass"),
    (0.06, 0.03, 4.0, "inconclusive"), (0.0, math.nan, math.nan, "inconclusive")])
def test_slice_check_on_the_change_of_a_slice(change, se, df, verdict, fisher_z):
    (check,) = run_gate(_sliced(("c", 0, change, se, df, 200)), ONLY_SLICE).checks
    assert (check.kind, check.subject, check.unit) == ("slice", "slice 0: Male=True (s0)",
                                                       "points")
    assert check.id == "c/slice-0/error_increase" and check.verdict == verdict
    if math.isfinite(se):
        # A single check: the analysis-level quantile (t with df, else normal), on the
        # Fisher z scale of a change of a rate, as every rate check.
        q = sps.t.ppf(0.975, df) if math.isfinite(df) else sps.norm.ppf(0.975)
        lo, hi = fisher_z(change, q * se)
        assert (check.lo, check.hi) == (pytest.approx(lo), pytest.approx(hi))


def test_slice_checks_every_slice_and_are_off_unless_named(handmade):
    metrics = _sliced(("c", 0, 0.2, 0.02, math.nan, 200), ("c", 1, 0.0, 0.01, math.nan, 200),
                      ("c", 2, 0.3, 0.05, math.nan, 12), ("d", 0, 0.0, 0.01, math.nan, 90))
    result = run_gate(metrics, ONLY_SLICE)
    # Slice 2 has 12 held-out examples, under min_slice_size.
    assert [c.id for c in result.checks] == ["c/slice-0/error_increase",
                                             "c/slice-1/error_increase",
                                             "d/slice-0/error_increase"]
    assert [c.verdict for c in result.checks] == ["fail", "pass", "pass"]
    assert GatePolicy().slice is None  # no policy: no slice check
    with pytest.raises(AuditInputError, match=r"\[gate.slice\] matched no check"):
        run_gate(handmade(0.0, 0.01), ONLY_SLICE)
    with pytest.raises(AuditInputError, match=r"policy: \[gate\.slice\]\.max_increase: got -1; "
                                              r"expected a number >= 0"):
        policy_from_dict({"slice": {"max_increase": -1}})
