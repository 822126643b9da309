"""BatchNorm folding: against conv + BatchNorm written out in float64, and what it finds."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compaudit.compress.fold import fold_batchnorm_
from compaudit.compress.quant_sim import (
    FOLDED_BATCHNORM_ATTR,
    cast_float_precision,
    round_float_precision,
)


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """BatchNorm weights and running statistics far from the identity, eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
            m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))
            if m.affine:
                m.weight.data.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.data.copy_(0.4 * torch.rand(c, generator=g) - 0.2)
    return model.eval()


def _conv_bn_float64(x, conv, bn):
    """bn(conv(x)) by the definitions, in float64."""
    conv_fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[x.dim() - 2]
    b = None if conv.bias is None else conv.bias.double()
    y = conv_fn(x.double(), conv.weight.double(), b, conv.stride, conv.padding,
                conv.dilation, conv.groups)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    y = (y - bn.running_mean.double().view(shape)) / torch.sqrt(
        bn.running_var.double().view(shape) + bn.eps)
    if bn.affine:
        y = y * bn.weight.double().view(shape) + bn.bias.double().view(shape)
    return y


@pytest.mark.parametrize("dim, bias, affine, groups", [
    (2, False, True, 1), (2, True, True, 1), (2, False, False, 1), (2, False, True, 4),
    (1, True, True, 1), (3, False, True, 2),
])
def test_folded_conv_computes_conv_then_batchnorm(dim, bias, affine, groups):
    torch.manual_seed(dim)
    conv = getattr(nn, f"Conv{dim}d")(4, 8, 3, padding=1, bias=bias, groups=groups)
    bn = getattr(nn, f"BatchNorm{dim}d")(8, affine=affine, eps=1e-3)
    model = _randomize(nn.Sequential(conv, bn))
    x = torch.randn(2, 4, *(7,) * dim)
    want = _conv_bn_float64(x, conv, bn)
    report = fold_batchnorm_(model)
    assert report.pairs == [("0", "1")] and report.graph == "fx"
    assert isinstance(model[1], nn.Identity) and model[0] is conv and conv.bias is not None
    with torch.no_grad():
        got = model(x)
    # float32 folding and conv: a few units of float32 roundoff of the output's scale
    assert (got.double() - want).abs().max() <= 1e-5 * want.abs().max()


def test_folding_in_float64_matches_the_float64_composition_to_roundoff():
    torch.manual_seed(1)
    model = _randomize(nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5))).double()
    x = torch.randn(3, 3, 9, 9, dtype=torch.float64)
    want = _conv_bn_float64(x, model[0], model[1])
    fold_batchnorm_(model)
    with torch.no_grad():
        assert torch.allclose(model(x), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("arch, n_norms", [("mobilenet_v2", 52), ("resnet18", 20)])
def test_every_torchvision_batchnorm_is_folded_and_logits_are_kept(arch, n_norms):
    import torchvision

    torch.manual_seed(2)
    model = _randomize(getattr(torchvision.models, arch)(num_classes=7))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = copy.deepcopy(model).double()(x.double())
    report = fold_batchnorm_(model)
    assert report.graph == "fx" and len(report.pairs) == n_norms
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    if arch == "resnet18":  # attributes, not Sequential neighbours
        assert ("conv1", "bn1") in report.pairs
        assert ("layer2.0.downsample.0", "layer2.0.downsample.1") in report.pairs
    else:  # Conv2dNormActivation
        assert ("features.1.conv.0.0", "features.1.conv.0.1") in report.pairs
    with torch.no_grad():
        got = model(x)
    assert (got.double() - want).abs().max() <= 1e-4 * want.abs().max()


class _Branchy(nn.Module):
    """Data-dependent control flow (fx cannot trace it), a Sequential conv -> BN, and an
    attribute conv -> BN pair that only tracing would find."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.conv = nn.Conv2d(4, 4, 1, bias=False)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        if y.sum() > 0:
            y = y * 2
        return self.bn(self.conv(y))


def test_untraceable_model_folds_sequential_neighbours_only_and_says_why():
    torch.manual_seed(3)
    model = _randomize(_Branchy())
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        want = copy.deepcopy(model).double()(x.double())
    report = fold_batchnorm_(model)
    assert report.graph == "sequential" and report.pairs == [("block.0", "block.1")]
    assert report.trace_error and "\n" not in report.trace_error
    assert isinstance(model.bn, nn.BatchNorm2d)  # not found without the graph
    with torch.no_grad():
        got = model(x)
    assert (got.double() - want).abs().max() <= 1e-5 * want.abs().max()


class _Unfoldable(nn.Module):
    """A conv whose output is also read by the residual, a BatchNorm shared by two
    calls, and a transposed conv: none may be folded."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.shared = nn.BatchNorm2d(4)
        self.up = nn.ConvTranspose2d(4, 4, 1)
        self.bn_up = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        y = self.bn(y) + y
        y = self.shared(self.conv2(y))
        return self.bn_up(self.up(self.shared(y)))


def test_folds_nothing_it_cannot_fold_exactly():
    torch.manual_seed(4)
    model = _randomize(_Unfoldable())
    report = fold_batchnorm_(model)
    assert report.graph == "fx" and report.pairs == []
    # training mode: statistics of the batch, not the running ones
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    assert fold_batchnorm_(seq).pairs == [] and isinstance(seq[1], nn.BatchNorm2d)


@pytest.mark.parametrize("arch", ["mobilenet_v2", "resnet18"])
def test_simulated_float16_of_the_folded_model_is_within_float16_tolerance(arch):
    import torchvision

    torch.manual_seed(5)
    model = _randomize(getattr(torchvision.models, arch)(num_classes=7))
    x = 2 * torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        want = copy.deepcopy(model).double()(x.double())
    sim = round_float_precision(copy.deepcopy(model), torch.float16)
    native = cast_float_precision(copy.deepcopy(model), torch.float16)
    for m in (sim, native):
        report = getattr(m, FOLDED_BATCHNORM_ATTR)
        assert report.graph == "fx" and len(report.pairs) > 0
        assert not any(isinstance(mod, nn.BatchNorm2d) for mod in m.modules())
    # the folded weights themselves are what is rounded
    for p in sim.parameters():
        assert torch.equal(p, p.half().float())
    with torch.inference_mode():
        got, got_native = sim(x).double(), native(x).double()
    # float16: unit roundoff 4.9e-4, a few dozen roundings deep; not a no-op
    for y in (got, got_native):
        err = (y - want).abs().max() / want.abs().max()
        assert 1e-5 < err <= 1e-2, err
    unfolded = round_float_precision(copy.deepcopy(model), torch.float16,
                                     fold_batchnorm=False)
    assert not hasattr(unfolded, FOLDED_BATCHNORM_ATTR)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in unfolded.modules()) > 0


def test_float16_method_records_what_it_folded():
    from compaudit.compress.quantization import Float16Config
    from compaudit.compress.registry import CompressionContext, compress
    from compaudit.models.architectures import build_model

    torch.manual_seed(6)
    out = compress(build_model("small_cnn", num_classes=3).eval(), Float16Config(),
                   context=CompressionContext())
    assert out.info["batchnorm_folded"] == 4 and out.info["batchnorm_fold_graph"] == "fx"
    assert "batchnorm_trace_error" not in out.info
    out = compress(_randomize(_Branchy()), Float16Config(), context=CompressionContext())
    assert out.info["batchnorm_folded"] == 1
    assert out.info["batchnorm_fold_graph"] == "sequential"
    assert out.info["batchnorm_trace_error"].startswith("TraceError: ")
