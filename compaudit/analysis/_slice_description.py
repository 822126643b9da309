"""What a slice is (:func:`compaudit.analysis.slices.find_slices`, step 5): its label
mix, each attribute value's over-index against the whole set, a one-line description,
and its most typical members."""

from __future__ import annotations

import numpy as np
import pandas as pd

from compaudit.analysis._cells import cell_label
from compaudit.analysis.population import Population

__all__ = ["CONFIDENT", "DESCRIBE_MIN_EXCESS", "DESCRIBE_TOP", "LABEL_MIX_TOP",
           "TYPICAL_COLUMNS", "describe", "typical_members"]

#: Columns of :attr:`~compaudit.analysis.slices.SliceResult.typical`, in order.
TYPICAL_COLUMNS = ["variant", "slice", "rank", "example_id"]
#: An attribute value is named in a description when its share in the slice exceeds
#: its share in the whole set by at least this much (in share units).
DESCRIBE_MIN_EXCESS = 0.10
#: At most this many attribute values (label included) are named in a description.
DESCRIBE_TOP = 2
#: Labels kept in ``label_mix`` (the most frequent in the slice).
LABEL_MIX_TOP = 5
#: Typical members: posteriors from this value up are equally confident, and the most
#: central of them (highest density) are shown first.
CONFIDENT = 0.99


def describe(table: pd.DataFrame, pop: Population, slice_of: np.ndarray,
             attributes: list[str]) -> pd.DataFrame:
    """Add label mix, over-index of each attribute value and a one-line description."""
    columns = {"label": pd.Series(pop.labels)}
    for a in attributes:
        columns[a] = pop.examples[f"attr.{a}"].reset_index(drop=True)
    whole = {key: col.value_counts(normalize=True) for key, col in columns.items()}
    mixes, overs, texts = [], [], []
    for s in table["slice"].to_numpy():
        inside = slice_of == s
        shares = {key: col[inside].value_counts(normalize=True) for key, col in columns.items()}
        # value_counts sorts by share, largest first.
        mixes.append({str(k): float(v) for k, v in shares["label"].head(LABEL_MIX_TOP).items()})
        over: dict[str, float] = {}
        named: list[tuple[float, str]] = []
        for key in columns:
            for value, share in whole[key].items():
                if share == 0:  # an unused level of a categorical column
                    continue
                here = float(shares[key].get(value, 0.0))
                label = cell_label([(key, value)])
                if key != "label":
                    over[label] = here / float(share)
                if here - float(share) >= DESCRIBE_MIN_EXCESS:
                    named.append((here - float(share), f"{label} ({here:.0%} vs "
                                                       f"{float(share):.0%} overall)"))
        overs.append(over)
        named.sort(key=lambda t: -t[0])
        texts.append(", ".join(t for _, t in named[:DESCRIBE_TOP])
                     or "no label or attribute value over-represented")
    return table.assign(label_mix=mixes, over_index=overs, description=texts)


def typical_members(pop: Population, variant: str, assign: np.ndarray, post: np.ndarray,
                    density: np.ndarray, rank: dict[int, int], typical: int) -> pd.DataFrame:
    """Each slice's ``typical`` members: highest embedding posterior, where posteriors
    of at least :data:`CONFIDENT` count as equal and the highest density under the
    slice's component comes first (the highest posteriors alone lie on the far side
    of the slice from its neighbours, not at its centre)."""
    rows = []
    ids = pop.examples["example_id"].to_numpy()
    for component, s in rank.items():
        idx = np.flatnonzero(assign == component)
        confident = np.minimum(post[idx, component], CONFIDENT)
        order = np.lexsort((-density[idx, component], -confident))
        best = idx[order[:typical]]
        rows.append(pd.DataFrame({"variant": variant, "slice": s,
                                  "rank": np.arange(len(best), dtype=np.int64),
                                  "example_id": ids[best]}))
    frame = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=TYPICAL_COLUMNS)
    return frame.sort_values(["slice", "rank"], kind="stable").reset_index(drop=True)
