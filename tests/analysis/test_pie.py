"""PIEs: modal predictions, taxicab scores and the paper's Table 1."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from compaudit.analysis.pie import (
    modal_prediction,
    overindex_from_counts,
    overindex_table,
    pie_summary,
    pie_table,
    taxicab_distance,
)

# REFERENCES.md Table 1: CelebA test set, 50% pruning.
TABLE1 = pd.DataFrame(
    [
        ("blond", "male", "old", 57, 5, 0.29, 6.58, 2168.97),
        ("blond", "male", "young", 115, 3, 0.58, 3.95, 581.03),
        ("blond", "female", "young", 1932, 29, 9.72, 38.16, 292.59),
        ("blond", "female", "old", 513, 6, 2.58, 7.89, 205.81),
        ("non-blond", "female", "young", 8344, 26, 41.96, 34.21, -18.47),
        ("non-blond", "female", "old", 1395, 2, 7.01, 2.63, -62.48),
        ("non-blond", "male", "old", 2868, 2, 14.42, 2.63, -81.76),
        ("non-blond", "male", "young", 4662, 3, 23.44, 3.95, -83.15),
    ],
    columns=["hair", "gender", "age", "n_non_pie", "n_pie", "non_pie_pct", "pie_pct", "growth"],
)


def _brute_mode(column) -> int:
    counts = Counter(column.tolist())
    best = max(counts.values())
    return max(c for c, n in counts.items() if n == best)  # documented tie rule: largest


def test_modal_prediction_matches_brute_force_with_largest_index_tie_rule():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 6, size=(7, 500))
    pred[:, 0] = [1, 1, 4, 4, 2, 0, 3]  # a tie between 1 and 4
    mode, count = modal_prediction(pred)
    assert mode[0] == 4
    for i in range(pred.shape[1]):
        assert mode[i] == _brute_mode(pred[:, i])
        assert count[i] == Counter(pred[:, i].tolist())[mode[i]]


def test_taxicab_matches_explicit_histograms():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 5, size=(6, 300))
    b = rng.integers(0, 5, size=(4, 300))
    ha = np.stack([np.bincount(a[:, i], minlength=5) / 6 for i in range(300)])
    hb = np.stack([np.bincount(b[:, i], minlength=5) / 4 for i in range(300)])
    np.testing.assert_allclose(taxicab_distance(a, b), np.abs(ha - hb).sum(axis=1))
    assert taxicab_distance(a, a).max() == 0
    np.testing.assert_allclose(taxicab_distance(np.zeros((3, 2), int), np.ones((3, 2), int)), 2)


def test_table1_relative_growth_from_exact_counts():
    out = overindex_from_counts(TABLE1)
    exact = 100 * ((TABLE1.n_pie / 76) / (TABLE1.n_non_pie / 19886) - 1)
    np.testing.assert_allclose(out["relative_growth_pct"], exact)
    assert out["relative_growth_pct"].iloc[0] == pytest.approx(2195.0, abs=1.0)
    np.testing.assert_allclose(out["pie_pct"], TABLE1.pie_pct, atol=0.005)
    np.testing.assert_allclose(out["non_pie_pct"], TABLE1.non_pie_pct, atol=0.005)


def test_table1_paper_figures_when_shares_are_rounded_first():
    out = overindex_from_counts(TABLE1, round_shares=2)
    np.testing.assert_allclose(out["relative_growth_pct"], TABLE1.growth, atol=0.006)


def test_table1_fisher_test_flags_the_blond_male_old_cell():
    out = overindex_from_counts(TABLE1)
    from scipy.stats import fisher_exact

    ref = fisher_exact([[5, 71], [57, 19886 - 57]]).pvalue
    assert out["p_value"].iloc[0] == pytest.approx(ref)
    assert out["q_value"].iloc[0] < 0.05


def test_pie_table_and_summary(make_pop):
    labels = np.array([0, 1, 1, 0, 1, 0])
    ex = pd.DataFrame({"example_id": list("abcdef"), "label": labels,
                       "attr.Male": [True, True, False, False, True, False]})
    dense = np.array([[0, 1, 1, 0, 1, 0], [0, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 0]])
    comp = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0]])
    frames = [pd.DataFrame({"variant": v, "replica": r, "example_id": ex.example_id,
                            "pred": p[r], "p_true": 0.5, "p_pos": 0.5})
              for v, p in (("dense", dense), ("c", comp)) for r in range(3)]
    pop = make_pop(ex, pd.concat(frames))
    table = pie_table(pop)
    # Modes: dense [0,1,1,0,1,0], compressed [1,1,0,0,0,0] -> PIEs a, c, e.
    assert table["is_pie"].tolist() == [True, False, True, False, True, False]
    s = pie_summary(table)["c"]
    assert s["n_pie"] == 3
    assert s["dense_top1_pie"] == pytest.approx(np.mean(dense[:, [0, 2, 4]] == labels[[0, 2, 4]]))
    assert s["variant_top1_non_pie"] == pytest.approx(np.mean(comp[:, [1, 3, 5]] == labels[[1, 3, 5]]))
    over = overindex_table(pop, table, ["Male"]).set_index(["label", "attr.Male"])
    # Cell (label 1, male): examples b, e; e is a PIE.
    assert over.loc[(1, True), "n_pie"] == 1 and over.loc[(1, True), "n_non_pie"] == 1


def test_variant_without_pies_has_undefined_shares():
    cells = pd.DataFrame({"n_pie": [0, 0], "n_non_pie": [10, 30]})
    out = overindex_from_counts(cells)
    assert out["pie_pct"].isna().all() and out["relative_growth_pct"].isna().all()
    assert out["non_pie_pct"].tolist() == [25.0, 75.0]
