"""Architectures: output shapes, the small-input stem, parameter counts, registry errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compaudit.errors import AuditInputError
from compaudit.models import architectures
from compaudit.models.architectures import build_model, list_architectures, register_architecture


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_the_three_shared_architectures_are_registered():
    assert {"resnet18", "resnet50", "small_cnn"} <= set(list_architectures())
    assert list_architectures() == sorted(list_architectures())


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "small_cnn"])
@pytest.mark.parametrize("small_input", [False, True])
def test_logits_have_shape_batch_by_classes_at_32px(arch, small_input):
    model = build_model(arch, num_classes=7, small_input=small_input).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [16, 64])
def test_small_cnn_takes_16_to_64_px(size):
    with torch.no_grad():
        out = build_model("small_cnn", num_classes=2).eval()(torch.randn(3, 3, size, size))
    assert out.shape == (3, 2)


def test_small_cnn_parameter_count_by_hand():
    # 3x3 convs without bias 3-8-16-32-64, BatchNorm (weight + bias) per block, fc 64 -> 2.
    convs = 9 * (3 * 8 + 8 * 16 + 16 * 32 + 32 * 64)
    bns = 2 * (8 + 16 + 32 + 64)
    assert _count(build_model("small_cnn", num_classes=2)) == convs + bns + 64 * 2 + 2


@pytest.mark.parametrize("arch, published", [("resnet18", 11_689_512), ("resnet50", 25_557_032)])
def test_resnet_parameter_counts_match_the_published_imagenet_models(arch, published):
    assert _count(build_model(arch, num_classes=1000)) == published


def test_small_input_swaps_the_stem_and_keeps_32px_resolution_into_layer1():
    model = build_model("resnet18", num_classes=10, small_input=True)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    seen = {}

    def record(module, inputs, output):
        seen["shape"] = output.shape

    model.layer1.register_forward_hook(record)
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 32, 32))
    assert seen["shape"][-2:] == (32, 32)
    # The 3x3 stem has 64*3*3*3 weights instead of 64*3*7*7.
    assert _count(model) == _count(build_model("resnet18", num_classes=10)) - 64 * 3 * (49 - 9)


def test_same_global_seed_builds_identical_models():
    torch.manual_seed(5)
    a = build_model("small_cnn", num_classes=2)
    torch.manual_seed(5)
    b = build_model("small_cnn", num_classes=2)
    pairs = zip(a.parameters(), b.parameters(), strict=True)
    assert all(torch.equal(p, q) for p, q in pairs)


def test_unknown_architecture_lists_the_valid_names():
    valid = "resnet18, resnet50, small_cnn"
    with pytest.raises(AuditInputError, match=f"unknown architecture 'resnet19'.*{valid}.*"
                                              "any torchvision classification model"):
        build_model("resnet19", num_classes=2)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b0", "regnet_y_400mf"])
def test_any_torchvision_classification_model_is_built_with_num_classes(name):
    import torchvision

    from compaudit.models.architectures import architecture_exists

    assert architecture_exists(name) and name not in list_architectures()
    torch.manual_seed(0)
    mine = build_model(name, num_classes=3)
    torch.manual_seed(0)
    reference = torchvision.models.get_model(name, weights=None, num_classes=3)
    # The same architecture and initialisation as torchvision's own builder.
    assert [k for k, _ in mine.state_dict().items()] == list(reference.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(),
                                                 reference.state_dict().values()))
    with torch.no_grad():
        assert mine.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 3)


def test_a_spec_with_a_torchvision_architecture_passes_the_preflight():
    from compaudit.pipeline.train import check_architecture
    from compaudit.spec import parse_spec

    base = '[[variants]]\nname = "f"\nmethod = "float16"\n[model]\narch = "{}"\n'
    check_architecture(parse_spec(base.format("mobilenet_v3_small"), source="s.toml"))
    with pytest.raises(AuditInputError, match=r"s.toml: \[model\].arch: got 'mobilenet_v9'"):
        check_architecture(parse_spec(base.format("mobilenet_v9"), source="s.toml"))


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "2"])
def test_num_classes_must_be_a_positive_integer(bad):
    with pytest.raises(AuditInputError, match="num_classes must be a positive integer"):
        build_model("small_cnn", num_classes=bad)


def test_register_architecture_adds_a_builder_and_refuses_duplicates():
    @register_architecture("test_tiny_linear")
    def _tiny(*, num_classes: int, small_input: bool) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    try:
        assert "test_tiny_linear" in list_architectures()
        model = build_model("test_tiny_linear", num_classes=4)
        assert model(torch.randn(2, 3, 4, 4)).shape == (2, 4)
        with pytest.raises(ValueError, match="registered twice"):
            register_architecture("test_tiny_linear")(_tiny)
    finally:
        architectures.ARCHITECTURES._entries.pop("test_tiny_linear", None)
