"""Logits -> rows of the predictions contract: pred, p_true, p_pred, p_pos, top-k.

:class:`Task` turns a batch of logits of several models into predictions (restricted
to a class mask when the dataset has one); :class:`Outputs` collects them per member
and :func:`to_frame` lays them out as one row per (variant, replica, example).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from compaudit import tables
from compaudit.errors import AuditInputError
from compaudit.models.head import Head
from compaudit.predict.stacking import Member

__all__ = ["Outputs", "Task", "check_labels", "check_logits", "to_frame",
           "MIN_CLASSES_FOR_TOPK"]

#: Many-class tasks (at least this many classes) get top-k columns.
MIN_CLASSES_FOR_TOPK = 5


class Outputs:
    """Result arrays ``(members, examples[, k])`` per column, allocated on first use."""

    def __init__(self, n_members: int, n_examples: int) -> None:
        self.m, self.n = n_members, n_examples
        self.arrays: dict[str, np.ndarray] = {}
        self.ids: list[str] = []

    def store(self, rows: list[int], start: int, res: dict[str, torch.Tensor]) -> None:
        """Put one batch's results of the members ``rows`` at columns ``start ..``."""
        for name, tensor in res.items():
            values = tensor.numpy()
            if name not in self.arrays:
                self.arrays[name] = np.empty((self.m, self.n, *values.shape[2:]), values.dtype)
            self.arrays[name][rows, start:start + values.shape[1]] = values


class Task:
    """What the logits mean: class count, optional class mask, top-k width.

    Parameters
    ----------
    num_classes
        Width of the models' logits.
    mask
        Sorted class indices predictions are restricted to, or ``None``.
    top_k
        Requested top-k width (``None``: no top-k columns).
    device
        Where the logits live.
    head
        How outputs become probabilities (default softmax). A sigmoid head makes a
        binary task (``num_classes`` 2) from one logit of the outputs.
    """

    def __init__(self, *, num_classes: int, mask: np.ndarray | None, top_k: int | None,
                 device: torch.device, head: Head | None = None) -> None:
        self.head = head or Head()
        if self.head.sigmoid and mask is not None:
            raise AuditInputError(
                "the dataset restricts predictions to a class_mask, but the head is "
                "'sigmoid' (one binary logit); expected head = \"softmax\" over the "
                "dataset's classes")
        if self.head.sigmoid:
            num_classes = 2
        if mask is not None and mask.max() >= num_classes:
            raise AuditInputError(
                f"the dataset's class_mask names class {int(mask.max())} but the models "
                f"have {num_classes} classes; expected mask indices below {num_classes}"
            )
        self.num_classes = num_classes
        n_eff = num_classes if mask is None else len(mask)
        self.k = min(top_k, n_eff) if top_k is not None and n_eff >= MIN_CLASSES_FOR_TOPK else 0
        self.binary = mask is None and num_classes == 2
        self.mask = None if mask is None else torch.as_tensor(mask, device=device)
        self.mask_pos = None  # position of each class inside the mask, -1 outside it
        if mask is not None:
            pos = torch.full((num_classes,), -1, dtype=torch.int64)
            pos[torch.as_tensor(mask)] = torch.arange(len(mask))
            self.mask_pos = pos.to(device)

    def summarize(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits ``(models, batch, classes)`` -> columns ``(models, batch[, k])`` on the CPU.

        ``pred``, ``p_true`` and ``p_pred`` (probability of the predicted class) always;
        ``p_pos`` for two-class tasks; ``top`` for many-class tasks. With a mask, the
        softmax, argmax and top-k run over the masked classes only.
        """
        logits = logits.float()
        if self.head.sigmoid:
            return self._sigmoid(logits, labels)
        lab = labels if self.mask_pos is None else self.mask_pos[labels]
        sub = logits if self.mask is None else logits.index_select(-1, self.mask)
        probs = torch.softmax(sub, dim=-1)
        if self.k:
            # A stable sort puts tied classes in index order, so top[0] equals argmax
            # (which returns the first maximum) and reruns give the same order.
            local_top = torch.sort(sub, dim=-1, descending=True, stable=True).indices[..., : self.k]
            local_pred = local_top[..., 0]
        else:
            local_top, local_pred = None, sub.argmax(-1)
        out = {
            "pred": local_pred if self.mask is None else self.mask[local_pred],
            "p_true": probs.gather(-1, lab.expand(local_pred.shape).unsqueeze(-1)).squeeze(-1),
            "p_pred": probs.gather(-1, local_pred.unsqueeze(-1)).squeeze(-1),
        }
        if self.binary:
            out["p_pos"] = probs[..., 1]
        if local_top is not None:
            top = local_top if self.mask is None else self.mask[local_top]
            out["top"] = top.to(torch.int32)
        return {k: v.cpu() for k, v in out.items()}

    def _sigmoid(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """A sigmoid head: ``p_pos = sigmoid(z)`` of the task's logit, ``pred = p_pos >= 0.5``."""
        p_pos = torch.sigmoid(self.head.logit(logits))
        pred = (p_pos >= 0.5).long()
        p_neg = 1 - p_pos
        positive = labels.expand(pred.shape) == 1
        return {k: v.cpu() for k, v in {
            "pred": pred,
            "p_true": torch.where(positive, p_pos, p_neg),
            "p_pred": torch.where(pred == 1, p_pos, p_neg),
            "p_pos": p_pos,
        }.items()}


def check_logits(logits: torch.Tensor, members: list[Member], num_classes: int | None,
                 head: Head | None = None) -> None:
    """Raise unless ``logits`` is ``(models, batch, num_classes)``, finite, 2+ classes
    (a sigmoid head: ``(models, batch, head.outputs)``)."""
    if head is not None and head.sigmoid:
        if logits.ndim != 3 or logits.shape[-1] != head.outputs:
            who = members[0]
            raise AuditInputError(
                f"models[{who.variant!r}] replica {who.replica} returned output of shape "
                f"{tuple(logits.shape[1:])}; the head is {head.describe()}: expected shape "
                f"(batch, {head.outputs}) ([model].outputs)")
        num_classes = None
    elif logits.ndim != 3 or logits.shape[-1] < 2:
        who = members[0]
        raise AuditInputError(
            f"models[{who.variant!r}] replica {who.replica} returned output of shape "
            f"{tuple(logits.shape[1:])}; expected logits of shape (batch, num_classes) "
            "with num_classes >= 2 (binary tasks: two logits, or one with [model].head = "
            "\"sigmoid\")"
        )
    if num_classes is not None and logits.shape[-1] != num_classes:
        who = members[0]
        raise AuditInputError(
            f"models[{who.variant!r}] replica {who.replica} returned {logits.shape[-1]} "
            f"logits but other models or the dataset have {num_classes} classes; expected "
            "every model to classify the dataset's classes"
        )
    finite = torch.isfinite(logits).flatten(1).all(1)
    if not bool(finite.all()):
        who = members[int((~finite).nonzero()[0, 0])]
        raise AuditInputError(
            f"models[{who.variant!r}] replica {who.replica} produced NaN or infinite "
            "logits; check the checkpoint and the input normalization"
        )


def check_labels(labels: torch.Tensor, ids: list[str], task: Task) -> None:
    """Raise naming the first example whose label the models cannot predict."""
    bad = (labels < 0) | (labels >= task.num_classes)
    what = f"outside 0..{task.num_classes - 1}"
    if not bool(bad.any()) and task.mask_pos is not None:
        bad = task.mask_pos.cpu()[labels] < 0
        what = "not in the dataset's class_mask"
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        raise AuditInputError(
            f"example {ids[first]!r} has label {int(labels[first])}, {what}; expected "
            "labels that the models can predict"
        )


def to_frame(out: Outputs, members: list[Member]) -> pd.DataFrame:
    """One row per (variant, replica, example), in member then example order."""
    ids = pd.Index(out.ids)
    if not ids.is_unique:
        dup = ids[ids.duplicated()][0]
        raise AuditInputError(
            f"the dataset yields example_id {dup!r} more than once; expected unique ids"
        )
    variants = list(dict.fromkeys(m.variant for m in members))
    v_codes = np.array([variants.index(m.variant) for m in members], np.int32)
    m, n = out.m, out.n
    frame = pd.DataFrame({
        "variant": pd.Categorical.from_codes(np.repeat(v_codes, n), categories=variants),
        "replica": np.repeat(np.array([mb.replica for mb in members], np.int32), n),
        "example_id": pd.Categorical.from_codes(
            np.tile(np.arange(n, dtype=np.int64), m), categories=ids),
    })
    for name in ("pred", "p_true", "p_pred", "p_pos"):
        if name in out.arrays:
            frame[name] = out.arrays[name].ravel()
    if "top" in out.arrays:
        top = out.arrays["top"].reshape(m * n, -1)
        for j in range(top.shape[1]):
            frame[f"{tables.TOPK_PREFIX}{j}"] = top[:, j]
    return frame
