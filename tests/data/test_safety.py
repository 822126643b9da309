"""Safe at the door: the generator deletes only its own files; pickles run no code."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from compaudit.data.celeba import CelebA
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
