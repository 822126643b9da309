"""Pre-compression risk screen: candidate scores, AUROC and precision@k, validation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from compaudit.analysis.audit import AnalysisOptions, analyze
from compaudit.analysis.screen import (
    CANDIDATES,
    RISK_SCORE,
    dense_p_true,
    precision_at,
    roc_auc,
    screen_files,
    screen_population,
    validate_screen,
)
from compaudit.errors import AuditInputError
from compaudit.tables import (
    validate_examples,
    validate_predictions,
    write_examples,
    write_predictions,
)


@pytest.mark.parametrize("seed", range(4))
def test_roc_auc_matches_scikit_learn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(500) < 0.1
    score = np.round(rng.random(500) + y * 0.3, 1)  # rounded: many ties
    assert roc_auc(y, score) == pytest.approx(roc_auc_score(y, score))


def test_roc_auc_without_both_classes_is_nan():
    assert math.isnan(roc_auc(np.zeros(5, bool), np.arange(5)))
    assert math.isnan(roc_auc(np.ones(5, bool), np.arange(5)))


def test_precision_at_by_hand():
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1] * 10, bool)  # 100 examples
    score = np.arange(100, 0, -1, dtype=float)  # the first examples rank highest
    assert precision_at(y, score, 0.01) == 1.0        # top 1: example 0, a positive
    assert precision_at(y, score, 0.05) == 2 / 5      # examples 0-4: two positives
    assert precision_at(y, score, 0.025) == 2 / 3     # ceil(2.5) = 3 examples
    # Ties at the boundary are broken by the examples' order.
    assert precision_at(y, np.ones(100), 0.02) == 0.5


def _pop(make_pop, dense_pos, labels, *, attrs=None):
    """A binary population whose dense replicas give p_pos ``dense_pos`` (R, N)."""
    n = len(labels)
    ex = pd.DataFrame({"example_id": [f"e{i}" for i in range(n)], "label": labels,
                       "attr.Male": attrs if attrs is not None else [i % 2 == 0 for i in range(n)]})
    frames = []
    for r, p in enumerate(np.asarray(dense_pos, float)):
        frames.append(pd.DataFrame({"variant": "dense", "replica": r, "example_id": ex.example_id,
                                    "pred": (p >= 0.5).astype(int),
                                    "p_true": np.where(labels == 1, p, 1 - p), "p_pos": p}))
    pr = pd.concat(frames)
    pop = make_pop(ex, pr)
    return pop, validate_predictions(pr, validate_examples(ex))


def test_candidate_scores_by_hand_binary(make_pop):
    labels = np.array([1, 0, 1, 0])
    dense_pos = np.array([[0.9, 0.2, 0.6, 0.5], [0.7, 0.2, 0.3, 0.5], [0.8, 0.2, 0.45, 0.9]])
    pop, pr = _pop(make_pop, dense_pos, labels)
    res = screen_population(pop, dense_p_true(pop, pr), ["Male"], top=0.5)
    s = res.scores.set_index("example_id")
    q = dense_pos.mean(axis=0)
    entropy = -(q * np.log(q) + (1 - q) * np.log(1 - q))
    np.testing.assert_allclose(s["entropy"], entropy, rtol=1e-6)
    np.testing.assert_allclose(s["risk"], s[RISK_SCORE])
    p_true = np.where(labels == 1, dense_pos, 1 - dense_pos)
    np.testing.assert_allclose(s["margin"], -(2 * p_true - 1).mean(axis=0), rtol=1e-6)
    # Votes: e0 1,1,1; e1 0,0,0; e2 1,0,0; e3 1,1,1 -> modal shares 1, 1, 2/3, 1.
    np.testing.assert_allclose(s["disagreement"], [0, 0, 1 / 3, 0])
    assert s["at_risk"].tolist() == list(s["risk_rank"] <= 2)
    # Mean p_pos 0.8, 0.2, 0.45, 0.633: e2 is closest to one half, then e3.
    assert s["risk_rank"].tolist() == [3, 4, 1, 2]
    assert set(CANDIDATES) <= set(s.columns)


def test_entropy_of_a_many_class_population(make_pop):
    ex = pd.DataFrame({"example_id": ["a", "b"], "label": [0, 2]})
    pred = np.array([[0, 2], [0, 1], [1, 2]])
    p_pred = np.array([[0.8, 0.5], [0.6, 0.4], [0.5, 0.9]])
    frames = [pd.DataFrame({"variant": "dense", "replica": r, "example_id": ex.example_id,
                            "pred": pred[r], "p_true": [0.8, 0.5], "p_pred": p_pred[r]})
              for r in range(3)]
    pr = pd.concat(frames)
    pop = make_pop(ex, pr, num_classes=3)
    res = screen_population(pop, dense_p_true(pop, validate_predictions(
        pr, validate_examples(ex), num_classes=3)), [], top=0.5)
    # Example a: class 0 gets (0.8 + 0.6) / 3, class 1 gets 0.5 / 3, "other" the rest.
    q = np.array([1.4, 0.5]) / 3
    expected = -(q * np.log(q)).sum() - (1 - q.sum()) * np.log(1 - q.sum())
    assert res.scores["entropy"].iloc[0] == pytest.approx(expected)
    # Margin of b: right replicas 2 p_true - 1 = 0, the wrong one p_true - p_pred = 0.1.
    assert res.scores["margin"].iloc[1] == pytest.approx(-(0 + 0.1 + 0) / 3)
    assert res.groups.empty


def test_screen_rejects_a_bad_top(make_pop):
    pop, pr = _pop(make_pop, np.full((2, 4), 0.7), np.array([1, 0, 1, 0]))
    with pytest.raises(AuditInputError, match=r"expected a fraction in \(0, 1\]"):
        screen_population(pop, dense_p_true(pop, pr), [], top=0.0)


@pytest.fixture(scope="module")
def analysed(binary_tables):
    ex, pr = binary_tables
    ex = validate_examples(ex)
    return analyze(ex, validate_predictions(pr, ex), AnalysisOptions(bootstrap=0))


def test_validation_in_the_analysis_matches_scikit_learn(analysed):
    screen = analysed.metrics.screen
    pies = analysed.tables["pie"]
    scores = analysed.tables["screen_scores"]
    assert set(screen) == set(pies["variant"])
    for variant, entry in screen.items():
        y = pies.loc[pies["variant"] == variant, "is_pie"].to_numpy()
        assert entry["n_pie"] == int(y.sum())
        if not y.any():
            assert entry["auroc"] is None
            continue
        assert entry["auroc"] == pytest.approx(roc_auc_score(y, scores["risk"]))
        for cand in CANDIDATES:
            assert entry[f"auroc_{cand}"] == pytest.approx(roc_auc_score(y, scores[cand]))
        order = np.argsort(-scores["risk"].to_numpy(), kind="stable")
        for key, frac in (("precision_at_1pct", 0.01), ("precision_at_5pct", 0.05)):
            k = math.ceil(frac * len(y))
            assert entry[key] == pytest.approx(y[order[:k]].mean())
    assert analysed.metrics.screen_summary["score"] == RISK_SCORE
    groups = analysed.tables["screen_groups"]
    assert groups["n"].sum() == len(scores)
    assert groups["n_at_risk"].sum() == scores["at_risk"].sum()


def test_validate_screen_without_pies_is_empty(make_pop):
    pop, pr = _pop(make_pop, np.full((2, 4), 0.7), np.array([1, 0, 1, 0]))
    result = screen_population(pop, dense_p_true(pop, pr), ["Male"])
    assert validate_screen(result, pd.DataFrame()) == {}


def test_screen_files_reads_only_the_dense_rows(binary_tables, tmp_path):
    ex, pr = binary_tables
    write_examples(ex, tmp_path / "e.parquet")
    write_predictions(pr, tmp_path / "p.parquet", examples=ex)
    full = screen_files(tmp_path / "e.parquet", tmp_path / "p.parquet", protected=("Male",))
    dense_only = pr[pr["variant"] == "dense"]
    write_predictions(dense_only, tmp_path / "d.parquet", examples=ex)
    dense = screen_files(tmp_path / "e.parquet", tmp_path / "d.parquet", protected=("Male",))
    pd.testing.assert_frame_equal(full.scores, dense.scores)
    assert full.summary["ignored_variants"] == ["gmp-50", "gmp-90"]
    assert dense.summary["ignored_variants"] == []
    paths = full.write(tmp_path / "out")
    assert pd.read_csv(paths["scores"]).shape[0] == len(ex)
    with pytest.raises(AuditInputError, match="protected attribute"):
        screen_files(tmp_path / "e.parquet", tmp_path / "d.parquet", protected=("Nope",))
