"""Configuration as data: every setting declared once, beside its default and range.

A config is a frozen dataclass whose fields carry their limits (:func:`setting`), with
``__post_init__`` calling :func:`check_config`. The same declarations serve three
entry points, so a value is judged the same way wherever it comes from:

* Python: ``TrainConfig(lr=-1)`` raises :class:`ConfigError` naming every bad field;
* TOML: :func:`from_table` coerces a spec or policy table into the dataclass, naming
  the file, the table and the key of each mistake;
* the command line: :func:`check_int` and :func:`check_choice` check single options.

Cross-field rules live in an optional ``_problems(self)`` method of the config that
yields ``(key, message)`` pairs. This module imports no torch, so parsing a spec is cheap.

Examples
--------
>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Fit:
...     steps: int = setting(10, ge=1)
...     def __post_init__(self):
...         check_config(self)
>>> try:
...     Fit(steps=0)
... except ConfigError as err:
...     print(err)
Fit.steps: got 0; expected an integer >= 1
"""

from __future__ import annotations

import dataclasses
import re
import sys
import types
from collections.abc import Iterable
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from compaudit.errors import AuditInputError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

_Config = TypeVar("_Config", bound="DataclassInstance")

__all__ = [
    "Checked",
    "ConfigError",
    "Range",
    "check_choice",
    "check_config",
    "check_int",
    "from_table",
    "is_slug",
    "narrow",
    "parse_toml",
    "plain",
    "read_utf8",
    "setting",
]


@dataclass(frozen=True)
class Range:
    """Numeric limits of a setting: ``ge``/``gt`` below, ``le``/``lt`` above."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def __contains__(self, value: float) -> bool:
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def describe(self) -> str:
        low = (f"[{_num(self.ge)}" if self.ge is not None
               else f"({_num(self.gt)}" if self.gt is not None else None)
        high = (f"{_num(self.le)}]" if self.le is not None
                else f"{_num(self.lt)})" if self.lt is not None else None)
        if low and high:
            return f"in {low}, {high}"
        if low:
            return f">= {_num(self.ge)}" if self.ge is not None else f"> {_num(self.gt)}"
        if high:
            return f"<= {_num(self.le)}" if self.le is not None else f"< {_num(self.lt)}"
        return ""


def _num(x: float | None) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def setting(default: Any = MISSING, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None, off: bool = False,
            nonempty: bool = False, slug: bool = False, factory: Any = MISSING) -> Any:
    """A dataclass field with its limits.

    Parameters
    ----------
    default, factory
        The one default of the setting (``factory`` for mutable values).
    ge, gt, le, lt
        Numeric limits (also applied to every element of a tuple).
    off
        In TOML, ``false`` turns this optional setting off (``None``): TOML has no null.
    nonempty
        A string or tuple that may not be empty.
    slug
        A name used in paths (:func:`check_slug`).
    """
    metadata = {"range": Range(ge, gt, le, lt), "off": off, "nonempty": nonempty,
                "slug": slug}
    if factory is not MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class ConfigError(AuditInputError):
    """Invalid settings of one config: ``items`` holds ``(key, message)`` pairs.

    Its text names each key under ``where`` (the class name by default); callers that
    know the file and table re-word it with :meth:`reworded`.
    """

    def __init__(self, items: list[tuple[str | None, str]], where: str) -> None:
        self.items = items
        super().__init__([_at(where, key, message) for key, message in items])

    def reworded(self, where: str) -> list[str]:
        """The same problems, located at ``where`` (e.g. ``"spec.toml: [train]"``)."""
        return [_at(where, key, message) for key, message in self.items]


def _at(where: str, key: str | None, message: str) -> str:
    return f"{where}.{key}: {message}" if key else f"{where}: {message}"


# --- types -------------------------------------------------------------------------------

_NONE = type(None)


def _is_union(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType)


def expected(hint: Any) -> str:
    """How a type hint reads in a message: ``"an integer"``, ``"one of 'a', 'b'"``."""
    if _is_union(hint):
        parts = [expected(a) for a in get_args(hint) if a is not _NONE]
        return " or ".join(parts)
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin is tuple:
        inner = get_args(hint)[0] if get_args(hint) else Any
        return f"a list of {_plural(inner)}"
    if origin is dict or hint is dict:
        return "a table"
    if dataclasses.is_dataclass(hint):
        return "a table"
    return {bool: "true or false", int: "an integer", float: "a number",
            str: "a string"}.get(hint, str(hint))


def _plural(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return "values from " + ", ".join(repr(a) for a in get_args(hint))
    return {bool: "booleans", int: "integers", float: "numbers", str: "strings"}.get(
        hint, expected(hint))


def coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    """Check ``value`` against a type hint; return ``(ok, value converted)``.

    Lists become tuples and integers become floats where a float is declared; nothing
    else is converted (``"1"`` is not an integer, ``true`` is not a number).
    """
    if hint is Any:
        return True, value
    if _is_union(hint):
        if value is None and _NONE in get_args(hint):
            return True, None
        for arg in get_args(hint):
            if arg is not _NONE:
                ok, converted = coerce(value, arg)
                if ok:
                    return True, converted
        return False, value
    origin = get_origin(hint)
    if origin is Literal:
        return (not isinstance(value, bool) or bool in map(type, get_args(hint))) and \
            value in get_args(hint), value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        inner = get_args(hint)[0] if get_args(hint) else Any
        results = [coerce(v, inner) for v in value]
        return all(ok for ok, _ in results), tuple(v for _, v in results)
    if origin is dict or hint is dict:
        return isinstance(value, dict), value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        ok = _is_int(value)
        return ok, int(value) if ok else value
    if hint is float:
        ok = _is_int(value) or (isinstance(value, float))
        return ok, float(value) if ok else value
    if hint is str:
        return isinstance(value, str), value
    if isinstance(hint, type):
        return isinstance(value, hint), value
    return True, value


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return type(value).__module__ == "numpy" and hasattr(value, "dtype") and \
        value.dtype.kind in "iu"


# --- checks ------------------------------------------------------------------------------


def _limit_problem(f: dataclasses.Field[Any], hint: Any, value: Any, given: Any) -> str | None:
    """The message when a well-typed ``value`` (as ``given``) breaks ``f``'s limits."""
    meta = f.metadata
    if value is None:
        return None
    if meta.get("nonempty") and len(value) == 0:
        return f"got {given!r}; expected a non-empty {expected(hint)[2:]}"
    if meta.get("slug") and value and not is_slug(value):
        return f"got {given!r}; expected {SLUG_RULE}"
    bounds: Range | None = meta.get("range")
    if bounds is None:
        return None
    items = value if isinstance(value, tuple) else (value,)
    numbers = [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if all(v in bounds for v in numbers):
        return None
    what = ("values" if isinstance(value, tuple)
            else "an integer" if isinstance(value, int) else "a number")
    return f"got {given!r}; expected {what} {bounds.describe()}"


def _field_problems(obj: Any, hints: dict[str, Any]) -> Iterable[tuple[str, str]]:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        ok, converted = coerce(value, hints[f.name])
        if not ok:
            yield f.name, f"got {value!r}; expected {expected(hints[f.name])}"
            continue
        if converted is not value:
            object.__setattr__(obj, f.name, converted)
        message = _limit_problem(f, hints[f.name], converted, value)
        if message:
            yield f.name, message


def check_config(obj: Any) -> None:
    """Check every field of a config dataclass (types, limits, then ``_problems``).

    Call it from ``__post_init__``. Lists are stored as tuples and integers as floats
    where declared. Raises :class:`ConfigError` listing every problem.
    """
    hints = get_type_hints(type(obj))
    items: list[tuple[str | None, str]] = list(_field_problems(obj, hints))
    if not items and hasattr(obj, "_problems"):
        items = [(key, message) for key, message in obj._problems()]
    if items:
        raise ConfigError(items, type(obj).__name__)


class Checked:
    """Base of config dataclasses: checked by :func:`check_config` when built."""

    def __post_init__(self) -> None:
        check_config(self)


#: What a name used in paths may hold.
SLUG_RULE = ("a name of letters, digits, '-', '_' and '.' (no path separators, no '..', "
             "not starting with '.')")
_SLUG = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


def is_slug(name: object) -> bool:
    """Whether ``name`` is safe as one path component (:data:`SLUG_RULE`)."""
    return isinstance(name, str) and bool(_SLUG.match(name)) and ".." not in name


def check_int(name: str, value: Any, *, minimum: int | None = None,
              maximum: int | None = None) -> str | None:
    """A message when ``value`` is not an integer within the limits, else ``None``."""
    bounds = Range(ge=minimum, le=maximum)
    if _is_int(value) and value in bounds:
        return None
    limit = f" {bounds.describe()}" if bounds.describe() else ""
    return f"{name}: got {value!r}; expected an integer{limit}"


def check_choice(name: str, value: Any, valid: Iterable[Any]) -> str | None:
    """A message when ``value`` is not one of ``valid``, else ``None``."""
    valid = tuple(valid)
    if value in valid:
        return None
    return f"{name}: got {value!r}; expected one of {', '.join(map(repr, valid))}"


# --- TOML --------------------------------------------------------------------------------


def _nested(where: str, key: str) -> str:
    return f"{where[:-1]}.{key}]" if where.endswith("]") else f"{where}.{key}"


def from_table(cls: type[_Config], table: Any, *, where: str, problems: list[str],
               keys: Iterable[str] | None = None,
               base: dict[str, Any] | None = None) -> _Config | None:
    """Build config ``cls`` from a TOML table; append every mistake to ``problems``.

    Parameters
    ----------
    cls
        A config dataclass (its fields, types and :func:`setting` limits are the schema).
    table
        The parsed TOML table.
    where
        Where the table is, e.g. ``"audits/demo.toml: [train]"``; messages read
        ``"audits/demo.toml: [train].lr: got -1; expected a number > 0"``.
    keys
        The keys a user may set (default: every field); the rest come from ``base``.
    base
        Values used where the table has none (e.g. settings taken from other sections).

    Returns
    -------
    The config, or ``None`` when the table has mistakes.
    """
    if not isinstance(table, dict):
        problems.append(f"{where}: got {table!r}; expected a table")
        return None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    allowed = list(keys) if keys is not None else list(fields)
    hints = get_type_hints(cls)
    kwargs = dict(base or {})
    before = len(problems)
    for key, value in table.items():
        if key not in allowed:
            problems.append(f"{where}.{key}: unknown key; valid keys: {', '.join(allowed)}")
            continue
        if value is False and fields[key].metadata.get("off"):
            kwargs[key] = None
            continue
        hint = hints[key]
        inner = [a for a in get_args(hint) if a is not _NONE] if _is_union(hint) else [hint]
        if (len(inner) == 1 and isinstance(inner[0], type) and dataclasses.is_dataclass(inner[0])
                and isinstance(value, dict)):
            kwargs[key] = from_table(inner[0], value, where=_nested(where, key),
                                     problems=problems)
            continue
        ok, converted = coerce(value, hint)
        message = (f"got {value!r}; expected {expected(hint)}" if not ok
                   else _limit_problem(fields[key], hint, converted, value))
        if message:
            problems.append(f"{where}.{key}: {message}")
            continue
        kwargs[key] = converted
    if len(problems) > before:
        return None
    missing = [name for name, f in fields.items() if name not in kwargs
               and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        problems.append(f"{where}: missing required key(s) {', '.join(missing)}")
        return None
    try:
        return cls(**kwargs)
    except ConfigError as err:
        problems.extend(err.reworded(where))
    return None


def narrow(obj: Any, cls: type[_Config], **changes: Any) -> _Config:
    """``cls`` built from the fields of ``obj`` that ``cls`` declares, with ``changes``.

    For a section that extends a stage's config (``TrainSpec(TrainConfig)``): the
    stage gets exactly its own config type.
    """
    names = [f.name for f in dataclasses.fields(cls)]
    return cls(**{**{n: getattr(obj, n) for n in names}, **changes})


def read_utf8(path: str | Path) -> str:
    """The text of a UTF-8 file; other bytes are an error naming the file."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise AuditInputError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); "
                              "expected a TOML file in UTF-8") from err


def parse_toml(text: str, *, source: str) -> dict[str, Any]:
    """A TOML document; a syntax error names ``source``."""
    try:
        doc: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise AuditInputError(f"{source}: not valid TOML ({err})") from err
    return doc


def plain(obj: Any) -> Any:
    """A config as plain JSON-ready data (dataclasses → dicts, tuples → lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    return obj
