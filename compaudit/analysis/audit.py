"""Run every analysis on a population and collect its tables and ``metrics.json``."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from compaudit._atomic import atomic_path, atomic_write_text
from compaudit.analysis._metrics_record import metrics_record
from compaudit.analysis.accuracy import accuracy_table
from compaudit.analysis.classes import class_table
from compaudit.analysis.dissection import check_dissection_config, dissection_block, read_dissection
from compaudit.analysis.options import AnalysisOptions
from compaudit.analysis.pie import overindex_table, overindex_within_label, pie_table
from compaudit.analysis.population import Population, build_population
from compaudit.analysis.robustness import (
    ALEXNET_ERRORS,
    accuracy_by_severity,
    corruption_errors,
    shifted_population_metrics,
    subgroups_under_shift,
)
from compaudit.analysis.screen import ScreenResult, dense_p_true, screen_population
from compaudit.analysis.slice_audit import slice_analysis
from compaudit.analysis.subgroups import subgroup_analysis, subgroup_cells
from compaudit.errors import AuditInputError
from compaudit.rundir import METRICS_SCHEMA, RunFolder, jsonable, retire_metrics
from compaudit.schema import Dissection, Metrics, dumps_metrics
from compaudit.tables import Embeddings, read_embeddings, read_examples, read_predictions

__all__ = ["AnalysisOptions", "AnalysisResult", "analyze", "analyze_files", "dumps_metrics",
           "METRICS_SCHEMA"]

TABLE_NAMES = (
    "accuracy", "classes", "pie", "overindex", "overindex_within_label", "overindex_mh",
    "screen_scores", "screen_groups", "subgroups", "subgroup_summary", "deltas",
    "disparity", "corruption_errors", "shift_metrics", "shift_deltas", "accuracy_by_severity",
    "skipped_subgroups",
)
#: Tables written only by some analyses (slices: when given embeddings).
OPTIONAL_TABLES = ("slices", "slice_members")


@dataclass
class AnalysisResult:
    """Every table of an analysis and the ``metrics.json`` record built from them."""

    metrics: Metrics
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def add_dissection(self, block: Mapping[str, Any], tables: dict[str, pd.DataFrame]) -> None:
        """Add the ``dissection`` block and its tables
        (:func:`compaudit.analysis.dissection.dissection_block`)."""
        record = Dissection.from_dict(jsonable(block), where="dissection")
        self.metrics = replace(self.metrics, dissection=record)
        self.tables.update(tables)

    def write(self, out_dir: str | Path) -> Path:
        """Write ``tables/*.csv``, then ``metrics.json`` last, each atomically.

        An older ``metrics.json`` of compaudit's is removed first, so a failure midway
        leaves a folder that ``report`` and ``gate`` refuse, never new tables beside
        old metrics; so are that analysis's optional tables this one does not write.
        """
        folder = RunFolder(Path(out_dir))
        folder.create()
        text = dumps_metrics(self.metrics)  # fails before anything is written
        if retire_metrics(folder.metrics):
            # The older analysis's optional tables, when this one has none: a reader
            # must not take them for this run's.
            for name in OPTIONAL_TABLES:
                if name not in self.tables:
                    folder.table(name).unlink(missing_ok=True)
        for name, table in self.tables.items():
            with atomic_path(folder.table(name)) as tmp:
                table.to_csv(tmp, index=False)
        atomic_write_text(folder.metrics, text)
        return folder.metrics


def _check_attributes(pop: Population, options: AnalysisOptions) -> list[str]:
    available = pop.attributes
    wanted = list(options.protected) if options.protected is not None else available
    unknown = [a for a in wanted if a not in available]
    if unknown:
        raise AuditInputError(
            f"examples: protected attribute(s) {', '.join(map(repr, unknown))} not found; "
            f"the examples table has {', '.join(map(repr, available)) or 'no attr.* columns'}"
        )
    if pop.is_binary and options.positive_label not in (0, 1):
        raise AuditInputError(
            f"option --positive-label: got {options.positive_label}; a binary task has "
            "labels 0 and 1"
        )
    return wanted


def analyze(
    examples: pd.DataFrame,
    predictions: pd.DataFrame,
    options: AnalysisOptions | None = None,
    *,
    progress: bool = False,
    inputs: dict[str, Any] | None = None,
    embeddings: Embeddings | None = None,
) -> AnalysisResult:
    """Analyze validated examples and predictions tables.

    Parameters
    ----------
    examples, predictions
        Tables as returned by :func:`compaudit.read_examples` and
        :func:`compaudit.read_predictions`.
    options
        See :class:`AnalysisOptions`.
    progress
        Show a progress bar over the analysis steps.
    inputs
        Provenance of the inputs, recorded in ``metrics.json``.
    embeddings
        A feature vector per example of the analysed shift
        (:func:`compaudit.tables.read_embeddings`): adds slice discovery with
        ``options.slices`` (the ``slices`` block and tables).
    """
    options = options or AnalysisOptions()
    steps = tqdm(total=7, desc="analyze", disable=not progress, leave=False)
    full = build_population(
        examples, predictions, dense=options.dense, num_classes=options.num_classes
    )
    attributes = _check_attributes(full, options)
    acc = _accuracy_by_shift(full)
    steps.update()
    pop = _analysed_shift(full, options.shift)
    classes = class_table(pop, alpha=options.alpha)
    steps.update()
    pie, screened = _pie_analyses(pop, predictions, attributes, options)
    steps.update()
    sub = subgroup_analysis(pop, attributes, positive_label=options.positive_label,
                            n_boot=options.bootstrap, seed=options.seed, level=options.level,
                            **_bounds(options))
    _detectable_warning(sub.method, sub.deltas)
    summary = sub.summary
    if not pop.is_binary and not pie["pie"].empty:
        summary = pd.concat([summary, _pie_rates(pop, pie["pie"], attributes, options)],
                            ignore_index=True)
    steps.update()
    robust = _robustness(full, acc, attributes, options)
    steps.update()
    slices, slice_tables = (
        slice_analysis(pop, embeddings, attributes, settings=options.slices,
                       level=options.level, seed=options.seed, about=options.about,
                       bootstrap=options.bootstrap)
        if embeddings is not None else (None, {}))
    steps.update()
    tables = {
        "accuracy": acc, "classes": classes, **pie,
        "subgroups": sub.per_replica, "subgroup_summary": summary, "deltas": sub.deltas,
        "disparity": sub.disparity,
        "corruption_errors": robust["corruption_errors"],
        "shift_metrics": robust["shift_metrics"],
        "shift_deltas": robust["shift_deltas"],
        "accuracy_by_severity": accuracy_by_severity(acc, level=options.level),
        "skipped_subgroups": sub.skipped,
        **slice_tables,
    }
    metrics = metrics_record(full=full, pop=pop, tables=tables, screened=screened, sub=sub,
                             robust=robust, attributes=attributes, options=options,
                             inputs=inputs)
    metrics = replace(metrics, slices=slices)
    steps.update()
    steps.close()
    return AnalysisResult(metrics=metrics, tables=tables)


def _detectable_warning(method: dict[str, Any], deltas: pd.DataFrame) -> None:
    """Complete a few-pairs warning with the smallest change it leaves detectable."""
    if not method.get("warning") or deltas.empty or "mde" not in deltas:
        return
    overall = deltas[(deltas["subgroup"] == "overall")
                     & deltas["metric"].isin(["fpr", "fnr", "accuracy"])]
    sizes = overall["mde"].to_numpy(float)
    sizes = sizes[np.isfinite(sizes)]
    found = (f"the smallest change of an overall error rate it can detect is "
             f"{100 * sizes.min():.1f} pp (80% power, one check at the analysis level; "
             "a gate over many checks needs more)" if sizes.size else
             "no change of an overall error rate within its range can be detected")
    method["warning"] += f"; {found}"


def _analysed_shift(full: Population, shift: str) -> Population:
    """The examples of the analysed shift (``clean`` by default)."""
    in_shift = full.examples["shift"].to_numpy() == shift
    if not in_shift.any():
        shifts = sorted(full.examples["shift"].unique())
        raise AuditInputError(
            f"examples: no rows with shift {shift!r}; found {', '.join(shifts)}"
        )
    return full.subset(in_shift) if not in_shift.all() else full


def _pie_analyses(pop: Population, predictions: pd.DataFrame, attributes: list[str],
                  options: AnalysisOptions) -> tuple[dict[str, pd.DataFrame], ScreenResult]:
    """PIEs, their over-index (Table 1 form and within label) and the risk screen
    (its tables, and the screen itself)."""
    pies = pie_table(pop)
    within, overindex_mh = overindex_within_label(pop, pies, attributes, level=options.level)
    screened = screen_population(pop, dense_p_true(pop, predictions), attributes,
                                 top=options.screen_top, level=options.level)
    return {"pie": pies, "overindex": overindex_table(pop, pies, attributes),
            "overindex_within_label": within, "overindex_mh": overindex_mh,
            "screen_scores": screened.scores, "screen_groups": screened.groups}, screened


def _robustness(full: Population, acc: pd.DataFrame, attributes: list[str],
                options: AnalysisOptions) -> dict[str, Any]:
    """Corruption errors, per-shift calibration, and subgroup deltas under each shift."""
    shifts = list(pd.unique(full.examples["shift"]))
    alexnet = full.num_classes == 1000 and any(s in ALEXNET_ERRORS for s in shifts)
    has_shift = any(s != "clean" for s in shifts)
    return {
        "reference": "alexnet" if alexnet else "dense",
        "corruption_errors": (corruption_errors(acc, dense=options.dense, alexnet=alexnet)
                              if has_shift else pd.DataFrame()),
        "shift_metrics": pd.concat([shifted_population_metrics(full, s) for s in shifts],
                                   ignore_index=True),
        "shift_deltas": subgroups_under_shift(
            full, attributes, positive_label=options.positive_label, n_boot=options.bootstrap,
            seed=options.seed, level=options.level, **_bounds(options))
        if has_shift else pd.DataFrame(),
    }


def _accuracy_by_shift(pop: Population) -> pd.DataFrame:
    frames = []
    keys = pop.examples[["shift", "severity"]]
    for (shift, severity), idx in keys.groupby(["shift", "severity"], sort=True).indices.items():
        mask = np.zeros(len(pop.labels), bool)
        mask[idx] = True
        table = accuracy_table(pop.subset(mask) if not mask.all() else pop)
        table.insert(2, "shift", shift)
        table.insert(3, "severity", int(severity))
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def _bounds(options: AnalysisOptions) -> dict[str, Any]:
    """The options that bound the subgroups and choose the estimand, as keywords of the
    subgroup analyses."""
    return {"max_order": options.max_intersection_order,
            "min_cell_size": options.min_cell_size, "max_cells": options.max_cells,
            "about": options.about}


def _pie_rates(pop: Population, pies: pd.DataFrame, attributes: list[str],
               options: AnalysisOptions) -> pd.DataFrame:
    """PIE rate per (compressed variant, subgroup) for many-class tasks."""
    bounds = _bounds(options)
    cells = subgroup_cells(pop.examples, attributes, max_order=bounds["max_order"],
                           min_size=bounds["min_cell_size"], max_cells=bounds["max_cells"])
    counts = np.bincount(cells.codes, minlength=cells.base.shape[0])
    n_sub = cells.sum_fine(counts)
    rows = []
    for name, grp in pies.groupby("variant", sort=False):
        pie_fine = np.bincount(cells.codes, weights=grp["is_pie"].to_numpy(float),
                               minlength=len(counts))
        rate = cells.sum_fine(pie_fine) / n_sub
        for sub, grouping, n, r in zip(cells.names, cells.groupings, n_sub, rate):
            rows.append({"variant": name, "subgroup": sub, "grouping": grouping,
                         "metric": "pie_rate", "n": int(n), "replicas": None,
                         "mean": float(r), "std": None, "lo": None, "hi": None})
    return pd.DataFrame(rows)


def _file_info(path: Path, rows: int) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "sha256": digest.hexdigest(), "rows": rows}


def _dissection_inputs(
    units: str | Path | None, concepts: str | Path | None, config: Mapping[str, Any] | None,
) -> tuple[str | Path, str | Path, Mapping[str, Any]] | None:
    """Check that the dissection inputs come together and the config is usable; the
    three of them, or ``None`` when none is given."""
    given = {"dissection (--dissection)": units,
             "dissection_concepts (--dissection-concepts)": concepts,
             "dissection_config (--dissection-config)": config}
    if all(v is None for v in given.values()):
        return None
    if units is None or concepts is None or config is None:
        missing = [name for name, value in given.items() if value is None]
        raise AuditInputError(
            f"dissection inputs: missing {', '.join(missing)}; expected the per-unit "
            "table, the concept table and the dissection config together")
    check_dissection_config(config, source="dissection config")
    return units, concepts, config


def analyze_files(
    examples: str | Path,
    predictions: str | Path,
    options: AnalysisOptions | None = None,
    *,
    progress: bool = False,
    dissection: str | Path | None = None,
    dissection_concepts: str | Path | None = None,
    dissection_config: Mapping[str, Any] | None = None,
    embeddings: str | Path | None = None,
) -> AnalysisResult:
    """Read, validate and analyze ``examples`` and ``predictions`` files.

    Parameters
    ----------
    examples, predictions
        The two tables (Parquet or CSV).
    options
        See :class:`AnalysisOptions`.
    progress
        Show a progress bar over the analysis steps.
    dissection, dissection_concepts, dissection_config
        Optional, together: the stacked per-unit dissection table (a run's
        ``variants/<name>/dissection.parquet`` files concatenated), its concept table
        (``dissection_concepts.csv``) and the dissection's description (at least
        ``iou_threshold``; a run's ``metrics.json`` holds it as
        ``["dissection"]["config"]``). They add the ``dissection`` block of
        ``metrics.json`` and the ``dissection_units`` and ``dissection_replicas``
        tables, exactly as ``compaudit run`` does
        (:func:`compaudit.analysis.dissection.dissection_block`).
    embeddings
        Optional: a feature vector per analysed example (``.npz`` with ``example_id``
        and ``features``, or a Parquet/CSV table with ``example_id`` and numeric
        columns; :func:`compaudit.tables.read_embeddings`): adds slice discovery.
    """
    options = options or AnalysisOptions()
    given = _dissection_inputs(dissection, dissection_concepts, dissection_config)
    dissected = (None if given is None
                 else read_dissection(units=given[0], concepts=given[1]))
    emb = read_embeddings(embeddings) if embeddings is not None else None
    ex = read_examples(examples, num_classes=options.num_classes)
    pr = read_predictions(predictions, ex, dense=options.dense, num_classes=options.num_classes)
    inputs = {"examples": _file_info(Path(examples), len(ex)),
              "predictions": _file_info(Path(predictions), len(pr))}
    if given is not None and dissected is not None:
        inputs["dissection"] = _file_info(Path(given[0]), len(dissected[0]))
        inputs["dissection_concepts"] = _file_info(Path(given[1]), len(dissected[1]))
    if emb is not None:
        inputs["embeddings"] = _file_info(Path(str(embeddings)), len(emb.example_ids))
    result = analyze(ex, pr, options, progress=progress, inputs=inputs, embeddings=emb)
    if given is not None and dissected is not None:
        result.add_dissection(*dissection_block(*dissected, given[2],
                                                dense=options.dense, level=options.level))
    return result
