"""What kind of model file a path holds, read from its first bytes (imports no torch).

Specs name model files (``[model].weights``, ``[[variants]] files``); they are checked
at parse time, before anything trains, by reading their headers only:

* ``"state_dict"``: a ``torch.save`` file, the zip format (a ``*/data.pkl`` member)
  or the legacy pickle format (its magic number);
* ``"pt2"``: a ``torch.export.save`` archive (a zip with ``*/archive_format``),
  recognised so that it can be refused with the reason (:data:`PT2_MESSAGE`);
* ``"onnx"``: an ONNX model (a protobuf ``ModelProto`` whose first field is one of
  its known top-level fields; exporters write ``ir_version`` first).

Anything else is an :class:`~compaudit.errors.AuditInputError` naming the file and
the formats expected.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import BinaryIO, Literal

from compaudit.errors import AuditInputError

__all__ = ["FORMATS", "PT2_MESSAGE", "ArtifactFormat", "artifact_format"]

ArtifactFormat = Literal["state_dict", "pt2", "onnx"]
FORMATS: tuple[str, ...] = ("state_dict", "pt2", "onnx")

# torch.save's legacy (non-zip) format begins with the pickled magic number
# 0x1950a86a20f9469cfc6c (protocol 2, LONG1 of 10 bytes).
_LEGACY_TORCH = bytes.fromhex("80028a0a6cfc9c46f9206aa85019")
# The first byte (field number << 3 | wire type) of ModelProto's top-level fields:
# ir_version (1, varint), producer_name (2), producer_version (3), domain (4),
# model_version (5, varint), doc_string (6), graph (7), opset_import (8),
# metadata_props (14), functions (25: two-byte tag, first byte 0xca).
_ONNX_FIRST = {0x08, 0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0xCA}
#: Why a .pt2 file is refused (it is recognised, then refused, at parse time).
PT2_MESSAGE = (
    "{path}: is a torch.export program (.pt2), which compaudit does not load because "
    "torch.export.load can run code from the file (it unpickles the archive's sample "
    "inputs and pickled payloads without weights_only, and evaluates the program's "
    "symbolic-shape strings with sympy); export it to ONNX on a machine that trusts it "
    "(torch.onnx.export accepts the loaded program) or save its weights only with "
    "torch.save(program.module().state_dict(), path), and pass that file"
)
_EXPECTED = ("expected a state dict written by torch.save(model.state_dict(), path) or an "
             "ONNX model (.onnx)")


def artifact_format(path: str | Path) -> ArtifactFormat:
    """The format of the model file at ``path``, from its header (no full load).

    Raises
    ------
    AuditInputError
        The file is missing, unreadable, or none of the formats above.
    """
    path = Path(path)
    if not path.is_file():
        raise AuditInputError(f"{path}: model file not found; put the file there or fix "
                              "the path")
    try:
        with path.open("rb") as fh:
            head = fh.read(len(_LEGACY_TORCH))
    except OSError as err:
        raise AuditInputError(f"{path}: cannot be read ({err.strerror}); {_EXPECTED}") from err
    if not head:
        raise AuditInputError(f"{path}: is empty; {_EXPECTED}")
    if head.startswith(b"PK\x03\x04"):
        return _zip_format(path)
    if head.startswith(_LEGACY_TORCH):
        return "state_dict"
    if path.suffix.lower() == ".onnx" and head[0] in _ONNX_FIRST:
        _check_onnx_complete(path)
        return "onnx"
    raise AuditInputError(f"{path}: not a recognised model file (first bytes "
                          f"{head[:4].hex()}); {_EXPECTED}")


def _varint(fh: BinaryIO) -> int | None:
    """A protobuf varint read from ``fh``; ``None`` at the end of the file."""
    value, shift = 0, 0
    while True:
        byte = fh.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("a varint longer than 10 bytes")


def _check_onnx_complete(path: Path) -> None:
    """Walk the top-level fields of the ``ModelProto`` (seeking over their contents):
    a truncated or damaged file ends inside a field, or has no graph."""
    size = path.stat().st_size
    fields: set[int] = set()
    problem = None
    with path.open("rb") as fh:
        while fh.tell() < size and problem is None:
            start = fh.tell()
            tag = _varint(fh)
            if tag is None:
                problem = f"byte {start} holds no protobuf field (wire type None)"
                break
            wire = tag & 7
            if wire == 0:
                end = fh.tell() if _varint(fh) is not None else size + 1
            elif wire == 2:
                length = _varint(fh)
                end = fh.tell() + length if length is not None else size + 1
            elif wire in (1, 5):
                end = fh.tell() + (8 if wire == 1 else 4)
            else:
                problem = f"byte {start} holds no protobuf field (wire type {wire})"
                break
            if end > size:
                problem = (f"field {tag >> 3} at byte {start} runs past the end of the file "
                           f"({size} bytes)")
                break
            fields.add(tag >> 3)
            fh.seek(end)
    if problem is None and 7 not in fields:
        problem = "it has no graph (ModelProto field 7)"
    if problem:
        raise AuditInputError(f"{path}: a truncated or damaged ONNX model ({problem}); "
                              "expected a complete ONNX model: copy or export the file again")


def _zip_format(path: Path) -> ArtifactFormat:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile as err:
        raise AuditInputError(f"{path}: a truncated or damaged zip archive ({err}); "
                              f"{_EXPECTED}") from err
    if any(n.endswith("/archive_format") or n == "archive_format" for n in names):
        return "pt2"
    if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        return "state_dict"
    raise AuditInputError(f"{path}: a zip archive with neither data.pkl (torch.save) nor "
                          f"archive_format (torch.export.save); {_EXPECTED}")
