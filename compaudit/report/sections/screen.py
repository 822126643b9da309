"""Pre-compression risk screen: the dense model's own warning, checked against the PIEs."""

from __future__ import annotations

from typing import Any

from compaudit.report.format import finite, number, pct, signed_pct_parts, sort_key
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
    NOT_AVAILABLE,
    ReportOptions,
    cell_label,
    records,
)

__all__ = ["render_screen"]

_CANDIDATES = {"entropy": "entropy of the mean prediction",
               "disagreement": "disagreement across replicas",
               "margin": "true-class probability margin"}


def _ratio(x: Any, digits: int = 3) -> Cell:
    v = finite(x)
    return Cell("n/a" if v is None else f"{v:.{digits}f}", sort=sort_key(x))


def _validation(run: RunData) -> Html:
    screen = run.metrics.screen
    rows = []
    for variant, e in screen.items():
        if not isinstance(e, dict):
            continue
        rows.append([variant, Cell(number(e.get("n_pie")), sort=sort_key(e.get("n_pie"))),
                     Cell(pct(e.get("pie_rate"), 2), sort=sort_key(e.get("pie_rate"))),
                     _ratio(e.get("auroc")),
                     Cell(pct(e.get("precision_at_1pct")), sort=sort_key(e.get("precision_at_1pct"))),
                     Cell(pct(e.get("precision_at_5pct")), sort=sort_key(e.get("precision_at_5pct"))),
                     Cell(pct(e.get("recall_at_top")), sort=sort_key(e.get("recall_at_top"))),
                     *(_ratio(e.get(f"auroc_{c}")) for c in _CANDIDATES),
                     _ratio(e.get("cell_spearman"), 2)])
    if not rows:
        return note(f"{NOT_AVAILABLE}: no compressed variant to validate the screen against.")
    return sortable_table(
        ["variant", "PIEs", "PIE rate", "AUROC", "precision at top 1%", "precision at top 5%",
         "PIEs among at-risk", *(f"AUROC {c}" for c in _CANDIDATES), "cell rank correlation"],
        rows, numeric=[False] + [True] * 10,
        caption="How well the risk score, computed before compression, finds each variant's "
                "PIEs. AUROC 0.5 is chance; precision at top k% is the share of PIEs among "
                "the k% highest-risk examples (compare with the PIE rate); the cell rank "
                "correlation is Spearman's between the expected and the measured "
                "within-label over-index across attribute cells.")


def _groups(run: RunData) -> Html:
    groups = records(run.metrics.screen_groups)
    if groups.empty:
        return note(f"{NOT_AVAILABLE}: no protected attributes, so no per-cell summary.")
    rows = []
    for r in groups.to_dict("records"):
        rows.append([cell_label(r, run), Cell(number(r.get("n")), sort=sort_key(r.get("n"))),
                     Cell(number(r.get("n_at_risk")), sort=sort_key(r.get("n_at_risk"))),
                     Cell(pct(r.get("at_risk_rate")), sort=sort_key(r.get("at_risk_rate"))),
                     _ratio(r.get("rate_ratio"), 2),
                     interval_cell(signed_pct_parts(r.get("expected_growth_pct"), r.get("lo"),
                                                    r.get("hi")),
                                   sort=sort_key(r.get("expected_growth_pct")))])
    return sortable_table(
        ["cell", "examples", "at risk", "at-risk rate", "rate / overall",
         "expected within-label over-index"], rows, numeric=[False] + [True] * 5,
        caption="Expected harm per attribute cell. The expected over-index is the "
                "Mantel-Haenszel pooled ratio, within each true label, of the cell's share "
                "among at-risk examples to its share among the others (minus 1), with its "
                f"{100 * run.level:g}% interval: the same statistic as the measured "
                "within-label PIE over-index of the PIE section.")


def render_screen(run: RunData, options: ReportOptions) -> Html:
    """What the dense model alone predicted, and how it held up against the PIEs."""
    summary = run.metrics.screen_summary
    if not summary:
        return note(f"{NOT_AVAILABLE}: no screen in metrics.json; re-run compaudit analyze "
                    "into this folder to add it.")
    score = _CANDIDATES.get(str(summary.get("score")), str(summary.get("score")))
    top = finite(summary.get("top"))
    intro = tag(
        "p", "Before compressing, the dense population alone says which examples are at "
        "risk (Iofinova et al., CVPR 2023: output uncertainty predicts the samples "
        f"compression hurts). Risk score: {score} over {summary.get('replicas')} dense "
        f"replicas; the {number(summary.get('n_at_risk'))} examples in the top "
        f"{'n/a' if top is None else f'{100 * top:g}%'} are flagged at risk. Run it on "
        "dense predictions only with ", tag("code", "compaudit screen"), ".")
    return join([intro, tag("h3", "Validation against the measured PIEs"), _validation(run),
                 tag("h3", "Expected harm by attribute cell"), _groups(run)])
