"""One small registry helper: names → objects, filled by a decorator.

Architectures, datasets, compression methods (each name to its whole
:class:`~compaudit.configs.compress.Method` entry), executors and gate sections each
keep one :class:`Registry`; a lookup of an unknown name fails with the list of valid
names.

Examples
--------
>>> COLORS = Registry("color")
>>> @COLORS.register("red")
... def red():
...     return "#f00"
>>> COLORS.get("red")()
'#f00'
>>> COLORS.get("blue")
Traceback (most recent call last):
...
compaudit.errors.AuditInputError: unknown color 'blue'; valid: red
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from compaudit.errors import AuditInputError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` is used in messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding the decorated object under ``name`` (twice is an error)."""

        def wrap(obj: T) -> T:
            self.add(name, obj)
            return obj

        return wrap

    def add(self, name: str, obj: T) -> None:
        """Add ``obj`` under ``name``."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = obj

    def get(self, name: str) -> T:
        """The entry called ``name``; an unknown name lists the valid ones."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise AuditInputError(f"unknown {self.kind} {name!r}; valid: "
                                  f"{', '.join(self.names()) or 'none registered'}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` pairs in registration order."""
        return list(self._entries.items())
