"""PIE gallery: the top PIEs per variant by taxicab score, as captioned cards."""

from __future__ import annotations

import re

import pandas as pd

from compaudit.report.sections import ReportOptions
from compaudit.report.sections.gallery import render_gallery, top_pies

EVIL = "<script>alert(1)</script>"


def _pies(variant="gmp-90"):
    ids = ["e1", "e2", "e3", "e4", "e5"]
    return pd.DataFrame({
        "variant": variant, "example_id": ids, "label": [0, 1, 1, 0, 1],
        "dense_mode": [0, 1, 0, 0, 1], "variant_mode": [1, 0, 1, 0, 0],
        "dense_mode_share": [2 / 3, 1.0, 1.0, 1.0, 1.0],
        "variant_mode_share": [1.0, 1 / 3, 1.0, 1.0, 1.0],
        "taxicab": [1.5, 2.0, 1.5, 0.0, 0.5], "is_pie": [True, True, True, False, True]})


def test_top_pies_by_taxicab_then_example_id():
    table = pd.concat([_pies("gmp-90"), _pies("gmp-50")])
    top = top_pies(table, "gmp-90", 3)
    assert list(top["example_id"]) == ["e2", "e1", "e3"]
    assert set(top["variant"]) == {"gmp-90"}
    assert list(top_pies(table, "gmp-90", 10)["example_id"]) == ["e2", "e1", "e3", "e5"]


def test_gallery_turned_off_or_missing(make_run, text_of):
    assert "Gallery turned off" in text_of(render_gallery(make_run(), ReportOptions(
        gallery_size=0)))
    assert "no tables/pie.csv" in text_of(render_gallery(make_run(), ReportOptions()))
    none = _pies().assign(is_pie=False)
    html = render_gallery(make_run(tables={"pie": none}), ReportOptions())
    assert "Not available in this run: no PIEs in any compressed variant." in text_of(html)


def test_cards_show_labels_predictions_and_scores(make_run, text_of):
    run = make_run(tables={"pie": _pies()}, class_names=["dark", "blond"])
    html = render_gallery(run, ReportOptions(gallery_size=2))
    text = text_of(html)
    assert "gmp-90: top 2 PIEs by taxicab score" in text
    assert html.count('class="card"') == 2
    assert html.count('class="thumb placeholder"') == 2  # no examples.parquet: no images
    cards = re.findall(r'<figure class="card">.*?</figure>', html)
    assert text_of(cards[0]) == ("no image e2 true blond dense blond (100%) compressed dark "
                                 "(33%) taxicab 2.00")
    assert text_of(cards[1]) == ("no image e1 true dark dense dark (67%) compressed blond "
                                 "(100%) taxicab 1.50")
    assert '<span class="ok">blond</span>' in cards[0]
    assert '<span class="bad">dark</span>' in cards[0]


def test_hostile_example_ids_are_escaped(make_run, tags_of, text_of):
    pies = _pies().assign(example_id=[EVIL, "b", "c", "d", "e"])
    html = render_gallery(make_run(tables={"pie": pies}), ReportOptions())
    assert "script" not in tags_of(html)
    assert f'title="{EVIL}"' not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert EVIL in text_of(html)
