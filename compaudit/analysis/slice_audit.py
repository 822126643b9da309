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

from compaudit.config import Checked, plain, setting

if TYPE_CHECKING:  # pragma: no cover
    from compaudit.analysis.population import Population
    from compaudit.analysis.slices import SliceOptions, SliceResult
    from compaudit.schema import Slices
    from compaudit.tables import Embeddings

__all__ = ["SliceSettings", "SLICE_COLUMNS", "MEMBER_COLUMNS", "slice_analysis"]

#: Columns of ``tables/slices.csv`` (docs/outputs.md), in order; the description
#: columns follow the numbers.
SLICE_COLUMNS = ("variant", "slice", "n", "n_test", "dense_error", "compressed_error",
                 "change", "change_lo", "change_hi", "p", "q", "label_mix", "description",
                 "over_index")
#: Columns of ``tables/slice_members.csv``.
MEMBER_COLUMNS = ("variant", "slice", "example_id")


@dataclass(frozen=True, kw_only=True)
class SliceSettings(Checked):
    """``[analysis.slices]``: slice discovery from the dense population's embeddings.

    ``enabled``: ``compaudit run`` embeds every evaluation image with the dense replicas
    (penultimate features, averaged over replicas) and finds, per compressed variant,
    the slices of examples where compression raised the error most (default off; the
    demo turns it on). ``n_slices``: mixture components; ``pca_dims``: dimensions the
    embedding is reduced to first (at most its width); ``error_weight``: weight of the
    compression-change columns in the mixture; ``discovery_fraction``: share of the
    examples that fit the mixture, the rest estimate each slice's change;
    ``typical``: most typical images kept per slice (the report's thumbnails).
    ``compaudit analyze --embeddings FILE`` finds slices with these settings whatever
    ``enabled`` says. The defaults are those of
    :class:`compaudit.analysis.slices.SliceOptions`.
    """

    enabled: bool = False
    n_slices: int = setting(8, ge=2)
    pca_dims: int = setting(32, ge=1)
    error_weight: float = setting(5.0, ge=0)
    discovery_fraction: float = setting(0.5, gt=0, lt=1)
    typical: int = setting(8, ge=0)

    def options(self, *, level: float, seed: int) -> SliceOptions:
        """These settings as the statistics' :class:`SliceOptions` (the analysis' level
        and seed)."""
        from compaudit.analysis.slices import SliceOptions

        return SliceOptions(n_slices=self.n_slices, pca_dims=self.pca_dims,
                            error_weight=self.error_weight,
                            discovery_fraction=self.discovery_fraction,
                            typical=self.typical, level=level, seed=seed)


def slice_analysis(pop: Population, embeddings: Embeddings, attributes: list[str], *,
                   settings: SliceSettings, level: float, seed: int,
                   bootstrap: int) -> tuple[Slices, dict[str, pd.DataFrame]]:
    """Find the slices of every compressed variant of ``pop`` (the analysed shift).

    ``embeddings`` must hold a row for every example of ``pop``; rows of other examples
    (a shift set's) are ignored. Returns the ``slices`` block and the ``slices`` and
    ``slice_members`` tables.
    """
    from compaudit.analysis.slices import find_slices
    from compaudit.schema import SliceRow, Slices

    features = embeddings.rows_for(pop.examples["example_id"].astype(str).to_numpy())
    if settings.pca_dims > features.shape[1]:
        # PCA cannot return more dimensions than the embedding has; say so, not fail.
        settings = _narrowed(settings, features.shape[1])
    options = settings.options(level=level, seed=seed)
    result = find_slices(pop, features, attributes=attributes, options=options,
                         bootstrap=bootstrap)
    table = _slice_table(result)
    typical = _typical(result)
    rows = tuple(SliceRow.from_dict(_row(r, typical), where=f"slices.rows[{i}]")
                 for i, r in enumerate(table.to_dict(orient="records")))
    block = Slices(settings=plain(settings), source=embeddings.source,
                   n_examples=int(features.shape[0]), dims=int(features.shape[1]),
                   rows=rows)
    members = result.members.loc[:, list(MEMBER_COLUMNS)].reset_index(drop=True)
    return block, {"slices": _csv_form(table), "slice_members": members}


def _narrowed(settings: SliceSettings, dims: int) -> SliceSettings:
    from dataclasses import replace

    return replace(settings, pca_dims=dims)


def _slice_table(result: SliceResult) -> pd.DataFrame:
    """The result's table with the documented columns first (extra ones kept after)."""
    table = result.table.reset_index(drop=True)
    missing = [c for c in SLICE_COLUMNS if c not in table.columns]
    if missing:  # the statistics broke their contract: an internal error, not the user's
        raise RuntimeError(f"find_slices returned no column(s) {missing}")
    extra = [c for c in table.columns if c not in SLICE_COLUMNS]
    return table.loc[:, [*SLICE_COLUMNS, *extra]]


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
    from compaudit.schema import SliceRow

    fields = set(SliceRow.__dataclass_fields__)
    row = {k: v for k, v in jsonable(record).items() if k in fields}
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

