"""The two Parquet contracts of DESIGN.md: read, validate and write them atomically.
The embeddings file that slice discovery reads is :mod:`compaudit.embeddings_file`
(:func:`read_embeddings` and the rest re-exported here).

``examples.parquet`` has one row per evaluated example; ``predictions.parquet`` one row
per (variant, replica, example). Beyond DESIGN.md, predictions may carry ``p_pred``
(probability of the predicted class, the confidence used for calibration and AURRA).
Both are also accepted as CSV on input. Validation
collects every problem it finds and raises one :class:`~compaudit.errors.AuditInputError`
with one line per problem, each naming the file, the column, the offending rows
(1-based data rows, header not counted) and what was expected.

Lenient defaults on read: an examples file without ``split``, ``source_id``, ``shift``
or ``severity`` is taken as clean test data (``test``, its own id, ``clean``, ``0``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (registers pa.compute)
import pyarrow.parquet as pq

from compaudit._atomic import atomic_path
from compaudit._table_columns import (
    MAX_INFERRED_CLASSES,
    TOPK_PREFIX,
    _class_cap,
    _integer_column,
    _parse_top5,
    _prob_column,
    _read_table,
    _require,
    _rows,
    _split_topk,
    _string_column,
)
from compaudit.embeddings_file import Embeddings, read_embeddings, write_embeddings
from compaudit.errors import AuditInputError

__all__ = [
    "Embeddings",
    "MAX_INFERRED_CLASSES",
    "TOPK_PREFIX",
    "read_embeddings",
    "read_examples",
    "read_predictions",
    "validate_examples",
    "validate_predictions",
    "write_embeddings",
    "write_examples",
    "write_predictions",
    "attribute_columns",
]

EXAMPLE_REQUIRED = ("example_id", "label")
EXAMPLE_DEFAULTED = ("split", "source_id", "shift", "severity")
PREDICTION_REQUIRED = ("variant", "replica", "example_id", "pred", "p_true")


def attribute_columns(examples: pd.DataFrame) -> list[str]:
    """Names of the ``attr.<Name>`` columns, in file order."""
    return [c for c in examples.columns if str(c).startswith("attr.")]


def validate_examples(
    examples: pd.DataFrame, *, source: str | Path = "examples", num_classes: int | None = None
) -> pd.DataFrame:
    """Validate an examples table and return it with normalized dtypes.

    Parameters
    ----------
    examples
        The table, one row per example.
    source
        File name used in error messages.
    num_classes
        If given, labels must lie in ``0 .. num_classes - 1``.

    Raises
    ------
    AuditInputError
        One line per problem found.
    """
    file = Path(source)
    problems: list[str] = []
    examples = examples.reset_index(drop=True)
    _require(examples, EXAMPLE_REQUIRED, file, "examples")
    out = pd.DataFrame(index=pd.RangeIndex(len(examples)))
    ids = examples["example_id"]
    if _string_column(ids, file, "example_id", problems):
        ids = ids.astype(str)
        dup = ids.duplicated(keep=False).to_numpy()
        if dup.any():
            problems.append(
                f"{file}: column 'example_id': {_rows(dup)} repeat an id "
                f"(e.g. {ids[dup].iloc[0]!r}); expected unique ids"
            )
    out["example_id"] = ids.astype(str)
    labels = _integer_column(examples["label"], file, "label", problems)
    if labels is not None and num_classes is None:
        _class_cap(labels, file, "label", problems)
    if labels is not None and num_classes is not None and (labels >= num_classes).any():
        problems.append(
            f"{file}: column 'label': {_rows(labels >= num_classes)} are outside "
            f"0..{num_classes - 1}"
        )
    out["label"] = labels if labels is not None else 0
    out["split"] = examples["split"].astype(str) if "split" in examples else "test"
    out["source_id"] = (
        examples["source_id"].astype(str) if "source_id" in examples else out["example_id"]
    )
    out["shift"] = examples["shift"].astype(str) if "shift" in examples else "clean"
    if "severity" in examples:
        sev = _integer_column(examples["severity"], file, "severity", problems)
        if sev is not None:
            clean = out["shift"].to_numpy() == "clean"
            bad = (sev > 5) | (clean & (sev != 0))
            if bad.any():
                problems.append(
                    f"{file}: column 'severity': {_rows(bad)} are inconsistent; expected 0 "
                    "for shift 'clean', 1..5 for corruptions and 0 for dataset shifts such "
                    "as 'imagenet-a'"
                )
        out["severity"] = sev.astype(np.int8) if sev is not None else np.int8(0)
    else:
        out["severity"] = np.int8(0)
    for col in attribute_columns(examples):
        values = examples[col]
        if values.isna().any():
            problems.append(
                f"{file}: column '{col}': {_rows(values.isna().to_numpy())} are empty; "
                "expected a value (bool or category) for every example"
            )
            continue
        if pd.api.types.is_bool_dtype(values.dtype):
            out[col] = values.astype(bool)
        elif pd.api.types.is_float_dtype(values.dtype):
            problems.append(
                f"{file}: column '{col}' holds floating-point numbers; expected bool or "
                "category labels"
            )
        else:
            out[col] = values.astype(str).astype("category")
    if "path" in examples:
        out["path"] = examples["path"].astype("string")
    if problems:
        raise AuditInputError(problems)
    out["label"] = out["label"].astype(np.int64)
    return out


def read_examples(path: str | Path, *, num_classes: int | None = None) -> pd.DataFrame:
    """Read and validate ``examples.parquet`` (or CSV)."""
    path = Path(path)
    return validate_examples(
        _read_table(path, "examples").to_pandas(), source=path, num_classes=num_classes
    )


def validate_predictions(
    predictions: pd.DataFrame,
    examples: pd.DataFrame,
    *,
    source: str | Path = "predictions",
    dense: str = "dense",
    num_classes: int | None = None,
) -> pd.DataFrame:
    """Validate a predictions table against its (validated) examples table.

    Checks column presence and types, duplicate (variant, replica, example_id) rows,
    predictions for unknown examples, examples without a prediction for some replica,
    class indices out of range, probabilities outside [0, 1] or NaN, and that the
    ``dense`` variant is present. Returns the table with normalized dtypes
    (``variant`` and ``example_id`` categorical).
    """
    file = Path(source)
    _require(predictions, PREDICTION_REQUIRED, file, "predictions")
    problems: list[str] = []
    predictions = predictions.reset_index(drop=True)
    out = pd.DataFrame(index=pd.RangeIndex(len(predictions)))
    for col in ("variant", "example_id"):
        _string_column(predictions[col], file, col, problems)
        out[col] = predictions[col].astype("category")
    replica = _integer_column(predictions["replica"], file, "replica", problems)
    pred = _integer_column(predictions["pred"], file, "pred", problems)
    if problems or replica is None or pred is None:  # None comes with a problem
        raise AuditInputError(problems)
    out["replica"] = replica.astype(np.int32)
    binary = "p_pos" in predictions.columns
    labels = examples["label"].to_numpy()
    limit = num_classes if num_classes is not None else (2 if binary else None)
    if binary and labels.max() > 1:
        problems.append(
            f"{file}: column 'p_pos' is present (binary task) but the examples have labels "
            f"up to {labels.max()}; expected labels 0/1 for a binary task"
        )
    if limit is None:
        _class_cap(pred, file, "pred", problems)
    if limit is not None and (pred >= limit).any():
        problems.append(
            f"{file}: column 'pred': {_rows(pred >= limit)} are outside 0..{limit - 1}"
        )
    out["pred"] = pred
    for col in ("p_true", "p_pos", "p_pred"):
        if col in predictions.columns:
            vals = pd.to_numeric(predictions[col], errors="coerce").to_numpy(
                dtype=np.float32, na_value=np.nan
            )
            _prob_column(vals, file, col, problems)
            out[col] = vals
    top = None
    if "top5" in predictions.columns:
        top = _parse_top5(predictions["top5"], file, problems)
    elif f"{TOPK_PREFIX}0" in predictions.columns:
        top = predictions[[c for c in predictions.columns if c.startswith(TOPK_PREFIX)]]
        top = top.to_numpy(np.int64)
    if top is not None and limit is None:
        _class_cap(top.max(axis=1), file, "top5", problems)
    if top is not None:
        bad_top = np.asarray((top < 0).any(1))
        if limit is not None:
            bad_top |= (top >= limit).any(1)
        if bad_top.any():
            problems.append(
                f"{file}: column 'top5': {_rows(bad_top)} hold class indices outside "
                f"0..{(limit or 0) - 1 if limit else 'the class range'}"
            )
        for j in range(top.shape[1]):
            out[f"{TOPK_PREFIX}{j}"] = top[:, j]
    variants = list(out["variant"].cat.categories)
    if dense not in variants:
        problems.append(
            f"{file}: column 'variant': no rows for the dense variant {dense!r}; found "
            f"variants {', '.join(map(repr, variants))}; pass --dense NAME to choose one"
        )
    problems.extend(_check_coverage(out, examples, file))
    if problems:
        raise AuditInputError(problems)
    return out


def _check_coverage(out: pd.DataFrame, examples: pd.DataFrame, file: Path) -> list[str]:
    """Duplicates, unknown example ids, and examples missing for some (variant, replica)."""
    problems: list[str] = []
    ex_index = pd.Index(examples["example_id"])
    cats = out["example_id"].cat.categories
    cat_to_ex = ex_index.get_indexer(cats)
    ex_pos = cat_to_ex[out["example_id"].cat.codes.to_numpy()]
    unknown = ex_pos < 0
    if unknown.any():
        first = out["example_id"].to_numpy()[np.flatnonzero(unknown)[0]]
        problems.append(
            f"{file}: column 'example_id': {_rows(unknown)} name examples that are not in "
            f"the examples table (e.g. {first!r})"
        )
        return problems
    n = len(ex_index)
    v_codes = out["variant"].cat.codes.to_numpy().astype(np.int64)
    r_vals, r_codes = np.unique(out["replica"].to_numpy(), return_inverse=True)
    n_v, n_r = len(out["variant"].cat.categories), len(r_vals)
    key = (v_codes * n_r + r_codes) * n + ex_pos
    counts = np.bincount(key, minlength=n_v * n_r * n)
    dup = counts[key] > 1
    if dup.any():
        problems.append(
            f"{file}: columns (variant, replica, example_id): {_rows(dup)} repeat a "
            "combination; expected one prediction per example, replica and variant"
        )
    per_vr = counts.reshape(n_v * n_r, n)
    present = per_vr.any(axis=1)  # (variant, replica) pairs that exist at all
    for vr in np.flatnonzero(present & (per_vr == 0).any(axis=1)):
        lacking = np.flatnonzero(per_vr[vr] == 0)
        variant = out["variant"].cat.categories[vr // n_r]
        shown = ", ".join(repr(ex_index[i]) for i in lacking[:3])
        problems.append(
            f"{file}: variant {variant!r} replica {r_vals[vr % n_r]} has no prediction for "
            f"{len(lacking)} example(s) (e.g. {shown}); expected every example in every "
            "replica"
        )
    return problems


def read_predictions(
    path: str | Path,
    examples: pd.DataFrame,
    *,
    dense: str = "dense",
    num_classes: int | None = None,
) -> pd.DataFrame:
    """Read ``predictions.parquet`` (or CSV) and validate it against ``examples``."""
    path = Path(path)
    table = _read_table(path, "predictions")
    # Dictionary-encode the repeated strings before pandas sees them: an ImageNet-scale
    # population has ~10M rows but only 50k distinct ids.
    cols = {}
    for name in table.column_names:
        col = table[name]
        if name in ("variant", "example_id") and pa.types.is_string(col.type):
            col = col.dictionary_encode()
        if name == "top5" and (
            pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type)
        ):
            cols.update(_split_topk(col, path))
            continue
        cols[name] = col
    frame = pa.table(cols).to_pandas()
    return validate_predictions(
        frame, examples, source=path, dense=dense, num_classes=num_classes
    )


def write_examples(examples: pd.DataFrame, path: str | Path) -> Path:
    """Validate ``examples`` and write it as Parquet atomically. Returns the path."""
    clean = validate_examples(examples, source=path)
    table = pa.Table.from_pandas(clean, preserve_index=False)
    return _write_parquet(table, Path(path))


def write_predictions(
    predictions: pd.DataFrame, path: str | Path, *, examples: pd.DataFrame, dense: str = "dense"
) -> Path:
    """Validate ``predictions`` against ``examples`` and write Parquet atomically."""
    clean = validate_predictions(predictions, examples, source=path, dense=dense)
    arrays = {
        "variant": pa.array(clean["variant"].astype(str)),
        "replica": pa.array(clean["replica"].to_numpy(np.int32)),
        "example_id": pa.array(clean["example_id"].astype(str)),
        "pred": pa.array(clean["pred"].to_numpy(np.int64)),
        "p_true": pa.array(clean["p_true"].to_numpy(np.float32)),
    }
    for col in ("p_pos", "p_pred"):
        if col in clean:
            arrays[col] = pa.array(clean[col].to_numpy(np.float32))
    topk = [c for c in clean.columns if c.startswith(TOPK_PREFIX)]
    if topk:
        top = clean[topk].to_numpy(np.int32)
        arrays["top5"] = pa.FixedSizeListArray.from_arrays(top.ravel(), top.shape[1]).cast(
            pa.list_(pa.int32())
        )
    return _write_parquet(pa.table(arrays), Path(path))


def _write_parquet(table: pa.Table, path: Path) -> Path:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path
