"""The stage cache: a key per finished stage in ``stages.json``, and the keys' parts.

A stage's key hashes the spec sections it reads and the keys of the stages it depends
on. A stage whose key and outputs are unchanged is skipped, so a killed run resumes
and a changed spec recomputes only what depends on the change.
"""

from __future__ import annotations

import hashlib
import json
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from compaudit.errors import AuditInputError
from compaudit.rundir import write_json

__all__ = ["StageCache", "fingerprint", "stage_key"]


def stage_key(*parts: Any) -> str:
    """A short stable hash of JSON-ready ``parts``."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def fingerprint(path: Path) -> str:
    """SHA-256 over the names and sizes of the files under ``path`` (cheap, stable)."""
    digest = hashlib.sha256()
    if path.is_file():
        digest.update(path.read_bytes())
    else:
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{f.relative_to(path)}:{f.stat().st_size}\n".encode())
    return digest.hexdigest()


class StageCache:
    """The record of finished stages in ``stages.json`` and what this run did."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, str] = self._read(path)
        self.ran: list[str] = []
        self.skipped: list[str] = []
        #: Wall and CPU seconds of each step of this run (:meth:`timed`).
        self.timings: dict[str, dict[str, float]] = {}

    @staticmethod
    def _read(path: Path) -> dict[str, str]:
        if not path.is_file():
            return {}
        try:
            done = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise AuditInputError(f"{path}: the stage record is not valid JSON ({err}); "
                                  "delete it to recompute every stage") from err
        if not isinstance(done, dict):
            raise AuditInputError(f"{path}: expected a JSON object of stage keys; delete it "
                                  "to recompute every stage")
        return done

    def fresh(self, name: str, key: str, outputs: list[Path]) -> bool:
        """Whether stage ``name`` finished with ``key`` and its outputs exist (recorded)."""
        ok = self.done.get(name) == key and all(p.exists() for p in outputs)
        (self.skipped if ok else self.ran).append(name)
        return ok

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Record the wall and CPU time of ``step`` (this process and its finished
        children; jobs in worker processes report their own, see ``run.json``)."""
        wall, cpu = time.perf_counter(), _cpu_seconds()
        try:
            yield
        finally:
            self.timings[step] = {"wall_s": round(time.perf_counter() - wall, 3),
                                  "cpu_s": round(_cpu_seconds() - cpu, 3)}

    def finish(self, name: str, key: str) -> None:
        """Record stage ``name`` as finished with ``key``."""
        self.done[name] = key
        write_json(self.path, dict(sorted(self.done.items())))


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its reaped children."""
    own, children = (resource.getrusage(who) for who in
                     (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
