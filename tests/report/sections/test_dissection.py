"""Dissection section from a hand-made ``metrics["dissection"]`` block."""

from __future__ import annotations

from compaudit.report.sections import ReportOptions
from compaudit.report.sections.dissection import PANELS, dissection_points, render_dissection
from compaudit.schema import GateCheck

EVIL = "<script>alert(1)</script>"


def _stat(mean, lo=None, hi=None):
    return {"mean": mean, "lo": lo, "hi": hi}


def _variant(units, share, retained, drop, layer):
    return {"units": {"n": 3, "mean": 120}, "interpretable_units": _stat(units, units - 8,
                                                                          units + 8),
            "interpretable_share": _stat(share, share - 0.1, share + 0.1),
            "distinct_concepts": _stat(3.5), "retained_interpretable": _stat(retained),
            "retained_concept": _stat(retained), "interpretable_drop": _stat(drop),
            "concept_drop": _stat(drop), "by_layer": {"l1": {"interpretable_units": layer}},
            "by_category": {"part": {"interpretable_units": layer, "distinct_concepts": 2}}}


def _block(unreachable=("sky",)):
    return {"config": {"layers": ["l1"], "quantile": 0.005, "iou_threshold": 0.04,
                       "concepts": "faces"},
            "n_images": 64,
            # Listed compressed first: the table still puts dense first.
            "variants": {"gmp-90": _variant(6, 0.05, 0.25, 0.8, 6.5),
                         "dense": _variant(30, 0.95, 1.0, 0.0, 30)},
            "concepts": [{"concept": "hair", "category": "part", "coverage": 0.02,
                          "iou_bound": 0.25},
                         {"concept": "sky", "category": "scene", "coverage": 0.5,
                          "iou_bound": 0.01}],
            "unreachable": list(unreachable)}


def _render(run):
    return render_dissection(run, ReportOptions())


def test_without_a_block_it_is_a_note(make_run, text_of, tables_of):
    for metrics in ({}, {"dissection": {"variants": {}}}):
        html = _render(make_run(metrics))
        assert "no [dissection] section" in text_of(html)
        assert tables_of(html) == [] and "<img" not in html


def test_variant_table_dense_first_with_clipped_intervals(make_run, tables_of, text_of):
    html = _render(make_run({"dissection": _block()}))
    text = text_of(html)
    assert "This run dissected 64 images of the faces concept set at 1 layer (l1)" in text
    assert "quantile 0.5% and IoU threshold 0.04" in text
    variants = tables_of(html)[0]
    assert variants.column("variant") == ["dense", "gmp-90"]
    gmp = variants.records()[1]
    assert gmp["replicas"] == "3" and gmp["units dissected"] == "120"
    assert gmp["interpretable units"] == "6 [0, 14]"  # 6 - 8 < 0: the bound stops at 0
    assert gmp["interpretable share"] == "5.0% [0.0%, 15.0%]"
    assert gmp["distinct concepts"] == "3.5"
    assert gmp["still interpretable"] == "25.0%" and gmp["interpretable-unit drop"] == "80.0%"
    dense = variants.records()[0]
    assert dense["interpretable share"] == "95.0% [85.0%, 100.0%]"  # capped at 100%
    assert html.count("<img") == 1


def test_layer_and_category_tables(make_run, tables_of):
    tables = tables_of(_render(make_run({"dissection": _block()})))
    layers, categories = tables[1], tables[2]
    assert layers.headers == ["variant", "l1"]
    assert layers.rows == [["dense", "30"], ["gmp-90", "6.5"]]
    assert categories.rows == [["dense", "part", "30", "2"], ["gmp-90", "part", "6.5", "2"]]


def test_unreachable_concepts_are_named_with_their_bound(make_run, text_of, tables_of):
    html = _render(make_run({"dissection": _block()}))
    text = text_of(html)
    assert ("1 concept (sky) can hardly be detected at these settings: its IoU bound is at or "
            "below the threshold 0.04.") in text
    assert "For example, sky covers 50% of the pixels: its bound is 0.01." in text
    concepts = tables_of(html)[-1]
    assert concepts.rows == [["hair", "part", "2%", "0.25", "yes"],
                             ["sky", "scene", "50%", "0.01", "no"]]
    html = _render(make_run({"dissection": _block(unreachable=())}))
    assert "Every concept's bound is above the threshold 0.04" in text_of(html)


def test_long_unreachable_lists_point_to_the_table(make_run, text_of):
    names = [f"c{i}" for i in range(33)]
    text = text_of(_render(make_run({"dissection": _block(unreachable=names)})))
    assert "33 concepts (c0, c1," in text and "c29 and 3 more, marked 'no' in the table)" in text
    assert "c30," not in text


def test_gate_line_counts_dissection_checks_only(make_run, text_of):
    checks = [GateCheck(id=f"c{i}", kind=kind, variant="gmp-90", subject="s", metric="m",
                        unit="%", verdict=verdict).as_dict()
              for i, (kind, verdict) in enumerate((("dissection", "fail"),
                                                   ("dissection", "pass"),
                                                   ("subgroup", "fail")))]
    text = text_of(_render(make_run({"dissection": _block()},
                                    gate={"verdict": "fail", "checks": checks})))
    assert "The gate checked 2 of these drops: 1 failed, 0 inconclusive, 1 passed" in text


def test_plot_points_are_the_block_values():
    pts = dissection_points(_block()).set_index(["variant", "panel"])
    for key, panel in PANELS:
        assert pts.loc[("gmp-90", panel), "mean"] == _block()["variants"]["gmp-90"][key]["mean"]
    assert pts.loc[("gmp-90", PANELS[0][1]), "lo"] == 0.05 - 0.1


def test_hostile_concepts_and_variants_are_escaped(make_run, tags_of, text_of):
    block = _block(unreachable=[EVIL])
    block["concepts"][0]["concept"] = EVIL
    block["variants"][EVIL] = block["variants"].pop("gmp-90")
    html = _render(make_run({"dissection": block}, variants=("dense", EVIL)))
    assert "script" not in tags_of(html)
    assert f"1 concept ({EVIL})" in text_of(html)
