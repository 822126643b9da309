"""PIE gallery: the examples whose predictions moved most, as in the paper's figures."""

from __future__ import annotations

import pandas as pd

from compaudit.report.format import finite, pct
from compaudit.report.html import Html, join, note, tag
from compaudit.report.rundata import RunData
from compaudit.report.sections._common import NOT_AVAILABLE, ReportOptions
from compaudit.report.thumbnails import image_paths, thumbnail

__all__ = ["render_gallery", "top_pies"]


def top_pies(pies: pd.DataFrame, variant: str, n: int) -> pd.DataFrame:
    """The ``n`` PIEs of ``variant`` with the highest taxicab score (ties by example id)."""
    sub = pies[(pies["variant"] == variant) & pies["is_pie"].astype(bool)]
    return sub.sort_values(["taxicab", "example_id"], ascending=[False, True],
                           kind="mergesort").head(n)


def _card(row: dict, run: RunData, img: Html | None) -> Html:
    label = run.class_name(row["label"])
    dense = run.class_name(row["dense_mode"])
    comp = run.class_name(row["variant_mode"])
    share = finite(row.get("dense_mode_share"))
    vshare = finite(row.get("variant_mode_share"))
    picture = img if img is not None else tag("div", "no image", class_="thumb placeholder",
                                              role="img", aria_label="image not available")
    return tag(
        "figure",
        picture,
        tag("figcaption",
            tag("div", row["example_id"], class_="exid", title=row["example_id"]),
            tag("div", tag("span", "true ", class_="k"), label),
            tag("div", tag("span", "dense ", class_="k"),
                tag("span", dense, class_="ok" if row["dense_mode"] == row["label"] else "bad"),
                f" ({pct(share, 0)})" if share is not None else ""),
            tag("div", tag("span", "compressed ", class_="k"),
                tag("span", comp, class_="ok" if row["variant_mode"] == row["label"] else "bad"),
                f" ({pct(vshare, 0)})" if vshare is not None else ""),
            tag("div", tag("span", "taxicab ", class_="k"), f"{float(row['taxicab']):.2f}")),
        class_="card")


def render_gallery(run: RunData, options: ReportOptions) -> Html:
    """Thumbnails of the top PIEs per compressed variant, ranked by taxicab score."""
    if options.gallery_size == 0:
        return note("Gallery turned off (gallery_size = 0).")
    pies = run.table("pie")
    if pies.empty or "is_pie" not in pies:
        return note(f"{NOT_AVAILABLE}: no tables/pie.csv (run 'compaudit analyze').")
    chosen = {v: top_pies(pies, v, options.gallery_size) for v in run.compressed}
    chosen = {v: t for v, t in chosen.items() if not t.empty}
    if not chosen:
        return note(f"{NOT_AVAILABLE}: no PIEs in any compressed variant.")
    ids = {str(i) for t in chosen.values() for i in t["example_id"]}
    paths = image_paths(run.examples_file, ids)
    parts: list[Html] = [tag(
        "p", "Each card shows an example's true label, the modal prediction of the dense "
             "population and of the compressed population (with the share of replicas voting "
             "for it), and the taxicab score: the L1 distance between the two populations' "
             "label histograms (0 = identical, 2 = disjoint). Green: correct; red: wrong.")]
    if not paths:
        parts.append(note("No images: the run directory has no examples.parquet with a "
                          "'path' column, so cards show a placeholder."))
    cache: dict[str, Html | None] = {}
    for v, table in chosen.items():
        cards = []
        for row in table.to_dict("records"):
            ex_id = str(row["example_id"])
            if ex_id not in cache:
                cache[ex_id] = thumbnail(paths.get(ex_id), size=options.thumbnail_px,
                                         alt=f"example {ex_id}")
            cards.append(_card(row, run, cache[ex_id]))
        parts.append(tag("h3", f"{v}: top {len(cards)} PIEs by taxicab score"))
        parts.append(tag("div", *cards, class_="gallery"))
    return join(parts)
