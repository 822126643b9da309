"""Read a run directory for the report: ``metrics.json``, tables and optional extras.

Validation happens here, at the door: a missing ``metrics.json``, a file that is not
JSON, or an optional file of the wrong shape raises :class:`AuditInputError` naming the
file, what was expected and how to fix it. Everything after this module trusts the
:class:`RunData` it gets; missing *optional* inputs are ``None`` and the sections say
"not available in this run".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from compaudit.errors import AuditInputError
from compaudit.gate.operating import VariantPoint, variants_info
from compaudit.gate.operating import variant_point as _point
from compaudit.rundir import RunFolder, gate_files, read_json
from compaudit.schema import (
    GateDoc,
    Metrics,
    RunInfo,
    VariantRecord,
    read_gate,
    read_metrics,
    read_run_info,
)

__all__ = ["RunData", "VariantPoint", "load_run"]

@dataclass
class RunData:
    """Everything the report reads from one run directory."""

    run_dir: Path
    metrics: Metrics
    gate: GateDoc | None = None
    variants_info: dict[str, VariantRecord] | None = None
    run_info: RunInfo | None = None
    class_names: list[str] | None = None
    examples_file: Path | None = None
    _tables: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    @property
    def dense(self) -> str:
        return self.metrics.dense

    @property
    def alpha(self) -> float:
        return self.metrics.alpha

    @property
    def level(self) -> float:
        return self.metrics.level

    @property
    def binary(self) -> bool:
        return self.metrics.task.binary

    @property
    def variants(self) -> list[str]:
        """Every variant, dense first, in the order of ``metrics.json``."""
        names = [str(v) for v in self.metrics.variants]
        return sorted(names, key=lambda v: v != self.dense)

    @property
    def compressed(self) -> list[str]:
        return [v for v in self.variants if v != self.dense]

    def table(self, name: str) -> pd.DataFrame:
        """``tables/<name>.csv`` (empty DataFrame when absent or empty), cached."""
        if name not in self._tables:
            path = RunFolder(self.run_dir).table(name)
            frame = pd.DataFrame()
            if path.is_file() and path.stat().st_size > 0:
                try:
                    frame = pd.read_csv(path, dtype={"variant": str, "example_id": str,
                                                     "subgroup": str, "grouping": str})
                except pd.errors.EmptyDataError:
                    frame = pd.DataFrame()
                except (pd.errors.ParserError, UnicodeDecodeError) as err:
                    raise AuditInputError(
                        f"{path}: cannot read table ({err}); expected the CSV written by "
                        "'compaudit analyze'; re-run analyze into this folder") from err
            self._tables[name] = frame
        return self._tables[name]

    def class_name(self, index: Any) -> str:
        """Display name of a class index (the index itself without ``class_names.json``)."""
        try:
            i = int(index)
        except (TypeError, ValueError):
            return str(index)
        if self.class_names is not None and 0 <= i < len(self.class_names):
            return self.class_names[i]
        return str(i)

    @cached_property
    def points(self) -> dict[str, VariantPoint]:
        """Trade-off axis position of every variant (see :class:`VariantPoint`)."""
        return {v: _point(v, self.dense, (self.variants_info or {}).get(v))
                for v in self.variants}


def _class_names(doc: Any, path: Path, num_classes: int | None) -> list[str]:
    if not isinstance(doc, list) or not all(isinstance(n, str) for n in doc):
        raise AuditInputError(f"{path}: expected a JSON list of class names (strings), one "
                              "per class index; fix or delete the file")
    if num_classes is not None and len(doc) < num_classes:
        raise AuditInputError(f"{path}: {len(doc)} class names for {num_classes} classes; "
                              "expected one name per class index")
    return doc


def load_run(run_dir: str | Path) -> RunData:
    """Read and validate a run directory written by ``compaudit analyze`` / ``run``.

    Parameters
    ----------
    run_dir
        Folder holding ``metrics.json`` and ``tables/``; optionally ``gate/gate.json``,
        ``variants.json``, ``run.json``, ``class_names.json`` and ``examples.parquet``.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise AuditInputError(f"{root}: run directory not found; expected the folder written "
                              "by 'compaudit analyze --out DIR' or 'compaudit run'")
    folder = RunFolder(root)
    if not folder.metrics.is_file():
        raise AuditInputError(f"{folder.metrics}: not found; expected the metrics.json written "
                              "by 'compaudit analyze --out RUN_DIR'; run analyze first")
    metrics = read_metrics(folder.metrics)
    run = RunData(run_dir=root, metrics=metrics)
    gate_path = gate_files(folder.gate)["json"]
    if gate_path.is_file():
        run.gate = read_gate(gate_path)
    run.variants_info = variants_info(root)
    if folder.run_json.is_file():
        run.run_info = read_run_info(folder.run_json)
    if folder.class_names.is_file():
        doc = read_json(folder.class_names, what="class names", fix="expected a list of strings")
        run.class_names = _class_names(doc, folder.class_names,
                                       metrics.task.num_classes)
    if folder.examples.is_file():
        run.examples_file = folder.examples
    return run
