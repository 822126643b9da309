"""Slices section: the top slices per variant with their numbers and typical images."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from compaudit.report.sections import ReportOptions
from compaudit.report.sections.slices import TOP_SLICES, render_slices

EVIL = "<script>alert(1)</script>"


def _row(k, change, q, *, variant="gmp-90", typical=(), description="Male=True (80% vs 40%)"):
    return {"variant": variant, "slice": k, "n": 100 + k, "n_test": 50, "dense_error": 0.1,
            "compressed_error": 0.1 + change, "change": change, "change_lo": change - 0.05,
            "change_hi": change + 0.05, "p": q, "q": q, "label_mix": {"1": 0.75, "0": 0.25},
            "over_index": {"Male=True": 2.0}, "description": description,
            "typical": list(typical)}


def _block(*rows):
    return {"slices": {"n_examples": 400, "dims": 64, "rows": list(rows)}}


def test_not_available_without_slices(make_run, text_of):
    text = text_of(render_slices(make_run(), ReportOptions()))
    assert text.startswith("Not available in this run: no slice discovery")


def test_top_slices_per_variant_with_numbers(make_run, tables_of, text_of):
    rows = [_row(k, 0.3 - 0.1 * k, 0.001 if k == 0 else 0.5) for k in range(5)]
    run = make_run(_block(*rows, _row(0, 0.02, 0.9, variant="gmp-50")),
                   variants=("dense", "gmp-50", "gmp-90"), class_names=["dark", "blond"])
    html = render_slices(run, ReportOptions())
    text = text_of(html)
    assert "gmp-50: top 1 of 1 slices" in text and "gmp-90: top 3 of 5 slices" in text
    table = tables_of(html)[1]  # gmp-90's
    assert len(table.rows) == TOP_SLICES
    first = table.records()[0]
    assert first["slice"] == "0" and first["q"] == "0.001"
    assert first["error change"] == "+30.00 pp [+25.00, +35.00]"
    assert first["dense error"] == "10.0%" and first["compressed error"] == "40.0%"
    assert first["examples"] == "100 (50 held out)"
    assert first["labels"] == "blond 75%, dark 25%"
    assert first["who is in it"] == "Male=True (80% vs 40%)"
    assert table.attr(0, "q", "class") == "num sig-harm"
    assert table.attr(1, "q", "class") == "num"  # q = 0.5: not marked


def test_typical_images_are_embedded_and_hostile_text_escaped(make_run, tmp_path, tags_of,
                                                              text_of):
    pics = tmp_path / "pics"
    pics.mkdir()
    Image.fromarray(np.full((20, 20, 3), 200, np.uint8)).save(pics / "a.png")
    examples = tmp_path / "examples.parquet"
    pd.DataFrame({"example_id": ["a", EVIL], "label": [0, 1],
                  "path": [str(pics / "a.png"), str(pics / "gone.png")]}).to_parquet(examples)
    row = _row(0, 0.2, 0.01, typical=["a", EVIL], description=f"{EVIL}=1 (90% vs 10%)")
    row["label_mix"] = {EVIL: 1.0}
    run = make_run(_block(row), examples_file=examples)
    html = render_slices(run, ReportOptions(thumbnail_px=16))
    assert "script" not in tags_of(html)
    assert EVIL not in html and "&lt;script&gt;" in html
    assert EVIL in text_of(html)
    assert html.count('src="data:image/png;base64,') == 1  # a.png; the other is missing
    assert html.count('class="thumb placeholder"') == 1
    assert "slice 0: most typical images" in text_of(html)


def test_images_of_slices_without_a_significant_rise_are_folded(make_run, text_of):
    rows = [_row(0, 0.3, 0.001, typical=["a"]), _row(1, 0.1, 0.5, typical=["b"]),
            _row(2, -0.1, 0.01, typical=["c"])]  # significant, but a fall
    run = make_run(_block(*rows, _row(0, 0.02, 0.9, variant="gmp-50", typical=["d"])),
                   variants=("dense", "gmp-50", "gmp-90"))
    html = render_slices(run, ReportOptions())
    folded = [html[i:html.index("</details>", i)] for i in range(len(html))
              if html.startswith("<details", i)]
    assert len(folded) == 2  # gmp-50's slice 0; gmp-90's slices 1 and 2
    gmp50, gmp90 = folded
    assert "slice 0: most typical images" in gmp50 and "1 slice(s)" in gmp50
    assert "slice 1: most typical images" in gmp90 and "slice 2" in gmp90
    assert "slice 0: most typical images" not in gmp90  # the harmed slice stays open
    assert html.count("slice 0: most typical images") == 2
    text = text_of(html)
    assert text.count("No slice's error rose significantly (q ≤ 0.05).") == 1  # gmp-50
