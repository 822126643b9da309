"""ONNX Runtime behind nn.Module: same logits as torch, chunked fixed batches, pickling."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest
import torch

from compaudit.errors import AuditInputError
from compaudit.models.architectures import build_model
from compaudit.models.onnx_runtime import ONNX_EXTRA_MESSAGE, load_onnx
from compaudit.models.weights import read_state_dict


def _model(seed: int = 0, num_classes: int = 3):
    torch.manual_seed(seed)
    return build_model("small_cnn", num_classes=num_classes).eval()


def _export(model, path: Path, *, dynamic: bool) -> Path:
    pytest.importorskip("onnxscript", reason="needs the 'onnx' extra")
    example = (torch.randn(2, 3, 16, 16),)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    torch.onnx.export(model, example, str(path), dynamo=True, dynamic_shapes=shapes,
                      input_names=["images"], output_names=["logits"], verbose=False)
    return path


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")
    folder = tmp_path_factory.mktemp("onnx")
    model = _model(seed=3)
    with torch.no_grad():  # make BatchNorm do something, as after training
        for bn in (model.features[1], model.features[4]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return model, _export(model, folder / "dynamic.onnx", dynamic=True), \
        _export(model, folder / "fixed.onnx", dynamic=False)


def test_onnx_module_matches_the_torch_logits(onnx_files):
    model, dynamic, _ = onnx_files
    x = torch.randn(5, 3, 16, 16)
    onnx_model = load_onnx(dynamic)
    assert list(onnx_model.parameters()) == []
    with torch.no_grad():
        expected = model(x)
    got = onnx_model(x)
    assert got.dtype == torch.float32 and got.shape == (5, 3)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_onnx_fixed_batch_export_runs_any_batch_in_chunks(onnx_files):
    model, _, fixed = onnx_files
    onnx_model = load_onnx(fixed)
    assert onnx_model.input_shape[0] == 2
    x = torch.randn(5, 3, 16, 16)  # 2 + 2 + 1 (padded)
    with torch.no_grad():
        torch.testing.assert_close(onnx_model(x), model(x), rtol=1e-4, atol=1e-5)


def test_onnx_module_pickles_for_other_processes(onnx_files):
    _, dynamic, _ = onnx_files
    onnx_model = load_onnx(dynamic, num_threads=1)
    x = torch.randn(3, 3, 16, 16)
    expected = onnx_model(x)
    copy = pickle.loads(pickle.dumps(onnx_model))
    assert copy._session is None
    assert torch.equal(copy(x), expected)


def test_onnx_errors_name_the_file(onnx_files, tmp_path):
    _, dynamic, _ = onnx_files
    with pytest.raises(AuditInputError, match="is an ONNX model, not a state dict"):
        read_state_dict(dynamic)
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"\x00not onnx")
    with pytest.raises(AuditInputError, match=f"{bogus}: ONNX Runtime cannot load this model"):
        load_onnx(bogus)
    with pytest.raises(AuditInputError, match="expected an \\(N, C, H, W\\) batch"):
        load_onnx(dynamic)(torch.randn(3, 16, 16))


def test_missing_onnxruntime_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(AuditInputError) as info:
        load_onnx(tmp_path / "any.onnx")
    assert str(info.value) == ONNX_EXTRA_MESSAGE
    assert 'pip install -e ".[onnx]"' in ONNX_EXTRA_MESSAGE


def test_onnx_sessions_keep_to_the_torch_thread_cap(onnx_files):
    """An audit worker caps torch at its share of the cores; ONNX Runtime follows it."""
    _, dynamic, _ = onnx_files
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        capped = load_onnx(dynamic)
        assert capped.session.get_session_options().intra_op_num_threads == 1
        explicit = load_onnx(dynamic, num_threads=2)
        assert explicit.session.get_session_options().intra_op_num_threads == 2
    finally:
        torch.set_num_threads(before)
