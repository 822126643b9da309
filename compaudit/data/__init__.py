"""Datasets: each yields images for models and rows of ``examples.parquet``."""

from compaudit.data.base import (
    AuditDataset,
    TransformSpec,
    get_dataset,
    list_datasets,
    register_dataset,
)

__all__ = ["AuditDataset", "TransformSpec", "get_dataset", "list_datasets", "register_dataset"]
