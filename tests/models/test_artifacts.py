"""load_artifact: pruned state dicts folded, pickles and .pt2 programs refused unrun."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from compaudit.compress.footprint import footprint
from compaudit.compress.quant_sim import QUANTIZABLE
from compaudit.errors import AuditInputError
from compaudit.models.architectures import build_model
from compaudit.models.artifacts import PT2_MESSAGE, load_artifact
from compaudit.models.weights import WHOLE_MODEL_MESSAGE, load_weights


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from more threads on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("small_cnn", num_classes=2)
    with torch.no_grad():  # BatchNorm statistics as after training, so they must travel
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _pruned(seed: int = 1) -> nn.Module:
    """small_cnn pruned by torch.nn.utils.prune: one layer alone, three together."""
    model = _model(seed)
    f = model.features
    prune.l1_unstructured(f[0], "weight", amount=0.5)
    prune.global_unstructured([(f[3], "weight"), (f[6], "weight"), (model.fc, "weight")],
                              pruning_method=prune.L1Unstructured, amount=0.6)
    return model


PRUNED = ("features.0.weight", "features.3.weight", "features.6.weight", "fc.weight")


def _weight_sparsity_of_masks(state: dict[str, torch.Tensor], model: nn.Module) -> float:
    """Zeros the masks put in conv/linear weights, over all conv/linear weights."""
    total = sum(m.weight.numel() for m in model.modules() if isinstance(m, QUANTIZABLE))
    pruned = sum(int((state[f"{k}_mask"] == 0).sum()) for k in PRUNED)
    return pruned / total


# --- pruned state dicts ----------------------------------------------------------------


def test_a_state_dict_pruned_without_remove_is_folded_orig_times_mask(tmp_path):
    pruned = _pruned()
    path = tmp_path / "pruned.pt"
    torch.save(pruned.state_dict(), path)
    saved = torch.load(path, weights_only=True)
    assert {f"{k}_orig" for k in PRUNED} <= saved.keys()  # really the reparametrisation

    loaded = load_artifact(path, structure=_model(seed=9))
    state = loaded.state_dict()
    assert state.keys() == _model().state_dict().keys()  # the plain architecture
    for key in PRUNED:
        assert torch.equal(state[key], saved[f"{key}_orig"] * saved[f"{key}_mask"])
        module_name = key.rsplit(".", 1)[0]
        assert torch.equal(state[key], pruned.get_submodule(module_name).weight)
    for key in ("features.1.running_mean", "features.9.weight", "fc.bias"):
        assert torch.equal(state[key], saved[key])
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned(x))
    # Sparsity is measured from the zeros: it is the masks' sparsity.
    fp = footprint(loaded, input_size=(3, 16, 16), measure_time=False)
    assert fp["weight_sparsity"] == pytest.approx(_weight_sparsity_of_masks(saved, loaded),
                                                  abs=1e-12)
    assert fp["weight_sparsity"] > 0.1  # features.9, the largest layer, is unpruned


def test_a_state_dict_pruned_with_remove_loads_as_saved(tmp_path):
    pruned = _pruned()
    masks = {k: pruned.state_dict()[f"{k}_mask"].clone() for k in PRUNED}
    for key in PRUNED:
        prune.remove(pruned.get_submodule(key.rsplit(".", 1)[0]), "weight")
    path = tmp_path / "removed.pt"
    torch.save(pruned.state_dict(), path)
    loaded = load_artifact(path, structure=_model(seed=9))
    for key, mask in masks.items():
        assert torch.equal(loaded.state_dict()[key], pruned.state_dict()[key])
        assert torch.equal(loaded.state_dict()[key] == 0, mask == 0)


def test_a_pruned_training_checkpoint_loads_through_weights_and_artifacts(tmp_path):
    pruned = _pruned()
    saved = pruned.state_dict()
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in saved.items()}, "epoch": 7,
                "optimizer": {"lr": 0.1}}, path)
    loaded = load_artifact(path, structure=_model(seed=9))
    # [model].weights reads files the same way (load_weights -> read_state_dict)
    also = load_weights(_model(seed=8), source=path)
    for key in PRUNED:
        expected = saved[f"{key}_orig"] * saved[f"{key}_mask"]
        assert torch.equal(loaded.state_dict()[key], expected)
        assert torch.equal(also.state_dict()[key], expected)


def test_an_unpaired_orig_or_a_wrong_architecture_is_named(tmp_path):
    state = _pruned().state_dict()
    del state["features.0.weight_mask"]  # an _orig without its mask is not folded
    path = tmp_path / "half.pt"
    torch.save(state, path)
    with pytest.raises(AuditInputError) as info:
        load_artifact(path, structure=_model())
    text = str(info.value)
    assert str(path) in text
    assert "missing keys features.0.weight" in text
    assert "unexpected keys features.0.weight_orig" in text

    path = tmp_path / "wider.pt"
    torch.save(build_model("small_cnn", num_classes=5).state_dict(), path)
    with pytest.raises(AuditInputError, match=r"shape mismatches fc.weight \(5, 64\) vs model "
                                              r"\(2, 64\)"):
        load_artifact(path, structure=_model())


def test_a_mask_of_another_shape_is_refused(tmp_path):
    state = _pruned().state_dict()
    state["fc.weight_mask"] = state["fc.weight_mask"][:1]
    path = tmp_path / "bad-mask.pt"
    torch.save(state, path)
    with pytest.raises(AuditInputError, match="fc.weight_mask has shape"):
        load_artifact(path, structure=_model())


def test_the_structure_is_copied_not_changed(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(_model(seed=4).state_dict(), path)
    structure = _model(seed=5)
    before = {k: v.clone() for k, v in structure.state_dict().items()}
    loaded = load_artifact(path, structure=structure)
    assert loaded is not structure
    assert all(torch.equal(v, before[k]) for k, v in structure.state_dict().items())
    assert not loaded.training


def test_a_state_dict_needs_a_torch_structure(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(_model().state_dict(), path)
    with pytest.raises(AuditInputError, match="a state dict holds weights without an "
                                              "architecture, and no torch architecture"):
        load_artifact(path, structure=None)


# --- pickles and torch.export programs: refused, never run ------------------------------


class _Marker:
    """Unpickling it runs a shell command that creates a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def test_a_whole_pickled_model_is_refused_with_the_weights_only_message(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(_model(), path)
    with pytest.raises(AuditInputError) as info:
        load_artifact(path, structure=_model())
    assert str(info.value) == WHOLE_MODEL_MESSAGE.format(
        path=path, found="compaudit.models.architectures.SmallCNN")


def test_a_malicious_pickle_is_not_run(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "evil.pt"
    torch.save({"weight": _Marker(marker)}, path)
    with pytest.raises(AuditInputError, match=r"holds a pickled (posix|nt)\.system"):
        load_artifact(path, structure=_model())
    assert not marker.exists()


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


@pytest.fixture(scope="module")
def pt2_file(tmp_path_factory) -> Path:
    """A real torch.export.save archive."""
    path = tmp_path_factory.mktemp("pt2") / "model.pt2"
    program = torch.export.export(_Tiny().eval(), (torch.randn(2, 3, 8, 8),))
    torch.export.save(program, path)
    return path


def test_a_torch_export_program_is_refused_with_the_reason(pt2_file):
    with pytest.raises(AuditInputError) as info:
        load_artifact(pt2_file, structure=_model())
    assert str(info.value) == PT2_MESSAGE.format(path=pt2_file)
    assert "torch.export.load can run code from the file" in str(info.value)


def test_a_pt2_with_a_malicious_sample_input_pickle_is_not_run(pt2_file, tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "evil.pt2"
    buffer = io.BytesIO()
    torch.save(_Marker(marker), buffer)
    # torch.export.load reads this member with torch.load(weights_only=False) once
    # weights_only=True has failed (deserialize_torch_artifact); it would run.
    with zipfile.ZipFile(pt2_file) as src, zipfile.ZipFile(path, "w") as dst:
        names = src.namelist()
        assert any(n.endswith("data/sample_inputs/model.pt") for n in names)
        for info in src.infolist():
            data = (buffer.getvalue() if info.filename.endswith("data/sample_inputs/model.pt")
                    else src.read(info.filename))
            dst.writestr(info, data)
    with pytest.raises(AuditInputError, match="is a torch.export program"):
        load_artifact(path, structure=_model())
    assert not marker.exists()
