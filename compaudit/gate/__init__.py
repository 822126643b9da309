"""The CI gate: a policy of tolerances, checks with simultaneous intervals, verdicts.

``run_gate(metrics, policy)`` turns a run's ``metrics.json`` into checks and a verdict;
``write_gate_outputs`` writes ``gate.json``, ``junit.xml`` and ``summary.md``.
"""

from compaudit.gate.checks import Check, GateResult, run_gate
from compaudit.gate.outputs import (
    format_table,
    to_junit,
    to_markdown,
    write_gate_outputs,
)
from compaudit.gate.policy import GatePolicy, load_policy, policy_from_dict

__all__ = [
    "Check",
    "GatePolicy",
    "GateResult",
    "format_table",
    "load_policy",
    "policy_from_dict",
    "run_gate",
    "to_junit",
    "to_markdown",
    "write_gate_outputs",
]
