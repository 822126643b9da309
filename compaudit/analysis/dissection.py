"""Dissection tables compared across variants: the pure-pandas half of the dissection audit.

What compression does to interpretable units (Frankle & Bau), from the per-unit tables
the dissection writes (one row per variant, replica, layer and unit). Per (variant,
replica): the number of interpretable units and of distinct concepts they detect
(overall and by concept category), and against the dense replica it derives from
(replica k of a variant pairs with dense replica k) the share of the dense model's
interpretable units that are still interpretable, the share still detecting the same
concept, and the relative drops of the interpretable-unit and distinct-concept counts
(``1 - variant / dense``, the quantity the gate bounds). Across replicas: mean, standard
deviation (ddof 1), count and a t-interval (:func:`~compaudit.analysis.stats.t_interval`).

NumPy and pandas only, never torch: ``compaudit analyze --dissection`` runs it on tables
written by ``compaudit run``; :mod:`compaudit.dissection` re-exports it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from compaudit.analysis.stats import RATE, t_interval
from compaudit.errors import AuditInputError
from compaudit.rundir import read_json

__all__ = [
    "UNIT_COLUMNS",
    "CONCEPT_COLUMNS",
    "REPLICA_METRICS",
    "compare_dissections",
    "comparison_metrics",
    "dissection_block",
    "read_dissection",
    "read_dissection_config",
    "check_dissection_config",
]

#: Per-unit columns of a dissection (``compaudit.dissection.netdissect.UNIT_COLUMNS``).
UNIT_COLUMNS = ("layer", "unit", "threshold", "concept", "category", "iou", "interpretable")
#: Required columns of the stacked per-unit table.
UNITS_TABLE_COLUMNS = ("variant", "replica", *UNIT_COLUMNS)
#: Required columns of the concept table (one row per concept of the concept dataset).
CONCEPT_COLUMNS = ("concept", "category", "coverage", "iou_bound", "n_images")
#: Numeric columns of the ``replicas`` table, summarised across replicas.
REPLICA_METRICS = ("units", "interpretable_units", "interpretable_share", "distinct_concepts",
                   "retained_interpretable", "retained_concept", "interpretable_drop",
                   "concept_drop")
#: The range of each replica metric (counts, shares, and drops relative to dense), so
#: its interval over replicas stays inside it.
METRIC_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "units": (0.0, None), "interpretable_units": (0.0, None), "distinct_concepts": (0.0, None),
    "interpretable_share": RATE, "retained_interpretable": RATE, "retained_concept": RATE,
    "interpretable_drop": (None, 1.0), "concept_drop": (None, 1.0)}

UNITS_HINT = ("expected the per-unit table of a dissection: the variants/<name>/"
              "dissection.parquet files of a run, concatenated")
CONCEPTS_HINT = "expected the dissection_concepts.csv a run writes next to dissection.parquet"


def _check_units(units: pd.DataFrame, dense: str) -> None:
    missing = [c for c in UNITS_TABLE_COLUMNS if c not in units.columns]
    if missing:
        raise AuditInputError(f"dissection units: missing columns {', '.join(missing)}; build "
                              "the frame with units_frame()")
    if dense not in set(units["variant"]):
        raise AuditInputError(f"dissection units: no rows of the dense variant {dense!r}; "
                              f"variants found: {', '.join(sorted(set(units['variant'])))}")
    if units.duplicated(["variant", "replica", "layer", "unit"]).any():
        raise AuditInputError("dissection units: a (variant, replica, layer, unit) appears "
                              "more than once")


def _replica_row(*, variant: str, replica: int, group: pd.DataFrame,
                 dense_group: pd.DataFrame | None) -> dict[str, Any]:
    """Counts of one (variant, replica) and its retention against the paired dense replica."""
    hit = group[group["interpretable"]]
    row: dict[str, Any] = {
        "variant": variant, "replica": int(replica), "units": len(group),
        "interpretable_units": len(hit),
        "interpretable_share": len(hit) / len(group) if len(group) else math.nan,
        "distinct_concepts": hit["concept"].nunique(),
    }
    retained = concept = unit_drop = concept_drop = math.nan
    if dense_group is not None:
        dense_hit = dense_group[dense_group["interpretable"]]
        now = group.set_index(["layer", "unit"]).reindex(dense_hit.index)
        if len(dense_hit):
            still = now["interpretable"].fillna(False).astype(bool).to_numpy()
            same = still & (now["concept"].to_numpy() == dense_hit["concept"].to_numpy())
            retained, concept = still.mean(), same.mean()
            # Undefined (NaN) when the dense replica has no interpretable unit.
            unit_drop = 1.0 - len(hit) / len(dense_hit)
            concept_drop = 1.0 - hit["concept"].nunique() / dense_hit["concept"].nunique()
    row.update(retained_interpretable=retained, retained_concept=concept,
               interpretable_drop=unit_drop, concept_drop=concept_drop)
    return row


def _summary(replicas: pd.DataFrame, *, level: float) -> pd.DataFrame:
    """Per (variant, metric): mean, std, n and the t-interval over replicas with a value."""
    long = replicas.melt(id_vars=["variant", "replica"], value_vars=list(REPLICA_METRICS),
                         var_name="metric")
    long["value"] = long["value"].astype(float)
    rows = []
    for (variant, metric), group in long.groupby(["variant", "metric"], sort=False):
        values = group["value"].to_numpy()
        mean, std, lo, hi = t_interval(values, level=level, bounds=METRIC_BOUNDS[metric])
        rows.append({"variant": variant, "metric": metric, "mean": float(mean),
                     "std": float(std), "n": int(np.isfinite(values).sum()),
                     "lo": float(lo), "hi": float(hi)})
    return pd.DataFrame(rows, columns=["variant", "metric", "mean", "std", "n", "lo", "hi"])


def compare_dissections(units: pd.DataFrame, *, dense: str = "dense",
                        level: float = 0.95) -> dict[str, pd.DataFrame]:
    """Interpretable-unit counts per variant and replica, and retention against dense.

    Parameters
    ----------
    units
        Per-unit rows: ``variant, replica`` plus :data:`UNIT_COLUMNS` (as built by
        ``compaudit.dissection.compare.units_frame``).
    dense
        Name of the dense variant.
    level
        Confidence level of the t-intervals across replicas.

    Returns
    -------
    dict
        ``replicas``: one row per (variant, replica) with :data:`REPLICA_METRICS`
        (retention and drops are NaN without a dense replica of the same index, or when
        that replica has no interpretable unit); ``categories``: per (variant, replica,
        category) interpretable units and distinct concepts; ``summary``: per variant and
        metric ``mean, std, n, lo, hi`` (``lo, hi``: two-sided t-interval at ``level``
        over the replicas with a value; NaN with fewer than two).
    """
    _check_units(units, dense)
    dense_units = {r: g.set_index(["layer", "unit"])
                   for r, g in units[units["variant"] == dense].groupby("replica")}
    rows, cat_rows = [], []
    for (variant, replica), group in units.groupby(["variant", "replica"], sort=False):
        rows.append(_replica_row(variant=variant, replica=replica, group=group,
                                 dense_group=dense_units.get(replica)))
        hit = group[group["interpretable"]]
        for category, cat_hit in hit.groupby("category"):
            cat_rows.append({"variant": variant, "replica": int(replica), "category": category,
                             "interpretable_units": len(cat_hit),
                             "distinct_concepts": cat_hit["concept"].nunique()})
    replicas = pd.DataFrame(rows)
    categories = pd.DataFrame(cat_rows, columns=["variant", "replica", "category",
                                                 "interpretable_units", "distinct_concepts"])
    return {"replicas": replicas, "categories": categories,
            "summary": _summary(replicas, level=level)}


def _number(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def comparison_metrics(tables: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    """JSON-ready ``{variant: {metric: {mean, std, n, lo, hi}, "by_category": {...}}}``
    (NaN -> None).

    ``by_category`` holds, per category, the mean over replicas of interpretable units and
    distinct concepts (a replica without any in a category counts as 0).
    """
    out: dict[str, Any] = {}
    for row in tables["summary"].itertuples(index=False):
        out.setdefault(row.variant, {})[row.metric] = {
            "mean": _number(row.mean), "std": _number(row.std), "n": int(row.n),
            "lo": _number(row.lo), "hi": _number(row.hi)}
    replicas = tables["replicas"][["variant", "replica"]]
    cats = tables["categories"]
    for category in sorted(set(cats["category"])):
        full = replicas.merge(cats[cats["category"] == category], how="left",
                              on=["variant", "replica"]).fillna(
            {"interpretable_units": 0, "distinct_concepts": 0})
        for variant, g in full.groupby("variant", sort=False):
            entry = out[variant].setdefault("by_category", {})
            entry[category] = {
                "interpretable_units": float(np.mean(g["interpretable_units"])),
                "distinct_concepts": float(np.mean(g["distinct_concepts"]))}
    return out


def dissection_block(units: pd.DataFrame, concepts: pd.DataFrame, plan_info: Mapping[str, Any],
                     *, dense: str = "dense", level: float = 0.95
                     ) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """The ``dissection`` block of ``metrics.json`` and its tables.

    Parameters
    ----------
    units
        Per-unit rows of every (variant, replica) (see :func:`compare_dissections`).
    concepts
        Concept table: :data:`CONCEPT_COLUMNS`.
    plan_info
        Description of the dissection (``iou_threshold`` required; ``layers`` and
        ``quantile`` are shown by the report), stored as the block's ``config``.
    dense, level
        As in :func:`compare_dissections`.

    Returns
    -------
    block
        ``config``; ``n_images``; ``concepts`` (concept, category, coverage, iou_bound);
        ``unreachable``: concepts whose IoU bound is at or below the threshold;
        ``variants``: :func:`comparison_metrics` plus ``by_layer`` (mean interpretable
        units per layer); ``replicas``: one record per (variant, replica) with
        :data:`REPLICA_METRICS`.
    tables
        ``dissection_units`` (every unit of every replica) and ``dissection_replicas``.
    """
    tables = compare_dissections(units, dense=dense, level=level)
    variants = comparison_metrics(tables)
    per_layer = (units.groupby(["variant", "replica", "layer"], sort=False)["interpretable"]
                 .sum().groupby(["variant", "layer"], sort=False).mean())
    for (variant, layer), value in per_layer.items():
        variants[variant].setdefault("by_layer", {})[layer] = {"interpretable_units": float(value)}
    threshold = float(plan_info["iou_threshold"])
    table = concepts[["concept", "category", "coverage", "iou_bound"]]
    block = {
        "config": dict(plan_info),
        "n_images": int(concepts["n_images"].iloc[0]) if len(concepts) else 0,
        "concepts": table.to_dict("records"),
        "unreachable": table.loc[table["iou_bound"] <= threshold, "concept"].tolist(),
        "variants": variants,
        "replicas": tables["replicas"].to_dict("records"),
    }
    return block, {"dissection_units": units, "dissection_replicas": tables["replicas"]}


def _read_frame(path: Path, *, what: str, hint: str) -> pd.DataFrame:
    if not path.is_file():
        raise AuditInputError(f"{path}: {what} file not found; {hint}")
    try:
        if path.suffix.lower() == ".csv":
            # Concept names are labels: "NA" or "None" must stay strings.
            return pd.read_csv(path, keep_default_na=False)
        return pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise AuditInputError(f"{path}: cannot read the {what} table ({err}); expected "
                              "Parquet, or CSV with a header row") from err


def _column_problems(frame: pd.DataFrame, *, path: Path, required: tuple[str, ...],
                     hint: str) -> list[str]:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        return [(f"{path}: missing required column(s) {', '.join(map(repr, missing))}; "
                 f"found {', '.join(map(str, frame.columns)) or 'no columns'}; {hint}")]
    return [] if len(frame) else [f"{path}: the table has no rows; {hint}"]


def _dtype_problems(units: pd.DataFrame, path: Path) -> list[str]:
    checks = {"replica": pd.api.types.is_integer_dtype, "unit": pd.api.types.is_integer_dtype,
              "threshold": pd.api.types.is_numeric_dtype, "iou": pd.api.types.is_numeric_dtype,
              "interpretable": pd.api.types.is_bool_dtype}
    expected = {"replica": "integers", "unit": "integers", "threshold": "numbers",
                "iou": "numbers", "interpretable": "booleans (True/False)"}
    return [f"{path}: column {name!r} has dtype {units[name].dtype}; expected {expected[name]}"
            for name, ok in checks.items() if not ok(units[name].dtype)]


def read_dissection(*, units: str | Path, concepts: str | Path
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read and validate a stacked per-unit table and its concept table.

    Parameters
    ----------
    units
        Parquet or CSV with ``variant, replica`` and :data:`UNIT_COLUMNS`: the
        ``variants/<name>/dissection.parquet`` files of a run, concatenated.
    concepts
        Parquet or CSV with :data:`CONCEPT_COLUMNS` (a run's ``dissection_concepts.csv``).

    Returns
    -------
    units, concepts
        The two tables, ready for :func:`dissection_block`.

    Raises
    ------
    AuditInputError
        One message per problem, naming the file and the column.
    """
    units_path, concepts_path = Path(units), Path(concepts)
    unit_table = _read_frame(units_path, what="dissection units", hint=UNITS_HINT)
    concept_table = _read_frame(concepts_path, what="dissection concepts", hint=CONCEPTS_HINT)
    problems = _column_problems(unit_table, path=units_path, required=UNITS_TABLE_COLUMNS,
                                hint=UNITS_HINT)
    if not problems:
        problems += _dtype_problems(unit_table, units_path)
    problems += _column_problems(concept_table, path=concepts_path, required=CONCEPT_COLUMNS,
                                 hint=CONCEPTS_HINT)
    if problems:
        raise AuditInputError(problems)
    return unit_table, concept_table


def read_dissection_config(path: str | Path) -> dict[str, Any]:
    """Read a dissection description (JSON object with ``iou_threshold``) for the block.

    A run's ``metrics.json`` holds it as ``["dissection"]["config"]``.
    """
    path = Path(path)
    config: dict[str, Any] = read_json(path, what="dissection config", fix='expected a JSON object such as '
                       '{"iou_threshold": 0.04, "quantile": 0.005}')
    check_dissection_config(config, source=str(path))
    return config


def check_dissection_config(config: Any, *, source: str = "dissection config") -> None:
    """Raise :class:`AuditInputError` unless ``config`` is a mapping with a valid threshold."""
    if not isinstance(config, Mapping):
        raise AuditInputError(f"{source}: got {type(config).__name__}; expected a JSON object "
                              "with 'iou_threshold'")
    threshold = config.get("iou_threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (
            0 <= threshold < 1):
        raise AuditInputError(f"{source}: 'iou_threshold' is {threshold!r}; expected a number "
                              "in [0, 1)")
