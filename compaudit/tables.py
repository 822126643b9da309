"""The two Parquet contracts of DESIGN.md: read, validate and write them atomically.

``examples.parquet`` has one row per evaluated example; ``predictions.parquet`` one row
per (variant, replica, example). Beyond DESIGN.md, predictions may carry ``p_pred``
(probability of the predicted class, the confidence used for calibration and AURRA). Both are also accepted as CSV on input. Validation
collects every problem it finds and raises one :class:`~compaudit.errors.AuditInputError`
with one line per problem, each naming the file, the column, the offending rows
(1-based data rows, header not counted) and what was expected.

Lenient defaults on read: an examples file without ``split``, ``source_id``, ``shift``
or ``severity`` is taken as clean test data (``test``, its own id, ``clean``, ``0``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (registers pa.compute)
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from compaudit._atomic import atomic_path
from compaudit.errors import AuditInputError

__all__ = [
    "read_examples",
    "read_predictions",
    "validate_examples",
    "validate_predictions",
    "write_examples",
    "write_predictions",
    "attribute_columns",
]

EXAMPLE_REQUIRED = ("example_id", "label")
EXAMPLE_DEFAULTED = ("split", "source_id", "shift", "severity")
PREDICTION_REQUIRED = ("variant", "replica", "example_id", "pred", "p_true")
_MAX_ROWS_SHOWN = 5
#: Without ``num_classes``, at most this many classes are inferred from the largest index.
MAX_INFERRED_CLASSES = 1_000_000
_STRING_COLUMNS = ("example_id", "source_id", "variant", "split", "shift", "path")
#: Validated tables hold top-k predictions as int columns ``top5.0 .. top5.{k-1}``.
TOPK_PREFIX = "top5."


def attribute_columns(examples: pd.DataFrame) -> list[str]:
    """Names of the ``attr.<Name>`` columns, in file order."""
    return [c for c in examples.columns if str(c).startswith("attr.")]


def _rows(mask: np.ndarray) -> str:
    """Format the first few offending rows of a boolean mask as 1-based data rows."""
    idx = np.flatnonzero(mask)
    shown = ", ".join(str(i + 1) for i in idx[:_MAX_ROWS_SHOWN])
    more = f" and {len(idx) - _MAX_ROWS_SHOWN} more" if len(idx) > _MAX_ROWS_SHOWN else ""
    return f"{len(idx)} row(s) (rows {shown}{more})"


def _require(frame: pd.DataFrame, required: tuple[str, ...], file: Path, what: str) -> None:
    """Stop at once on missing required columns or an empty table."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise AuditInputError(
            f"{file}: missing required column(s) {', '.join(map(repr, missing))}; "
            f"found {', '.join(map(str, frame.columns)) or 'no columns'}"
        )
    if len(frame) == 0:
        raise AuditInputError(f"{file}: the {what} table has no rows")


def _read_table(path: Path, what: str) -> pa.Table:
    if not path.is_file():
        raise AuditInputError(
            f"{path}: {what} file not found; expected a .parquet or .csv file at this path"
        )
    try:
        if path.suffix.lower() == ".csv":
            # Strings stay strings: ids like "00001" must not become integers. They are
            # read as bytes and decoded here, so bad UTF-8 is named by column and row.
            opts = pacsv.ConvertOptions(
                column_types={c: pa.binary() for c in _STRING_COLUMNS},
                strings_can_be_null=True,
            )
            return _decode_text(pacsv.read_csv(path, convert_options=opts), path)
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise AuditInputError(
            f"{path}: cannot read {what} table ({err}); expected Parquet, or CSV with a "
            "header row"
        ) from err


def _decode_text(table: pa.Table, path: Path) -> pa.Table:
    """Turn the byte columns of a CSV into strings; name every column with bad UTF-8."""
    problems = []
    for i, name in enumerate(table.column_names):
        col = table[name]
        if not pa.types.is_binary(col.type):
            continue
        try:
            table = table.set_column(i, name, col.cast(pa.string()))
        except pa.ArrowInvalid:
            bad = np.array([v is not None and not _is_utf8(v) for v in col.to_pylist()])
            problems.append(
                f"{path}: column '{name}': {_rows(bad)} are not valid UTF-8 text; expected "
                "a UTF-8 encoded CSV (re-save the file as UTF-8)"
            )
    if problems:
        raise AuditInputError(problems)
    return table


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _class_cap(values: np.ndarray, file: Path, column: str, problems: list[str]) -> bool:
    """Without a class count, refuse class indices that would infer too many classes."""
    too_big = values >= MAX_INFERRED_CLASSES
    if not too_big.any():
        return True
    problems.append(
        f"{file}: column '{column}': {_rows(too_big)} hold class indices of "
        f"{MAX_INFERRED_CLASSES:,} or more (largest {int(values.max())}); without "
        "--num-classes the number of classes is inferred as the largest index + 1, and "
        f"more than {MAX_INFERRED_CLASSES:,} classes are not inferred; pass --num-classes "
        "(spec: [model].num_classes) if the task has that many classes"
    )
    return False


def _integer_column(
    series: pd.Series, file: Path, column: str, problems: list[str], *, low: int | None = 0
) -> np.ndarray | None:
    """Check that a column holds integers (>= low); return them as int64 or None."""
    if pd.api.types.is_bool_dtype(series.dtype):
        problems.append(f"{file}: column '{column}' is boolean; expected integers")
        return None
    numeric = pd.to_numeric(series, errors="coerce")
    values = numeric.to_numpy(dtype="float64", na_value=np.nan)
    bad = np.isnan(values) | (values != np.round(values))
    if bad.any():
        problems.append(
            f"{file}: column '{column}': {_rows(bad)} are missing or not integers; "
            "expected whole numbers"
        )
        return None
    ints = values.astype(np.int64)
    if low is not None and (ints < low).any():
        problems.append(f"{file}: column '{column}': {_rows(ints < low)} are below {low}")
        return None
    return ints


def _string_column(series: pd.Series, file: Path, column: str, problems: list[str]) -> bool:
    if series.isna().any():
        problems.append(
            f"{file}: column '{column}': {_rows(series.isna().to_numpy())} are empty; "
            "expected a non-empty string in every row"
        )
        return False
    return True


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


def _parse_top5(values: pd.Series, file: Path, problems: list[str]) -> np.ndarray | None:
    """Return top-k predictions as an (n, k) int64 array from list or CSV-string cells."""
    first = values.iloc[0]
    if isinstance(first, str):
        lists = [re.findall(r"-?\d+", v) if isinstance(v, str) else [] for v in values]
    else:
        lists = [list(v) if v is not None else [] for v in values]
    lengths = np.fromiter((len(v) for v in lists), dtype=np.int64, count=len(lists))
    k = int(lengths.max()) if len(lengths) else 0
    bad = lengths != k
    if k == 0 or bad.any():
        problems.append(
            f"{file}: column 'top5': {_rows(bad if k else np.ones(len(lists), bool))} "
            f"do not hold {k or 5} class indices; expected the same number in every row"
        )
        return None
    return np.asarray(lists, dtype=np.int64)


def _prob_column(values: np.ndarray, file: Path, column: str, problems: list[str]) -> None:
    bad = ~((values >= 0.0) & (values <= 1.0))  # also catches NaN
    if bad.any():
        problems.append(
            f"{file}: column '{column}': {_rows(bad)} are NaN or outside [0, 1]; "
            "expected probabilities"
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
    if problems:
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
        bad_top = (top < 0).any(1) | ((top >= limit).any(1) if limit is not None else False)
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


def _split_topk(col: pa.ChunkedArray, path: Path) -> dict[str, np.ndarray]:
    """Turn a list<int> column into k int columns without a Python loop over rows."""
    col = col.combine_chunks()
    if col.null_count:
        raise AuditInputError(f"{path}: column 'top5' has empty cells; expected a list in every row")
    lengths = pa.compute.list_value_length(col).to_numpy()
    k = int(lengths[0])
    if (lengths != k).any() or k == 0:
        raise AuditInputError(
            f"{path}: column 'top5': {_rows(lengths != k)} do not hold {k} class indices; "
            "expected the same number in every row"
        )
    flat = pa.compute.list_flatten(col).to_numpy().astype(np.int64).reshape(-1, k)
    return {f"{TOPK_PREFIX}{j}": flat[:, j] for j in range(k)}


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
