"""Dissection compared across variants: stacking per-replica results into one table.

The comparison itself (counts, retention against dense, drops, t-intervals across
replicas) is pure pandas and lives in :mod:`compaudit.analysis.dissection`, so that
``compaudit analyze --dissection`` runs it without torch; it is re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from compaudit.analysis.dissection import (
    REPLICA_METRICS,
    compare_dissections,
    comparison_metrics,
)
from compaudit.dissection.netdissect import UNIT_COLUMNS, DissectionResult
from compaudit.errors import AuditInputError

__all__ = ["units_frame", "compare_dissections", "comparison_metrics", "REPLICA_METRICS"]


def units_frame(results: Mapping[tuple[str, int], DissectionResult]) -> pd.DataFrame:
    """Stack per-unit tables keyed by ``(variant, replica)`` into one frame."""
    frames = [r.units.assign(variant=v, replica=int(k)) for (v, k), r in results.items()]
    if not frames:
        raise AuditInputError("dissection results: expected at least one (variant, replica)")
    return pd.concat(frames, ignore_index=True)[["variant", "replica", *UNIT_COLUMNS]]
