"""The pure-pandas dissection half: declared tables in, the pipeline's block out."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from compaudit.analysis.audit import AnalysisOptions, analyze_files, dumps_metrics
from compaudit.analysis.dissection import dissection_block, read_dissection
from compaudit.errors import AuditInputError
from compaudit.rundir import jsonable
from compaudit.tables import write_examples, write_predictions

CONFIG = {"concepts": "synthetic-faces", "layers": ["a", "b"], "quantile": 0.02,
          "iou_threshold": 0.04}


def dissection_tables(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-unit rows of dense and gmp-90 (3 replicas, 2 layers of 8 units) and concepts."""
    rng = np.random.default_rng(seed)
    names = np.array(["hair", "eyes", "mouth", "background"])
    rows = []
    for variant, rate in (("dense", 0.6), ("gmp-90", 0.3)):
        for replica in range(3):
            concept = rng.choice(names, 16)
            rows.append(pd.DataFrame({
                "variant": variant, "replica": replica, "layer": np.repeat(["a", "b"], 8),
                "unit": np.tile(np.arange(8), 2), "threshold": rng.random(16),
                "concept": concept,
                "category": np.where(concept == "background", "background", "part"),
                "iou": rng.random(16) * 0.1, "interpretable": rng.random(16) < rate}))
    concepts = pd.DataFrame({"concept": names, "category": ["part"] * 3 + ["background"],
                             "coverage": [0.15, 0.005, 0.01, 0.7],
                             "iou_bound": [0.133, 0.25, 0.5, 0.029], "n_images": 40})
    return pd.concat(rows, ignore_index=True), concepts


@pytest.fixture(scope="module")
def files(tmp_path_factory, binary_tables):
    root = tmp_path_factory.mktemp("dx")
    ex, pr = binary_tables
    write_examples(ex, root / "examples.parquet")
    write_predictions(pr, root / "predictions.parquet", examples=ex)
    units, concepts = dissection_tables()
    units.to_parquet(root / "units.parquet", index=False)
    concepts.to_csv(root / "concepts.csv", index=False)
    return root


def test_analyze_files_adds_the_block_dissection_block_builds(files):
    options = AnalysisOptions(bootstrap=0, level=0.9)
    result = analyze_files(files / "examples.parquet", files / "predictions.parquet", options,
                           dissection=files / "units.parquet",
                           dissection_concepts=files / "concepts.csv", dissection_config=CONFIG)
    units, concepts = dissection_tables()
    block, tables = dissection_block(units, concepts, CONFIG, level=0.9)
    as_json = json.loads(dumps_metrics(result.metrics))["dissection"]
    assert as_json == jsonable(block)
    for name, table in tables.items():
        pd.testing.assert_frame_equal(result.tables[name], table, check_dtype=False)
    assert result.metrics.inputs["dissection"]["rows"] == len(units)


def test_missing_columns_name_the_file_and_the_column(tmp_path):
    units, concepts = dissection_tables()
    units.drop(columns="interpretable").to_parquet(tmp_path / "u.parquet", index=False)
    concepts.drop(columns="iou_bound").to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(AuditInputError) as err:
        read_dissection(units=tmp_path / "u.parquet", concepts=tmp_path / "c.csv")
    problems = err.value.problems
    assert len(problems) == 2
    assert f"{tmp_path / 'u.parquet'}: missing required column(s) 'interpretable'" in problems[0]
    assert f"{tmp_path / 'c.csv'}: missing required column(s) 'iou_bound'" in problems[1]


def test_wrong_dtype_and_missing_file_are_reported(tmp_path):
    units, concepts = dissection_tables()
    units.assign(interpretable="yes").to_csv(tmp_path / "u.csv", index=False)
    concepts.to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(AuditInputError, match=r"u.csv: column 'interpretable' has dtype .*"
                                              r"expected booleans"):
        read_dissection(units=tmp_path / "u.csv", concepts=tmp_path / "c.csv")
    with pytest.raises(AuditInputError, match="nope.parquet: dissection units file not found"):
        read_dissection(units=tmp_path / "nope.parquet", concepts=tmp_path / "c.csv")


def test_csv_units_round_trip_to_the_same_block(tmp_path):
    units, concepts = dissection_tables(seed=3)
    units.to_csv(tmp_path / "u.csv", index=False)
    concepts.to_csv(tmp_path / "c.csv", index=False)
    read_units, read_concepts = read_dissection(units=tmp_path / "u.csv",
                                                concepts=tmp_path / "c.csv")
    a = jsonable(dissection_block(read_units, read_concepts, CONFIG)[0])
    assert a == jsonable(dissection_block(units, concepts, CONFIG)[0])


def test_dissection_inputs_come_together(files):
    with pytest.raises(AuditInputError, match=r"missing dissection_config \(--dissection-config\)"):
        analyze_files(files / "examples.parquet", files / "predictions.parquet",
                      dissection=files / "units.parquet", dissection_concepts=files / "concepts.csv")
    with pytest.raises(AuditInputError, match="'iou_threshold' is 2; expected a number in"):
        analyze_files(files / "examples.parquet", files / "predictions.parquet",
                      dissection=files / "units.parquet", dissection_concepts=files / "concepts.csv",
                      dissection_config={"iou_threshold": 2})
