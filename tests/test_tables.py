"""The two table contracts: validation messages, round trips and atomic writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from compaudit.errors import AuditInputError
from compaudit.tables import (
    read_examples,
    read_predictions,
    validate_examples,
    validate_predictions,
    write_examples,
    write_predictions,
)


def _examples(n=4):
    return pd.DataFrame({"example_id": [f"x{i}" for i in range(n)], "label": [0, 1] * (n // 2),
                         "attr.Male": [True, False] * (n // 2)})


def _preds(ex, variants=("dense", "c"), replicas=(0, 1)):
    return pd.DataFrame([
        {"variant": v, "replica": r, "example_id": e, "pred": 1, "p_true": 0.4, "p_pos": 0.6}
        for v in variants for r in replicas for e in ex["example_id"]
    ])


def _problems(excinfo) -> str:
    return "\n".join(excinfo.value.problems)


def test_examples_defaults_and_types():
    ex = validate_examples(_examples())
    assert list(ex.columns[:6]) == ["example_id", "label", "split", "source_id", "shift", "severity"]
    assert ex["severity"].dtype == np.int8 and ex["label"].dtype == np.int64
    assert (ex["shift"] == "clean").all() and (ex["source_id"] == ex["example_id"]).all()


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d.drop(columns="label"), "missing required column(s) 'label'"),
        (lambda d: d.assign(example_id=["a", "a", "b", "c"]), "rows 1, 2) repeat an id"),
        (lambda d: d.assign(label=[0, 1.5, 1, 0]), "column 'label': 1 row(s) (rows 2) are missing or not integers"),
        (lambda d: d.assign(label=[0, -1, 1, 0]), "column 'label': 1 row(s) (rows 2) are below 0"),
        (lambda d: d.assign(**{"attr.Male": [True, None, True, False]}), "column 'attr.Male': 1 row(s) (rows 2) are empty"),
        (lambda d: d.assign(severity=[0, 3, 0, 0]), "column 'severity': 1 row(s) (rows 2) are inconsistent"),
        (lambda d: d.assign(shift="fog", severity=[0, 3, 6, 3]), "column 'severity': 1 row(s) (rows 3) are inconsistent"),
    ],
)
def test_examples_problems_name_column_and_rows(mutate, expected):
    with pytest.raises(AuditInputError) as exc:
        validate_examples(mutate(_examples()), source="ex.csv")
    assert expected in _problems(exc) and "ex.csv" in _problems(exc)


def test_examples_label_range_with_num_classes():
    with pytest.raises(AuditInputError, match="outside 0..0"):
        validate_examples(_examples(), num_classes=1)


def test_every_prediction_problem_is_reported_at_once():
    ex = validate_examples(_examples())
    pr = _preds(ex)
    pr.loc[0, "p_true"] = np.nan
    pr.loc[1, "p_pos"] = 1.5
    pr.loc[2, "pred"] = 7
    with pytest.raises(AuditInputError) as exc:
        validate_predictions(pr, ex, source="p.parquet")
    text = _problems(exc)
    assert "column 'p_true': 1 row(s) (rows 1) are NaN or outside [0, 1]" in text
    assert "column 'p_pos': 1 row(s) (rows 2) are NaN or outside [0, 1]" in text
    assert "column 'pred': 1 row(s) (rows 3) are outside 0..1" in text
    assert len(exc.value.problems) == 3


def test_duplicates_unknown_ids_missing_and_dense():
    ex = validate_examples(_examples())
    dup = pd.concat([_preds(ex), _preds(ex).iloc[:1]])
    with pytest.raises(AuditInputError, match=r"\(variant, replica, example_id\): 2 row\(s\)"):
        validate_predictions(dup, ex)
    unknown = _preds(ex)
    unknown.loc[3, "example_id"] = "nope"
    with pytest.raises(AuditInputError, match="not in the examples table \\(e.g. 'nope'\\)"):
        validate_predictions(unknown, ex)
    missing = _preds(ex).iloc[1:]
    with pytest.raises(AuditInputError, match="variant 'dense' replica 0 has no prediction for 1 example"):
        validate_predictions(missing, ex)
    with pytest.raises(AuditInputError, match="no rows for the dense variant 'dense'; found variants 'a', 'c'"):
        validate_predictions(_preds(ex, variants=("a", "c")), ex)


def test_missing_prediction_columns():
    ex = validate_examples(_examples())
    with pytest.raises(AuditInputError, match="missing required column\\(s\\) 'p_true'"):
        validate_predictions(_preds(ex).drop(columns="p_true"), ex)


def test_binary_task_requires_binary_labels():
    ex = validate_examples(_examples().assign(label=[0, 1, 2, 0]))
    with pytest.raises(AuditInputError, match="binary task"):
        validate_predictions(_preds(ex), ex)


def test_parquet_round_trip_with_top5(tmp_path):
    ex = _examples()
    pr = _preds(ex).drop(columns="p_pos")
    pr["top5"] = [[1, 0, 2, 3, 4]] * len(pr)
    pr["pred"] = 1
    write_examples(ex, tmp_path / "examples.parquet")
    write_predictions(pr, tmp_path / "predictions.parquet", examples=ex)
    schema = pq.read_schema(tmp_path / "predictions.parquet")
    top5 = schema.field("top5").type
    assert pa.types.is_list(top5) and top5.value_type == pa.int32()
    assert str(schema.field("p_true").type) == "float" and str(schema.field("replica").type) == "int32"
    back_ex = read_examples(tmp_path / "examples.parquet")
    back = read_predictions(tmp_path / "predictions.parquet", back_ex, num_classes=5)
    assert back[[f"top5.{j}" for j in range(5)]].iloc[0].tolist() == [1, 0, 2, 3, 4]
    assert len(back) == len(pr)


def test_csv_input_keeps_string_ids(tmp_path):
    ex = pd.DataFrame({"example_id": ["001", "002"], "label": [0, 1]})
    ex.to_csv(tmp_path / "e.csv", index=False)
    back = read_examples(tmp_path / "e.csv")
    assert back["example_id"].tolist() == ["001", "002"]
    pr = pd.DataFrame({"variant": ["dense"] * 2, "replica": [0, 0], "example_id": ["001", "002"],
                       "pred": [0, 1], "p_true": [0.9, 0.8], "top5": ["[0 1]", "[1 0]"]})
    pr.to_csv(tmp_path / "p.csv", index=False)
    got = read_predictions(tmp_path / "p.csv", back)
    assert got["top5.1"].tolist() == [1, 0]


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(AuditInputError, match="examples file not found"):
        read_examples(tmp_path / "nope.parquet")


def test_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "examples.parquet"
    write_examples(_examples(), target)
    before = target.read_bytes()
    with pytest.raises(AuditInputError):
        write_examples(_examples().drop(columns="label"), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["examples.parquet"]


def test_huge_class_index_without_num_classes_is_refused_before_allocating():
    huge = 2**40
    with pytest.raises(AuditInputError) as exc:
        validate_examples(_examples().assign(label=[0, huge, 1, 0]), source="ex.csv")
    assert _problems(exc) == (
        "ex.csv: column 'label': 1 row(s) (rows 2) hold class indices of 1,000,000 or more "
        f"(largest {huge}); without --num-classes the number of classes is inferred as the "
        "largest index + 1, and more than 1,000,000 classes are not inferred; pass "
        "--num-classes (spec: [model].num_classes) if the task has that many classes")
    # Given a class count, the ordinary range check applies.
    with pytest.raises(AuditInputError, match="are outside 0..9"):
        validate_examples(_examples().assign(label=[0, huge, 1, 0]), num_classes=10)
    ex = validate_examples(_examples().assign(label=[0, 1, 2, 0]))
    pr = _preds(ex).drop(columns="p_pos")
    pr.loc[2, "pred"] = huge
    pr["top5"] = [[0, 1]] * len(pr)
    pr.loc[4, "top5"] = [0, huge]
    with pytest.raises(AuditInputError) as exc:
        validate_predictions(pr, ex, source="p.csv")
    text = _problems(exc)
    assert "p.csv: column 'pred': 1 row(s) (rows 3) hold class indices of 1,000,000" in text
    assert "p.csv: column 'top5': 1 row(s) (rows 5) hold class indices of 1,000,000" in text


@pytest.mark.parametrize("column", ["example_id", "attr.Male"])
def test_non_utf8_csv_bytes_are_named_by_file_column_and_row(tmp_path, column):
    rows = [b"example_id,label,attr.Male", b"x0,0,yes", b"x1,1,no", b"x2,0,yes"]
    bad = rows[2].split(b",")
    bad[0 if column == "example_id" else 2] = b"\xff\xfe"
    rows[2] = b",".join(bad)
    path = tmp_path / "e.csv"
    path.write_bytes(b"\n".join(rows) + b"\n")
    with pytest.raises(AuditInputError) as exc:
        read_examples(path)
    assert exc.value.problems == [
        f"{path}: column '{column}': 1 row(s) (rows 2) are not valid UTF-8 text; expected a "
        "UTF-8 encoded CSV (re-save the file as UTF-8)"]
