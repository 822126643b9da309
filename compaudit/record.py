"""``audit_record.json``: what a run's claims rest on, and ``compaudit verify``.

The record holds the SHA-256 of every file an audit read or wrote (the spec, the
policy, the two tables, every model file read, every artifact written, ``metrics.json``
and its tables, the gate's outputs, the report), the versions of the libraries that
computed them, the seeds, the policy (as the ``[gate]`` table it was judged by), the
verdict, and its own digest over all of that. Paths inside the run folder are stored
relative to it, so a moved run folder still verifies; inputs outside it keep their
absolute path.

``run`` writes a whole record; ``analyze`` one for its inputs and outputs; ``gate`` and
``report`` add theirs to the record of the folder. :func:`verify` re-hashes every file
and re-judges ``metrics.json`` under the recorded policy.

This module imports no torch.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import compaudit
from compaudit.errors import AuditInputError
from compaudit.gate import policy_from_dict, run_gate
from compaudit.gate.operating import variants_info
from compaudit.gate.policy import policy_table
from compaudit.rundir import RunFolder, gate_files, read_json, write_json
from compaudit.schema import read_metrics

__all__ = [
    "RECORD_SCHEMA",
    "Verification",
    "file_sha256",
    "record_analysis",
    "record_gate",
    "record_outputs",
    "record_run",
    "verify",
]

#: Version of ``audit_record.json``.
RECORD_SCHEMA = "compaudit.audit_record/1"
#: Libraries whose versions the record keeps (an absent one is ``null``).
VERSIONED = ("torch", "torchvision", "onnxruntime", "numpy")
_NO_RECORD = ("expected a run folder holding the audit_record.json that 'compaudit run', "
              "'compaudit analyze' or 'compaudit gate' writes")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"compaudit": compaudit.__version__}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _digest(doc: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``doc`` without its ``digest``."""
    body = {k: v for k, v in doc.items() if k != "digest"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _stored(path: Path, root: Path) -> str:
    """``path`` relative to the run folder when inside it (POSIX), else absolute."""
    full = Path(path).absolute()
    try:
        return full.resolve().relative_to(root.absolute().resolve()).as_posix()
    except ValueError:
        return str(full.resolve())


def _located(stored: str, root: Path) -> Path:
    path = Path(stored)
    return path if path.is_absolute() else root / path


class _Record:
    """A record being written: its files keyed by stored path, and its fields."""

    def __init__(self, folder: RunFolder, doc: dict[str, Any] | None = None) -> None:
        self.folder = folder
        self.doc: dict[str, Any] = doc or {"schema": RECORD_SCHEMA, "files": {},
                                           "policy": None, "seeds": None, "verdict": None}

    @classmethod
    def existing(cls, folder: RunFolder) -> _Record:
        """The folder's record to add to, or a new one when it has none."""
        path = folder.audit_record
        if not path.is_file():
            return cls(folder)
        doc = read_json(path, what="audit record", fix="delete it and re-run 'compaudit run'")
        if not isinstance(doc, dict) or doc.get("schema") != RECORD_SCHEMA:
            raise AuditInputError(f"{path}: field 'schema': expected {RECORD_SCHEMA!r}; "
                                  "delete it and re-run 'compaudit run'")
        return cls(folder, doc)

    def drop(self, roles: Iterable[str]) -> None:
        roles = set(roles)
        self.doc["files"] = {p: e for p, e in self.doc["files"].items()
                             if e["role"] not in roles}

    def add(self, role: str, paths: Iterable[Path]) -> None:
        for path in paths:
            path = Path(path)
            self.doc["files"][_stored(path, self.folder.root)] = {
                "role": role, "sha256": file_sha256(path), "bytes": path.stat().st_size}

    def write(self, *, written_by: str) -> Path:
        doc = {**self.doc, "written_by": written_by, "versions": _versions(),
               "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        doc["files"] = dict(sorted(doc["files"].items()))
        doc["digest"] = _digest(doc)
        write_json(self.folder.audit_record, doc)
        return self.folder.audit_record


def _analysis_outputs(folder: RunFolder) -> list[tuple[str, list[Path]]]:
    return [("metrics", [folder.metrics]),
            ("table", sorted(folder.tables.glob("*.csv")) if folder.tables.is_dir() else [])]


def _gate_outputs(gate_dir: Path) -> list[Path]:
    return [p for p in gate_files(gate_dir).values() if p.is_file()]


def _written(folder: Path) -> list[Path]:
    """Every file under ``folder`` except hidden ones (temporary, removed after a run)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def record_run(spec: Any, folder: RunFolder, *, model_files: Iterable[Path], verdict: str,
               report: Path | None) -> Path:
    """The record of a whole ``compaudit run`` (replaces the folder's record).

    ``model_files``: every model file the run read (dense replicas, loaded artifacts);
    the files written under ``models/`` and ``variants/`` are found here.
    """
    record = _Record(folder)
    spec_file = Path(spec.source)
    if spec_file.is_file():
        record.add("spec", [spec_file])
    else:  # the embedded demo spec: its text is in run.json
        record.doc["embedded_spec_sha256"] = spec.sha256
    record.add("provenance", [folder.run_json])
    record.add("examples", [folder.examples])
    record.add("predictions", [folder.predictions])
    # A run with slices off leaves an older run's embeddings in place (a cache); only the
    # run that used them records them.
    used = spec.analysis.slices.enabled and folder.embeddings.is_file()
    record.add("embeddings", [folder.embeddings] if used else [])
    record.add("variants", [p for p in (folder.variants_json, folder.class_names) if p.is_file()])
    written = set(_written(folder.root / "models") + _written(folder.root / "variants"))
    record.add("model", [p for p in model_files if p not in written])
    record.add("artifact", sorted(written))
    for role, paths in _analysis_outputs(folder):
        record.add(role, paths)
    record.add("gate", _gate_outputs(folder.gate))
    if report is not None:
        record.add("report", [report])
    run = read_json(folder.run_json, what="provenance", fix="re-run 'compaudit run'")
    record.doc.update(seeds=run.get("seeds"), verdict=verdict,
                      policy={"source": f"{spec.source} [gate]",
                              "table": policy_table(spec.gate)})
    return record.write(written_by="run")


def record_analysis(out: Path, *, examples: Path, predictions: Path, seed: int,
                    embeddings: Path | None = None) -> Path:
    """The record of ``compaudit analyze`` into ``out`` (replaces the folder's record)."""
    folder = RunFolder(out)
    record = _Record(folder)
    record.add("examples", [examples])
    record.add("predictions", [predictions])
    record.add("embeddings", [embeddings] if embeddings is not None else [])
    for role, paths in _analysis_outputs(folder):
        record.add(role, paths)
    record.doc["seeds"] = {"bootstrap": seed}
    return record.write(written_by="analyze")


def record_gate(run_dir: Path, *, gate_dir: Path, policy: Any, policy_source: str,
                policy_file: Path | None, baseline: Path | None, verdict: str) -> Path:
    """Add a gate's judgement to the record of ``run_dir``: the metrics it read, the
    policy (as its table, and the file's hash), the baseline, its outputs, the verdict."""
    folder = RunFolder(run_dir)
    record = _Record.existing(folder)
    record.drop(["metrics", "policy", "baseline", "gate"])
    record.add("metrics", [folder.metrics])
    if policy_file is not None:
        record.add("policy", [policy_file])
    if baseline is not None:
        record.add("baseline", [baseline])
    record.add("gate", _gate_outputs(gate_dir))
    record.doc.update(verdict=verdict, policy={"source": policy_source,
                                               "table": policy_table(policy)})
    return record.write(written_by="gate")


def record_outputs(run_dir: Path, role: str, paths: Iterable[Path]) -> Path | None:
    """Replace the files of ``role`` in the record of ``run_dir`` (e.g. a re-rendered
    report); a folder without a record is left without one."""
    folder = RunFolder(run_dir)
    if not folder.audit_record.is_file():
        return None
    record = _Record.existing(folder)
    record.drop([role])
    record.add(role, paths)
    return record.write(written_by=record.doc.get("written_by", role))


@dataclass(frozen=True)
class Verification:
    """What :func:`verify` found: one problem per changed or missing file, a record
    that was edited, or a verdict that differs."""

    record: Path
    files: int
    verdict: str | None
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(run_dir: str | Path) -> Verification:
    """Re-hash every file of the record of ``run_dir`` and re-judge its ``metrics.json``
    under the recorded policy.

    A folder without a record is an :class:`~compaudit.errors.AuditInputError` (exit 2).
    """
    folder = RunFolder(Path(run_dir))
    path = folder.audit_record
    if not folder.root.is_dir():
        raise AuditInputError(f"{folder.root}: not a folder; {_NO_RECORD}")
    if not path.is_file():
        raise AuditInputError(f"{path}: not found; {_NO_RECORD}")
    doc = read_json(path, what="audit record", fix=_NO_RECORD)
    if not isinstance(doc, dict) or doc.get("schema") != RECORD_SCHEMA \
            or not isinstance(doc.get("files"), dict):
        raise AuditInputError(f"{path}: field 'schema': expected {RECORD_SCHEMA!r} with a "
                              f"'files' table; {_NO_RECORD}")
    problems: list[str] = []
    if doc.get("digest") != _digest(doc):
        problems.append(f"{path}: the digest does not match its contents: the record was "
                        "edited after it was written")
    for stored, entry in doc["files"].items():
        file = _located(stored, folder.root)
        if not file.is_file():
            problems.append(f"{file}: missing ({entry.get('role')} file of the record)")
        elif file_sha256(file) != entry.get("sha256"):
            problems.append(f"{file}: changed ({entry.get('role')}: sha256 "
                            f"{file_sha256(file)[:12]}..., recorded {str(entry.get('sha256'))[:12]}...)")
    if "embedded_spec_sha256" in doc:
        problems += _embedded_spec(folder, doc["embedded_spec_sha256"])
    if doc.get("verdict") is not None:
        problems += _rejudge(folder, doc)
    return Verification(record=path, files=len(doc["files"]), verdict=doc.get("verdict"),
                        problems=tuple(problems))


def _embedded_spec(folder: RunFolder, recorded: str) -> list[str]:
    try:
        run = read_json(folder.run_json, what="provenance", fix="re-run 'compaudit run'")
        text = str(run.get("spec")) if isinstance(run, dict) else ""
    except AuditInputError as err:
        return list(err.problems)
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != recorded:
        return [f"{folder.run_json}: field 'spec': changed (the embedded audit spec differs "
                "from the one recorded)"]
    return []


def _rejudge(folder: RunFolder, doc: dict[str, Any]) -> list[str]:
    """The verdict of the recorded metrics.json under the recorded policy, compared."""
    by_role = {e["role"]: _located(p, folder.root) for p, e in doc["files"].items()}
    recorded = doc["verdict"]
    try:
        policy = policy_from_dict((doc.get("policy") or {}).get("table") or {},
                                  source=f"{folder.audit_record} policy")
        metrics = read_metrics(by_role.get("metrics", folder.metrics))
        baseline = (read_metrics(by_role["baseline"], what="baseline metrics")
                    if "baseline" in by_role else None)
        now = run_gate(metrics, policy, baseline=baseline,
                       variants_info=variants_info(folder.root)).verdict
    except AuditInputError as err:
        return [f"verdict: {recorded!r} recorded, but metrics.json cannot be re-judged: {p}"
                for p in err.problems]
    if now != recorded:
        return [f"verdict: {recorded!r} recorded, {now!r} when metrics.json is re-judged "
                "under the recorded policy"]
    return []
