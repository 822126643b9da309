"""Column-level reading and checks of the two table contracts (see :mod:`compaudit.tables`).

Each helper reads or checks one column and appends one message per problem (file,
column, rows, what was expected) to ``problems``; :mod:`compaudit.tables` raises them
together.
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

from compaudit.errors import AuditInputError

#: Rows listed in a message before "and N more".
_MAX_ROWS_SHOWN = 5
#: Without ``num_classes``, at most this many classes are inferred from the largest index.
MAX_INFERRED_CLASSES = 1_000_000
#: Validated tables hold top-k predictions as int columns ``top5.0 .. top5.{k-1}``.
TOPK_PREFIX = "top5."
_STRING_COLUMNS = ("example_id", "source_id", "variant", "split", "shift", "path")


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
