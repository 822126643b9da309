"""A short plain-text summary of ``metrics.json`` for the terminal."""

from __future__ import annotations

import math
from typing import Any

from compaudit.schema import Metrics

__all__ = ["format_summary"]


def _pct(x: float | None) -> str:
    return "  n/a" if x is None or not math.isfinite(x) else f"{100 * x:5.2f}%"


def format_summary(metrics: Metrics, *, top: int = 3) -> str:
    """Per variant: accuracy, significant classes, PIEs and the largest subgroup changes."""
    task = metrics.task
    lines = [
        f"{task.n_examples} examples, {task.num_classes} classes, attributes: "
        f"{', '.join(task.attributes) or 'none'}",
        "",
        f"{'variant':<16}{'replicas':>9}{'top-1':>10}{'± std':>9}"
        f"{'sig. classes raw/BH':>21}{'PIEs':>8}",
    ]
    for name, acc in metrics.accuracy.items():
        cls: Any = metrics.classes.get(name)  # dense has no class or PIE entry
        pie: Any = metrics.pie.get(name)
        sig = f"{cls['significant_raw']}/{cls['significant_bh']}" if cls else "-"
        std = acc.get("top1_std")
        lines.append(
            f"{name:<16}{acc['replicas']:>9}{_pct(acc.get('top1_mean')):>10}"
            f"{'' if std is None or std != std else f'{100 * std:.2f}':>9}{sig:>21}"
            f"{(pie['n_pie'] if pie else '-'):>8}"
        )
    method = metrics.subgroup_method
    if method is not None and method.note:
        lines += ["", f"inference: {method.note}."]
    if method is not None and method.warning:
        lines.append(f"warning: {method.warning}.")
    tests = {c["test"] for c in metrics.classes.values()}
    if tests - {"welch"}:
        lines.append(f"(class test: {', '.join(sorted(tests))} — a single replica on a side)")
    deltas = [d for d in metrics.deltas if math.isfinite(d.abs_diff_q)
              and d.metric in ("fpr", "fnr", "accuracy") and d.subgroup != "overall"]
    if deltas:
        lines += ["", "largest subgroup changes vs dense (BH q across all cells):"]
        for d in sorted(deltas, key=lambda d: d.abs_diff_q)[:top]:
            lines.append(
                f"  {d.variant:<12} {d.metric.upper():<8} {d.subgroup:<32} "
                f"{_pct(d.dense)} -> {_pct(d.compressed)}  "
                f"[{100 * d.abs_diff_lo:+.2f}, {100 * d.abs_diff_hi:+.2f}] pp  "
                f"q={d.abs_diff_q:.3g}"
            )
    return "\n".join(lines)
