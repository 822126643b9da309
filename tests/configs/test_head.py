"""Model heads against torch's own losses and the sigmoid / softmax identities."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from compaudit.configs.head import Head


def test_softmax_head_is_cross_entropy_and_argmax():
    g = torch.Generator().manual_seed(0)
    out, labels = torch.randn(20, 5, generator=g), torch.randint(0, 5, (20,), generator=g)
    head = Head()
    torch.testing.assert_close(head.loss(out, labels, label_smoothing=0.1),
                               F.cross_entropy(out, labels, label_smoothing=0.1))
    assert torch.equal(head.predict(out), out.argmax(1))


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_sigmoid_head_on_logit_k_is_two_class_cross_entropy_of_0_and_z(smoothing):
    """BCE with logits on z equals cross-entropy over the logits (0, z), label smoothing
    included: the sigmoid head is the two-class softmax it replaces."""
    g = torch.Generator().manual_seed(1)
    out, labels = torch.randn(30, 4, generator=g) * 3, torch.randint(0, 2, (30,), generator=g)
    head = Head(kind="sigmoid", outputs=4, output=2)
    z = out[:, 2]
    two = torch.stack([torch.zeros_like(z), z], 1)
    torch.testing.assert_close(head.loss(out, labels, label_smoothing=smoothing),
                               F.cross_entropy(two, labels, label_smoothing=smoothing))
    torch.testing.assert_close(head.loss(out, labels, reduction="sum"),
                               F.binary_cross_entropy_with_logits(z, labels.float(),
                                                                  reduction="sum"))
    assert torch.equal(head.predict(out), (torch.sigmoid(z) >= 0.5).long())


def test_a_sigmoid_head_needs_its_logit_among_the_outputs():
    with pytest.raises(ValueError, match="0 <= output < outputs"):
        Head(kind="sigmoid", outputs=3, output=3)
    with pytest.raises(ValueError, match="expected one of softmax, sigmoid"):
        Head(kind="tanh")  # type: ignore[arg-type]
    assert Head(kind="sigmoid", outputs=40, output=9).describe() == "sigmoid on logit 9 of 40"
