"""Repair a pruned variant: fine-tune it, masks kept, under subgroup error bounds.

The handler of ``method = "constrained_finetune"``
(:class:`~compaudit.configs.compress.ConstrainedFinetuneConfig`). Replica k starts from
the base variant's compressed replica k (``context.base_model``); every zero of its
prunable weights stays zero (the masks are read from the zeros and re-applied after
every step), so its sparsity is the base's exactly. The groups are the cells of the
label crossed with the protected attributes: a group's error is its false-negative
rate (label 1) or false-positive rate (label 0), the quantities the gate bounds.

The problem, on the training split, for each group g::

    minimise  loss(w)   subject to   error_g(w) - error_g(dense replica k) <= max_increase

is solved as a Lagrangian min-max with ``cooper-optim`` (``cooper``; the library of
Balancing Act, Hashemizadeh et al., ICLR 2024) and *proxy constraints* (Cotter et al.,
2019): the 0-1 error is not differentiable, so the weights follow the gradient of
``loss + sum_g lambda_g * surrogate_g`` (the group's mean cross-entropy), while each
multiplier ``lambda_g`` rises by ``dual_lr`` times the group's true violation (its 0-1
error, a running estimate over the last ``error_window`` batches, minus the bound)
and falls back to zero once the bound holds. ``max_increase = false`` runs the same
loop with no constraint: plain fine-tuning with the same budget, the baseline.
``distill`` mixes distillation from the dense replica into the objective, and
``relative_to = "dense"`` bounds each group's disagreement with the dense replica
instead of its error increase (docs/repair.md says what each did on the demo).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import cooper
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from compaudit.compress._common import pruning_info
from compaudit.compress.masks import MaskCallback, prunable_parameters
from compaudit.compress.registry import CompressedModel, CompressionContext
from compaudit.configs.compress import ConstrainedFinetuneConfig
from compaudit.configs.head import Head
from compaudit.errors import AuditInputError
from compaudit.models.training import cosine_factor, epoch_loader

__all__ = ["GroupIndex", "SubgroupErrorProblem", "group_index", "group_errors",
           "repair_model"]


class GroupIndex:
    """Each training example's group: its label crossed with a cell of the protected
    attributes. ``names[g]`` reads like ``label=1, Male=True, Young=False``."""

    def __init__(self, codes: dict[str, int], names: Sequence[str]) -> None:
        self.codes, self.names = codes, tuple(names)

    def __len__(self) -> int:
        return len(self.names)

    def of(self, ids: Sequence[str]) -> torch.Tensor:
        """Group indices (int64) of the examples ``ids``."""
        return torch.tensor([self.codes[str(i)] for i in ids], dtype=torch.int64)


def group_index(examples: pd.DataFrame, protected: Sequence[str], *, where: str = "") -> GroupIndex:
    """The :class:`GroupIndex` of a dataset's ``examples()`` table.

    Raises :class:`AuditInputError` when an ``attr.<Name>`` column is missing.
    """
    cols = [f"attr.{a}" for a in protected]
    missing = [c for c in cols if c not in examples.columns]
    if missing:
        raise AuditInputError(f"{where}[data].protected: the training set has no column(s) "
                              f"{', '.join(missing)}; expected an attribute column for every "
                              "protected attribute, which constrained_finetune bounds")
    keys = ["label", *cols]
    cells = examples[keys].astype(str).agg(", ".join, axis=1) if cols else \
        examples["label"].astype(str)
    ordered = sorted(set(cells))
    code = {c: g for g, c in enumerate(ordered)}
    names = [", ".join(f"{k.removeprefix('attr.')}={v}" for k, v in zip(keys, c.split(", ")))
             for c in ordered]
    return GroupIndex(dict(zip(examples["example_id"].astype(str), cells.map(code))), names)


class Teacher:
    """The dense reference of a repair: dense replica k alone, or the whole dense
    population. Its probabilities are the mean of its models' (what ``distill``
    matches), its prediction their modal prediction (ties to the larger class, as
    :func:`compaudit.analysis.pie.modal_prediction`), which a PIE is measured against."""

    def __init__(self, models: Sequence[nn.Module], head: Head) -> None:
        self.models, self.head = tuple(models), head

    def to(self, device: str) -> Teacher:
        """Move and set every model to eval mode (BatchNorm's running statistics)."""
        for m in self.models:
            m.to(device).eval()
        return self

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean probability ``(batch,)`` of the positive class (sigmoid head) or
        ``(batch, classes)`` of every class (softmax head), and the modal prediction
        ``(batch,)`` of the models, from one pass of each."""
        outs = [m(images).float() for m in self.models]
        probs = [self.head.logit(o).sigmoid() if self.head.sigmoid else o.softmax(-1)
                 for o in outs]
        preds = torch.stack([self.head.predict(o) for o in outs])
        votes = F.one_hot(preds, int(preds.max()) + 1).sum(0)
        # argmax takes the first maximum: flipped, the larger class wins a tie.
        return torch.stack(probs).mean(0), votes.shape[-1] - 1 - votes.flip(-1).argmax(-1)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The modal prediction of the models ``(batch,)``."""
        return self(images)[1]


@torch.no_grad()
def group_errors(model: nn.Module, dataset: Any, groups: GroupIndex, *, head: Head,
                 device: str = "cpu", batch_size: int = 256,
                 reference: nn.Module | Teacher | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each group's 0-1 error rate of ``model`` on ``dataset`` (eval mode), and its size;
    with ``reference`` (a model or a :class:`Teacher`), the rate at which it disagrees
    with the reference's (modal) predictions."""
    was_training = model.training
    model.eval()
    if isinstance(reference, nn.Module):
        reference = Teacher((reference,), head)
    if reference is not None:
        reference.to(device)
    wrong = torch.zeros(len(groups), dtype=torch.float64)
    count = torch.zeros(len(groups), dtype=torch.float64)
    for images, labels, ids in DataLoader(dataset, batch_size=batch_size):
        g = groups.of(ids)
        labels = torch.as_tensor(labels) if reference is None else \
            reference.predict(images.to(device)).cpu()
        miss = (head.predict(model(images.to(device)).float()).cpu() != labels).double()
        wrong.index_add_(0, g, miss)
        count.index_add_(0, g, torch.ones_like(miss))
    model.train(was_training)
    return wrong / count.clamp(min=1), count


def _objective(out: torch.Tensor, labels: torch.Tensor, losses: torch.Tensor,
               teacher: torch.Tensor | None, distill: float, head: Head) -> torch.Tensor:
    """The mean training loss, mixed with ``distill`` times the divergence from the
    dense reference's probabilities on the batch (``teacher``, :meth:`Teacher.probs`)."""
    loss = losses.mean()
    if teacher is None or distill == 0:
        return loss
    if head.sigmoid:
        kd = F.binary_cross_entropy_with_logits(head.logit(out), teacher)
    else:
        kd = F.kl_div(out.log_softmax(-1), teacher, reduction="batchmean")
    return (1 - distill) * loss + distill * kd


class SubgroupErrorProblem(cooper.ConstrainedMinimizationProblem):
    """``min loss`` s.t. ``error_g <= bound_g`` for every group, with proxy constraints.

    One :class:`cooper.Constraint` over the groups with a dense multiplier. The
    violation the weights see is each group's mean cross-entropy in the batch (its
    gradient is all that enters the primal update); the strict violation the
    multipliers see is the group's running 0-1 error minus its bound.
    """

    def __init__(self, bound: torch.Tensor, *, start: torch.Tensor, window: int,
                 head: Head, distill: float = 0.0) -> None:
        super().__init__()
        self.bound = bound.float()
        self.head = head
        self.distill = distill
        self.multiplier = cooper.multipliers.DenseMultiplier(num_constraints=len(bound))
        self.constraint = cooper.Constraint(multiplier=self.multiplier,
                                            constraint_type=cooper.ConstraintType.INEQUALITY)
        # Running 0-1 error per group (an exponential window of ``window`` batches),
        # started at the base's training-split error so no group starts from nothing.
        self.decay = 1.0 - 1.0 / window
        self._wrong = start.double() * window
        self._seen = torch.full_like(self._wrong, float(window))

    @property
    def error(self) -> torch.Tensor:
        """The running 0-1 error of every group."""
        return (self._wrong / self._seen.clamp(min=1e-12)).float()

    def compute_cmp_state(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                          groups: torch.Tensor, teacher: torch.Tensor | None = None,
                          targets: torch.Tensor | None = None) -> cooper.CMPState:
        out = model(images).float()
        losses = self.head.loss(out, labels, reduction="none")
        # What a group's error is counted against: the labels, or the dense replica's
        # predictions (``relative_to = "dense"``).
        targets = labels if targets is None else targets
        group_losses = losses if targets is labels else \
            self.head.loss(out, targets, reduction="none")
        n = len(self.bound)
        count = torch.zeros(n, device=out.device).index_add_(0, groups, torch.ones_like(losses))
        surrogate = torch.zeros(n, device=out.device).index_add_(0, groups, group_losses) \
            / count.clamp(min=1)
        with torch.no_grad():
            miss = (self.head.predict(out) != targets).double().cpu()
            wrong = torch.zeros(n, dtype=torch.float64).index_add_(0, groups.cpu(), miss)
            self._wrong = self.decay * self._wrong + wrong
            self._seen = self.decay * self._seen + count.double().cpu()
        state = cooper.ConstraintState(
            violation=surrogate - self.bound.to(out.device),
            strict_violation=(self.error - self.bound).to(out.device))
        loss = _objective(out, labels, losses, teacher, self.distill, self.head)
        return cooper.CMPState(loss=loss, observed_constraints={self.constraint: state})


def repair_model(model: nn.Module, dense: nn.Module, dataset: Any, groups: GroupIndex, *,
                 config: ConstrainedFinetuneConfig, head: Head | None = None,
                 seed: int = 0, device: str = "cpu",
                 population: Sequence[nn.Module] = ()) -> dict[str, Any]:
    """Fine-tune the pruned ``model`` in place, zeros kept; returns what was measured.

    ``dense`` is the reference of the error bound (dense replica k); ``population``
    the dense replicas, which ``config.teacher = "population"`` distils from and
    measures disagreement against. With ``config.max_increase`` ``None`` the loop runs
    unconstrained. The batches and the
    cosine learning rate are the training loop's (:func:`~compaudit.models.training.
    epoch_loader`, :func:`~compaudit.models.training.cosine_factor`); what is the
    repair's own is the step (:class:`_RepairStep`).

    Returns
    -------
    dict
        ``groups`` (names), ``dense_error``, ``base_error``, ``repaired_error``
        (training split, per group), ``multipliers`` (final; empty unconstrained),
        ``steps`` and ``seconds``; with ``relative_to = "dense"`` also
        ``base_disagreement`` and ``repaired_disagreement`` (per group, with the teacher's
        modal prediction).
    """
    head = head or Head()
    if config.teacher == "population" and not population:
        raise AuditInputError(f"constrained_finetune (base {config.base!r}): teacher = "
                              "\"population\" needs the dense replicas; run it through an "
                              "audit spec, which hands them to its job")
    teacher = Teacher(population if config.teacher == "population" else (dense,), head)
    keep = MaskCallback({n: p.detach() != 0 for n, p in prunable_parameters(model).items()})
    torch.manual_seed(seed)
    model.to(device)
    dense.to(device)
    started = time.perf_counter()
    errors = partial(group_errors, dataset=dataset, groups=groups, head=head, device=device)
    dense_error, base_error = errors(dense)[0], errors(model)[0]
    # With relative_to = "dense" the constrained rate is disagreement with dense replica k.
    base_flips = errors(model, reference=teacher)[0] if config.relative_to == "dense" else None
    step = _RepairStep(model, teacher.to(device), config=config, head=head, groups=groups, device=device,
                       total=math.ceil(len(dataset) / config.batch_size) * config.epochs,
                       dense_error=dense_error,
                       start=base_error if base_flips is None else base_flips)
    model.train()
    done = 0
    for epoch in range(1, config.epochs + 1):
        for batch in epoch_loader(dataset, batch_size=config.batch_size, seed=seed,
                                  epoch=epoch):
            step(*batch)
            done += 1
            keep(done, model)  # pruned weights back to zero after every step
    model.eval()
    extra = {} if base_flips is None else {
        "base_disagreement": base_flips.tolist(),
        "repaired_disagreement": errors(model, reference=teacher)[0].tolist()}
    return {
        "groups": list(groups.names),
        "dense_error": dense_error.tolist(),
        "base_error": base_error.tolist(),
        "repaired_error": errors(model)[0].tolist(),
        "multipliers": [] if step.problem is None else
        step.problem.multiplier.weight.detach().cpu().tolist(),
        "steps": done,
        "seconds": time.perf_counter() - started,
        **extra,
    }


class _RepairStep:
    """One optimisation step of the repair: the Lagrangian's simultaneous primal-dual
    step (``cooper``), or a plain step of the objective when unconstrained; then the
    learning rates' schedule."""

    def __init__(self, model: nn.Module, teacher: Teacher, *,
                 config: ConstrainedFinetuneConfig, head: Head, groups: GroupIndex,
                 device: str, total: int, dense_error: torch.Tensor,
                 start: torch.Tensor) -> None:
        self.model, self.teacher, self.config = model, teacher, config
        self.head, self.groups, self.device = head, groups, device
        self.flips = config.relative_to == "dense"
        params = [p for p in model.parameters() if p.requires_grad]
        self.primal = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                      weight_decay=config.weight_decay)
        self.schedules = [torch.optim.lr_scheduler.LambdaLR(self.primal, cosine_factor(total))]
        self.problem: SubgroupErrorProblem | None = None
        self.optimizer: cooper.optim.SimultaneousOptimizer | None = None
        if config.max_increase is None:
            return
        bound = torch.full_like(dense_error, config.max_increase) if self.flips \
            else dense_error + config.max_increase
        self.problem = SubgroupErrorProblem(bound.float(), start=start,
                                            window=config.error_window, head=head,
                                            distill=config.distill)
        self.problem.to(device)
        dual = torch.optim.SGD(self.problem.dual_parameters(), lr=config.dual_lr, maximize=True)
        # The multipliers' steps shrink with the weights': plain gradient descent-ascent
        # circles the saddle point, and the run should end near it, not wherever the
        # last circle was.
        if config.dual_decay:
            self.schedules.append(torch.optim.lr_scheduler.LambdaLR(dual, cosine_factor(total)))
        self.optimizer = cooper.optim.SimultaneousOptimizer(
            cmp=self.problem, primal_optimizers=self.primal, dual_optimizers=dual)

    def __call__(self, images: torch.Tensor, labels: Any, ids: Sequence[str]) -> None:
        images = images.to(self.device)
        labels = torch.as_tensor(labels).to(self.device)
        teacher = targets = None
        if self.config.distill or self.flips:
            probs, modal = self.teacher(images)
            teacher = probs if self.config.distill else None
            targets = modal if self.flips else None
        if self.optimizer is not None:
            self.optimizer.roll(compute_cmp_state_kwargs={
                "model": self.model, "images": images, "labels": labels,
                "groups": self.groups.of(ids).to(self.device), "teacher": teacher,
                "targets": targets})
        else:
            self.primal.zero_grad(set_to_none=True)
            out = self.model(images).float()
            _objective(out, labels, self.head.loss(out, labels, reduction="none"), teacher,
                       self.config.distill, self.head).backward()
            self.primal.step()
        for schedule in self.schedules:
            schedule.step()


def _constrained_finetune(model: nn.Module, config: ConstrainedFinetuneConfig,
                          context: CompressionContext) -> CompressedModel:
    """The registered handler: ``model`` is dense replica k, ``context.base_model`` the
    base variant's replica k, which is repaired in place and returned."""
    base = context.base_model
    if base is None or context.train_dataset is None:
        raise AuditInputError(f"constrained_finetune (base {config.base!r}): needs the base "
                              "variant's compressed replica and the training set; run it "
                              "through an audit spec, which hands both to its job")
    examples = context.train_dataset.examples()
    groups = group_index(examples, context.protected)
    # The base's masks are its zeros; the tensors it pruned are those holding any (the
    # layers it kept dense, e.g. the first convolution, have none).
    masks = {n: p.detach() != 0 for n, p in prunable_parameters(base).items()
             if bool((p == 0).any())}
    report = repair_model(base, model, context.train_dataset, groups, config=config,
                          head=context.head, seed=context.seed, device=context.device,
                          population=context.dense_population)
    # Sparsity over the tensors the base pruned, as the base's own record counts it.
    info = pruning_info(config, base, masks, repair=report)
    return CompressedModel(model=base, masks=masks, info=info)
