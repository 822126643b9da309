"""The first-batch check of stacked against looped logits: its tolerance per dtype and device."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compaudit.models.architectures import build_model
from compaudit.predict.stacking import Member, StackedRunner, check_tolerance


def _tf32(t: torch.Tensor) -> torch.Tensor:
    """Round float32 to TF32 (10 mantissa bits, round to nearest), as tensor cores read it."""
    bits = t.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def _tf32_model(model: nn.Module) -> nn.Module:
    """``model`` whose convolutions and linear layers multiply TF32 operands."""
    model = copy.deepcopy(model)
    for layer in model.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            layer.weight.data = _tf32(layer.weight.data)
            layer.register_forward_pre_hook(lambda _, args: (_tf32(args[0]),))
    return model


@pytest.fixture
def tf32_flags():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_tf32_rounding_fits_the_tf32_tolerance(tf32_flags):
    # TF32 on the CPU, emulated: the logits move by a small fraction of the TF32
    # tolerance. On an H200 a trained small CNN's stacked and looped logits differed by
    # 1.1e-4 of (1 + max |logit|) with TF32 and 1.8e-7 without it, so the strict float32
    # tolerance made every population loop there.
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, small_input=True).eval()
    x = torch.randn(64, 3, 32, 32)
    with torch.no_grad():
        exact, rounded = model(x), _tf32_model(model)(x)
    gap = (exact - rounded).abs().max().item() / (1 + exact.abs().max().item())
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False
    assert 1e-7 < gap < check_tolerance(torch.float32, torch.device("cuda")) / 100
    assert check_tolerance(torch.float32, torch.device("cpu")) == 1e-4  # CPUs have no TF32


def test_stacked_state_is_in_the_default_memory_format():
    # CUDA kernels under vmap cannot ask a channels-last weight for its layout
    # (measured on an H200: every model trained with channels_last fell back).
    torch.manual_seed(0)
    models = [build_model("small_cnn", num_classes=2, small_input=True).eval()
              .to(memory_format=torch.channels_last) for _ in range(2)]
    assert models[0].features[0].weight.is_contiguous(memory_format=torch.channels_last)
    runner = StackedRunner([Member(i, "v", i, m) for i, m in enumerate(models)],
                           device=torch.device("cpu"))
    assert all(t.is_contiguous() for t in [*runner.params.values(), *runner.buffers.values()])
    x = torch.randn(8, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(runner(x), torch.stack([m(x) for m in models]))
    assert runner.stacked


def test_tolerance_is_strict_without_tf32(tf32_flags):
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = False, False
    strict = check_tolerance(torch.float32, torch.device("cuda"))
    assert strict == check_tolerance(torch.float32, torch.device("cpu")) == 1e-4
    torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls alone (linear layers)
    assert check_tolerance(torch.float32, torch.device("cuda")) == 1e-2
    # Half precision keeps its own tolerance on any device.
    assert check_tolerance(torch.float16, torch.device("cpu")) == 1e-2
    assert check_tolerance(torch.bfloat16, torch.device("cuda")) == 5e-2
