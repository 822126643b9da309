"""Interpretability (network dissection): how many units detect a human concept, and how
many of the dense model's detectors survive compression (``metrics["dissection"]``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from compaudit.report.format import NA, finite, number, pct, sort_key
from compaudit.report.html import Cell, Html, figure, interval_cell, join, note, sortable_table, tag
from compaudit.report.plots import tradeoff_plot
from compaudit.report.rundata import RunData
from compaudit.report.sections._common import NOT_AVAILABLE, ReportOptions

__all__ = ["render_dissection", "dissection_points", "PANELS"]

#: Plotted metrics of ``metrics["dissection"]["variants"]`` and their panel titles.
PANELS: tuple[tuple[str, str], ...] = (
    ("interpretable_share", "interpretable share of units"),
    ("retained_interpretable", "dense's interpretable units\nstill interpretable"),
    ("retained_concept", "dense's interpretable units\nstill detecting the same concept"),
)
#: Unreachable concepts named inline before the sentence points to the table instead.
_INLINE_NAMES = 30


def dissection_points(block: Mapping[str, Any]) -> pd.DataFrame:
    """Tidy (panel, series, variant, mean, lo, hi) of :data:`PANELS`, values as in
    ``metrics.json`` (fractions; ``lo``/``hi`` NaN with one replica)."""
    rows = []
    for variant, metrics in (block.get("variants") or {}).items():
        for key, panel in PANELS:
            m = metrics.get(key) or {}
            rows.append({"panel": panel, "series": panel, "variant": variant,
                         "mean": m.get("mean"), "lo": m.get("lo"), "hi": m.get("hi")})
    frame = pd.DataFrame(rows, columns=["panel", "series", "variant", "mean", "lo", "hi"])
    for c in ("mean", "lo", "hi"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    return frame


def _share_text(x: Any) -> str:
    """A quantile or coverage as a short percentage: 0.005 -> "0.5%", 0.02 -> "2%"."""
    v = finite(x)
    return NA if v is None else f"{100 * v:.3g}%"


def _ratio_text(x: Any) -> str:
    """An IoU value (a ratio, not a share of pixels): 0.04 -> "0.04"."""
    v = finite(x)
    return NA if v is None else f"{v:.3g}"


def _intro(run: RunData, block: Mapping[str, Any]) -> Html:
    cfg = block.get("config") or {}
    layers = [str(x) for x in cfg.get("layers") or []]
    q, t = _share_text(cfg.get("quantile")), _ratio_text(cfg.get("iou_threshold"))
    return join([
        tag("p", "Network dissection (Bau et al., 2017) asks which single units (channels) of "
                 "a convolutional layer behave like detectors of a visual concept that people "
                 "can name, such as hair or a mouth. Each unit is switched on where its "
                 f"activation is in its top {q} over all pixels of all images; that region is "
                 "compared with every concept's pixel masks by intersection over union (IoU). "
                 "A unit is ", tag("em", "interpretable"), f" when its best IoU exceeds {t}, "
                 "and that best concept is the one it detects. Frankle & Bau (2019) used the "
                 "count of interpretable units to ask whether pruning keeps what a network "
                 "has learned to recognise; this section asks the same of every variant."),
        tag("p", f"This run dissected {number(block.get('n_images'))} images of the ",
            tag("code", cfg.get("concepts", NA)), " concept set at ",
            f"{len(layers)} layer{'s' if len(layers) != 1 else ''} (",
            join([tag("code", x) for x in layers], ", ") if layers else NA, "), with "
            f"quantile {q} and IoU threshold {t}. Replica k of a compressed variant is "
            "compared with dense replica k, the model it was derived from. Means are over "
            f"replicas with {100 * run.level:g}% t-intervals. A drop in these counts means "
            "compression erased or blurred detectors a person could inspect; it does not by "
            "itself say the model became less accurate or less fair."),
    ])


def _figure(run: RunData, block: Mapping[str, Any]) -> list[Html]:
    if not any(v in (block.get("variants") or {}) for v in run.compressed):
        return [note(f"{NOT_AVAILABLE}: no compressed variant was dissected, so there is no "
                     "curve against sparsity.")]
    data = dissection_points(block)
    img = tradeoff_plot(data, points=run.points, dense=run.dense,
                        panels=[p for _, p in PANELS], ylabel="share",
                        alt="Interpretable units against sparsity per variant")
    if img is None:
        return [note(f"{NOT_AVAILABLE}: no interpretable-unit shares per variant.")]
    return [figure(img, "Left: share of all dissected units that are interpretable. Middle: "
                        "of the dense replica's interpretable units, the share still "
                        "interpretable in the compressed replica. Right: the share still "
                        "detecting the same concept. Dense is 100% in the last two by "
                        "definition.")]


def _clip(x: Any, lower: float | None, upper: float | None) -> float | None:
    v = finite(x)
    if v is None:
        return None
    if lower is not None:
        v = max(v, lower)
    return min(v, upper) if upper is not None else v


def _stat_cell(m: Mapping[str, Any] | None, fmt: Callable[[Any], str], *,
               lower: float | None = None, upper: float | None = None) -> Cell:
    """Mean over replicas with its interval below; bounds clipped to the possible range
    (a count is never negative, a share never above 100%), as the plots do."""
    m = m or {}
    lo, hi = _clip(m.get("lo"), lower, upper), _clip(m.get("hi"), lower, upper)
    ci = f"[{fmt(lo)}, {fmt(hi)}]" if lo is not None and hi is not None else ""
    return interval_cell((fmt(m.get("mean")), ci), sort=sort_key(m.get("mean")))


def _count(x: Any) -> str:
    """A mean count: whole numbers without decimals (120), others with one (3.5)."""
    v = finite(x)
    return number(v, 0 if v is not None and v.is_integer() else 1)


def _ordered(run: RunData, block: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The block's variants, dense first and then in the run's order."""
    variants = block.get("variants") or {}
    order = [v for v in run.variants if v in variants]
    order += [v for v in variants if v not in order]
    return [(v, variants[v]) for v in order]


def _variant_table(run: RunData, block: Mapping[str, Any]) -> Html:
    rows = []
    for v, m in _ordered(run, block):
        units = m.get("units") or {}
        rows.append([
            v, Cell(number(units.get("n")), sort=sort_key(units.get("n"))),
            Cell(_count(units.get("mean")), sort=sort_key(units.get("mean"))),
            _stat_cell(m.get("interpretable_units"), _count, lower=0.0),
            _stat_cell(m.get("interpretable_share"), pct, lower=0.0, upper=1.0),
            _stat_cell(m.get("distinct_concepts"), _count, lower=0.0),
            _stat_cell(m.get("retained_interpretable"), pct, lower=0.0, upper=1.0),
            _stat_cell(m.get("retained_concept"), pct, lower=0.0, upper=1.0),
            _stat_cell(m.get("interpretable_drop"), pct, upper=1.0),
            _stat_cell(m.get("concept_drop"), pct, upper=1.0),
        ])
    return sortable_table(
        ["variant", "replicas", "units dissected", "interpretable units", "interpretable share",
         "distinct concepts", "still interpretable", "same concept", "interpretable-unit drop",
         "concept drop"], rows, numeric=[False] + [True] * 9,
        caption=join([
            "Means over replicas with ", f"{100 * run.level:g}% t-intervals (none with one "
            "replica; bounds stop at the possible range). 'Still interpretable' and 'same "
            "concept': shares of the paired dense replica's interpretable units. Drops: 1 − "
            "the variant's count / the paired dense replica's count, averaged over replicas "
            "(negative: the variant has more); the gate bounds these drops."]))


def _layer_table(run: RunData, block: Mapping[str, Any]) -> list[Html]:
    variants = _ordered(run, block)
    layers = [str(x) for x in (block.get("config") or {}).get("layers") or []]
    for _, m in variants:
        layers += [str(x) for x in (m.get("by_layer") or {}) if str(x) not in layers]
    if not layers:
        return []
    rows = []
    for v, m in variants:
        by = m.get("by_layer") or {}
        cells = [(by.get(x) or {}).get("interpretable_units") for x in layers]
        rows.append([v, *(Cell(_count(c), sort=sort_key(c)) for c in cells)])
    return [tag("h3", "Interpretable units per layer"),
            sortable_table(["variant", *layers], rows, numeric=[False] + [True] * len(layers),
                           caption="Mean over replicas of the interpretable units in each "
                                   "dissected layer.")]


def _category_table(run: RunData, block: Mapping[str, Any]) -> list[Html]:
    rows = []
    for v, m in _ordered(run, block):
        for category, c in (m.get("by_category") or {}).items():
            rows.append([v, category,
                         Cell(_count(c.get("interpretable_units")),
                              sort=sort_key(c.get("interpretable_units"))),
                         Cell(_count(c.get("distinct_concepts")),
                              sort=sort_key(c.get("distinct_concepts")))])
    if not rows:
        return []
    return [tag("h3", "By concept category"),
            sortable_table(["variant", "category", "interpretable units", "distinct concepts"],
                           rows, numeric=[False, False, True, True],
                           caption="Means over replicas; a replica with none in a category "
                                   "counts as 0.")]


def _unreachable_text(block: Mapping[str, Any]) -> Html:
    """Name the concepts no unit can reach, and say why in plain words."""
    cfg = block.get("config") or {}
    names = [str(n) for n in block.get("unreachable") or []]
    q, t = _share_text(cfg.get("quantile")), _ratio_text(cfg.get("iou_threshold"))
    why = (f"A unit's switched-on region covers about {q} of the pixels. If a concept covers "
           f"far more of the image, even a unit that fires only on that concept overlaps at "
           f"most {q} of it, so the IoU is at most {q} ÷ coverage; if it covers far less, the "
           f"IoU is at most coverage ÷ {q}. That is the IoU bound in the table. It is "
           "approximate: enlarging a unit's activation map to the mask size changes its "
           "switched-on share a little, so now and then a unit passes a bound that is close "
           "to the threshold.")
    if not names:
        return tag("p", why, f" Every concept's bound is above the threshold {t}, so each "
                   "one can in principle be detected.")
    shown = join([tag("strong", n) for n in names[:_INLINE_NAMES]], ", ")
    more = (f" and {len(names) - _INLINE_NAMES} more, marked 'no' in the table"
            if len(names) > _INLINE_NAMES else "")
    one = len(names) == 1
    example = _example(block, names[0])
    return tag("p", f"{len(names)} concept{'' if one else 's'} (", shown, more,
               f") can hardly be detected at these settings: {'its' if one else 'their'} IoU "
               f"bound is at or below the threshold {t}. ", why, example,
               " Few or no units of any variant, dense included, can count as detecting ",
               "it" if one else "them", ", so ", "its" if one else "their",
               " absence from the counts says little about compression; measuring ",
               "it" if one else "them", " would need a different quantile.")


def _example(block: Mapping[str, Any], name: str) -> Html:
    """A worked example from the concept table: its coverage and its bound."""
    row = next((c for c in block.get("concepts") or [] if str(c.get("concept")) == name), None)
    if row is None or finite(row.get("coverage")) is None:
        return Html("")
    return join([" For example, ", tag("strong", name), " covers "
                 f"{_share_text(row.get('coverage'))} of the pixels: its bound is "
                 f"{_ratio_text(row.get('iou_bound'))}."])


def _concepts(block: Mapping[str, Any]) -> list[Html]:
    concepts = block.get("concepts") or []
    if not concepts:
        return [tag("h3", "Concepts"), note(f"{NOT_AVAILABLE}: no concept table.")]
    unreachable = set(map(str, block.get("unreachable") or []))
    rows = [[c.get("concept"), c.get("category"),
             Cell(_share_text(c.get("coverage")), sort=sort_key(c.get("coverage"))),
             Cell(_ratio_text(c.get("iou_bound")), sort=sort_key(c.get("iou_bound"))),
             Cell("no", title="IoU bound at or below the threshold")
             if str(c.get("concept")) in unreachable else "yes"]
            for c in concepts]
    return [tag("h3", "Concepts"), _unreachable_text(block),
            sortable_table(["concept", "category", "coverage", "IoU bound", "reachable"], rows,
                           numeric=[False, False, True, True, False],
                           caption="Coverage: the concept's share of all pixels of the "
                                   "dissected images. IoU bound: about the highest IoU a unit "
                                   "can reach with it at this quantile. Reachable: bound above "
                                   "the IoU threshold.")]


def _gate_line(run: RunData) -> list[Html]:
    """How the gate judged the drops, pointing to the verdict section for details."""
    checks = [c for c in (run.gate.checks if run.gate else ()) if c.kind == "dissection"]
    if not checks:
        return []
    counts = {v: sum(c.verdict == v for c in checks)
              for v in ("fail", "inconclusive", "pass")}
    return [tag("p", f"The gate checked {len(checks)} of these drops: {counts['fail']} failed, "
                     f"{counts['inconclusive']} inconclusive, {counts['pass']} passed (see ",
                tag("a", "Verdict", href="#verdict"), " and gate/gate.json).")]


def render_dissection(run: RunData, options: ReportOptions) -> Html:
    """Intro, curves against sparsity, per-variant counts, layers, categories, concepts."""
    record = run.metrics.dissection
    # The section's helpers read the block in its JSON form (concepts, per-variant means).
    block = record.as_dict() if record is not None else {}
    if not block.get("variants"):
        return note(f"{NOT_AVAILABLE}: the audit spec had no [dissection] section, so no "
                    "model was dissected.")
    parts: list[Html] = [_intro(run, block), *_figure(run, block),
                         tag("h3", "Interpretable units per variant"), _variant_table(run, block),
                         *_gate_line(run)]
    parts += _layer_table(run, block) + _category_table(run, block) + _concepts(block)
    return join(parts)
