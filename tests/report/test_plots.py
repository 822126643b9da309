"""Figures: where variants sit, which curves join them, nothing drawn from no data, and
PNGs that are deterministic and leave matplotlib's global state alone."""

from __future__ import annotations

import base64
import io
import re

import matplotlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from compaudit.report.plots import (
    _CAT_STEP,
    _REPAIR_STEP,
    _families,
    _positions,
    class_impact_plot,
    forest_plot,
    heatmap_plot,
    report_style,
    tradeoff_plot,
)
from compaudit.report.plots_robustness import corruption_error_plot, severity_plot
from compaudit.report.rundata import VariantPoint

EVIL = "<script>alert(1)</script>"
POINTS = {"dense": VariantPoint("dense", 0.0, ""), "gmp-90": VariantPoint("gmp-90", 0.9, "gmp"),
          "gmp-50": VariantPoint("gmp-50", 0.5, "gmp"), "rnd-50": VariantPoint("rnd-50", 0.5,
                                                                                "rnd"),
          "int8": VariantPoint("int8", None, "int8"), "fp16": VariantPoint("fp16", None, "fp16")}


def _png(img: str) -> Image.Image:
    data = re.search(r'src="data:image/png;base64,([^"]+)"', img).group(1)
    return Image.open(io.BytesIO(base64.b64decode(data)))


def _tradeoff_data(series=("s",), variants=tuple(POINTS)):
    return pd.DataFrame([{"panel": "p", "series": s, "variant": v, "mean": 0.8, "lo": 0.7,
                          "hi": 0.9} for s in series for v in variants])


def test_positions_put_variants_without_sparsity_right_of_100_percent():
    xs = _positions(POINTS, list(POINTS))
    assert xs["dense"] == 0.0 and xs["gmp-90"] == 0.9
    assert xs["int8"] == pytest.approx(1 + _CAT_STEP)
    assert xs["fp16"] == pytest.approx(1 + 2 * _CAT_STEP)


def test_families_start_at_dense_and_run_by_sparsity():
    fams = _families(POINTS, list(POINTS), "dense")
    assert fams == {"gmp": ["dense", "gmp-50", "gmp-90"], "rnd": ["dense", "rnd-50"]}
    assert _families(POINTS, ["gmp-90"], "dense") == {"gmp": ["gmp-90"]}


def test_a_repair_is_drawn_beside_its_base_joined_to_it():
    points = {**POINTS, "gmp-90-repaired": VariantPoint("gmp-90-repaired", 0.9, "gmp",
                                                        base="gmp-90")}
    xs = _positions(points, list(points))
    assert xs["gmp-90-repaired"] == pytest.approx(0.9 + _REPAIR_STEP)
    fams = _families(points, list(points), "dense")
    # the family's curve is unchanged; the repair is a short curve from its base
    assert fams["gmp"] == ["dense", "gmp-50", "gmp-90"]
    assert fams["gmp-90-repaired (from gmp-90)"] == ["gmp-90", "gmp-90-repaired"]
    img = tradeoff_plot(_tradeoff_data(variants=tuple(points)), points=points, dense="dense",
                        panels=["p"], ylabel="y", alt="a")
    assert img is not None and img != tradeoff_plot(_tradeoff_data(), points=POINTS,
                                                    dense="dense", panels=["p"], ylabel="y",
                                                    alt="a")


def test_tradeoff_plot_draws_nothing_without_data():
    data = _tradeoff_data()
    common = {"points": POINTS, "dense": "dense", "ylabel": "y", "alt": "a"}
    assert tradeoff_plot(data.iloc[:0], panels=["p"], **common) is None
    assert tradeoff_plot(data, panels=["other"], **common) is None
    assert tradeoff_plot(data.assign(mean=np.nan), panels=["p"], **common) is None
    unknown = data.assign(variant="not-a-variant")
    assert tradeoff_plot(unknown, panels=["p"], **common) is None


def test_tradeoff_plot_is_a_deterministic_png_with_escaped_alt():
    common = {"points": POINTS, "dense": "dense", "panels": ["p"], "ylabel": "y", "alt": EVIL}
    one = tradeoff_plot(_tradeoff_data(), **common)
    several = tradeoff_plot(_tradeoff_data(series=("a", "b", EVIL)), **common)
    assert one == tradeoff_plot(_tradeoff_data(), **common)
    assert one != several
    assert 'alt="&lt;script&gt;alert(1)&lt;/script&gt;"' in one
    # A legend per panel below the axes: the figure with several series is taller.
    assert _png(several).height > _png(one).height


def test_other_plots_draw_nothing_without_data():
    assert heatmap_plot(pd.DataFrame(), pd.DataFrame(), alt="a", colorbar="c") is None
    nan_rows = pd.DataFrame({"panel": ["p"], "row": ["r"], "hue": ["h"], "est": [np.nan],
                             "lo": [0.0], "hi": [0.1], "sig": [False]})
    assert forest_plot(nan_rows, alt="a", xlabel="x") is None
    classes = pd.DataFrame({"variant": ["gmp-90"], "class": [0],
                            "normalized_recall_difference": [0.1], "significant_raw": [True],
                            "significant_bh": [False]})
    assert class_impact_plot(classes, variants=["other"], labels={}, alpha=0.05,
                             alt="a") is None
    assert corruption_error_plot(pd.DataFrame({"variant": ["v"], "corruption": ["fog"],
                                               "ce": [np.nan]}), variants=["v"],
                                 reference="dense", alt="a") is None
    assert severity_plot(pd.DataFrame(), variants=["v"], alt="a") is None


def _heatmap(row: str, col: str, alt: str = "a") -> str:
    matrix = pd.DataFrame([[1.0, -4.0]], index=[row], columns=[col, "b"])
    return heatmap_plot(matrix, pd.DataFrame([["+100%", "-100%"]]), alt=alt, colorbar="c")


def _forest(row: str, hue: str) -> str:
    rows = pd.DataFrame({"panel": ["p", "p"], "row": [row, "b"], "hue": [hue, "h"],
                         "est": [0.1, -0.1], "lo": [0.0, np.nan], "hi": [0.2, np.nan],
                         "sig": [True, False]})
    return forest_plot(rows, alt="a", xlabel="x")


def _bytes(img: str) -> bytes:
    return base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', img).group(1))


@pytest.mark.parametrize("draw", [_heatmap, _forest])
def test_plots_draw_hostile_names_as_plain_text_in_the_report_style(draw):
    # "$x_{$" is broken TeX and "$\alpha$" valid TeX; names are data, drawn as typed.
    with pytest.raises(ValueError):  # matplotlib's default style parses them as TeX
        _bytes(draw("$\\alpha$", "$x_{$"))
    with report_style():
        drawn = _bytes(draw("$\\alpha$", "$x_{$"))
        with matplotlib.rc_context({"text.parse_math": True}):
            # The reference: the same characters, escaped so matplotlib draws them as text.
            literal = _bytes(draw(r"\$\alpha\$", r"\$x_{\$"))
            as_tex = _bytes(draw("$\\alpha$", "x_{"))
    assert drawn == literal  # pixel for pixel
    assert drawn != as_tex   # and not what TeX would draw (the check can tell)
    image = np.asarray(Image.open(io.BytesIO(drawn)).convert("L"))
    assert image.min() < 64 and image.max() == 255  # dark text on a white page


def test_plot_alt_text_is_escaped():
    with report_style():
        img = _heatmap("a", "b", alt=EVIL)
    assert 'alt="&lt;script&gt;alert(1)&lt;/script&gt;"' in img and EVIL not in img


def test_report_style_restores_rcparams_and_figures_skip_pyplot():
    import matplotlib.pyplot as plt

    before = dict(matplotlib.rcParams)
    backend = matplotlib.get_backend()
    with report_style():
        assert matplotlib.rcParams["text.parse_math"] is False
        tradeoff_plot(_tradeoff_data(), points=POINTS, dense="dense", panels=["p"],
                      ylabel="y", alt="a")
    assert dict(matplotlib.rcParams) == before
    assert matplotlib.get_backend() == backend
    assert plt.get_fignums() == []
