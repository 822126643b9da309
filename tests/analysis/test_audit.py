"""The whole analysis: files in, metrics.json and tables out."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from compaudit.analysis.audit import TABLE_NAMES, AnalysisOptions, analyze, analyze_files
from compaudit.errors import AuditInputError
from compaudit.schema import dumps_metrics
from compaudit.tables import (
    validate_examples,
    validate_predictions,
    write_examples,
    write_predictions,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory, binary_tables):
    root = tmp_path_factory.mktemp("run")
    ex, pr = binary_tables
    write_examples(ex, root / "examples.parquet")
    write_predictions(pr, root / "predictions.parquet", examples=ex)
    return root


def test_writes_strict_json_and_every_table(files, tmp_path):
    result = analyze_files(files / "examples.parquet", files / "predictions.parquet",
                           AnalysisOptions(bootstrap=100))
    result.write(tmp_path)
    text = (tmp_path / "metrics.json").read_text()
    metrics = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert metrics["schema"] == "compaudit.metrics/4"
    assert metrics["inputs"]["predictions"]["rows"] == 3 * 4 * 3000
    assert set(metrics["accuracy"]) == {"dense", "gmp-50", "gmp-90"}
    for name in TABLE_NAMES:
        assert (tmp_path / "tables" / f"{name}.csv").is_file(), name
    acc = pd.read_csv(tmp_path / "tables" / "accuracy.csv")
    assert metrics["accuracy"]["dense"]["top1_mean"] == pytest.approx(
        acc[acc.variant == "dense"]["top1"].mean())
    assert not list(tmp_path.rglob("*.tmp"))


def test_same_inputs_and_seed_give_identical_metrics(binary_tables):
    ex = validate_examples(binary_tables[0])
    pr = validate_predictions(binary_tables[1], ex)
    a = analyze(ex, pr, AnalysisOptions(bootstrap=50, seed=4)).metrics
    b = analyze(ex, pr, AnalysisOptions(bootstrap=50, seed=4)).metrics
    c = analyze(ex, pr, AnalysisOptions(bootstrap=50, seed=5)).metrics
    assert dumps_metrics(a) == dumps_metrics(b)  # NaN != NaN: compare the JSON
    assert a.deltas != c.deltas


def test_unknown_protected_attribute_lists_the_valid_ones(binary_tables):
    ex = validate_examples(binary_tables[0])
    pr = validate_predictions(binary_tables[1], ex)
    with pytest.raises(AuditInputError, match="'Age' not found; the examples table has 'Male', 'Young'"):
        analyze(ex, pr, AnalysisOptions(protected=("Age",)))


def test_shifted_rows_feed_accuracy_but_not_the_clean_analyses(make_pop):
    ex = pd.DataFrame({"example_id": ["a", "b", "a-fog", "b-fog"], "label": [0, 1, 0, 1],
                       "source_id": ["a", "b", "a", "b"], "shift": ["clean", "clean", "fog", "fog"],
                       "severity": [0, 0, 3, 3], "attr.G": ["x", "y", "x", "y"]})
    pr = pd.concat([pd.DataFrame({"variant": v, "replica": 0, "example_id": ex.example_id,
                                  "pred": p, "p_true": 0.5, "p_pos": 0.5})
                    for v, p in (("dense", [0, 1, 1, 1]), ("c", [0, 1, 1, 0]))])
    ex = validate_examples(ex)
    res = analyze(ex, validate_predictions(pr, ex), AnalysisOptions(bootstrap=0))
    acc = res.tables["accuracy"].set_index(["variant", "shift"])["top1"]
    assert acc[("dense", "clean")] == 1.0 and acc[("dense", "fog")] == 0.5
    assert acc[("c", "fog")] == 0.0
    assert res.metrics.task.n_examples == 2
    assert res.metrics.pie["c"]["n_pie"] == 0


def test_multiclass_with_attributes_reports_pie_rate_per_subgroup():
    labels = np.arange(40) % 4
    ex = pd.DataFrame({"example_id": [f"e{i}" for i in range(40)], "label": labels,
                       "attr.G": np.where(np.arange(40) < 20, "a", "b")})
    dense = np.stack([labels] * 3)
    comp = dense.copy()
    comp[:, 20:30] = (labels[20:30] + 1) % 4  # ten PIEs, all in G=b
    pr = pd.concat([pd.DataFrame({"variant": v, "replica": r, "example_id": ex.example_id,
                                  "pred": p[r], "p_true": 0.5})
                    for v, p in (("dense", dense), ("c", comp)) for r in range(3)])
    ex = validate_examples(ex)
    res = analyze(ex, validate_predictions(pr, ex), AnalysisOptions(bootstrap=100))
    s = res.tables["subgroup_summary"].query("metric == 'pie_rate'").set_index("subgroup")["mean"]
    assert s["overall"] == 0.25 and s["G=a"] == 0.0 and s["G=b"] == 0.5
    over = res.tables["overindex"].set_index("attr.G")
    assert "label" not in over.columns
    assert over.loc["b", "n_pie"] == 10


def test_analysis_never_imports_torch():
    code = ("import sys, compaudit.analysis, compaudit.tables, compaudit.simulate; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
