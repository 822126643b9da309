"""``gate/gate.json``: the gate's verdict and every check, as :class:`GateDoc`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compaudit.rundir import jsonable, read_json
from compaudit.schema._records import NAN, Record

__all__ = ["GateCheck", "GateDoc", "amount", "dumps_gate", "read_gate"]


def amount(value: float, unit: str) -> str:
    """``value`` of a check in its ``unit``: a rate change (``"points"``, a fraction) in
    percentage points, a relative growth (``"%"``) in percent.

    >>> amount(0.05, "points"), amount(75.0, "%")
    ('5.00 pp', '75%')
    """
    return f"{100 * value:.2f} pp" if unit == "points" else f"{value:g}%"


@dataclass(frozen=True, kw_only=True)
class GateCheck(Record):
    """One check of ``gate.json``: its estimate, simultaneous interval and verdict.

    ``unit`` is ``points`` (fractions shown as percentage points) or ``%``.
    """

    id: str
    kind: str
    variant: str
    subject: str
    metric: str
    estimate: float = NAN
    se: float = NAN
    tolerance: float = NAN
    unit: str
    lo: float = NAN
    hi: float = NAN
    verdict: str
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class GateDoc(Record):
    """``gate/gate.json``."""

    verdict: str
    exit_code: int
    z: float = NAN
    notes: tuple[str, ...] = ()
    inference: str = ""
    operating_points: tuple[Mapping[str, Any], ...] = ()
    checks: tuple[GateCheck, ...] = ()


def dumps_gate(doc: GateDoc) -> str:
    """``gate.json`` text: strict JSON, NaN as ``null``."""
    return json.dumps(jsonable(doc.as_dict()), indent=2, allow_nan=False) + "\n"


def read_gate(path: Path) -> GateDoc:
    """Read ``gate.json``; a malformed one names the field and the fix."""
    doc = read_json(path, what="gate result", fix="re-run 'compaudit gate RUN_DIR'")
    return GateDoc.from_dict(doc, where=str(path))
