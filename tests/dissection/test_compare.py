"""Variant comparison against counts worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from compaudit.dissection.compare import compare_dissections, comparison_metrics
from compaudit.errors import AuditInputError


def units(variant, replica, concepts, interpretable, categories=None):
    n = len(concepts)
    return pd.DataFrame({
        "variant": variant, "replica": replica, "layer": "l", "unit": np.arange(n),
        "threshold": 0.0, "concept": concepts,
        "category": categories or ["part"] * n, "iou": 0.1, "interpretable": interpretable,
    })


@pytest.fixture
def frame():
    return pd.concat([
        units("dense", 0, ["hair", "face", "eyes", "hair"], [True, True, True, False],
              ["part", "part", "part", "part"]),
        units("dense", 1, ["hair", "background", "eyes", "face"], [True, True, False, False],
              ["part", "background", "part", "part"]),
        # replica 0: unit 0 keeps hair, unit 1 switches to eyes, unit 2 lost, unit 3 gained
        units("gmp-90", 0, ["hair", "eyes", "eyes", "hair"], [True, True, False, True]),
        # replica 1: unit 0 lost, unit 1 keeps background
        units("gmp-90", 1, ["hair", "background", "eyes", "face"], [False, True, False, False],
              ["part", "background", "part", "part"]),
    ], ignore_index=True)


def test_counts_and_retention(frame):
    tables = compare_dissections(frame)
    rep = tables["replicas"].set_index(["variant", "replica"])
    assert rep.loc[("dense", 0), "interpretable_units"] == 3
    assert rep.loc[("dense", 0), "distinct_concepts"] == 3
    assert rep.loc[("dense", 0), "retained_interpretable"] == 1.0
    assert rep.loc[("gmp-90", 0), "interpretable_units"] == 3
    assert rep.loc[("gmp-90", 0), "distinct_concepts"] == 2  # hair, eyes
    assert rep.loc[("gmp-90", 0), "retained_interpretable"] == pytest.approx(2 / 3)
    assert rep.loc[("gmp-90", 0), "retained_concept"] == pytest.approx(1 / 3)
    assert rep.loc[("gmp-90", 1), "retained_interpretable"] == pytest.approx(1 / 2)
    assert rep.loc[("gmp-90", 1), "retained_concept"] == pytest.approx(1 / 2)

    summary = tables["summary"].set_index(["variant", "metric"])
    row = summary.loc[("gmp-90", "retained_interpretable")]
    assert row["mean"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert row["std"] == pytest.approx(np.std([2 / 3, 1 / 2], ddof=1))
    assert row["n"] == 2

    cats = tables["categories"].set_index(["variant", "replica", "category"])
    assert cats.loc[("dense", 1, "background"), "distinct_concepts"] == 1
    assert ("gmp-90", 0, "background") not in cats.index

    metrics = comparison_metrics(tables)
    assert metrics["gmp-90"]["interpretable_units"]["mean"] == 2.0
    assert metrics["gmp-90"]["by_category"]["background"]["interpretable_units"] == 0.5
    assert metrics["dense"]["by_category"]["part"]["distinct_concepts"] == 2.0  # (3 + 1) / 2


def test_relative_drops_and_t_intervals(frame):
    tables = compare_dissections(frame, level=0.9)
    rep = tables["replicas"].set_index(["variant", "replica"])
    # replica 0: 3 -> 3 interpretable units, 3 -> 2 concepts; replica 1: 2 -> 1 and 2 -> 1.
    assert rep.loc[("gmp-90", 0), "interpretable_drop"] == pytest.approx(0.0)
    assert rep.loc[("gmp-90", 0), "concept_drop"] == pytest.approx(1 / 3)
    assert rep.loc[("gmp-90", 1), "interpretable_drop"] == pytest.approx(0.5)
    assert rep.loc[("gmp-90", 1), "concept_drop"] == pytest.approx(0.5)
    assert rep.loc[("dense", 1), "interpretable_drop"] == 0.0
    row = tables["summary"].set_index(["variant", "metric"]).loc[("gmp-90", "concept_drop")]
    values = [1 / 3, 0.5]
    # A drop is at most 1: scipy's t-interval on -log(1 - drop), mapped back.
    m = np.mean(values)
    g_lo, g_hi = stats.t.interval(0.9, 1, loc=-np.log(1 - m), scale=stats.sem(values) / (1 - m))
    lo, hi = 1 - np.exp(-g_lo), 1 - np.exp(-g_hi)
    assert (row["lo"], row["hi"]) == (pytest.approx(lo), pytest.approx(hi))
    assert row["hi"] < 1
    metrics = comparison_metrics(tables)["gmp-90"]["concept_drop"]
    assert (metrics["lo"], metrics["hi"]) == (pytest.approx(lo), pytest.approx(hi))


def test_missing_dense_pair_gives_nan(frame):
    frame = pd.concat([frame, units("gmp-50", 7, ["hair"] * 4, [True] * 4)], ignore_index=True)
    tables = compare_dissections(frame)
    rep = tables["replicas"].set_index(["variant", "replica"])
    assert np.isnan(rep.loc[("gmp-50", 7), "retained_interpretable"])
    assert np.isnan(rep.loc[("gmp-50", 7), "interpretable_drop"])
    assert comparison_metrics(tables)["gmp-50"]["retained_interpretable"]["mean"] is None


def test_bad_input(frame):
    with pytest.raises(AuditInputError, match="no rows of the dense variant 'base'"):
        compare_dissections(frame, dense="base")
    with pytest.raises(AuditInputError, match="missing columns iou"):
        compare_dissections(frame.drop(columns="iou"))
    with pytest.raises(AuditInputError, match="appears more than once"):
        compare_dissections(pd.concat([frame, frame.iloc[:1]]))


def test_pure_pandas_half_is_re_exported_and_agrees_on_unit_columns():
    from compaudit.analysis import dissection as pure
    from compaudit.dissection import audit, compare
    from compaudit.dissection.netdissect import UNIT_COLUMNS

    assert compare.compare_dissections is pure.compare_dissections
    assert compare.comparison_metrics is pure.comparison_metrics
    assert audit.dissection_block is pure.dissection_block
    assert pure.UNIT_COLUMNS == UNIT_COLUMNS
