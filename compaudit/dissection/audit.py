"""Dissection inside an audit run: what the variant jobs dissect, and the metrics block.

Compressed models live only inside their variant job (they are not written to disk),
so each job dissects its own replicas right after compressing them
(:func:`dissect_population`) and writes the per-unit table next to its predictions.
The analyze stage then stacks the tables of every variant (:func:`read_population`) and
turns them into the ``dissection`` block of ``metrics.json`` (:func:`dissection_block`,
pure pandas, from :mod:`compaudit.analysis.dissection`): per variant the
counts and retention of interpretable units with t-intervals across replicas, per
replica the paired numbers the gate reads, and the concept table with the IoU bound
each concept can reach at the chosen quantile.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from compaudit._atomic import atomic_path
from compaudit.analysis.dissection import dissection_block
from compaudit.dissection.compare import units_frame
from compaudit.dissection.concepts import ConceptDataset
from compaudit.dissection.netdissect import DissectionConfig, dissect
from compaudit.rundir import CONCEPTS_FILE, UNITS_FILE

__all__ = ["DissectionPlan", "concept_dataset", "dissect_population", "read_population",
           "dissection_block"]


def concept_dataset(kind: str, root: str | Path, *, split: str, transform: Callable | None,
                    max_images: int = 0, seed: int = 0) -> ConceptDataset:
    """Build the concept dataset of a ``[dissection]`` section (a seeded subset if asked).

    ``kind`` is ``"synthetic-faces"`` (the masks written with the synthetic faces) or
    ``"broden"``; ``split = ""`` keeps every Broden row.
    """
    from compaudit.dissection.concepts import (
        Broden,
        ConceptSubset,
        SyntheticFaceConcepts,
    )
    from compaudit.errors import AuditInputError

    if kind == "synthetic-faces":
        dataset: ConceptDataset = SyntheticFaceConcepts(root, split=split or "all",
                                                        transform=transform)
    elif kind == "broden":
        dataset = Broden(root, split=split or None, transform=transform)
    else:
        raise AuditInputError(f"[dissection].concepts: got {kind!r}; expected "
                              "'synthetic-faces' or 'broden'")
    return ConceptSubset(dataset, n=max_images, seed=seed) if max_images else dataset


@dataclass(frozen=True)
class DissectionPlan:
    """What a variant job dissects (picklable: a dataset factory and a config)."""

    dataset: Callable[[], ConceptDataset]
    config: DissectionConfig
    concepts: str = "synthetic-faces"

    def describe(self) -> dict[str, Any]:
        """JSON-ready configuration for ``metrics.json``."""
        return {"concepts": self.concepts, **asdict(self.config)}


def dissect_population(models: Sequence[Any], plan: DissectionPlan, *, variant: str,
                       out_dir: str | Path) -> pd.DataFrame:
    """Dissect every replica; write ``dissection.parquet`` and the concept table atomically.

    Returns the stacked per-unit table (``variant, replica`` plus the unit columns).
    """
    dataset = _in_memory(plan.dataset())
    results = {}
    for k, model in enumerate(models):
        results[(variant, k)] = dissect(model, dataset, config=plan.config)
    units = units_frame(results)  # refuses an empty population
    last = next(reversed(results.values()))
    concepts = last.concepts.assign(n_images=last.n_images)
    out = Path(out_dir)
    with atomic_path(out / UNITS_FILE) as tmp:
        units.to_parquet(tmp, index=False)
    with atomic_path(out / CONCEPTS_FILE) as tmp:
        concepts.to_csv(tmp, index=False)
    return units


class _Decoded(ConceptDataset):
    """A concept dataset decoded once and held in memory (it is streamed twice per replica)."""

    def __init__(self, dataset: ConceptDataset) -> None:
        super().__init__(transform=None)
        self.concepts = dataset.concepts
        self.items = [dataset[i] for i in range(len(dataset))]

    def __len__(self) -> int:
        return len(self.items)

    def image(self, index: int) -> torch.Tensor:
        return self.items[index][0]

    def _labels(self, index: int) -> np.ndarray:
        return self.items[index][1].numpy()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.items[index]


def _in_memory(dataset: ConceptDataset, budget: int = 512 * 2**20) -> ConceptDataset:
    """``dataset`` decoded in memory when it fits ``budget`` bytes, else itself."""
    if len(dataset) == 0:
        return dataset
    image, labels = dataset[0]
    size = image.element_size() * image.numel() + labels.element_size() * labels.numel()
    return _Decoded(dataset) if size * len(dataset) <= budget else dataset


def read_population(variant_dirs: Mapping[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stack the per-unit tables of every variant; return them with the concept table."""
    units = pd.concat([pd.read_parquet(d / UNITS_FILE) for d in variant_dirs.values()],
                      ignore_index=True)
    first = next(iter(variant_dirs.values()))
    concepts = pd.read_csv(first / CONCEPTS_FILE, keep_default_na=False)
    return units, concepts
