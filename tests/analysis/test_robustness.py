"""Corruption error, calibration and AURRA against hand computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from compaudit.analysis.robustness import (
    ALEXNET_CLEAN_ERROR,
    ALEXNET_ERRORS,
    accuracy_by_severity,
    aurra,
    corruption_errors,
    rms_calibration_error,
    subgroups_under_shift,
)
from compaudit.simulate import PlantedHarm, simulate_binary


def _acc(rows):
    return pd.DataFrame(rows, columns=["variant", "replica", "shift", "severity", "top1"])


def test_alexnet_normalized_ce_and_mce_by_hand():
    rows = [("dense", 0, "clean", 0, 0.76)]
    for sev, e in zip(range(1, 6), (0.3, 0.4, 0.5, 0.6, 0.7)):
        rows.append(("dense", 0, "fog", sev, 1 - e))
        rows.append(("dense", 0, "contrast", sev, 1 - e / 2))
    table = corruption_errors(_acc(rows), dense="dense", alexnet=True).set_index("corruption")
    fog = 2.5 / (5 * ALEXNET_ERRORS["fog"])
    contrast = 1.25 / (5 * ALEXNET_ERRORS["contrast"])
    assert table.loc["fog", "ce"] == pytest.approx(100 * fog)
    assert table.loc["contrast", "ce"] == pytest.approx(100 * contrast)
    assert table.loc["mCE", "ce"] == pytest.approx(100 * (fog + contrast) / 2)
    rel = (2.5 - 5 * 0.24) / (5 * ALEXNET_ERRORS["fog"] - 5 * ALEXNET_CLEAN_ERROR)
    assert table.loc["fog", "relative_ce"] == pytest.approx(100 * rel)


def test_published_resnet50_errors_give_its_mce():
    # A model whose error equals AlexNet's everywhere has mCE 100%.
    rows = [("m", 0, "clean", 0, 1 - ALEXNET_CLEAN_ERROR)]
    rows += [("m", 0, c, s, 1 - e) for c, e in ALEXNET_ERRORS.items() for s in range(1, 6)]
    table = corruption_errors(_acc(rows), dense="m", alexnet=True).set_index("corruption")
    assert table.loc["mCE", "ce"] == pytest.approx(100.0)
    assert table.loc["mCE", "relative_ce"] == pytest.approx(100.0)


def test_dense_referenced_ce_is_100_for_dense_and_ratio_for_compressed():
    rows = [("dense", r, "clean", 0, 0.9) for r in (0, 1)]
    rows += [("dense", r, "snow", s, 0.8) for r in (0, 1) for s in (1, 2)]
    rows += [("c", r, "clean", 0, 0.9) for r in (0, 1)]
    rows += [("c", 0, "snow", 1, 0.7), ("c", 1, "snow", 1, 0.5), ("c", 0, "snow", 2, 0.6),
             ("c", 1, "snow", 2, 0.6)]
    table = corruption_errors(_acc(rows), dense="dense", alexnet=False)
    table = table.set_index(["variant", "corruption"])
    assert table.loc[("dense", "snow"), "ce"] == pytest.approx(100.0)
    assert table.loc[("c", "snow"), "ce"] == pytest.approx(100 * (0.4 + 0.4) / (0.2 + 0.2))
    assert table.loc[("c", "snow"), "relative_ce"] == pytest.approx(100 * 0.6 / 0.2)


def test_accuracy_by_severity_matches_scipy_t_interval():
    rows = [("v", r, "clean", 0, t) for r, t in enumerate((0.9, 0.92, 0.91))]
    rows += [("v", r, "fog", 2, t) for r, t in enumerate((0.7, 0.74, 0.69))]
    rows += [("w", 0, "fog", 2, 0.5)]  # one replica: no interval
    table = accuracy_by_severity(_acc(rows), level=0.9)
    assert list(zip(table["variant"], table["shift"], table["severity"])) == [
        ("v", "clean", 0), ("v", "fog", 2), ("w", "fog", 2)]
    fog = [0.7, 0.74, 0.69]
    # scipy's t-interval on the logit scale of the accuracy (a rate stays in [0, 1]):
    # atanh(2m - 1) = logit(m) / 2, with the delta-method scale.
    m = np.mean(fog)
    z_lo, z_hi = stats.t.interval(0.9, 2, loc=np.arctanh(2 * m - 1),
                                  scale=stats.sem(fog) * 2 / (1 - (2 * m - 1) ** 2))
    lo, hi = (np.tanh(z_lo) + 1) / 2, (np.tanh(z_hi) + 1) / 2
    row = table.iloc[1]
    assert row["replicas"] == 3
    assert row["mean"] == pytest.approx(np.mean(fog))
    assert row["std"] == pytest.approx(np.std(fog, ddof=1))
    assert (row["lo"], row["hi"]) == pytest.approx((lo, hi))
    assert table.iloc[0]["mean"] == pytest.approx(0.91)
    one = table.iloc[2]
    assert one["replicas"] == 1 and one["mean"] == 0.5
    assert np.isnan(one["std"]) and np.isnan(one["lo"]) and np.isnan(one["hi"])


def test_accuracy_by_severity_of_no_rows_has_the_columns():
    table = accuracy_by_severity(_acc([]))
    assert table.empty
    assert list(table.columns) == ["variant", "shift", "severity", "replicas", "mean", "std",
                                   "lo", "hi"]


def test_rms_calibration_error_by_hand():
    # 250 examples: bins of 100, 100 and 50 (the remainder joins the last bin: 150).
    conf = np.concatenate([np.full(100, 0.6), np.full(100, 0.8), np.full(50, 0.9)])
    correct = np.concatenate([np.ones(60), np.zeros(40), np.ones(70), np.zeros(30),
                              np.ones(50)])
    # Bins: [0.6 x100 acc .6], [0.8 x100 acc .7] + [0.9 x50 acc 1] -> one bin of 150.
    last_conf, last_acc = (80 + 45) / 150, 120 / 150
    expected = np.sqrt(100 / 250 * 0 + 150 / 250 * (last_conf - last_acc) ** 2)
    assert rms_calibration_error(conf, correct) == pytest.approx(expected)
    assert rms_calibration_error(np.ones(300), np.tile([1, 0], 150)) == pytest.approx(0.5)


def test_aurra_matches_brute_force_curve():
    rng = np.random.default_rng(0)
    conf = rng.random(200)
    correct = rng.random(200) < conf
    order = sorted(range(200), key=lambda i: -conf[i])
    curve = [np.mean([correct[j] for j in order[: k + 1]]) for k in range(200)]
    assert aurra(conf, correct) == pytest.approx(np.mean(curve))
    assert aurra(np.arange(4.0), [0, 0, 1, 1]) == pytest.approx(np.mean([1, 1, 2 / 3, 1 / 2]))


def test_harm_planted_under_one_shift_is_found_there_only(make_pop):
    harm = PlantedHarm("c", {"Male": True, "Young": False}, "fpr", 0.3)
    clean_ex, clean_pr = simulate_binary(n_examples=3000, n_replicas=3, variants=("dense", "c"), seed=1)
    fog_ex, fog_pr = simulate_binary(n_examples=3000, n_replicas=3, variants=("dense", "c"),
                                     harms=(harm,), seed=2)
    fog_ex = fog_ex.assign(example_id="fog/" + fog_ex.example_id, shift="fog", severity=3)
    fog_pr = fog_pr.assign(example_id="fog/" + fog_pr.example_id)
    pop = make_pop(pd.concat([clean_ex, fog_ex]), pd.concat([clean_pr, fog_pr]))
    d = subgroups_under_shift(pop, ["Male", "Young"], n_boot=300)
    assert set(d["shift"]) == {"fog"}
    hit = d[(d.metric == "fpr") & (d.abs_diff_q <= 0.05) & (d.abs_diff > 0)]
    assert "Male=True & Young=False" in set(hit.subgroup)


def test_alexnet_ce_over_a_subset_of_severities_uses_those_severities():
    from compaudit.references import ALEXNET_ERRORS_BY_SEVERITY

    rows = [("m", 0, "clean", 0, 0.7)]
    rows += [("m", 0, "fog", s, 1 - e) for s, e in ((1, 0.4), (3, 0.5), (5, 0.6))]
    table = corruption_errors(_acc(rows), dense="m", alexnet=True).set_index("corruption")
    ref = [ALEXNET_ERRORS_BY_SEVERITY["fog"][s - 1] for s in (1, 3, 5)]
    assert table.loc["fog", "severities"] == 3
    assert table.loc["fog", "ce"] == pytest.approx(100 * 1.5 / sum(ref))
    assert table.loc["fog", "relative_ce"] == pytest.approx(
        100 * (1.5 - 3 * 0.3) / (sum(ref) - 3 * ALEXNET_CLEAN_ERROR))
    # A model with AlexNet's error at exactly those severities has CE 100, which the
    # 5-severity average (0.8193 for fog, above severities 1 and 3) would not give.
    same = [("m", 0, "clean", 0, 1 - ALEXNET_CLEAN_ERROR)]
    same += [("m", 0, "fog", s, 1 - ALEXNET_ERRORS_BY_SEVERITY["fog"][s - 1]) for s in (1, 3)]
    table = corruption_errors(_acc(same), dense="m", alexnet=True).set_index("corruption")
    assert table.loc["fog", "ce"] == pytest.approx(100.0)
