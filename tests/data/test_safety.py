"""Safe at the door: the generator deletes only its own files; pickles run no code."""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from compaudit.data.celeba import CelebA
from compaudit.data.cifar10 import CIFAR10
from compaudit.data.synthetic import MARKER, generate_synthetic_faces
from compaudit.errors import EXIT_BAD_INPUT, AuditInputError

NOT_OURS = "is not a compaudit-generated folder"
NEVER = "compaudit never deletes or overwrites data it did not create"


# --- the synthetic-faces generator -------------------------------------------------------

def generate(path: Path, **kw) -> Path:
    args = {"n": 12, "image_size": 16, "seed": 5, "workers": 1, "masks": True}
    return generate_synthetic_faces(path, **(args | kw))


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (links not followed): kind and content digest."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = "link -> " + os.readlink(path)
        elif path.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def fake_celeba(root: Path) -> Path:
    """A few files of the official CelebA layout (aligned images, the annotation lists)."""
    images = root / "img_align_celeba"
    images.mkdir(parents=True)
    for i in range(1, 4):
        (images / f"{i:06d}.jpg").write_bytes(b"\xff\xd8\xff\xe0 real face %d" % i)
    header = "Blond_Hair Male Young"  # the official file has 40 columns; 3 suffice here
    rows = "".join(f"{i:06d}.jpg  1 -1  1\n" for i in range(1, 4))
    (root / "list_attr_celeba.txt").write_text(f"202599\n{header}\n{rows}")
    (root / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 1\n000003.jpg 2\n")
    (root / "identity_CelebA.txt").write_text("000001.jpg 2880\n")
    return root


@pytest.mark.parametrize("overwrite", [True, False])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_real_celeba_folder_is_refused_and_untouched(tmp_path: Path, overwrite: bool,
                                                     layout: str) -> None:
    root = tmp_path / "CelebA"
    fake_celeba(root if layout == "flat" else root / "celeba")
    before = snapshot(root)
    with pytest.raises(AuditInputError) as info:
        generate(root, overwrite=overwrite)
    assert str(info.value).startswith(f"{root}: the folder is not empty")
    assert NOT_OURS in str(info.value) and NEVER in str(info.value)
    assert MARKER in str(info.value) and "empty or new folder" in str(info.value)
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert snapshot(root) == before


def test_a_generated_folder_is_regenerated_keeping_foreign_files(tmp_path: Path) -> None:
    root = generate(tmp_path / "faces", n=30, masks=True)
    marker = json.loads((root / MARKER).read_text())
    assert marker["generator"] == "compaudit.data.synthetic.generate_synthetic_faces"
    assert marker["settings"] == json.loads((root / "synthetic.json").read_text())
    (root / "notes.txt").write_text("mine")  # the user's files in a generated folder
    (root / "img_align_celeba" / "keep.png").write_bytes(b"mine too")

    generate(root, n=20, masks=False, seed=6, overwrite=True)

    reference = snapshot(generate(tmp_path / "fresh", n=20, masks=False, seed=6))
    reference |= {"notes.txt": hashlib.sha256(b"mine").hexdigest(),
                  "img_align_celeba/keep.png": hashlib.sha256(b"mine too").hexdigest()}
    assert snapshot(root) == reference  # old images 21..30 and masks/ gone, the rest kept
    assert len(CelebA(root, split="all")) == 20


def test_overwrite_false_refuses_a_generated_folder(tmp_path: Path) -> None:
    root = generate(tmp_path / "faces")
    before = snapshot(root)
    with pytest.raises(AuditInputError, match="output folder is not empty.*overwrite=True"):
        generate(root, seed=9)
    assert snapshot(root) == before


def test_empty_and_new_folders_are_fine(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for root in (tmp_path / "empty", tmp_path / "new" / "nested"):
        generate(root, overwrite=False)
        assert (root / MARKER).is_file() and len(CelebA(root, split="all")) == 12


def test_links_are_never_followed_out_of_the_folder(tmp_path: Path) -> None:
    outside = fake_celeba(tmp_path / "real")
    outside_before = snapshot(outside)
    # A link in place of a generated file: the link goes, its target stays untouched.
    root = generate(tmp_path / "faces")
    (root / "img_align_celeba" / "000001.jpg").unlink()
    (root / "img_align_celeba" / "000001.jpg").symlink_to(outside / "img_align_celeba" /
                                                          "000001.jpg")
    (root / "list_attr_celeba.txt").unlink()
    (root / "list_attr_celeba.txt").symlink_to(outside / "list_attr_celeba.txt")
    generate(root, overwrite=True)
    assert snapshot(root) == snapshot(generate(tmp_path / "fresh"))
    assert snapshot(outside) == outside_before
    # A link in place of a generated folder: refused before anything is removed.
    for name in ("img_align_celeba", "masks"):
        root = generate(tmp_path / f"linked-{name}")
        os.rename(root / name, tmp_path / f"moved-{name}")
        (root / name).symlink_to(outside / "img_align_celeba", target_is_directory=True)
        before = snapshot(root)
        with pytest.raises(AuditInputError, match=f"{name}: is a symbolic link.*Nothing was "
                                                  "deleted"):
            generate(root, overwrite=True)
        assert snapshot(root) == before
    assert snapshot(outside) == outside_before


def test_files_it_did_not_write_are_never_overwritten(tmp_path: Path) -> None:
    root = generate(tmp_path / "faces", n=12)
    (root / "img_align_celeba" / "000015.jpg").write_bytes(b"someone else's")
    before = snapshot(root)
    with pytest.raises(AuditInputError, match="000015.jpg: exists but was not written by the "
                                              "earlier generation"):
        generate(root, n=20, overwrite=True)
    assert snapshot(root) == before


def test_a_marker_is_required_and_checked(tmp_path: Path) -> None:
    # Looks generated (synthetic.json, meta) but has no marker: refused, untouched.
    root = generate(tmp_path / "faces")
    (root / MARKER).unlink()
    before = snapshot(root)
    with pytest.raises(AuditInputError, match=NOT_OURS):
        generate(root, overwrite=True)
    assert snapshot(root) == before
    # A link to another folder's marker does not claim this one.
    (root / MARKER).symlink_to(generate(tmp_path / "other") / MARKER)
    with pytest.raises(AuditInputError, match=NOT_OURS):
        generate(root, overwrite=True)
    (root / MARKER).unlink()
    # A damaged or foreign marker names the file and the field.
    ours = '{"generator": "compaudit.data.synthetic.generate_synthetic_faces", "settings": '
    for text, pattern in [("{", "cannot read the marker"),
                          ('{"generator": "someone"}', "field generator is 'someone'"),
                          (ours + '{"n": -1, "masks": true}}', "fields n and masks")]:
        (root / MARKER).write_text(text)
        before = snapshot(root)
        with pytest.raises(AuditInputError, match=f"{MARKER}: .*{pattern}"):
            generate(root, overwrite=True)
        assert snapshot(root) == before


def test_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "faces"
    path.write_text("not a folder")
    with pytest.raises(AuditInputError, match="exists and is not a folder"):
        generate(path, overwrite=True)
    assert path.read_text() == "not a folder"


# --- CIFAR-10 python batches -------------------------------------------------------------

NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer",
         b"dog", b"frog", b"horse", b"ship", b"truck"]  # fmt: skip
ROWS = 4


def batch(number: int) -> dict:
    rng = np.random.default_rng(number)
    return {b"batch_label": b"batch %d" % number,
            b"labels": [int(v) for v in rng.integers(0, 10, ROWS)],
            b"data": rng.integers(0, 256, (ROWS, 3072), dtype=np.uint8),
            b"filenames": [b"img_%d.png" % k for k in range(ROWS)]}  # fmt: skip


def py2(obj) -> bytes:
    """Pickle ``obj`` the way the official files were written (Python 2, NumPy 1.x).

    Built opcode by opcode, so the test does not rely on how this Python pickles:
    ``str`` as SHORT_BINSTRING/BINSTRING and arrays as
    ``numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), 'b')`` plus ``__setstate__``.
    """
    if isinstance(obj, dict):
        return b"}(" + b"".join(py2(k) + py2(v) for k, v in obj.items()) + b"u"
    if isinstance(obj, list):
        return b"](" + b"".join(py2(v) for v in obj) + b"e"
    if isinstance(obj, bytes):
        return (b"U" + bytes([len(obj)]) if len(obj) < 256 else
                b"T" + struct.pack("<i", len(obj))) + obj
    if isinstance(obj, int):
        return b"K" + bytes([obj]) if 0 <= obj < 256 else b"M" + struct.pack("<H", obj)
    assert isinstance(obj, np.ndarray) and obj.dtype == np.uint8 and obj.ndim == 2
    dtype = (b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R"
             b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
            b"(K\x01" + py2(obj.shape[0]) + py2(obj.shape[1]) + b"\x86" + dtype + b"\x89"
            + py2(obj.tobytes()) + b"tb")


def write_batches(folder: Path, dump) -> dict[str, dict]:
    folder.mkdir(parents=True)
    written = {}
    for number, name in enumerate([*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]):
        written[name] = batch(number)
        (folder / name).write_bytes(dump(written[name]))
    (folder / "batches.meta").write_bytes(
        dump({b"num_cases_per_batch": ROWS, b"label_names": NAMES, b"num_vis": 3072}))
    return written


def check_loads(folder: Path, written: dict[str, dict]) -> None:
    for split, names in {"train": [f"data_batch_{i}" for i in range(1, 6)],
                         "test": ["test_batch"]}.items():
        ds = CIFAR10(folder, split=split)
        assert ds.classes == [n.decode() for n in NAMES]
        assert np.array_equal(ds._data, np.concatenate([written[n][b"data"] for n in names]))
        assert ds._labels.tolist() == [v for n in names for v in written[n][b"labels"]]
        image, _, _ = ds[1]
        row = written[names[0]][b"data"][1]
        assert np.array_equal(np.asarray(image), row.reshape(3, 32, 32).transpose(1, 2, 0))


def test_official_python2_format_loads(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    written = write_batches(folder, lambda obj: b"\x80\x02" + py2(obj) + b".")
    # The stdlib unpickler reads the hand-built stream back to the same objects.
    reference = pickle.loads((folder / "test_batch").read_bytes(), encoding="bytes")
    assert reference.keys() == written["test_batch"].keys()
    assert np.array_equal(reference[b"data"], written["test_batch"][b"data"])
    check_loads(folder, written)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_batches_re_pickled_by_python3_load(tmp_path: Path, protocol: int) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    check_loads(folder, write_batches(folder, lambda obj: pickle.dumps(obj, protocol=protocol)))


class Call:
    """Pickles as a call of ``fn(*args)``: what a malicious batch file does."""

    def __init__(self, fn, *args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def payloads(sentinel: Path) -> dict[str, Call]:
    """Calls that would create ``sentinel``, by the global they name (Python 3 spelling)."""
    code = f"open({str(sentinel)!r}, 'w').write('ran')"
    calls = [Call(builtins.exec, code), Call(os.system, f"touch {sentinel}"),
             Call(open, str(sentinel), "w")]
    # builtins.exec, posix.system (nt.system on Windows), io.open
    return {f"{call.fn.__module__}.{call.fn.__name__}": call for call in calls}


def test_the_payloads_run_under_plain_pickle(tmp_path: Path) -> None:
    """The attacks below are real: ``pickle.loads`` would create the sentinel."""
    for i, name in enumerate(payloads(tmp_path)):
        sentinel = tmp_path / f"ran-{i}"
        pickle.loads(pickle.dumps({b"data": payloads(sentinel)[name]}, protocol=2))
        assert sentinel.exists()


@pytest.mark.parametrize("file", ["test_batch", "batches.meta"])
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_malicious_batch_is_refused_before_running(tmp_path: Path, file: str,
                                                   protocol: int) -> None:
    sentinel = tmp_path / "sentinel"
    for name, payload in payloads(sentinel).items():
        root = tmp_path / name
        folder = root / "cifar-10-batches-py"
        written = write_batches(folder, lambda obj: pickle.dumps(obj, protocol=protocol))
        content = dict(written["test_batch"]) if file == "test_batch" else {
            b"label_names": NAMES}
        content[b"data" if file == "test_batch" else b"label_names"] = payload
        (folder / file).write_bytes(pickle.dumps(content, protocol=protocol))
        with pytest.raises(AuditInputError) as info:
            CIFAR10(root, split="test")
        if protocol < 3:  # Python 3 writes builtins under its Python 2 name there
            name = name.replace("builtins.", "__builtin__.")
        assert str(info.value).startswith(f"{folder / file}: refused global {name}: ")
        assert "never runs code from an input file" in str(info.value)
        assert info.value.exit_code == EXIT_BAD_INPUT
        assert not sentinel.exists()


def test_codecs_encode_only_for_latin1_bytes(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_batches(folder, lambda obj: pickle.dumps(obj, protocol=2))
    # What Python 3 writes for bytes at protocol 2, with another codec.
    rot13 = b"\x80\x02}(X\x04\x00\x00\x00datac_codecs\nencode\nX\x01\x00\x00\x00xX\x05" \
            b"\x00\x00\x00rot13\x86Ru."
    assert pickle.loads(rot13) == {"data": "k"}
    (folder / "test_batch").write_bytes(rot13)
    with pytest.raises(AuditInputError, match=r"refused global _codecs\.encode \(with "
                                              r"encoding 'rot13'"):
        CIFAR10(folder)
