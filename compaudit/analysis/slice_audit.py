"""Slice discovery inside an analysis: its settings, and the tables and ``metrics.json``
block built from :func:`compaudit.analysis.slices.find_slices`.

The statistics live in :mod:`compaudit.analysis.slices`; this module only configures
them from ``[analysis.slices]`` (or the command line), aligns the embeddings to the
analysed examples and turns the result into ``tables/slices.csv``,
``tables/slice_members.csv`` and the ``slices`` block. Like the rest of the analysis it
imports no torch; scikit-learn is imported only when slices are found.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from compaudit.analysis.slices import MEMBER_COLUMNS, TABLE_COLUMNS, SliceOptions
from compaudit.config import Checked, plain, setting

if TYPE_CHECKING:  # pragma: no cover
    from compaudit.analysis.population import Population
    from compaudit.analysis.slices import SliceResult
    from compaudit.schema import Slices
    from compaudit.tables import Embeddings

__all__ = ["SliceSettings", "slice_analysis"]

#: One default per setting: those of the statistics' own options.
_DEFAULT = SliceOptions()


@dataclass(frozen=True, kw_only=True)
class SliceSettings(Checked):
    """``[analysis.slices]``: slice discovery from the dense population's embeddings.

    ``enabled``: ``compaudit run`` embeds every evaluation image with the dense replicas
    (penultimate features, averaged over replicas) and finds, per compressed variant,
    the slices of examples where compression raised the error most (default off; the
    demo turns it on). ``n_slices``: mixture components; ``pca_dims``: dimensions the
    embedding is reduced to first (at most its width); ``error_weight``: weight of the
    compression-change column in the mixture; ``discovery_fraction``: share of the
    examples that fit the mixture, the rest estimate each slice's change;
    ``typical``: most typical images kept per slice (the report's thumbnails).
    ``compaudit analyze --embeddings FILE`` finds slices with these settings whatever
    ``enabled`` says. Defaults and ranges are those of
    :class:`compaudit.analysis.slices.SliceOptions`; the level, seed and ``about`` are
    the analysis' own.
    """

    enabled: bool = False
    n_slices: int = setting(_DEFAULT.n_slices, ge=1)
    pca_dims: int = setting(_DEFAULT.pca_dims, ge=1)
    error_weight: float = setting(_DEFAULT.error_weight, ge=0)
    discovery_fraction: float = setting(_DEFAULT.discovery_fraction, gt=0, lt=1)
    typical: int = setting(_DEFAULT.typical, ge=0)

    def options(self, *, level: float, seed: int, about: str) -> SliceOptions:
        """These settings as the statistics' :class:`SliceOptions`, with the analysis'
        level, seed and ``about``."""
        return SliceOptions(n_slices=self.n_slices, pca_dims=self.pca_dims,
                            error_weight=self.error_weight,
                            discovery_fraction=self.discovery_fraction,
                            typical=self.typical, level=level, seed=seed,
                            about=about)  # type: ignore[arg-type]


def slice_analysis(pop: Population, embeddings: Embeddings, attributes: list[str], *,
                   settings: SliceSettings, level: float, seed: int, about: str,
                   bootstrap: int) -> tuple[Slices, dict[str, pd.DataFrame]]:
    """Find the slices of every compressed variant of ``pop`` (the analysed shift).

    ``embeddings`` must hold a row for every example of ``pop``; rows of other examples
    (a shift set's) are ignored. Returns the ``slices`` block and the ``slices`` and
    ``slice_members`` tables.
    """
    from compaudit.analysis.slices import find_slices
    from compaudit.rundir import jsonable
    from compaudit.schema import SliceRow, Slices

    features = embeddings.rows_for(pop.examples["example_id"].astype(str).to_numpy())
    result = find_slices(pop, features, attributes=attributes,
                         options=settings.options(level=level, seed=seed, about=about),
                         bootstrap=bootstrap, source=embeddings.source)
    table = _slice_table(result)
    typical = _typical(result)
    rows = tuple(SliceRow.from_dict(_row(r, typical), where=f"slices.rows[{i}]")
                 for i, r in enumerate(table.to_dict(orient="records")))
    block = Slices(settings=plain(settings), source=embeddings.source,
                   n_examples=int(features.shape[0]), dims=int(features.shape[1]),
                   method=jsonable(result.method), rows=rows)
    members = result.members.loc[:, list(MEMBER_COLUMNS)].reset_index(drop=True)
    return block, {"slices": _csv_form(table), "slice_members": members}


def _slice_table(result: SliceResult) -> pd.DataFrame:
    """The result's table in the documented column order."""
    table = result.table.reset_index(drop=True)
    return table.loc[:, list(TABLE_COLUMNS)]


def _typical(result: SliceResult) -> dict[tuple[str, int], list[str]]:
    """``(variant, slice) -> example ids``, most typical first."""
    out: dict[tuple[str, int], list[str]] = {}
    frame = result.typical.sort_values(["variant", "slice", "rank"], kind="mergesort")
    for variant, slice_, ex in frame[["variant", "slice", "example_id"]].itertuples(
            index=False):
        out.setdefault((str(variant), int(slice_)), []).append(str(ex))
    return out


def _row(record: dict[str, Any], typical: dict[tuple[str, int], list[str]]) -> dict[str, Any]:
    """A table row as the ``slices`` block's row: the documented fields, JSON-ready."""
    from compaudit.rundir import jsonable

    row = dict(jsonable(record))
    row["typical"] = typical.get((str(record["variant"]), int(record["slice"])), [])
    return row


def _csv_form(table: pd.DataFrame) -> pd.DataFrame:
    """Mappings (``over_index``, a ``label_mix`` mapping) as JSON text in the CSV."""
    out = table.copy()
    for col in out.columns:
        if out[col].map(lambda v: isinstance(v, dict)).any():
            out[col] = out[col].map(lambda v: json.dumps(v, sort_keys=True)
                                    if isinstance(v, dict) else v)
    return out

