"""Model heads: how a model's outputs become class probabilities, and its training loss.

``[model].head`` in an audit spec (:class:`compaudit.spec.ModelSpec`):

* ``"softmax"`` (default): the model returns one logit per class; probabilities are
  their softmax, the prediction the argmax, the loss cross-entropy.
* ``"sigmoid"``: a binary task read from one logit ``z``: ``p_pos = sigmoid(z)``,
  ``pred = p_pos >= 0.5``, the loss binary cross-entropy with logits. The model returns
  ``outputs`` logits: one (a single-logit binary classifier), or many (a multi-label
  model, e.g. a 40-attribute CelebA head), of which ``output`` is the task's.

The head is applied to the model's full output wherever outputs are read (prediction,
training, fine-tuning, the losses of pruning scores); the model itself is never
wrapped, so it is compressed, exported to ONNX and loaded with its own output width.
This module imports torch only inside the methods that compute.

Examples
--------
>>> import torch
>>> head = Head(kind="sigmoid", outputs=3, output=2)
>>> head.logit(torch.tensor([[0.5, -1.0, 2.0]]))
tensor([2.])
>>> head.predict(torch.tensor([[0.5, -1.0, -2.0]]))
tensor([0])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["Head", "HeadKind", "HEADS"]

HeadKind = Literal["softmax", "sigmoid"]
#: The valid ``[model].head`` values.
HEADS: tuple[str, ...] = ("softmax", "sigmoid")


@dataclass(frozen=True)
class Head:
    """How outputs of width ``outputs`` become probabilities of a task's classes.

    Attributes
    ----------
    kind
        ``"softmax"`` over ``outputs`` class logits, or ``"sigmoid"`` on logit ``output``.
    outputs
        The model's output width (``None``: not checked, softmax only).
    output
        Index of the task's logit among the outputs (sigmoid head).
    """

    kind: HeadKind = "softmax"
    outputs: int | None = None
    output: int = 0

    def __post_init__(self) -> None:
        if self.kind not in HEADS:
            raise ValueError(f"Head.kind: got {self.kind!r}; expected one of {', '.join(HEADS)}")
        if self.kind == "sigmoid" and not (self.outputs and 0 <= self.output < self.outputs):
            raise ValueError(f"Head: output {self.output} of {self.outputs} outputs; expected "
                             "0 <= output < outputs")

    @property
    def sigmoid(self) -> bool:
        """Whether this is a sigmoid head (a binary task read from one logit)."""
        return self.kind == "sigmoid"

    def describe(self) -> str:
        """One line for plans and messages, e.g. ``sigmoid on logit 31 of 40``."""
        if not self.sigmoid:
            return "softmax"
        return "sigmoid on its one logit" if self.outputs == 1 else \
            f"sigmoid on logit {self.output} of {self.outputs}"

    def logit(self, out: torch.Tensor) -> torch.Tensor:
        """The task's logit ``(...)`` from outputs ``(..., outputs)`` (sigmoid head)."""
        return out[..., self.output]

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        """Predicted class indices (int64) from outputs ``(..., outputs)``."""
        if self.sigmoid:
            # From the rounded probability, not z >= 0: a tiny negative z whose float32
            # sigmoid rounds to 0.5 is positive, as the p_pos written beside it says.
            return (self.logit(out).sigmoid() >= 0.5).long()
        return out.argmax(-1)

    def loss(self, out: torch.Tensor, labels: torch.Tensor, *, reduction: str = "mean",
             label_smoothing: float = 0.0) -> torch.Tensor:
        """Cross-entropy (softmax) or binary cross-entropy with logits on the task's
        logit (sigmoid), of float32 outputs ``(batch, outputs)`` against class labels.

        Label smoothing ``e`` gives the sigmoid head targets ``y (1 - e) + e / 2``, the
        same targets as two-class cross-entropy with smoothing ``e``.
        """
        # A tensor came in, so torch is loaded; at module level it would load torch
        # for every spec parsed.
        import torch.nn.functional as F

        if not self.sigmoid:
            return F.cross_entropy(out, labels, reduction=reduction,
                                   label_smoothing=label_smoothing)
        target = labels.to(out.dtype) * (1 - label_smoothing) + label_smoothing / 2
        return F.binary_cross_entropy_with_logits(self.logit(out), target, reduction=reduction)
