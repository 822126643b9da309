"""The embeddings file that slice discovery reads (``compaudit analyze --embeddings``,
a run's ``embeddings.npz``): a feature vector per example, as an ``.npz`` of arrays
``example_id`` and ``features`` (read without pickles) or a Parquet/CSV table with an
``example_id`` column and one numeric column per dimension. Reading names every problem
with the file and the column; writing is atomic.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from compaudit._atomic import atomic_path
from compaudit._table_columns import _read_table, _require, _rows, _string_column
from compaudit.errors import AuditInputError

__all__ = ["Embeddings", "read_embeddings", "write_embeddings"]

_EMBEDDINGS_HELP = ("expected an .npz file with arrays 'example_id' (N strings) and "
                    "'features' (N x D numbers), or a Parquet/CSV table with an 'example_id' "
                    "column and one numeric column per dimension")


@dataclass(frozen=True)
class Embeddings:
    """A feature vector per example: ``example_ids`` ``(N,)`` strings, ``features``
    ``(N, D)`` float32, read from ``source``."""

    example_ids: np.ndarray
    features: np.ndarray
    source: str = "embeddings"

    def rows_for(self, ids: np.ndarray) -> np.ndarray:
        """The features of ``ids``, in their order; every id must have a row."""
        pos = pd.Index(self.example_ids).get_indexer(pd.Index(ids))
        missing = pos < 0
        if missing.any():
            shown = ", ".join(repr(str(i)) for i in np.asarray(ids)[missing][:3])
            raise AuditInputError(
                f"{self.source}: column 'example_id': no row for {int(missing.sum())} of the "
                f"{len(ids)} analysed examples (e.g. {shown}); expected one row per example "
                "of the examples table's analysed shift")
        return self.features[pos]


def read_embeddings(path: str | Path) -> Embeddings:
    """Read and validate an embeddings file: ``.npz`` (arrays ``example_id`` and
    ``features``, read without pickles), or Parquet/CSV (``example_id`` and numeric
    columns). Every problem is named with the file and the column."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        ids, features = _npz_embeddings(path)
    else:
        frame = _read_table(path, "embeddings").to_pandas()
        _require(frame, ("example_id",), path, "embeddings")
        problems: list[str] = []
        _string_column(frame["example_id"], path, "example_id", problems)
        columns = [c for c in frame.columns if c != "example_id"]
        text = [c for c in columns if not (pd.api.types.is_numeric_dtype(frame[c].dtype)
                                           and not pd.api.types.is_bool_dtype(frame[c].dtype))]
        problems += [f"{path}: column {c!r} is not numeric; expected numbers (every column "
                     "but example_id is a dimension)" for c in text]
        if not columns:
            problems.append(f"{path}: no feature column; {_EMBEDDINGS_HELP}")
        if problems:
            raise AuditInputError(problems)
        ids = frame["example_id"].astype(str).to_numpy()
        features = frame[columns].to_numpy(np.float64)
    return _checked_embeddings(ids, features, path)


def _npz_embeddings(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise AuditInputError(f"{path}: embeddings file not found; {_EMBEDDINGS_HELP}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("example_id", "features") if k not in npz.files]
            if missing:
                raise AuditInputError(f"{path}: no array(s) {', '.join(map(repr, missing))} "
                                      f"(found {', '.join(npz.files) or 'none'}); "
                                      f"{_EMBEDDINGS_HELP}")
            ids, features = npz["example_id"], npz["features"]
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        # ValueError: an object array, which only a pickle could hold; never unpickled.
        raise AuditInputError(f"{path}: cannot read the embeddings ({err}); "
                              f"{_EMBEDDINGS_HELP}") from err
    problems = []
    if ids.ndim != 1 or ids.dtype.kind not in "US":
        problems.append(f"{path}: array 'example_id' is {ids.dtype} with shape {ids.shape}; "
                        "expected a 1-D array of strings")
    if features.ndim != 2 or features.dtype.kind not in "iuf":
        problems.append(f"{path}: array 'features' is {features.dtype} with shape "
                        f"{features.shape}; expected a 2-D array of numbers (examples x "
                        "dimensions)")
    if problems:
        raise AuditInputError(problems)
    return ids.astype(str), features


def _checked_embeddings(ids: np.ndarray, features: np.ndarray, path: Path) -> Embeddings:
    """Shapes, unique ids and finite numbers; one error listing every problem."""
    problems = []
    if len(ids) == 0:
        raise AuditInputError(f"{path}: the embeddings table has no rows")
    if features.shape[0] != len(ids):
        raise AuditInputError(f"{path}: {len(ids)} example ids but {features.shape[0]} rows "
                              "of 'features'; expected one row per example")
    if features.shape[1] == 0:
        problems.append(f"{path}: 'features' has no dimension; {_EMBEDDINGS_HELP}")
    empty = ids == ""
    if empty.any():
        problems.append(f"{path}: column 'example_id': {_rows(empty)} are empty; expected a "
                        "non-empty string in every row")
    dup = pd.Index(ids).duplicated(keep=False)
    if dup.any():
        problems.append(f"{path}: column 'example_id': {_rows(dup)} repeat an id (e.g. "
                        f"{ids[dup][0]!r}); expected unique ids")
    bad = ~np.isfinite(features).all(axis=1) if features.size else np.zeros(len(ids), bool)
    if bad.any():
        problems.append(f"{path}: 'features': {_rows(bad)} hold missing, NaN or infinite "
                        "values; expected finite numbers")
    if problems:
        raise AuditInputError(problems)
    return Embeddings(example_ids=ids, features=features.astype(np.float32, copy=False),
                      source=str(path))


def write_embeddings(ids: np.ndarray, features: np.ndarray, path: str | Path) -> Path:
    """Write ``example_id`` and ``features`` (float32) as an ``.npz`` file atomically."""
    path = Path(path)
    emb = _checked_embeddings(np.asarray(ids).astype(str), np.asarray(features), path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, example_id=emb.example_ids, features=emb.features)
    return path
