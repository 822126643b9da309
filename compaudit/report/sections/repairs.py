"""Repairs beside their base: for each derived variant (``base`` in ``variants.json``),
the checks its base did not pass, with the base's and the repair's intervals and
verdicts side by side, and both variants' sparsity and top-1."""

from __future__ import annotations

from compaudit.analysis._cells import cell_label
from compaudit.report.format import number, pct, sort_key
from compaudit.report.html import Cell, Html, interval_cell, join, sortable_table, tag
from compaudit.report.rundata import RunData
from compaudit.report.sections._common import check_interval, check_tolerance
from compaudit.schema import GateCheck

__all__ = ["render_repairs"]

_ORDER = {"fail": 0, "inconclusive": 1, "unchecked": 2, "pass": 3}


def _verdict(c: GateCheck | None) -> Cell:
    verdict = c.verdict if c is not None else "unchecked"
    return Cell(verdict, sort=_ORDER.get(verdict, 4), cls=f"verdict-{verdict}")


def _sparsity(run: RunData, name: str) -> str:
    point = run.points.get(name)
    return pct(point.sparsity, 0) if point is not None and point.sparsity is not None else "n/a"


def _top1(run: RunData, name: str) -> str:
    return pct((run.metrics.accuracy.get(name) or {}).get("top1_mean"), 2)


def _pies(run: RunData) -> dict[tuple[str, str], str]:
    """(variant, within-label check subject) -> "PIEs (corrections)" of that cell."""
    out = {}
    for r in run.metrics.overindex_mh:
        cell = cell_label((k.removeprefix("attr."), v) for k, v in r.cell.items())
        out[r.variant, f"{cell} (within label)"] = (f"{number(r.n_pie)} "
                                                    f"({number(r.n_pie_fixed)})")
    return out


def _one(run: RunData, repair: str, base: str) -> Html:
    checks = run.gate.checks if run.gate is not None else ()
    ours = {c.id[len(repair) + 1:]: c for c in checks if c.variant == repair}
    # A check's id is "<variant>/<subject>/<metric>": the repair's twin has the same tail.
    theirs = sorted((c for c in checks if c.variant == base and c.verdict != "pass"),
                    key=lambda c: (_ORDER.get(c.verdict, 4), c.id))
    failed = [c for c in theirs if c.verdict == "fail"]
    after = [ours.get(c.id[len(base) + 1:]) for c in failed]
    outcome = {v: sum((a.verdict if a else "unchecked") == v for a in after) for v in _ORDER}
    summary = (f"{repair} starts from {base}'s replicas and keeps their zeros (sparsity "
               f"{_sparsity(run, base)} and {_sparsity(run, repair)}); top-1 "
               f"{_top1(run, base)} → {_top1(run, repair)} (dense {_top1(run, run.dense)}). ")
    summary += (f"Of the {len(failed)} check(s) {base} fails, {repair} passes "
                f"{outcome['pass']}, is inconclusive on {outcome['inconclusive']}, fails "
                f"{outcome['fail']}" + (f" and is not checked on {outcome['unchecked']}"
                                        if outcome["unchecked"] else "") + "."
                if failed else f"{base} fails no check.")
    parts: list[Html] = [tag("h4", f"{repair} beside {base}"), tag("p", summary)]
    if theirs:
        pies = _pies(run)
        rows = []
        for c in theirs:
            twin = ours.get(c.id[len(base) + 1:])
            counts = ("" if c.kind != "pie_within_label" else
                      f"{pies.get((base, c.subject), 'n/a')} → "
                      f"{pies.get((repair, c.subject), 'n/a')}")
            rows.append([Cell(c.subject, cls="wrap"), c.metric,
                         Cell(check_tolerance(c), sort=sort_key(c.tolerance)),
                         interval_cell(check_interval(c), sort=sort_key(c.estimate)), _verdict(c),
                         (interval_cell(check_interval(twin), sort=sort_key(twin.estimate))
                          if twin is not None else Cell("n/a")), _verdict(twin),
                         Cell(counts, cls="wrap")])
        parts.append(sortable_table(
            ["subject", "metric", "tolerance", f"{base} [interval]", f"{base} verdict",
             f"{repair} [interval]", f"{repair} verdict", "PIEs (corrections)"], rows,
            numeric=[False, False, True, True, False, True, False, False],
            caption=f"Every check {base} did not pass, failures first, and the same check "
                    f"on {repair} (simultaneous intervals of the gate). PIEs (corrections): "
                    "the cell's PIEs, and in brackets those on which the variant is right "
                    "where the dense population's modal prediction is wrong, "
                    f"{base} → {repair}; a PIE check counts both."))
    return join(parts)


def render_repairs(run: RunData) -> Html:
    """One block per repaired variant of the run (nothing when there is none)."""
    repairs = [(v, p.base) for v, p in run.points.items()
               if p.base is not None and p.base in run.points]
    if not repairs or run.gate is None:
        return Html("")
    return join([tag("h3", "Repairs beside their base"),
                 *(_one(run, v, b) for v, b in repairs)])
