"""The ``metrics.json`` record (:class:`~compaudit.schema.Metrics`) from the analysis'
tables: each table's rows typed as the schema's records, the blocks summarised."""

from __future__ import annotations

import platform
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

import compaudit
from compaudit.analysis.accuracy import accuracy_summary
from compaudit.analysis.classes import class_summary
from compaudit.analysis.options import AnalysisOptions
from compaudit.analysis.pie import pie_summary
from compaudit.analysis.population import Population
from compaudit.analysis.screen import ScreenResult, validate_screen
from compaudit.rundir import METRICS_SCHEMA, jsonable
from compaudit.schema import (
    DeltaRow,
    DisparityRow,
    Metrics,
    OverindexMHRow,
    OverindexRow,
    Robustness,
    ScreenGroupRow,
    ShiftDeltaRow,
    SubgroupMethod,
    Task,
)

__all__ = ["metrics_record"]


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return jsonable(table.to_dict(orient="records")) if not table.empty else []


def _rows(table: pd.DataFrame, row: type[Any], where: str) -> tuple[Any, ...]:
    """The table's rows as records of type ``row``."""
    return tuple(row.from_dict(r, where=f"{where}[{i}]")
                 for i, r in enumerate(_records(table)))


def metrics_record(*, full: Population, pop: Population, tables: dict[str, pd.DataFrame],
                   screened: ScreenResult, sub: Any, robust: dict[str, Any],
                   attributes: list[str], options: AnalysisOptions,
                   inputs: dict[str, Any] | None) -> Metrics:
    """The ``metrics.json`` record from the analysis tables."""
    acc, summary = tables["accuracy"], tables["subgroup_summary"]
    return Metrics(
        schema=METRICS_SCHEMA,
        created_by=f"compaudit {compaudit.__version__}",
        environment={"python": platform.python_version(), "numpy": np.__version__,
                     "pandas": pd.__version__},
        inputs=inputs or {},
        options=jsonable(asdict(options)),
        task=Task(num_classes=pop.num_classes, binary=pop.is_binary,
                  n_examples=len(pop.labels), attributes=tuple(attributes),
                  shifts=tuple(sorted(full.examples["shift"].unique().tolist()))),
        variants={name: {"replicas": v.replicas.tolist()} for name, v in full.variants.items()},
        accuracy=jsonable(accuracy_summary(acc[(acc["shift"] == options.shift)])),
        accuracy_by_shift=tuple(_records(acc)),
        classes=jsonable(class_summary(tables["classes"])),
        pie=jsonable(pie_summary(tables["pie"])),
        overindex=_rows(tables["overindex"], OverindexRow, "overindex"),
        # Per-label tables only for binary tasks: many-class ones are labels x cells long.
        overindex_within_label=(_rows(tables["overindex_within_label"], OverindexRow,
                                      "overindex_within_label") if pop.is_binary else ()),
        overindex_mh=_rows(tables["overindex_mh"], OverindexMHRow, "overindex_mh"),
        screen_summary=jsonable(screened.summary),
        screen=jsonable(validate_screen(screened, tables["pie"], tables["overindex_mh"])),
        screen_groups=_rows(tables["screen_groups"], ScreenGroupRow, "screen_groups"),
        subgroup_cells={
            "attributes": len(attributes), "max_order": sub.max_order,
            "min_cell_size": options.min_cell_size, "max_cells": options.max_cells,
            "analysed": int(summary["subgroup"].nunique()) if not summary.empty else 0,
            "skipped": len(sub.skipped),
        },
        subgroups=tuple(_records(summary)),
        subgroup_method=SubgroupMethod.from_dict(jsonable(sub.method), where="subgroup_method"),
        deltas=_rows(sub.deltas, DeltaRow, "deltas"),
        disparity=_rows(sub.disparity, DisparityRow, "disparity"),
        robustness=Robustness(
            reference=robust["reference"],
            corruption_errors=tuple(_records(robust["corruption_errors"])),
            shift_metrics=tuple(_records(_shift_summary(robust["shift_metrics"]))),
            shift_deltas=_rows(robust["shift_deltas"], ShiftDeltaRow, "shift_deltas"),
        ),
    )


def _shift_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over replicas of top-1, calibration error and AURRA per (variant, shift)."""
    cols = ["top1", "rms_calibration_error", "aurra"]
    return table.groupby(["variant", "shift"], sort=False)[cols].mean().reset_index()
