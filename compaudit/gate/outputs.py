"""Gate outputs: a terminal table, JUnit XML (one test case per check), and markdown."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from compaudit._atomic import atomic_write_text
from compaudit.gate.checks import Check, GateResult
from compaudit.rundir import gate_files, make_folder
from compaudit.schema import GateDoc, dumps_gate

__all__ = ["format_table", "to_junit", "to_markdown", "write_gate_outputs"]

_ORDER = {"fail": 0, "inconclusive": 1, "pass": 2}


def _interval(c: Check) -> str:
    if c.unit == "points":
        return f"{100 * c.estimate:+.2f} [{100 * c.lo:+.2f}, {100 * c.hi:+.2f}] pp"
    return f"{c.estimate:+.1f} [{c.lo:+.1f}, {c.hi:+.1f}] %"


def _sorted(checks: list[Check]) -> list[Check]:
    return sorted(checks, key=lambda c: (_ORDER[c.verdict], -(c.lo if c.lo == c.lo else -1e9)))


def _sparsity(value: float | None) -> str:
    return "" if value is None else f" ({100 * value:g}% sparse)"


def _point_lines(result: GateResult) -> list[str]:
    """One sentence per compression family: how far it can go under this policy."""
    lines = []
    for p in result.operating_points:
        sp = dict(zip(p.variants, p.sparsity))
        rec = (f"recommended {p.recommended}{_sparsity(sp[p.recommended])}"
               if p.recommended else "no variant passes every check")
        fail = (f"first failing {p.first_failing}{_sparsity(sp[p.first_failing])}"
                if p.first_failing else "none fails")
        order = " < ".join(f"{v} [{s}]" for v, s in zip(p.variants, p.status))
        lines.append(f"{p.family}: {rec}; {fail} (least to most compressed: {order})")
    return lines


def format_table(result: GateResult, *, show_passed: bool = False, limit: int = 20) -> str:
    """Plain-text table of failing and inconclusive checks (and passed ones if asked)."""
    counts = {v: sum(c.verdict == v for c in result.checks) for v in _ORDER}
    lines = [
        f"gate: {result.verdict.upper()} — {counts['fail']} failed, "
        f"{counts['inconclusive']} inconclusive, {counts['pass']} passed of "
        f"{len(result.checks)} checks (simultaneous {100 * result.policy.level:g}% "
        f"intervals, z = {result.z:.2f})"
    ]
    shown = [c for c in _sorted(result.checks) if show_passed or c.verdict != "pass"]
    rows = [(c.verdict, c.kind, c.variant, c.subject[:40], c.metric, _interval(c),
             c.amount(c.tolerance)) for c in shown[:limit]]
    if rows:
        head = ("verdict", "kind", "variant", "subject", "metric", "increase [interval]",
                "tolerance")
        # Columns as wide as their longest cell: names run together otherwise.
        widths = [max(len(r[i]) for r in (head, *rows)) + 2 for i in range(len(head) - 1)]
        lines += ["".join(f"{cell:<{w}}" for cell, w in zip(r, widths)) + r[-1]
                  for r in (head, *rows)]
    if len(shown) > limit:
        lines.append(f"... and {len(shown) - limit} more (see the JUnit or JSON output)")
    lines += [f"note: {note}" for note in result.notes]
    if result.inference:
        lines.append(f"inference: {result.inference}.")
    lines += [f"operating point: {line}" for line in _point_lines(result)]
    return "\n".join(lines)


def to_junit(result: GateResult) -> str:
    """JUnit XML: a failure per failed check; inconclusive checks are failures under an
    ``inconclusive = "fail"`` policy and skipped (with the reason) under ``warn``."""
    suite = ET.Element("testsuite", name="compaudit-gate", tests=str(len(result.checks)))
    n_fail = n_skip = 0
    for c in result.checks:
        case = ET.SubElement(suite, "testcase", classname=f"compaudit.gate.{c.kind}", name=c.id)
        text = f"{c.metric} increase {_interval(c)}; tolerance {c.amount(c.tolerance)}. {c.reason}"
        fail = c.verdict == "fail" or (c.verdict == "inconclusive"
                                       and result.policy.inconclusive == "fail")
        if fail:
            n_fail += 1
            ET.SubElement(case, "failure", message=f"{c.verdict}: {c.reason}").text = text
        elif c.verdict == "inconclusive" and result.policy.inconclusive == "warn":
            n_skip += 1
            ET.SubElement(case, "skipped", message=f"inconclusive: {c.reason}").text = text
        else:
            ET.SubElement(case, "system-out").text = text
    suite.set("failures", str(n_fail))
    suite.set("skipped", str(n_skip))
    suite.set("errors", "0")
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def to_markdown(result: GateResult, *, limit: int = 25) -> str:
    """A pull-request comment / ``GITHUB_STEP_SUMMARY`` summary."""
    icon = {"fail": "❌", "warn": "⚠️", "pass": "✅"}[result.verdict]
    counts = {v: sum(c.verdict == v for c in result.checks) for v in _ORDER}
    lines = [
        f"## {icon} compaudit gate: {result.verdict.upper()}",
        "",
        f"{counts['fail']} failed · {counts['inconclusive']} inconclusive · "
        f"{counts['pass']} passed ({len(result.checks)} checks, simultaneous "
        f"{100 * result.policy.level:g}% intervals; inconclusive checks "
        f"{result.policy.inconclusive})",
        "",
        *[f"> note: {_md_escape(note)}" for note in result.notes],
    ]
    if result.inference:
        lines += [f"_{_md_escape(result.inference)}._", ""]
    if result.operating_points:
        lines += ["", "### Recommended operating point", "",
                  "| method family | most compressed variant passing every check | "
                  "first failing variant | variants, least to most compressed |",
                  "|---|---|---|---|"]
        for p in result.operating_points:
            sp = dict(zip(p.variants, p.sparsity))
            order = ", ".join(f"{_md_escape(v)} ({s})" for v, s in zip(p.variants, p.status))
            rec = f"{_md_escape(p.recommended)}{_sparsity(sp[p.recommended])}" if p.recommended else "none"
            fail = (f"{_md_escape(p.first_failing)}{_sparsity(sp[p.first_failing])}"
                    if p.first_failing else "none")
            lines.append(f"| {_md_escape(p.family)} | {rec} | {fail} | {order} |")
        lines.append("")
    shown = [c for c in _sorted(result.checks) if c.verdict != "pass"][:limit]
    if shown:
        lines += ["| verdict | check | variant | subject | metric | increase [interval] | tolerance |",
                  "|---|---|---|---|---|---|---|"]
        for c in shown:
            lines.append(f"| {c.verdict} | {c.kind} | {_md_escape(c.variant)} | "
                         f"{_md_escape(c.subject)} | {c.metric} | {_interval(c)} | "
                         f"{c.amount(c.tolerance)} |")
    return "\n".join(lines) + "\n"


def write_gate_outputs(result: GateResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``gate.json``, ``junit.xml`` and ``summary.md`` into ``out_dir`` atomically."""
    out = Path(out_dir)
    make_folder(out, what="gate output folder")
    paths = gate_files(out)
    doc = GateDoc(verdict=result.verdict, exit_code=result.exit_code, z=result.z,
                  notes=tuple(result.notes), inference=result.inference,
                  operating_points=tuple(p.as_dict() for p in result.operating_points),
                  checks=tuple(c.record() for c in result.checks))
    atomic_write_text(paths["json"], dumps_gate(doc))
    atomic_write_text(paths["junit"], to_junit(result))
    atomic_write_text(paths["markdown"], to_markdown(result))
    return paths
