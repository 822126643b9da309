"""PIEs: modal predictions, taxicab scores and the paper's Table 1."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from compaudit.analysis.pie import (
    mantel_haenszel_rr,
    modal_prediction,
    overindex_from_counts,
    overindex_table,
    overindex_within_label,
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


# --- Within-label over-index: Mantel-Haenszel pooled over the true label -----------------

def _strata(seed=0, k=4):
    rng = np.random.default_rng(seed)
    return rng.integers(1, 60, size=(k, 2, 2))


def _gr_log_se(tables):
    """Greenland-Robins (1985) variance of log RR_MH, written out term by term."""
    num = r = s = 0.0
    for (a, b), (c, d) in tables.astype(float):
        n, n1, n0 = a + b + c + d, a + b, c + d
        num += (n1 * n0 * (a + c) - a * c * n) / n**2
        r += a * n0 / n
        s += c * n1 / n
    return np.sqrt(num / (r * s))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mantel_haenszel_matches_statsmodels_and_greenland_robins(seed):
    from statsmodels.stats.contingency_tables import StratifiedTable

    tables = _strata(seed)
    mh = mantel_haenszel_rr(tables)
    ref = StratifiedTable(np.moveaxis(tables, 0, -1).astype(float))
    assert mh["rr"] == pytest.approx(ref.riskratio_pooled)
    test = ref.test_null_odds(correction=False)
    assert mh["chi2"] == pytest.approx(test.statistic)
    assert mh["p_value"] == pytest.approx(test.pvalue)
    assert mh["log_se"] == pytest.approx(_gr_log_se(tables))


def test_mantel_haenszel_of_one_stratum_is_the_crude_risk_ratio():
    (a, b), (c, d) = table = np.array([[12, 30], [20, 200]])
    mh = mantel_haenszel_rr(table[None])
    assert mh["rr"] == pytest.approx((a / (a + b)) / (c / (c + d)))
    # One stratum: Greenland-Robins reduces to the Katz variance of the log risk ratio.
    assert mh["log_se"] ** 2 == pytest.approx(1 / a - 1 / (a + b) + 1 / c - 1 / (c + d))


def test_mantel_haenszel_edge_cases():
    none = mantel_haenszel_rr(np.array([[[0, 5], [3, 7]], [[0, 4], [2, 9]]]))
    assert none["rr"] == 0 and np.isnan(none["log_se"])
    assert np.isnan(mantel_haenszel_rr(np.zeros((0, 2, 2)))["rr"])
    # Strata of fewer than 2 observations carry no information.
    a = mantel_haenszel_rr(_strata())
    b = mantel_haenszel_rr(np.concatenate([_strata(), [[[1, 0], [0, 0]]]]))
    assert a == pytest.approx(b)


def _confounded_pop(make_pop):
    """PIEs concentrate on label 1 in both groups equally: Table 1 flags (1, *) cells,
    the within-label over-index finds nothing."""
    rows = []
    for label, male, n, n_pie in ((0, True, 200, 2), (0, False, 200, 2),
                                  (1, True, 100, 20), (1, False, 100, 20)):
        for i in range(n):
            rows.append((label, male, i < n_pie))
    ex = pd.DataFrame({"example_id": [f"e{i}" for i in range(len(rows))],
                       "label": [r[0] for r in rows], "attr.Male": [r[1] for r in rows]})
    pie = np.array([r[2] for r in rows])
    dense = np.tile(ex["label"].to_numpy(), (3, 1))
    comp = np.where(pie, 1 - dense, dense)
    frames = [pd.DataFrame({"variant": v, "replica": r, "example_id": ex.example_id,
                            "pred": p[r], "p_true": 0.9, "p_pos": 0.5})
              for v, p in (("dense", dense), ("c", comp)) for r in range(3)]
    return make_pop(ex, pd.concat(frames)), pie


def test_within_label_overindex_removes_the_label_confounding(make_pop):
    pop, pie = _confounded_pop(make_pop)
    pies = pie_table(pop)
    assert (pies["is_pie"].to_numpy() == pie).all()
    crude = overindex_table(pop, pies, ["Male"]).set_index(["label", "attr.Male"])
    assert crude.loc[(1, True), "relative_growth_pct"] > 200  # Table 1 form: label 1 "harmed"
    per, mh = overindex_within_label(pop, pies, ["Male"])
    assert set(per["label"]) == {0, 1}
    np.testing.assert_allclose(per["relative_growth_pct"], 0.0, atol=1e-9)
    mh = mh.set_index("attr.Male")
    assert mh.loc[True, "rr_mh"] == pytest.approx(1.0)
    assert mh.loc[True, "relative_growth_pct"] == pytest.approx(0.0)
    assert mh.loc[True, "n_pie"] == 22 and mh.loc[True, "n_non_pie"] == 278
    assert mh.loc[True, "strata"] == 2
    assert mh.loc[True, "p_value"] == pytest.approx(1.0)
    assert mh.loc[True, "lo"] < 0 < mh.loc[True, "hi"]


def test_within_label_tables_match_a_hand_built_stratified_table(make_pop):
    from statsmodels.stats.contingency_tables import StratifiedTable

    pop, pie = _confounded_pop(make_pop)
    pie = pie.copy()
    pie[:5] = True  # five more PIEs among label-0 men
    pies = pie_table(pop).assign(is_pie=pie)
    per, mh = overindex_within_label(pop, pies, ["Male"])
    male, label = pop.examples["attr.Male"].to_numpy(), pop.labels
    tables = np.array([[[np.sum(pie & male & (label == k)), np.sum(pie & ~male & (label == k))],
                        [np.sum(~pie & male & (label == k)), np.sum(~pie & ~male & (label == k))]]
                       for k in (0, 1)])
    ref = StratifiedTable(np.moveaxis(tables, 0, -1).astype(float))
    row = mh.set_index("attr.Male").loc[True]
    assert row["rr_mh"] == pytest.approx(ref.riskratio_pooled)
    assert row["p_value"] == pytest.approx(ref.test_null_odds(correction=False).pvalue)
    assert row["log_rr_se"] == pytest.approx(_gr_log_se(tables))
    z = 1.959963984540054
    assert row["lo"] == pytest.approx(100 * (np.exp(np.log(row["rr_mh"]) - z * row["log_rr_se"]) - 1))
    # Per label: the Table 1 form among that label's examples.
    cell = per.set_index(["label", "attr.Male"]).loc[(0, True)]
    a, c = tables[0, 0, 0], tables[0, 1, 0]
    n1, n0 = tables[0, 0].sum(), tables[0, 1].sum()
    assert cell["relative_growth_pct"] == pytest.approx(100 * ((a / n1) / (c / n0) - 1))


def test_within_label_counts_the_pies_that_correct_the_dense_population(make_pop):
    rng = np.random.default_rng(3)
    n = 400
    labels = rng.integers(0, 2, n)
    male = rng.random(n) < 0.4
    dense = np.tile(labels, (3, 1))
    comp = dense.copy()
    dense[:, :40] = 1 - labels[:40]     # the dense population wrong on the first 40 ...
    comp[:, 20:40] = 1 - labels[20:40]  # ... the variant right on 0-19 (corrections)
    comp[:, 40:70] = 1 - labels[40:70]  # and wrong on 40-69, where dense is right
    ex = pd.DataFrame({"example_id": [f"e{i}" for i in range(n)], "label": labels,
                       "attr.Male": male})
    frames = [pd.DataFrame({"variant": v, "replica": r, "example_id": ex.example_id,
                            "pred": p[r], "p_true": 0.9, "p_pos": 0.5})
              for v, p in (("dense", dense), ("c", comp)) for r in range(3)]
    pop = make_pop(ex, pd.concat(frames))
    _, mh = overindex_within_label(pop, pie_table(pop), ["Male"])
    mh = mh.set_index("attr.Male")
    pie = np.zeros(n, bool)
    pie[:20] = pie[40:70] = True
    fixed = np.zeros(n, bool)
    fixed[:20] = True
    for value in (True, False):
        assert mh.loc[value, "n_pie"] == np.sum(pie & (male == value))
        assert mh.loc[value, "n_pie_fixed"] == np.sum(fixed & (male == value))
