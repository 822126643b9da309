"""Verdict and key findings: the gate's verdict, its failing checks, the largest harms."""

from __future__ import annotations

from typing import Any

import pandas as pd

from compaudit.report.format import (
    finite,
    number,
    pct,
    pct_interval,
    pp,
    pp_interval,
    q_text,
    sort_key,
)
from compaudit.report.html import (
    Cell,
    Html,
    interval_cell,
    join,
    note,
    sortable_table,
    tag,
)
from compaudit.report.rundata import RunData
from compaudit.report.sections._common import (
    METRIC_NAMES,
    ReportOptions,
    cell_label,
    check_interval,
    check_tolerance,
    harm_sign,
    records,
)
from compaudit.report.sections.repairs import render_repairs
from compaudit.schema import GateCheck

__all__ = ["render_verdict"]

_ORDER = {"fail": 0, "inconclusive": 1, "pass": 2}
_BANNER = {
    "fail": ("FAIL", "The gate found a regression beyond the policy's tolerance."),
    "warn": ("WARN", "Some checks are inconclusive: their intervals contain the tolerance."),
    "pass": ("PASS", "Every check is within the policy's tolerance."),
}

#: Readable names of check kinds that are not self-explanatory.
_KINDS = {"dissection": "network dissection",
          "pie_within_label": "PIE over-index within label",
          "slice": "discovered slice"}


def _banner(run: RunData) -> Html:
    gate = run.gate
    if gate is None:
        return tag("div", tag("strong", "Gate not run"), tag(
            "p", "No gate/gate.json in this run directory, so there is no pass/fail verdict. "
            "Run ", tag("code", "compaudit gate RUN_DIR"), " and re-render the report."),
            class_="banner banner-none", id="verdict-banner")
    verdict = gate.verdict.lower()
    word, text = _BANNER.get(verdict, (verdict.upper(), "Unrecognised verdict."))
    checks = gate.checks
    counts = {v: sum(c.verdict == v for c in checks) for v in _ORDER}
    summary = (f"{counts['fail']} failed · {counts['inconclusive']} inconclusive · "
               f"{counts['pass']} passed of {len(checks)} checks")
    z = finite(gate.z)
    if z is not None:
        summary += f" (simultaneous intervals, z = {z:.2f}; exit code {gate.exit_code})"
    return tag("div", tag("strong", f"Gate verdict: {word}"), tag("p", text), tag("p", summary),
               class_=f"banner banner-{verdict}", id="verdict-banner")


def _lower(c: GateCheck) -> float:
    lo = finite(c.lo)
    return lo if lo is not None else -1e300


def _failing_checks(run: RunData, limit: int = 10) -> Html:
    checks = [c for c in (run.gate.checks if run.gate else ()) if c.verdict != "pass"]
    if not checks:
        return Html("")
    # Most severe first: failures, then inconclusive; within each, the highest lower bound.
    checks.sort(key=lambda c: (_ORDER.get(c.verdict, 3), -_lower(c)))
    rows = [[Cell(c.verdict, sort=_ORDER.get(c.verdict, 3), cls=f"verdict-{c.verdict}"),
             c.variant, Cell(c.subject, cls="wrap"), c.metric, _KINDS.get(c.kind, c.kind),
             interval_cell(check_interval(c), sort=sort_key(c.estimate)),
             Cell(check_tolerance(c), sort=sort_key(c.tolerance)), Cell(c.reason, cls="wrap")]
            for c in checks[:limit]]
    more = f" (the {limit} most severe of {len(checks)})" if len(checks) > limit else ""
    return join([tag("h3", "Top failing and inconclusive checks"), sortable_table(
        ["verdict", "variant", "subject", "metric", "kind", "increase [interval]", "tolerance",
         "reason"], rows, caption=f"Checks that did not pass{more}; the full list is in "
        "gate/gate.json and gate/junit.xml.",
        numeric=[False] * 5 + [True, True, False])])


def _harms(run: RunData, limit: int = 5) -> list[Html]:
    deltas = records(run.metrics.deltas)
    if deltas.empty or "abs_diff_q" not in deltas:
        return []
    d = deltas[deltas["subgroup"] != "overall"].copy()
    d["harm"] = [harm_sign(m) * (finite(x) or 0.0) for m, x in zip(d["metric"], d["abs_diff"])]
    q = pd.to_numeric(d["abs_diff_q"], errors="coerce")
    d = d[(q <= run.alpha) & (d["harm"] > 0)].sort_values("harm", ascending=False)
    items = []
    for r in d.head(limit).to_dict("records"):
        items.append(tag("li", tag("strong", r["variant"]), " changes the ",
                         METRIC_NAMES.get(r["metric"], r["metric"]), " of ",
                         tag("strong", r["subgroup"]), f" from {pct(r['dense'])} to "
                         f"{pct(r['compressed'])}: ", tag("span", pp_interval(
                             r["abs_diff"], r.get("abs_diff_lo"), r.get("abs_diff_hi")),
                             class_="sig-harm"), f" ({q_text(r['abs_diff_q'])})."))
    return items


def _replicas(n: Any) -> str:
    return f"{n} replica" if n == 1 else f"{n} replicas"


def _key_findings(run: RunData) -> Html:
    items: list[Html] = []
    acc = run.metrics.accuracy
    dense = acc.get(run.dense, {})
    for v in run.compressed:
        a = acc.get(v)
        if not a:
            continue
        diff = (finite(a.get("top1_mean")) or 0) - (finite(dense.get("top1_mean")) or 0)
        items.append(tag("li", tag("strong", v), " top-1 ", pct_interval(
            a.get("top1_mean"), a.get("top1_lo"), a.get("top1_hi"), 2), " vs dense ",
            pct(dense.get("top1_mean"), 2), f" ({pp(diff)}; {_replicas(a.get('replicas'))})."))
    harms = _harms(run)
    if harms:
        items.append(tag("li", "Largest significant subgroup harms:", tag("ul", *harms)))
    elif run.metrics.deltas:
        items.append(tag("li", "No subgroup shows a significant harmful change "
                               f"(q ≤ {run.alpha:g})."))
    for v, p in run.metrics.pie.items():
        items.append(tag("li", tag("strong", v), f": {number(p.get('n_pie'))} PIEs "
                     f"({pct(p.get('pie_rate'), 2)} of {number(p.get('n_examples'))} examples); "
                     f"dense top-1 on PIEs {pct(p.get('dense_top1_pie'))} vs "
                     f"{pct(p.get('dense_top1_all'))} overall."))
    for v, c in run.metrics.classes.items():
        items.append(tag("li", tag("strong", v), f": {c.get('significant_raw', 0)} of "
                     f"{c.get('classes_tested', 0)} classes significantly impacted at p ≤ "
                     f"{run.alpha:g} (uncorrected, as in the paper); {c.get('significant_bh', 0)} "
                     "after Benjamini-Hochberg."))
    over = records(run.metrics.overindex)
    if not over.empty and "q_value" in over:
        q = pd.to_numeric(over["q_value"], errors="coerce")
        top = over[(q <= run.alpha) & (over["relative_growth_pct"] > 0)]
        for r in top.sort_values("relative_growth_pct", ascending=False).head(3).to_dict("records"):
            items.append(tag("li", tag("strong", r["variant"]), ": PIEs over-index on ",
                             tag("strong", cell_label(r, run)),
                             f" by {r['relative_growth_pct']:+.1f}% ({q_text(r['q_value'])})."))
    if not items:
        return note("No findings: the metrics hold no compressed variant.")
    return tag("ul", *items, class_="findings")


def _with_sparsity(name: Any, variants: list[Any]) -> str:
    if not name:
        return "none"
    for v in variants:
        if isinstance(v, dict) and v.get("name") == name and finite(v.get("sparsity")) is not None:
            return f"{name} ({100 * float(v['sparsity']):g}% sparse)"
    return str(name)


def _operating_points(run: RunData) -> Html:
    """Per method family, how far compression can go under the policy (from gate.json)."""
    points = run.gate.operating_points if run.gate is not None else ()
    if not points:
        return Html("")
    rows = []
    for p in points:
        if not isinstance(p, dict):
            continue
        variants = p.get("variants") or []
        order = ", ".join(f"{v.get('name')} ({v.get('status')})" for v in variants
                          if isinstance(v, dict))
        rows.append([p.get("family"), _with_sparsity(p.get("recommended"), variants),
                     _with_sparsity(p.get("first_failing"), variants),
                     _with_sparsity(p.get("without_failure"), variants), Cell(order, cls="wrap")])
    return join([tag("h3", "Recommended operating point"), sortable_table(
        ["method family", "most compressed, every check passes", "first failing",
         "most compressed before it, no failure", "variants, least to most compressed"],
        rows, caption="Computed by the gate: per compression method family, the most "
                      "compressed variant whose every check passes, and the least compressed "
                      "one with a failed check. An inconclusive check does not pass unless the "
                      "policy says inconclusive = \"pass\".")])


def render_verdict(run: RunData, options: ReportOptions) -> Html:
    """Gate banner, operating points, repairs beside their base, the key findings and
    the failing checks."""
    return join([_banner(run), _operating_points(run), render_repairs(run),
                 tag("h3", "Key findings"),
                 _key_findings(run), _failing_checks(run)])
