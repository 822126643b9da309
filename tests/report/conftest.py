"""Shared fixtures of the report tests: small hand-made runs and a reader of rendered HTML.

Section tests build the few metrics a section reads, render it, and read the result back
as text and tables (unescaped, whitespace-normalized), so they assert on what a reader
sees rather than on copies of the markup.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import pandas as pd
import pytest

from compaudit.report.rundata import RunData
from compaudit.rundir import METRICS_SCHEMA, jsonable
from compaudit.schema import GateDoc, RunInfo, metrics_from_dict

#: Tags that start a new line of text; inline tags (strong, span, code...) do not.
_BLOCK = {"p", "div", "li", "ul", "ol", "dl", "dt", "dd", "h1", "h2", "h3", "table", "tr", "td",
          "th", "caption", "figure", "figcaption", "section", "header", "footer", "pre", "br"}


@dataclass
class Table:
    """One rendered ``<table>``: caption, header texts, and per row the cell texts and the
    cells' attributes (``data-sort``, ``class``, ``title``)."""

    caption: str = ""
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    attrs: list[list[dict[str, str]]] = field(default_factory=list)

    def column(self, header: str) -> list[str]:
        """The texts of one column, top to bottom."""
        i = self.headers.index(header)
        return [r[i] for r in self.rows]

    def records(self) -> list[dict[str, str]]:
        """Rows as ``{header: text}``."""
        return [dict(zip(self.headers, r)) for r in self.rows]

    def attr(self, row: int, header: str, name: str) -> str | None:
        """An attribute of one body cell."""
        return self.attrs[row][self.headers.index(header)].get(name)


class _Reader(HTMLParser):
    """Collects the page text and every table; tracks the open-tag stack to check nesting."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.tables: list[Table] = []
        self.tags: list[str] = []
        self._open: list[Table] = []
        self._cell: list[str] | None = None
        self._caption: list[str] | None = None
        self._row: tuple[list[str], list[dict[str, str]]] | None = None
        self._head = False

    def handle_starttag(self, name: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(name)
        if name in _BLOCK:
            self.text.append(" ")
        if self._cell is not None:
            # "+9.91 pp" and its interval below it read as "+9.91 pp [+8.73, +11.09]".
            self._cell.append(" ")
        if name == "table":
            self._open.append(Table())
        elif name == "caption":
            self._caption = []
        elif name == "thead":
            self._head = True
        elif name == "tr":
            self._row = ([], [])
        elif name in ("td", "th"):
            self._cell = []
            assert self._row is not None
            self._row[1].append({k: v or "" for k, v in attrs})

    def handle_endtag(self, name: str) -> None:
        if name in _BLOCK:
            self.text.append(" ")
        if name in ("td", "th") and self._cell is not None and self._row is not None:
            self._row[0].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif name == "tr" and self._row is not None and self._open:
            table = self._open[-1]
            if self._head:
                table.headers = self._row[0]
            else:
                table.rows.append(self._row[0])
                table.attrs.append(self._row[1])
            self._row = None
        elif name == "thead":
            self._head = False
        elif name == "caption" and self._caption is not None and self._open:
            self._open[-1].caption = " ".join("".join(self._caption).split())
            self._caption = None
        elif name == "table" and self._open:
            self.tables.append(self._open.pop())

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._caption is not None:
            self._caption.append(data)


def read_html(markup: str) -> _Reader:
    reader = _Reader()
    reader.feed(markup)
    reader.close()
    return reader


@pytest.fixture
def text_of() -> Callable[[str], str]:
    """Rendered HTML -> the text a reader sees (tags dropped, entities decoded, whitespace
    collapsed)."""
    return lambda markup: " ".join("".join(read_html(markup).text).split())


@pytest.fixture
def tables_of() -> Callable[[str], list[Table]]:
    """Rendered HTML -> its tables, in document order."""
    return lambda markup: read_html(markup).tables


@pytest.fixture
def tags_of() -> Callable[[str], list[str]]:
    """Rendered HTML -> the names of its start tags (a user string that became a tag shows
    up here as ``script``, ``i``...)."""
    return lambda markup: read_html(markup).tags


@pytest.fixture
def make_run(tmp_path) -> Callable[..., RunData]:
    """Build a :class:`RunData` from hand-made metrics.

    ``make_run(metrics, tables=..., variants=..., binary=..., **fields)``: the fields every
    run has (schema, options with dense ``dense``, alpha 0.05 and level 0.95, task,
    variants) are filled in unless ``metrics`` gives them; ``tables`` (name -> DataFrame or
    list of dicts) are written as CSV under the run's ``tables/`` and read back as a real
    run's are; other keywords are :class:`RunData` fields (``gate``, ``variants_info``...).
    """
    counter = itertools.count()

    def make(metrics: dict[str, Any] | None = None, *,
             tables: dict[str, Any] | None = None,
             variants: tuple[str, ...] = ("dense", "gmp-90"), binary: bool = True,
             **fields: Any) -> RunData:
        root = tmp_path / f"run{next(counter)}"
        (root / "tables").mkdir(parents=True)
        base: dict[str, Any] = {
            "schema": METRICS_SCHEMA, "created_by": "compaudit test",
            "options": {"dense": "dense", "alpha": 0.05, "level": 0.95},
            "task": {"binary": binary, "num_classes": 2, "n_examples": 100,
                     "shifts": ["clean"]},
            "variants": {v: {"replicas": [0, 1, 2]} for v in variants},
        }
        base.update(metrics or {})
        for name, table in (tables or {}).items():
            pd.DataFrame(table).to_csv(root / "tables" / f"{name}.csv", index=False)
        # Records as the loader builds them from the file's JSON; a section test gives
        # only the fields it reads, the rest are filled in here.
        for key in ("deltas", "shift_deltas"):
            rows = base.get(key) or base.get("robustness", {}).get(key) or []
            for row in rows:
                row.setdefault("grouping", str(row.get("subgroup", "")).split("=")[0])
                row["note"] = row.get("note") or ""
                row.setdefault("n", 100)
        for row in base.get("overindex", []):
            row.setdefault("n_pie", 0)
            row.setdefault("n_non_pie", 0)
        if isinstance(fields.get("gate"), dict):
            gate = {"exit_code": 0, **fields["gate"]}
            gate["checks"] = [{"id": f"check-{i}", "kind": "subgroup_rate", "variant": "gmp-90",
                               "subject": "", "metric": "", "unit": "points",
                               "verdict": "pass", **c}
                              for i, c in enumerate(gate.get("checks", []))]
            fields["gate"] = GateDoc.from_dict(gate, where="gate")
        if isinstance(fields.get("run_info"), dict):
            fields["run_info"] = RunInfo.from_dict({"spec_sha256": "0" * 64, "spec": "",
                                                    **fields["run_info"]}, where="run.json")
        return RunData(run_dir=root, metrics=metrics_from_dict(jsonable(base)), **fields)

    return make
