"""ManifestDataset on tiny manifests written into tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from compaudit.data import get_dataset
from compaudit.data.base import EXAMPLE_COLUMNS
from compaudit.data.custom import ManifestDataset
from compaudit.errors import AuditInputError
from compaudit.tables import validate_examples

HEADER = "path,label,split,attr.Male,attr.Skin\n"
ROWS = [
    "img/a.jpg,0,test,True,dark\n",
    "img/b.jpg,2,test,False,light\n",
    "img/sub/c.jpg,1,train,False,dark\n",
]


def jpeg(path: Path, color=(10, 200, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (9, 7), color).save(path, "JPEG", quality=95)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for name in ("img/a.jpg", "img/b.jpg", "img/sub/c.jpg"):
        jpeg(tmp_path / "data" / name)
    return tmp_path / "data"


def write(root: Path, rows: list[str], header: str = HEADER) -> Path:
    path = root / "manifest.csv"
    path.write_text(header + "".join(rows))
    return path


def error(root: Path, rows: list[str], header: str = HEADER, **kw) -> str:
    write(root, rows, header)
    with pytest.raises(AuditInputError) as info:
        ManifestDataset(root, manifest="manifest.csv", **kw)
    return str(info.value)


def test_happy_path(root: Path) -> None:
    write(root, ROWS)
    ds = get_dataset("manifest", root, manifest="manifest.csv", protected=["Male"])
    assert isinstance(ds, ManifestDataset)
    assert len(ds) == 3 and ds.num_classes == 3
    image, label, example_id = ds[2]
    assert image.size == (9, 7) and label == 1 and example_id == "manifest/img/sub/c.jpg"
    ex = ds.examples()
    assert list(ex.columns[: len(EXAMPLE_COLUMNS)]) == list(EXAMPLE_COLUMNS)
    assert ex["example_id"].tolist() == ["manifest/img/a.jpg", "manifest/img/b.jpg",
                                         "manifest/img/sub/c.jpg"]
    assert (ex["source_id"] == ex["example_id"]).all()
    assert ex["label"].dtype == np.int64 and ex["label"].tolist() == [0, 2, 1]
    assert ex["split"].tolist() == ["test", "test", "train"]
    assert (ex["shift"] == "clean").all()
    assert ex["severity"].dtype == np.int8 and (ex["severity"] == 0).all()
    assert ex["attr.Male"].dtype == bool and ex["attr.Male"].tolist() == [True, False, False]
    assert ex["attr.Skin"].tolist() == ["dark", "light", "dark"]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in ex["path"])
    assert Path(ex["path"][0]) == (root / "img/a.jpg").resolve()
    checked = validate_examples(ex, num_classes=ds.num_classes)
    assert checked["attr.Male"].dtype == bool and len(checked) == 3


def test_split_example_id_and_num_classes(root: Path) -> None:
    write(root, ["img/a.jpg,0,x1,test\n", "img/b.jpg,1,x2,train\n"],
          header="path,label,example_id,split\n")
    ds = ManifestDataset(root, manifest=root / "manifest.csv", split="train", num_classes=5)
    assert len(ds) == 1 and ds.num_classes == 5
    assert ds.examples()["example_id"].tolist() == ["x2"]
    message = error(root, ["img/a.jpg,0,x1,test\n"], header="path,label,example_id,split\n",
                    split="valid")
    assert "unknown split 'valid'" in message and "holds: test" in message


def test_shared_constructor_shape(root: Path, tmp_path: Path) -> None:
    write(root, ROWS)
    ds = ManifestDataset(root, split="test", target=None, protected=("attr.Male",),
                         transform=None, manifest="manifest.csv")
    assert len(ds) == 2 and ds.split == "test" and ds.protected == ("attr.Male",)
    assert ds.manifest == root / "manifest.csv"
    assert len(get_dataset("manifest", root)) == 3  # root/manifest.csv, split "all"
    elsewhere = tmp_path / "lists" / "faces.csv"
    elsewhere.parent.mkdir()
    elsewhere.write_text(HEADER + "".join(ROWS))
    assert len(ManifestDataset(root, manifest=str(elsewhere), split="train")) == 1
    assert "ManifestDataset: argument target: got 'Male'" in error(root, ROWS, target="Male")
    assert "ManifestDataset: argument protected: got 'Male'" in error(root, ROWS,
                                                                       protected="Male")
    assert "ManifestDataset: argument split: got None" in error(root, ROWS, split=None)


def test_manifest_is_relative_to_root_not_the_working_directory(
        root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cwd.csv").write_text(HEADER + ROWS[0])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AuditInputError, match="manifest file not found") as info:
        ManifestDataset(root, manifest="cwd.csv")
    assert str(root / "cwd.csv") in str(info.value)


def test_missing_manifest(root: Path) -> None:
    with pytest.raises(AuditInputError, match="manifest file not found") as info:
        ManifestDataset(root, manifest="nope.csv")
    assert "nope.csv" in str(info.value)


def test_missing_column(root: Path) -> None:
    message = error(root, ["img/a.jpg,test\n"], header="path,split\n")
    assert "manifest.csv" in message and "missing required column(s) 'label'" in message


def test_non_integer_label(root: Path) -> None:
    message = error(root, [ROWS[0], "img/b.jpg,cat,test,True,dark\n",
                           "img/sub/c.jpg,-1,test,True,dark\n"])
    assert "column 'label': data rows 2, 3 are not integers >= 0" in message
    assert "'cat'" in message


def test_missing_attribute_column(root: Path) -> None:
    message = error(root, ROWS, protected=["Young"])
    assert "'attr.Young' not found" in message
    assert "available attribute columns: attr.Male, attr.Skin" in message


def test_empty_attribute_value(root: Path) -> None:
    message = error(root, [ROWS[0], "img/b.jpg,1,test,,dark\n"])
    assert "column 'attr.Male': data row 2 are empty" in message


def test_path_escaping_root_with_dotdot(root: Path, tmp_path: Path) -> None:
    jpeg(tmp_path / "outside.jpg")
    message = error(root, [ROWS[0], "../outside.jpg,1,test,True,dark\n"])
    assert "data row 2 point outside the root folder" in message
    assert "'../outside.jpg'" in message


def test_absolute_path(root: Path) -> None:
    absolute = str((root / "img/a.jpg").resolve())
    message = error(root, [f"{absolute},1,test,True,dark\n"])
    assert "data row 1 are absolute paths" in message and absolute in message


def test_symlink_outside_root(root: Path, tmp_path: Path) -> None:
    target = jpeg(tmp_path / "secret" / "x.jpg")
    os.symlink(target, root / "img" / "link.jpg")
    os.symlink(target.parent, root / "linkdir")
    message = error(root, [ROWS[0], "img/link.jpg,1,test,True,dark\n",
                           "linkdir/x.jpg,1,test,True,dark\n"])
    assert "data rows 2, 3 point outside the root folder" in message
    # A link that stays inside the root is fine.
    os.symlink(root / "img" / "a.jpg", root / "img" / "inside.jpg")
    write(root, ["img/inside.jpg,0,test,True,dark\n"])
    assert len(ManifestDataset(root, manifest="manifest.csv")) == 1


def test_missing_image(root: Path) -> None:
    rows = [ROWS[0]] + [f"img/gone{i}.jpg,0,test,True,dark\n" for i in range(7)]
    message = error(root, rows)
    assert "7 of 8 images listed in" in message
    assert "first missing: img/gone0.jpg, img/gone1.jpg" in message and "(and 2 more)" in message


def test_missing_image_in_other_split_is_ignored(root: Path) -> None:
    write(root, [ROWS[0], "img/gone.jpg,0,train,True,dark\n"])
    assert len(ManifestDataset(root, manifest="manifest.csv", split="test")) == 1


def test_non_image_file(root: Path) -> None:
    (root / "img" / "notes.jpg").write_text("not an image")
    write(root, ["img/notes.jpg,0,test,True,dark\n"])
    ds = ManifestDataset(root, manifest="manifest.csv")
    with pytest.raises(AuditInputError, match="not a readable image") as info:
        ds[0]
    assert "notes.jpg" in str(info.value)


def test_duplicate_path(root: Path) -> None:
    message = error(root, [ROWS[0], ROWS[1], "img/./a.jpg,1,test,True,dark\n"])
    assert "column 'path': data rows 1, 3 repeat an image (img/a.jpg)" in message


def test_empty_manifest(root: Path) -> None:
    assert "lists no images" in error(root, [])
    (root / "manifest.csv").write_text("")
    with pytest.raises(AuditInputError, match="lists no images"):
        ManifestDataset(root, manifest="manifest.csv")


def test_problems_are_collected(root: Path) -> None:
    message = error(root, ["img/a.jpg,x,test,True,dark\n", "/abs.jpg,0,test,True,dark\n"],
                    protected=["Young"])
    assert len(message.splitlines()) == 3
