"""Safe HTML building: escaping, tags, and the sortable table builder.

Every string that reaches the page goes through :func:`esc` unless it is already
:class:`Html` (markup built here from escaped parts). Section code builds markup with
:func:`tag` and :func:`sortable_table` rather than f-strings around raw values, so a
variant named ``<script>`` is text on the page, never a tag.
"""

from __future__ import annotations

import html as _html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Html", "esc", "tag", "join", "Cell", "sortable_table", "note", "figure",
           "interval_cell"]


class Html(str):
    """A string of trusted markup (built from escaped parts); :func:`esc` leaves it alone."""

    __slots__ = ()


def esc(value: Any) -> Html:
    """Escape ``value`` for HTML text and attribute values; :class:`Html` passes through."""
    if isinstance(value, Html):
        return value
    return Html(_html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[Any], sep: str = "") -> Html:
    """Concatenate parts, escaping every part that is not already :class:`Html`."""
    return Html(esc(sep).join(esc(p) for p in parts))


_VOID = frozenset({"img", "br", "hr", "meta", "col", "input", "link"})


def tag(name: str, /, *children: Any, **attrs: Any) -> Html:
    """Build ``<name attrs>children</name>`` with escaped children and attribute values.

    Attribute names use ``_`` for ``-`` (``data_sort`` -> ``data-sort``) and a trailing
    ``_`` for Python keywords (``class_``). ``None`` and ``False`` values are omitted;
    ``True`` writes a bare attribute.
    """
    parts = [name]
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        attr = key.rstrip("_").replace("_", "-")
        parts.append(attr if value is True else f'{attr}="{esc(value)}"')
    opening = f"<{' '.join(parts)}>"
    if name in _VOID:
        return Html(opening)
    return Html(f"{opening}{join(children)}</{name}>")


@dataclass(frozen=True)
class Cell:
    """A table cell: what is shown, the key it sorts by, and optional styling.

    ``sort`` is a number (sorted numerically, missing values last) or text; ``None``
    sorts by the shown text.
    """

    text: Any
    sort: float | str | None = None
    cls: str | None = None
    title: str | None = None


def _cell(value: Any) -> Cell:
    if isinstance(value, Cell):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Cell(value, sort=value)
    return Cell(value)


def _sort_attr(sort: float | str | None) -> str | None:
    if sort is None:
        return None
    if isinstance(sort, float) and sort != sort:  # NaN: the script sorts it last
        return ""
    return repr(float(sort)) if isinstance(sort, (int, float)) else str(sort)


def sortable_table(
    headers: Sequence[Any],
    rows: Iterable[Sequence[Any]],
    *,
    caption: Any = None,
    numeric: Sequence[bool] | None = None,
    table_id: str | None = None,
    cls: str | None = None,
) -> Html:
    """A table whose columns sort when their header is clicked (inline script, no libraries).

    Parameters
    ----------
    headers
        Column titles (escaped).
    rows
        Cell values: :class:`Cell`, numbers (sorted numerically) or text.
    caption
        Optional caption shown above the table.
    numeric
        Per column, whether it is right-aligned as a number; inferred from the first row
        when omitted.
    table_id
        Optional ``id`` of the ``<table>``.
    cls
        Extra CSS class of the ``<table>``.
    """
    body_rows = [[_cell(v) for v in row] for row in rows]
    if numeric is None:
        first = body_rows[0] if body_rows else []
        numeric = [isinstance(c.sort, (int, float)) for c in first] + [False] * len(headers)
    head = tag("tr", *(
        tag("th", tag("button", h, type="button", class_="sort"), scope="col",
            class_="num" if numeric[i] else None, aria_sort="none")
        for i, h in enumerate(headers)
    ))
    body = []
    for row in body_rows:
        body.append(tag("tr", *(
            tag("td", c.text, data_sort=_sort_attr(c.sort), title=c.title,
                class_=" ".join(x for x in ("num" if numeric[i] else "", c.cls or "") if x)
                or None)
            for i, c in enumerate(row)
        )))
    cap = tag("caption", caption) if caption is not None else Html("")
    return tag("div", tag("table", cap, tag("thead", head), tag("tbody", *body),
                          class_=f"sortable {cls}" if cls else "sortable", id=table_id),
               class_="table-wrap")


def interval_cell(parts: tuple[str, str], *, sort: float | None, cls: str | None = None) -> Cell:
    """A cell showing an estimate with its interval in small type below it."""
    est, ci = parts
    text = join([est, tag("span", ci, class_="ci")]) if ci else esc(est)
    return Cell(text, sort=sort, cls=cls)


def note(text: Any) -> Html:
    """A short grey note, e.g. "not available in this run"."""
    return tag("p", text, class_="note")


def figure(img: Html, caption: Any) -> Html:
    """A figure with its caption."""
    return tag("figure", img, tag("figcaption", caption))
