"""The JSON form shared by every record of :mod:`compaudit.schema`.

:class:`Record` reads a record from its JSON object (checking each field against its
type hint, naming the file and the field) and writes it back; the artifact modules
(:mod:`~compaudit.schema.metrics`, :mod:`~compaudit.schema.gate`,
:mod:`~compaudit.schema.variants`, :mod:`~compaudit.schema.run`) declare their records
on it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from compaudit.errors import AuditInputError

__all__ = ["NAN", "Record"]

R = TypeVar("R", bound="Record")
NAN = math.nan


def _cell_key(key: str, label: bool) -> bool:
    return key.startswith("attr.") or (label and key == "label")


@dataclass(frozen=True, kw_only=True)
class Record:
    """Reading from and writing to the JSON form, the same for every record.

    ``float`` fields read ``null`` as NaN (and write NaN as ``null``); a ``cell`` field
    gathers the ``attr.*`` columns (and ``label`` where :attr:`_LABEL_IN_CELL`); an
    ``extra`` field gathers every other key (open records: a method's own fields).
    """

    _LABEL_IN_CELL: ClassVar[bool] = False

    @classmethod
    def from_dict(cls: type[R], data: Any, *, where: str) -> R:
        """The record from its JSON object; a problem names ``where`` and the field."""
        if not isinstance(data, Mapping):
            raise AuditInputError(f"{where}: got {type(data).__name__}; expected a JSON object")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        if "cell" in fields:
            values["cell"] = {k: v for k, v in data.items()
                              if _cell_key(k, cls._LABEL_IN_CELL)}
        unknown = [k for k in data if k not in fields and k not in values.get("cell", {})]
        if "extra" in fields:
            values["extra"], unknown = {k: data[k] for k in unknown}, []
        if unknown:
            raise AuditInputError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; "
                                  f"expected {', '.join(n for n in fields if n != 'cell')}")
        missing = [name for name, f in fields.items()
                   if name not in ("cell", "extra") and name not in data
                   and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            # Every one at once: the file is fixed in one go.
            raise AuditInputError(f"{where}: "
                                  + "; ".join(f"field {name!r} missing" for name in missing))
        for name in fields:
            if name not in ("cell", "extra") and name in data:
                values[name] = _coerce(data[name], hints[name],
                                       where=f"{where}: field {name!r}")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """The JSON object (cell columns in place of ``cell``; NaN stays NaN here)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("cell", "extra"):
                out.update(value)
            elif isinstance(value, Record):
                out[f.name] = value.as_dict()
            elif isinstance(value, tuple) and value and isinstance(value[0], Record):
                out[f.name] = [v.as_dict() for v in value]
            elif isinstance(value, Mapping) and any(isinstance(v, Record)
                                                    for v in value.values()):
                out[f.name] = {k: v.as_dict() for k, v in value.items()}
            else:
                out[f.name] = value
        return out


def _coerce(value: Any, hint: Any, *, where: str) -> Any:
    """``value`` checked against a field's type hint (records and tuples of them built)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return _coerce(value, hint, where=where)
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint.from_dict(value, where=where)
    if origin is tuple:
        if not isinstance(value, list):
            raise AuditInputError(f"{where}: got {type(value).__name__}; expected a list")
        return tuple(_coerce(v, args[0], where=f"{where}[{i}]") for i, v in enumerate(value))
    if hint is float:
        if value is None:
            return NAN
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is bool or hint is str:
        if isinstance(value, hint):
            return value
    elif origin is Mapping or hint is Mapping:
        if isinstance(value, Mapping):
            if args and isinstance(args[1], type) and issubclass(args[1], Record):
                return {k: _coerce(v, args[1], where=f"{where}[{k!r}]") for k, v in value.items()}
            return value
    else:
        return value  # Any
    expected = {float: "a number", int: "an integer", bool: "true or false",
                str: "a string"}.get(hint, "a JSON object")
    raise AuditInputError(f"{where}: got {value!r}; expected {expected}")
