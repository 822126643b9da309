"""Header sniffing against files written by the real tools (torch.save, torch.export,
torch.onnx.export)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compaudit.artifact_format import artifact_format
from compaudit.errors import AuditInputError


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).eval()


def test_files_written_by_torch_and_onnx_are_recognised(tmp_path):
    model, x = _model(), torch.zeros(1, 3, 8, 8)
    torch.save(model.state_dict(), tmp_path / "zip.pt")
    torch.save(model.state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "checkpoint.ckpt")
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "program.pt2")
    torch.onnx.export(model, (x,), tmp_path / "model.onnx", dynamo=False)
    assert artifact_format(tmp_path / "zip.pt") == "state_dict"
    assert artifact_format(tmp_path / "legacy.pt") == "state_dict"
    assert artifact_format(tmp_path / "checkpoint.ckpt") == "state_dict"
    assert artifact_format(tmp_path / "program.pt2") == "pt2"
    assert artifact_format(tmp_path / "model.onnx") == "onnx"


@pytest.mark.parametrize("name, content, words", [
    ("missing.pt", None, "not found"),
    ("empty.pt", b"", "is empty"),
    ("notes.onnx", b"hello, not a model", "not a recognised model file"),
    ("weights.pt", b"PK\x03\x04broken", "damaged zip"),
])
def test_bad_files_name_the_file_and_the_formats(tmp_path, name, content, words):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AuditInputError) as err:
        artifact_format(path)
    assert str(path) in str(err.value) and words in str(err.value)


def test_a_zip_that_is_no_model_is_refused(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "data.pt", "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(AuditInputError, match="neither data.pkl"):
        artifact_format(tmp_path / "data.pt")


def test_a_truncated_onnx_model_is_named_as_such_where_onnx_cannot_read_it(tmp_path):
    import onnx
    from google.protobuf.message import DecodeError

    from compaudit.spec import parse_spec

    model, x = _model(), torch.zeros(1, 3, 8, 8)
    torch.onnx.export(model, (x,), tmp_path / "model.onnx", dynamo=False)
    data = (tmp_path / "model.onnx").read_bytes()
    for cut in (len(data) // 3, len(data) // 2, len(data) - 3):
        path = tmp_path / f"cut{cut}.onnx"
        path.write_bytes(data[:cut])
        with pytest.raises(DecodeError):  # the reference: onnx cannot parse it either
            onnx.load(str(path))
        with pytest.raises(AuditInputError, match=r"a truncated or damaged ONNX model"):
            artifact_format(path)
    # In a spec: the dense file is named as truncated, not as an ONNX model that a
    # compressing method cannot use.
    with pytest.raises(AuditInputError) as err:
        parse_spec(f'[model]\nreplicas = 1\nweights = ["cut{len(data) // 2}.onnx"]\n'
                   '[[variants]]\nname = "f16"\nmethod = "float16"\n',
                   source="s.toml", base=tmp_path)
    assert err.value.problems == [
        f"s.toml: [model].weights: {tmp_path / f'cut{len(data) // 2}.onnx'}: a truncated or "
        f"damaged ONNX model (field 7 at byte {_graph_start(data)} runs past the end of the "
        f"file ({len(data) // 2} bytes)); expected a complete ONNX model: copy or export the "
        "file again"]


def _graph_start(data: bytes) -> int:
    """Byte offset of the ModelProto's graph field (tag 0x3a), found with onnx's own
    parse: the serialized fields before it."""
    import onnx

    model = onnx.load_from_string(data)
    graph = model.graph
    model.ClearField("graph")
    before = onnx.ModelProto()
    for f in ("ir_version", "producer_name", "producer_version", "domain", "model_version",
              "doc_string"):
        if model.HasField(f):
            setattr(before, f, getattr(model, f))
    del graph
    return len(before.SerializeToString())
