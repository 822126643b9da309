"""Slices compression breaks: per compressed variant, the slices found from the dense
embeddings whose error grew most, with thumbnails of each slice's typical images."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compaudit.report.format import finite, number, pct, pp_parts, pvalue, sort_key
from compaudit.report.html import Cell, Html, interval_cell, join, note, sortable_table, tag
from compaudit.report.rundata import RunData
from compaudit.report.sections._common import NOT_AVAILABLE, ReportOptions
from compaudit.report.thumbnails import image_paths, thumbnail
from compaudit.schema import SliceRow

__all__ = ["render_slices", "TOP_SLICES"]

#: Slices shown per variant (the rest are in tables/slices.csv).
TOP_SLICES = 3


def _label_mix(row: SliceRow, run: RunData) -> str:
    mix: Mapping[str, Any] = row.label_mix or {}
    return ", ".join(f"{run.class_name(k)} {pct(v, 0)}" for k, v in mix.items()) or "n/a"


def _significant(row: SliceRow, alpha: float) -> bool:
    q = finite(row.q)
    return q is not None and q <= alpha and row.change > 0


def _table(rows: list[SliceRow], run: RunData) -> Html:
    body = [[Cell(str(r.slice), sort=r.slice),
             interval_cell(pp_parts(r.change, r.change_lo, r.change_hi),
                           sort=sort_key(r.change)),
             Cell(pvalue(r.q), sort=sort_key(r.q),
                  cls="sig-harm" if _significant(r, run.alpha) else None),
             Cell(pct(r.dense_error), sort=sort_key(r.dense_error)),
             Cell(pct(r.compressed_error), sort=sort_key(r.compressed_error)),
             Cell(f"{number(r.n)} ({number(r.n_test)} held out)", sort=r.n),
             Cell(_label_mix(r, run), cls="wrap"), Cell(r.description or "n/a", cls="wrap")]
            for r in rows]
    return sortable_table(
        ["slice", "error change", "q", "dense error", "compressed error", "examples",
         "labels", "who is in it"], body,
        numeric=[True, True, True, True, True, True, False, False],
        caption="Error change = compressed minus dense error of the slice, pooled over "
                f"replicas, on its held-out examples, with its {100 * run.level:g}% "
                "interval; q: Benjamini-Hochberg across the variant's slices.")


def _gallery(row: SliceRow, paths: Mapping[str, Any], size: int,
             cache: dict[str, Html | None]) -> Html:
    cards = []
    for ex_id in row.typical:
        if ex_id not in cache:
            cache[ex_id] = thumbnail(paths.get(ex_id), size=size, alt=f"example {ex_id}")
        picture = cache[ex_id] or tag("div", "no image", class_="thumb placeholder",
                                      role="img", aria_label="image not available")
        cards.append(tag("figure", picture,
                         tag("figcaption", tag("div", ex_id, class_="exid", title=ex_id)),
                         class_="card"))
    return tag("div", *cards, class_="gallery")


def render_slices(run: RunData, options: ReportOptions) -> Html:
    """The top slices of each compressed variant and their typical images."""
    block = run.metrics.slices
    if block is None or not block.rows:
        return note(f"{NOT_AVAILABLE}: no slice discovery (turn it on with "
                    "[analysis.slices] enabled = true, or 'compaudit analyze --embeddings').")
    by_variant: dict[str, list[SliceRow]] = {}
    for row in sorted(block.rows, key=lambda r: r.slice):
        by_variant.setdefault(row.variant, []).append(row)
    parts: list[Html] = [tag(
        "p", f"Groups of examples no attribute names, found from the dense population's "
             f"embedding of {number(block.n_examples)} examples ({block.dims} dimensions) "
             "jointly with what compression changed per example. Each slice is tested on "
             "held-out examples that did not shape it; slice 0 is the one compression hurt "
             "most. All slices are in tables/slices.csv, their members in "
             "tables/slice_members.csv.")]
    wanted = {ex for rows in by_variant.values() for r in rows[:TOP_SLICES] for ex in r.typical}
    paths = image_paths(run.examples_file, wanted) if wanted else {}
    if wanted and not paths:
        parts.append(note("No images: the run directory has no examples.parquet with a "
                          "'path' column, so the typical images show a placeholder."))
    cache: dict[str, Html | None] = {}
    for variant in run.compressed:
        rows = by_variant.get(variant, [])
        if not rows:
            continue
        top = rows[:TOP_SLICES]
        parts.append(tag("h3", f"{variant}: top {len(top)} of {len(rows)} slices"))
        parts.append(_table(top, run))
        hit = [r for r in top if _significant(r, run.alpha)]
        if not hit:
            parts.append(tag("p", f"No slice's error rose significantly (q ≤ {run.alpha:g})."))
        for r in hit:
            if r.typical:
                parts.append(tag("h4", f"slice {r.slice}: most typical images"))
                parts.append(_gallery(r, paths, options.thumbnail_px, cache))
        # The others' images stay one click away: a reviewer reads the harmed ones first.
        rest = [join([tag("h4", f"slice {r.slice}: most typical images"),
                      _gallery(r, paths, options.thumbnail_px, cache)])
                for r in top if r.typical and r not in hit]
        if rest:
            parts.append(tag("details", tag(
                "summary", f"Typical images of the {len(rest)} slice(s) above without a "
                           "significant error rise"), *rest))
    return join(parts)
