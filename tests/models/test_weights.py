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


def _old_cifar_checkpoint(path, model) -> dict:
    """``path`` written the way torch 0.4-1.x training scripts wrote CIFAR ResNets
    (e.g. resnet20-12fca82f.th): the legacy pickle format, a DataParallel state dict
    (``module.`` prefixes) without BatchNorm ``num_batches_tracked`` and without
    version metadata, under ``state_dict`` beside the best accuracy."""
    from collections import OrderedDict

    state = OrderedDict((f"module.{k}", v.clone()) for k, v in model.state_dict().items()
                        if not k.endswith("num_batches_tracked"))
    checkpoint = {"state_dict": state, "best_prec1": 91.73}
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    return checkpoint


def test_an_old_dataparallel_checkpoint_loads_as_torch_loads_it(tmp_path):
    from compaudit.models.artifacts import load_artifact

    torch.manual_seed(0)
    trained = build_model("resnet18", num_classes=10, small_input=True)
    with torch.no_grad():  # BatchNorm statistics of their own, not the initial 0/1
        for _ in range(3):
            trained(torch.randn(16, 3, 32, 32) * 2 + 0.5)
    path = tmp_path / "resnet-cifar.th"
    checkpoint = _old_cifar_checkpoint(path, trained.eval())
    assert "module.bn1.num_batches_tracked" not in checkpoint["state_dict"]

    # torch's own answer: the DataParallel-wrapped model loads the state dict strictly.
    reference = torch.nn.DataParallel(build_model("resnet18", num_classes=10,
                                                  small_input=True))
    reference.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    structure = build_model("resnet18", num_classes=10, small_input=True)
    mine = load_artifact(path, structure=structure)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        expected = reference.module.eval()(x)
        assert torch.equal(mine(x), expected)
        assert torch.equal(mine(x), trained(x))
    assert load_weights(build_model("resnet18", num_classes=10, small_input=True),
                        source=path).bn1.num_batches_tracked.item() == 0  # filled by torch

    # A real mismatch still names the keys (and not the counters torch fills).
    del checkpoint["state_dict"]["module.layer1.0.conv1.weight"]
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    with pytest.raises(AuditInputError) as info:
        load_artifact(path, structure=structure)
    assert str(info.value).endswith("missing keys layer1.0.conv1.weight; build the model "
                                     "with the architecture, num_classes and small_input "
                                     "the weights were trained with")
    assert "num_batches_tracked" not in str(info.value)


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
    # fc.weight and fc.bias exist in both (shape mismatch); the rest of ResNet is missing
    # (BatchNorm's step counters aside, which torch fills for old checkpoints).
    n_missing = len([k for k in resnet.state_dict()
                     if not k.endswith("num_batches_tracked")]) - 2
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
