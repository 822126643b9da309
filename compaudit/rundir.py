"""The run folder: every path inside it, the metrics schema, and reading/writing its JSON.

One audit writes one folder; the stages, the report and the gate find their files
here and nowhere else::

    RUN/run.json              provenance: spec, seeds, versions, data fingerprints
    RUN/stages.json           stage keys of the stage cache
    RUN/data/                 generated data (synthetic faces, corrupted copies)
    RUN/models/dense/         replica-XXX.pt (+ .json) and training checkpoints
    RUN/variants/<name>/      predictions.parquet, record.json (and dissection.parquet;
                              models/replica-XXX.pt when another variant derives from it)
    RUN/examples.parquet, predictions.parquet, variants.json, class_names.json
    RUN/embeddings.npz        dense penultimate features per example (slice discovery)
    RUN/metrics.json, tables/ the analysis
    RUN/gate/                 gate.json, junit.xml, summary.md
    RUN/report.html
    RUN/audit_record.json     SHA-256 of every input and output, versions, seeds, verdict

This module imports no torch.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compaudit._atomic import atomic_write_text
from compaudit.config import SLUG_RULE, is_slug
from compaudit.errors import AuditInputError

__all__ = [
    "METRICS_SCHEMA",
    "VARIANTS_SCHEMA",
    "AXES",
    "UNITS_FILE",
    "CONCEPTS_FILE",
    "gate_files",
    "make_folder",
    "jsonable",
    "RunFolder",
    "check_metrics_schema",
    "read_json",
    "retire_metrics",
    "write_json",
]

#: Version of ``metrics.json`` (records: :mod:`compaudit.schema`); analyze writes it,
#: report and gate accept exactly it. /2: over-index rows carry ``log_rr`` and
#: ``log_rr_se`` (the Katz interval the gate used to recompute); every delta and
#: disparity row has every column (``null`` where undefined). /3: the ``slices`` block
#: (``null`` unless slices were found) and ``options.slices``.
METRICS_SCHEMA = "compaudit.metrics/4"
#: Version of ``variants.json`` (fields: ``compaudit.schema.VariantRecord``,
#: docs/outputs.md). /2: ``size_bytes`` is the deployable artifact (int8 weights as int8,
#: float16 as float16, an ONNX model's file), new ``int8_weight_share``, ``int8_op_share``
#: and ``latency_kernel``; in /1 ``size_bytes`` was the float32 state dict of the
#: simulated model. /3: ``method`` is the spec's method name (``gradual_magnitude``, not
#: ``gmp``), new ``family``, ``axis`` and ``bits`` from the method's entry; the schema is
#: part of every variant's stage key, so a run folder of /2 recompresses its variants.
#: /4: new ``base``, the compressed variant a derived variant (a repair) starts from.
VARIANTS_SCHEMA = "compaudit.variants/4"
#: Operating-point axes a ``variants.json`` record may name (``None``: placed by size).
AXES = ("sparsity", "bits", None)
#: A variant's dissection tables (per unit, and the concepts), in its folder.
UNITS_FILE = "dissection.parquet"
CONCEPTS_FILE = "dissection_concepts.csv"


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder (nothing is created until a stage writes)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def create(self) -> None:
        """Make the folder (and its parents); a file in the way is an error naming it."""
        make_folder(self.root, what="run folder")

    # provenance and cache
    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def stages_json(self) -> Path:
        return self.root / "stages.json"

    # inputs of the analysis
    @property
    def data(self) -> Path:
        return self.root / "data"

    def shift_data(self, index: int) -> Path:
        """The corrupted copy written for shift set ``index``."""
        return self.data / f"shift-{index}"

    @property
    def dense_models(self) -> Path:
        return self.root / "models" / "dense"

    def variant(self, name: str) -> Path:
        """A variant's folder; ``name`` must be one path component (a slug)."""
        if not is_slug(name):
            raise AuditInputError(f"variant name {name!r}: expected {SLUG_RULE}")
        return self.root / "variants" / name

    def decoded(self, name: str) -> Path:
        """A dataset decoded once for the run's jobs (removed after them)."""
        if not is_slug(name):
            raise AuditInputError(f"decoded dataset name {name!r}: expected {SLUG_RULE}")
        return self.root / "variants" / ".decoded" / f"{name}.npy"

    def variant_predictions(self, name: str) -> Path:
        return self.variant(name) / "predictions.parquet"

    def variant_record(self, name: str) -> Path:
        return self.variant(name) / "record.json"

    def variant_model(self, name: str, replica: int) -> Path:
        """Compressed replica ``replica`` of variant ``name`` (a state dict), written when
        another variant derives from it (``Method.derives_from``)."""
        return self.variant(name) / "models" / f"replica-{replica:03d}.pt"

    def variant_units(self, name: str) -> Path:
        """The per-unit dissection table of every replica of variant ``name``."""
        return self.variant(name) / UNITS_FILE

    @property
    def examples(self) -> Path:
        return self.root / "examples.parquet"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.parquet"

    @property
    def embeddings(self) -> Path:
        """The dense population's embedding of every evaluation example (``example_id``
        and ``features``, :func:`compaudit.tables.read_embeddings`)."""
        return self.root / "embeddings.npz"

    @property
    def variants_json(self) -> Path:
        return self.root / "variants.json"

    @property
    def class_names(self) -> Path:
        return self.root / "class_names.json"

    # outputs
    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    def table(self, name: str) -> Path:
        return self.tables / f"{name}.csv"

    @property
    def gate(self) -> Path:
        return self.root / "gate"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def audit_record(self) -> Path:
        """The verifiable record of the run (:mod:`compaudit.record`)."""
        return self.root / "audit_record.json"


def make_folder(path: Path, *, what: str) -> None:
    """Create ``path`` (and parents) as a writable folder, or fail naming what is wrong."""
    path = Path(path)
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            raise AuditInputError(f"{parent}: is a file; expected a folder for the {what} "
                                  f"{path} (choose another --out)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AuditInputError(f"{path}: cannot create the {what} ({err.strerror or err}); "
                              "choose a writable --out") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise AuditInputError(f"{path}: the {what} is not writable; choose a writable --out")


def gate_files(folder: Path) -> dict[str, Path]:
    """The gate's outputs in ``folder``: ``json``, ``junit`` and ``markdown``."""
    folder = Path(folder)
    return {"json": folder / "gate.json", "junit": folder / "junit.xml",
            "markdown": folder / "summary.md"}


def read_json(path: Path, *, what: str, fix: str) -> Any:
    """Parse a JSON file; a missing or unreadable file is an error naming it and the fix."""
    if not path.is_file():
        raise AuditInputError(f"{path}: {what} not found; {fix}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AuditInputError(f"{path}: {what} is not valid JSON ({err}); {fix}") from err


def jsonable(value: Any, *, where: str | None = None) -> Any:
    """``value`` as strict JSON data: numpy/torch scalars and arrays become Python
    numbers and lists, NaN and infinities ``None``, keys strings, paths strings.

    Anything else becomes ``None``, or, when ``where`` names the document (e.g.
    ``"variants.json: gmp-90"``), an error naming where it was found.
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, where=where and f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, where=where and f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return jsonable(value.tolist(), where=where)  # numpy / torch scalars and arrays
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no NaN or infinity
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if where is None:
        return None
    raise AuditInputError(f"{where} is a {type(value).__name__}, which JSON cannot hold; "
                          "give numbers, strings, lists or dicts")


def write_json(path: Path, doc: Any) -> None:
    """Write ``doc`` as indented JSON, atomically (a temporary file renamed)."""
    atomic_write_text(path, json.dumps(doc, indent=2, default=str) + "\n")


def check_metrics_schema(metrics: Any, *, source: str = "metrics") -> None:
    """Accept exactly :data:`METRICS_SCHEMA`; anything else names what was found."""
    found = metrics.get("schema") if isinstance(metrics, dict) else type(metrics).__name__
    if found != METRICS_SCHEMA:
        raise AuditInputError(
            f"{source}: field 'schema': got {found!r}, expected {METRICS_SCHEMA!r}; "
            "re-run 'compaudit analyze' (or 'compaudit run') with this compaudit version")


def retire_metrics(path: Path) -> bool:
    """Remove an older ``metrics.json`` of compaudit's before its outputs are rewritten;
    True when there was one.

    A folder or a file compaudit did not write stands in the way: an error, nothing
    is removed.
    """
    if path.is_dir():
        raise AuditInputError(f"{path}: is a folder; expected the metrics.json file of a "
                              "run (move it away or choose another --out)")
    if not path.exists():
        return False
    try:
        ours = str(json.loads(path.read_text(encoding="utf-8")).get("schema", "")
                   ).startswith("compaudit.metrics/")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, OSError):
        ours = False
    if not ours:
        raise AuditInputError(f"{path}: exists and was not written by compaudit; compaudit "
                              "never overwrites files it did not create (choose another --out)")
    path.unlink()
    return True
