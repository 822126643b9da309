"""The gate's rate checks beyond the subgroup ones the driver's tests exercise: a
baseline run and overall accuracy."""

from __future__ import annotations

from dataclasses import replace

import pytest

from compaudit.gate import run_gate
from compaudit.gate.policy import policy_from_dict
from compaudit.schema import DeltaRow, Task


def test_baseline_comparison(planted):
    same = run_gate(planted, baseline=planted)
    assert not [c for c in same.failed if c.kind == "baseline"]
    older = replace(planted, deltas=tuple(replace(r, abs_diff=0.0) for r in planted.deltas))
    regressed = run_gate(planted, baseline=older)
    assert any(c.kind == "baseline" and c.subject == "Male=True & Young=False"
               for c in regressed.failed)


def test_accuracy_check_reads_top1_of_many_class_runs_and_is_off_when_named_off(
        handmade, only_rates):
    metrics = handmade(0.0, 0.01)
    metrics = replace(metrics, task=Task(binary=False), deltas=metrics.deltas + (
        DeltaRow(variant="c", subgroup="overall", grouping="overall", metric="accuracy",
                 n=500, abs_diff=-0.05, abs_diff_se=0.005, replicas=2),))
    only = policy_from_dict({"accuracy": {"max_drop": 0.01}})
    (check,) = run_gate(metrics, only).checks
    assert (check.kind, check.metric, check.verdict) == ("accuracy", "top-1 drop", "fail")
    assert check.estimate == pytest.approx(0.05)
    assert "accuracy" not in {c.kind for c in run_gate(metrics, only_rates).checks}
