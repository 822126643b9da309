"""Per-class Welch tests against scipy; single-replica fallbacks against statsmodels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from compaudit.analysis.classes import class_summary, class_table


def _tables(preds: dict[str, np.ndarray], labels: np.ndarray, replicas=None):
    ex = pd.DataFrame({"example_id": [f"e{i}" for i in range(len(labels))], "label": labels})
    frames = []
    for v, p in preds.items():
        reps = replicas.get(v) if replicas else range(len(p))
        for r, row in zip(reps, p):
            frames.append(pd.DataFrame({"variant": v, "replica": r, "example_id": ex.example_id,
                                        "pred": row, "p_true": 0.5}))
    return ex, pd.concat(frames, ignore_index=True)


def _noisy(rng, labels, n_rep, err, num_classes):
    wrong = rng.random((n_rep, len(labels))) < err
    return np.where(wrong, (labels + 1) % num_classes, labels)


@pytest.fixture(scope="module")
def many_class():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 60)
    err_c = np.where(labels == 3, 0.45, 0.1)  # class 3 is hit by compression
    preds = {"dense": _noisy(rng, labels, 8, 0.1, 10), "c": _noisy(rng, labels, 6, err_c, 10)}
    return labels, preds


def test_welch_per_class_equals_scipy_on_shifted_recall(make_pop, many_class):
    labels, preds = many_class
    table = class_table(make_pop(*_tables(preds, labels)))
    shifted = {}
    for v, p in preds.items():
        correct = p == labels
        recall = np.stack([correct[:, labels == c].mean(axis=1) for c in range(10)], axis=1)
        shifted[v] = recall - correct.mean(axis=1, keepdims=True)
    ref = sps.ttest_ind(shifted["c"], shifted["dense"], equal_var=False, axis=0)
    np.testing.assert_allclose(table["t"], ref.statistic, rtol=1e-9)
    np.testing.assert_allclose(table["p_value"], ref.pvalue, rtol=1e-8)
    np.testing.assert_allclose(table["q_value"], multipletests(ref.pvalue, method="fdr_bh")[1])
    nrd = shifted["c"].mean(axis=0) - shifted["dense"].mean(axis=0)
    np.testing.assert_allclose(table["normalized_recall_difference"], nrd)
    assert (table["test"] == "welch").all()
    summary = class_summary(table)["c"]
    assert summary["significant_raw"] == int((ref.pvalue <= 0.05).sum())
    assert summary["most_harmed"][0]["class"] == 3
    assert table.set_index("class").loc[3, "significant_bh"]


def test_single_paired_replica_falls_back_to_mcnemar(make_pop, many_class):
    labels, preds = many_class
    one = {v: p[:1] for v, p in preds.items()}
    table = class_table(make_pop(*_tables(one, labels)))
    assert (table["test"] == "mcnemar-exact").all()
    d_ok, c_ok = one["dense"][0] == labels, one["c"][0] == labels
    for c in (0, 3):
        m = labels == c
        tab = [[np.sum(d_ok[m] & c_ok[m]), np.sum(d_ok[m] & ~c_ok[m])],
               [np.sum(~d_ok[m] & c_ok[m]), np.sum(~d_ok[m] & ~c_ok[m])]]
        ref = mcnemar(np.array(tab), exact=True).pvalue
        assert table.set_index("class").loc[c, "p_value"] == pytest.approx(ref)


def test_single_unpaired_replica_falls_back_to_fisher(make_pop, many_class):
    labels, preds = many_class
    one = {v: p[:1] for v, p in preds.items()}
    table = class_table(make_pop(*_tables(one, labels, replicas={"dense": [0], "c": [5]})))
    assert (table["test"] == "fisher-exact").all()
    m = labels == 3
    hit_c, hit_d = np.sum(one["c"][0][m] == 3), np.sum(one["dense"][0][m] == 3)
    ref = sps.fisher_exact([[hit_c, m.sum() - hit_c], [hit_d, m.sum() - hit_d]]).pvalue
    assert table.set_index("class").loc[3, "p_value"] == pytest.approx(ref)


def test_classes_without_examples_are_left_out(make_pop):
    labels = np.array([0, 0, 2, 2, 2, 0])
    preds = {"dense": np.array([[0, 0, 2, 2, 2, 0]] * 2), "c": np.array([[0, 2, 2, 2, 2, 0]] * 2)}
    table = class_table(make_pop(*_tables(preds, labels), num_classes=3))
    assert list(table["class"]) == [0, 2]
