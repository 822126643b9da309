"""``run.json``: provenance of a ``compaudit run``, as :class:`RunInfo`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compaudit.rundir import read_json
from compaudit.schema._records import Record

__all__ = ["RunInfo", "read_run_info"]


@dataclass(frozen=True, kw_only=True)
class RunInfo(Record):
    """``run.json``: provenance of a ``compaudit run`` (written by the pipeline)."""

    spec: str
    spec_path: str | None = None
    spec_sha256: str
    seeds: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    started: str = ""
    finished: str = ""
    timings: Mapping[str, Any] = field(default_factory=dict)


def read_run_info(path: Path) -> RunInfo:
    """Read ``run.json``."""
    doc = read_json(path, what="run provenance", fix="re-run 'compaudit run'")
    return RunInfo.from_dict(doc, where=str(path))
