"""Helpers shared by the pruning methods: context checks, the data sample, the info dict."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from compaudit.compress.masks import sparsity_report
from compaudit.compress.registry import CompressionContext, StepCallback
from compaudit.errors import AuditInputError
from compaudit.models.head import Head

Batch = tuple[torch.Tensor, torch.Tensor]


def require_fine_tune(
    where: str, context: CompressionContext,
) -> Callable[[nn.Module, Sequence[StepCallback]], None]:
    """The context's fine-tuning function; an error naming ``where`` when it has none."""
    if context.fine_tune is None:
        raise AuditInputError(
            f"{where} trains the model, but the CompressionContext has no fine_tune "
            "function; pass CompressionContext(fine_tune=...) (a callable "
            "fine_tune(model, step_callbacks) that trains in place)"
        )
    return context.fine_tune


def require_train_dataset(where: str, context: CompressionContext) -> None:
    if context.train_dataset is None:
        raise AuditInputError(
            f"{where} measures activations and losses on training data, but the "
            "CompressionContext has no train_dataset; pass "
            "CompressionContext(train_dataset=...) (yields (image, label, example_id))"
        )


# --- the data sample and its loss ---------------------------------------------------------


def draw_sample(dataset: Any, *, n_batches: int, batch_size: int, seed: int) -> list[Batch]:
    """The first ``n_batches`` batches of a seeded shuffle of ``dataset``, kept in memory.

    Held in memory so that every pass (scores, losses before and after) sees the very
    same examples without re-reading them.
    """
    gen = torch.Generator().manual_seed(int(seed))
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=RandomSampler(dataset, generator=gen),
        num_workers=0,
    )
    batches: list[Batch] = []
    for item in loader:
        batches.append((item[0], torch.as_tensor(item[1])))
        if len(batches) == n_batches:
            break
    if not batches:
        raise AuditInputError("the training dataset is empty; a pruning sample needs examples")
    return batches


@torch.no_grad()
def mean_loss(model: nn.Module, batches: list[Batch], *, device: str | torch.device,
              head: Head | None = None) -> float:
    """Mean cross-entropy of ``model`` in eval mode over the sample (binary cross-entropy
    on the task's logit with a sigmoid ``head``)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for x, y in batches:
            logits = model(x.to(device))
            total += float((head or Head()).loss(logits.float(), y.to(device),
                                                 reduction="sum"))
            count += len(y)
    finally:
        model.train(was_training)
    return total / count


# --- the info dict --------------------------------------------------------------------------


def pruning_info(
    config: Any,
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    **extra: Any,
) -> dict[str, Any]:
    """``CompressedModel.info``: parameters, achieved sparsity and extras (:func:`compress`
    adds the method's name)."""
    report = sparsity_report(model, masks).to_dict()
    return {
        "parameters": dataclasses.asdict(config),
        "sparsity": report["sparsity"],
        "model_sparsity": report["model_sparsity"],
        "pruned": report["pruned"],
        "prunable": report["prunable"],
        "model_params": report["model_params"],
        "layer_sparsity": {n: v["sparsity"] for n, v in report["layers"].items()},
        **extra,
    }


def optional_penalty(
    context: CompressionContext,
    *,
    n_batches: int,
    batch_size: int,
) -> list[Batch] | None:
    """The sample for a pruning penalty, or None when there is no data or it is disabled."""
    if n_batches == 0 or context.train_dataset is None:
        return None
    return draw_sample(
        context.train_dataset, n_batches=n_batches, batch_size=batch_size, seed=context.seed
    )
