"""User weights: state-dict files, refused pickles, torchvision enums from the local cache."""

from __future__ import annotations

import pickle

import pytest
import torch

from compaudit.errors import AuditInputError
from compaudit.models.architectures import build_model
from compaudit.models.weights import (
    WHOLE_MODEL_MESSAGE,
    load_weights,
    read_state_dict,
    read_torchvision_weights,
    save_state_dict,
    torchvision_weights_path,
)


def _model(seed: int = 0, num_classes: int = 3):
    torch.manual_seed(seed)
    return build_model("small_cnn", num_classes=num_classes).eval()


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- state-dict files -------------------------------------------------------------------


def test_state_dict_round_trip_gives_the_same_model(tmp_path):
    trained = _model(seed=1)
    with torch.no_grad():  # non-default BN statistics must travel too
        trained.features[1].running_mean.add_(0.5)
    path = save_state_dict(trained, tmp_path / "sub" / "w.pt")
    fresh = load_weights(_model(seed=2), source=path)
    assert _same_weights(trained, fresh)
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(trained(x), fresh(x))
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temp file left behind


def test_a_pickled_whole_model_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(_model(), path)
    with pytest.raises(AuditInputError) as info:
        read_state_dict(path)
    found = "compaudit.models.architectures.SmallCNN"
    assert str(info.value) == WHOLE_MODEL_MESSAGE.format(path=path, found=found)
    assert "torch.save(model.state_dict(), path)" in str(info.value)
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)


@pytest.mark.parametrize("wrap", [
    lambda sd: {"state_dict": sd, "epoch": 3, "note": "x"},
    lambda sd: {"model": sd, "optimizer": {"lr": 0.1}},
    lambda sd: {f"module.{k}": v for k, v in sd.items()},  # saved from DataParallel
])
def test_checkpoint_dicts_and_wrapper_prefixes_are_accepted(tmp_path, wrap):
    model = _model(seed=4)
    torch.save(wrap(model.state_dict()), tmp_path / "ckpt.pt")
    assert _same_weights(load_weights(_model(seed=5), source=tmp_path / "ckpt.pt"), model)


def test_mismatched_weights_name_the_first_keys_and_shapes(tmp_path):
    path = save_state_dict(_model(num_classes=10), tmp_path / "w10.pt")
    with pytest.raises(AuditInputError) as info:
        load_weights(_model(num_classes=2), source=path)
    msg = str(info.value)
    assert "fc.weight (10, 64) vs model (2, 64)" in msg and "fc.bias (10,) vs model (2,)" in msg
    assert "num_classes" in msg

    resnet = build_model("resnet18", num_classes=2)
    with pytest.raises(AuditInputError) as info:
        load_weights(resnet, source=path)
    msg = str(info.value)
    # fc.weight and fc.bias exist in both (shape mismatch); the rest of ResNet is missing.
    n_missing = len(resnet.state_dict()) - 2
    assert f"missing keys conv1.weight, bn1.weight, bn1.bias, bn1.running_mean, " \
           f"bn1.running_var (and {n_missing - 5} more)" in msg
    assert "unexpected keys features.0.weight" in msg


def test_non_strict_load_allows_missing_keys_but_not_shapes(tmp_path):
    sd = _model(seed=6).state_dict()
    del sd["fc.bias"]
    torch.save(sd, tmp_path / "partial.pt")
    target = _model(seed=7)
    bias_before = target.fc.bias.clone()
    load_weights(target, source=tmp_path / "partial.pt", strict=False)
    assert torch.equal(target.fc.weight, sd["fc.weight"])
    assert torch.equal(target.fc.bias, bias_before)
    with pytest.raises(AuditInputError, match="missing keys fc.bias"):
        load_weights(_model(), source=tmp_path / "partial.pt")


@pytest.mark.parametrize("content, match", [
    (None, "weights file not found"),
    (b"not a torch file", "not a readable torch weights file"),
    ({"a": 1, "b": "x"}, "keys a, b are not tensors"),
    ([1, 2], "expected a state dict"),
])
def test_bad_weight_files_are_explained(tmp_path, content, match):
    path = tmp_path / "w.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(AuditInputError, match=match) as info:
        read_state_dict(path)
    assert str(path) in str(info.value)


# --- torchvision weight enums, cache only -------------------------------------------------


def test_weight_enum_missing_from_cache_names_the_exact_path(tmp_path, monkeypatch):
    from torchvision.models import ResNet50_Weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    assert torchvision_weights_path(ResNet50_Weights.IMAGENET1K_V2) == expected
    for source in (ResNet50_Weights.IMAGENET1K_V2, "ResNet50_Weights.IMAGENET1K_V2"):
        with pytest.raises(AuditInputError) as info:
            load_weights(build_model("resnet50", num_classes=1000), source=source)
        msg = str(info.value)
        assert f"at {expected}" in msg and "never downloads" in msg
        assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in msg
    assert not expected.exists()


def test_cached_weight_enum_is_read_and_its_hash_checked(tmp_path, monkeypatch):
    from torchvision.models import ResNet18_Weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    original = build_model("resnet18", num_classes=1000)
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    save_state_dict(original, cached)
    # Our file is not the published one, so the SHA-256 prefix in its name cannot match.
    with pytest.raises(AuditInputError, match="does not match the prefix f37072fd"):
        read_torchvision_weights(ResNet18_Weights.IMAGENET1K_V1)
    state = read_torchvision_weights("ResNet18_Weights.IMAGENET1K_V1", check_hash=False)
    fresh = build_model("resnet18", num_classes=1000)
    fresh.load_state_dict(state)
    assert _same_weights(fresh, original)


def test_unknown_weight_enum_name_is_explained():
    with pytest.raises(AuditInputError, match="unknown torchvision weights 'ResNet50_Weights.NO"):
        load_weights(build_model("resnet50", num_classes=1000), source="ResNet50_Weights.NOPE")
