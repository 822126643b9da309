"""Number formatting for the report: percent, percentage points, p-values, sizes.

Every formatter returns ``"n/a"`` for a missing or non-finite value, so a table never
shows ``nan`` or ``None``.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["NA", "finite", "sort_key", "pct", "pp", "pp_interval", "pvalue", "number", "nbytes",
           "signed_pct", "pct_interval", "q_text", "pp_parts", "signed_pct_parts", "si"]

NA = "n/a"


def finite(x: Any) -> float | None:
    """``x`` as a float when it is a finite number, else ``None``."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def pct(x: Any, digits: int = 1) -> str:
    """A fraction as a percentage: ``0.9396 -> "94.0%"``."""
    v = finite(x)
    return NA if v is None else f"{100 * v:.{digits}f}%"


def signed_pct(x: Any, digits: int = 1) -> str:
    """A value already in percent, with its sign: ``87.2 -> "+87.2%"``."""
    v = finite(x)
    return NA if v is None else f"{v:+.{digits}f}%"


def pp(x: Any, digits: int = 2) -> str:
    """A difference of fractions in percentage points: ``0.0991 -> "+9.91 pp"``."""
    v = finite(x)
    return NA if v is None else f"{100 * v:+.{digits}f} pp"


def pp_interval(est: Any, lo: Any, hi: Any, digits: int = 2) -> str:
    """``"+9.91 pp [+8.73, +11.09]"``; the interval is left out when it is missing."""
    v = finite(est)
    if v is None:
        return NA
    a, b = finite(lo), finite(hi)
    if a is None or b is None:
        return pp(v, digits)
    return f"{100 * v:+.{digits}f} pp [{100 * a:+.{digits}f}, {100 * b:+.{digits}f}]"


def pp_parts(est: Any, lo: Any, hi: Any, digits: int = 2) -> tuple[str, str]:
    """(``"+9.91 pp"``, ``"[+8.73, +11.09]"``): estimate and interval for stacked cells."""
    v, a, b = finite(est), finite(lo), finite(hi)
    if v is None:
        return NA, ""
    ci = ""
    if a is not None and b is not None:
        ci = f"[{100 * a:+.{digits}f}, {100 * b:+.{digits}f}]"
    return f"{100 * v:+.{digits}f} pp", ci


def signed_pct_parts(est: Any, lo: Any, hi: Any, digits: int = 1) -> tuple[str, str]:
    """(``"+87.2%"``, ``"[+46.1, +139.8]"``) for values already in percent."""
    v, a, b = finite(est), finite(lo), finite(hi)
    if v is None:
        return NA, ""
    ci = f"[{a:+.{digits}f}, {b:+.{digits}f}]" if a is not None and b is not None else ""
    return f"{v:+.{digits}f}%", ci


def si(x: Any) -> str:
    """A large count compactly: ``11200000 -> "11.2M"``, ``1.8e9 -> "1.80G"``."""
    v = finite(x)
    if v is None:
        return NA
    # Round to 3 significant digits first, so 999,999 becomes "1M", not "1e+03k".
    v = float(f"{v:.3g}")
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:g}{unit}"
    return f"{v:g}"


def pct_interval(est: Any, lo: Any, hi: Any, digits: int = 1) -> str:
    """A rate with its interval: ``"94.0% [93.9, 94.1]"``."""
    v = finite(est)
    if v is None:
        return NA
    a, b = finite(lo), finite(hi)
    if a is None or b is None:
        return pct(v, digits)
    return f"{100 * v:.{digits}f}% [{100 * a:.{digits}f}, {100 * b:.{digits}f}]"


def pvalue(p: Any) -> str:
    """A p- or q-value: 3 significant digits, ``"<0.001"`` below 0.001."""
    v = finite(p)
    if v is None:
        return NA
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def q_text(q: Any, name: str = "q") -> str:
    """``"q = 0.032"`` or ``"q < 0.001"`` for running text."""
    v = finite(q)
    if v is None:
        return f"{name} n/a"
    return f"{name} < 0.001" if v < 0.001 else f"{name} = {v:.3f}"


def number(x: Any, digits: int = 0) -> str:
    """A count or measure with thousands separators."""
    v = finite(x)
    return NA if v is None else f"{v:,.{digits}f}"


def nbytes(x: Any) -> str:
    """A size in bytes as KiB / MiB / GiB."""
    v = finite(x)
    if v is None:
        return NA
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(v) < 1024 or unit == "GiB":
            return f"{v:,.0f} {unit}" if unit == "B" else f"{v:,.2f} {unit}"
        v /= 1024
    return NA  # pragma: no cover - loop always returns


def sort_key(x: Any) -> float:
    """A table sort key: the number, or NaN (sorted last) when it is missing."""
    v = finite(x)
    return math.nan if v is None else v
