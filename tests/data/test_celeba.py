"""CelebA on tiny copies of the official files (released and torchvision layouts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from compaudit.data import get_dataset
from compaudit.data.base import EXAMPLE_COLUMNS
from compaudit.data.celeba import CELEBA_ATTRIBUTES, CelebA
from compaudit.errors import AuditInputError
from compaudit.tables import validate_examples

BLOND, MALE, YOUNG = (CELEBA_ATTRIBUTES.index(a) for a in ("Blond_Hair", "Male", "Young"))
# name, partition, Blond_Hair, Male, Young
ROWS = [
    ("000001.jpg", 0, 1, -1, 1),
    ("000002.jpg", 2, -1, 1, 1),
    ("000003.jpg", 2, 1, 1, -1),
    ("000004.jpg", 1, -1, -1, -1),
    ("000005.jpg", 2, 1, -1, -1),
]


def attr_lines(rows=ROWS) -> list[str]:
    lines = []
    for name, _, blond, male, young in rows:
        values = [-1] * 40
        values[BLOND], values[MALE], values[YOUNG] = blond, male, young
        lines.append(name + "".join(f" {v:2d}" for v in values))
    return lines


def write_celeba(base: Path, rows=ROWS, *, count: int | None = None,
                 lines: list[str] | None = None, images: bool = True) -> Path:
    (base / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    lines = attr_lines(rows) if lines is None else lines
    count = len(lines) if count is None else count
    (base / "list_attr_celeba.txt").write_text(
        f"{count}\n{' '.join(CELEBA_ATTRIBUTES)} \n" + "\n".join(lines) + "\n"
    )
    (base / "list_eval_partition.txt").write_text("".join(f"{r[0]} {r[1]}\n" for r in rows))
    if images:
        for k, row in enumerate(rows):
            Image.new("RGB", (8, 10), (20 * k, 100, 50)).save(
                base / "img_align_celeba" / row[0], "JPEG", quality=95
            )
    return base


def fails(root: Path, **kw) -> str:
    with pytest.raises(AuditInputError) as info:
        CelebA(root, **kw)
    return str(info.value)


@pytest.mark.parametrize("layout", ["released", "torchvision"])
def test_happy_path(tmp_path: Path, layout: str) -> None:
    base = write_celeba(tmp_path if layout == "released" else tmp_path / "celeba")
    ds = get_dataset("celeba", tmp_path, split="test", protected=("Male", "Young"))
    assert len(ds) == 3 and ds.num_classes == 2
    image, label, example_id = ds[2]
    assert image.size == (8, 10) and label == 1 and example_id == "celeba/000005.jpg"
    ex = ds.examples()
    assert list(ex.columns[: len(EXAMPLE_COLUMNS)]) == list(EXAMPLE_COLUMNS)
    assert ex["example_id"].tolist() == ["celeba/000002.jpg", "celeba/000003.jpg",
                                         "celeba/000005.jpg"]
    assert ex["label"].tolist() == [0, 1, 1] and ex["label"].dtype == np.int64
    assert ex["attr.Male"].tolist() == [True, True, False]
    assert ex["attr.Young"].tolist() == [True, False, False]
    assert (ex["split"] == "test").all() and (ex["shift"] == "clean").all()
    assert Path(ex["path"][0]) == (base / "img_align_celeba" / "000002.jpg").resolve()
    validate_examples(ex, num_classes=2)

    every = CelebA(tmp_path, split="all", protected=("Male", "Young"), attributes=["Smiling"])
    ex = every.examples()
    assert ex["split"].tolist() == ["train", "test", "test", "valid", "test"]
    assert ex["label"].tolist() == [r[2] == 1 for r in ROWS]
    assert ex["attr.Male"].tolist() == [r[3] == 1 for r in ROWS]
    assert ex["attr.Young"].tolist() == [r[4] == 1 for r in ROWS]
    assert not ex["attr.Smiling"].any()
    assert len(CelebA(tmp_path, split="valid")) == 1 and len(CelebA(tmp_path, split="train")) == 1
    male = CelebA(tmp_path, split="all", target="Male", protected=())
    assert male.examples()["label"].tolist() == [int(r[3] == 1) for r in ROWS]


def test_defaults_blond_hair_target_and_no_protected(tmp_path: Path) -> None:
    write_celeba(tmp_path)
    ds = CelebA(tmp_path, split="all")
    assert ds.target == "Blond_Hair" and ds.protected == ()
    assert ds.examples()["label"].tolist() == [int(r[2] == 1) for r in ROWS]
    assert not [c for c in ds.examples().columns if c.startswith("attr.")]


def test_protected_must_be_a_list_of_names(tmp_path: Path) -> None:
    write_celeba(tmp_path)
    message = fails(tmp_path, protected="Male")
    assert "CelebA: argument protected: got 'Male'" in message and "('Male',)" in message
    assert "argument target: got 3" in fails(tmp_path, target=3)


def test_truncated_attribute_file(tmp_path: Path) -> None:
    write_celeba(tmp_path, count=7)
    message = fails(tmp_path)
    assert "list_attr_celeba.txt: line 1 announces 7 images but the file has 5 rows" in message


def test_wrong_column_count(tmp_path: Path) -> None:
    lines = attr_lines()
    lines[2] = lines[2].rsplit(" ", 1)[0]  # drop the last value of line 5
    write_celeba(tmp_path, lines=lines)
    message = fails(tmp_path)
    assert "list_attr_celeba.txt, line 5: expected 41 whitespace-separated fields" in message
    assert "found 40" in message


def test_extra_column_in_partition_file(tmp_path: Path) -> None:
    write_celeba(tmp_path)
    part = tmp_path / "list_eval_partition.txt"
    lines = part.read_text().splitlines()
    lines[3] += " 9"
    part.write_text("\n".join(lines) + "\n")
    assert "list_eval_partition.txt, line 4: expected 2" in fails(tmp_path)


def test_duplicate_image_names(tmp_path: Path) -> None:
    rows = ROWS + [ROWS[1]]
    write_celeba(tmp_path, rows)
    message = fails(tmp_path)
    assert "1 image names appear more than once" in message and "000002.jpg" in message


def test_images_listed_but_absent(tmp_path: Path) -> None:
    rows = [(f"{i:06d}.jpg", 2, 1, 1, 1) for i in range(1, 9)]
    write_celeba(tmp_path, rows, images=False)
    Image.new("RGB", (4, 4)).save(tmp_path / "img_align_celeba" / "000001.jpg")
    message = fails(tmp_path)
    assert "7 of 8 images listed in list_attr_celeba.txt" in message
    assert "first missing: 000002.jpg, 000003.jpg, 000004.jpg, 000005.jpg, 000006.jpg" in message
    assert "(and 2 more)" in message


def test_unknown_attribute(tmp_path: Path) -> None:
    write_celeba(tmp_path)
    message = fails(tmp_path, protected=("Male", "Gender"))
    assert "unknown attribute 'Gender'" in message
    assert "valid attributes are: 5_o_Clock_Shadow, Arched_Eyebrows" in message
    assert "unknown attribute 'Blonde'" in fails(tmp_path, target="Blonde")


def test_value_other_than_minus_one_or_one(tmp_path: Path) -> None:
    lines = attr_lines()
    fields = lines[1].split()
    fields[1 + MALE] = "0"
    lines[1] = " ".join(fields)
    write_celeba(tmp_path, lines=lines)
    message = fails(tmp_path)
    assert "list_attr_celeba.txt, line 4: attribute Male has value" in message
    assert "expected one of -1, 1" in message


def test_bad_partition_code(tmp_path: Path) -> None:
    write_celeba(tmp_path, [*ROWS[:-1], ("000005.jpg", 3, 1, 1, 1)])
    assert "list_eval_partition.txt, line 5" in fails(tmp_path)


def test_non_image_file(tmp_path: Path) -> None:
    write_celeba(tmp_path)
    (tmp_path / "img_align_celeba" / "000002.jpg").write_bytes(b"\xff\xd8 truncated")
    ds = CelebA(tmp_path)
    with pytest.raises(AuditInputError, match="not a readable image") as info:
        ds[0]
    assert "000002.jpg" in str(info.value)


def test_empty_folder_and_missing_files(tmp_path: Path) -> None:
    message = fails(tmp_path)
    assert "CelebA files not found" in message
    assert "img_align_celeba, list_attr_celeba.txt, list_eval_partition.txt" in message
    write_celeba(tmp_path / "celeba")
    (tmp_path / "celeba" / "list_eval_partition.txt").unlink()
    message = fails(tmp_path)
    assert "missing list_eval_partition.txt in" in message and "celeba" in message


def test_unknown_split(tmp_path: Path) -> None:
    write_celeba(tmp_path)
    message = fails(tmp_path, split="val")
    assert "split: got 'val'; expected one of 'train', 'valid', 'test', 'all'" in message


def test_a_nan_cell_is_reported_with_its_line(tmp_path: Path) -> None:
    lines = attr_lines()
    fields = lines[1].split()
    fields[1 + MALE] = "nan"
    lines[1] = " ".join(fields)
    write_celeba(tmp_path, lines=lines)
    message = fails(tmp_path)
    assert "list_attr_celeba.txt, line 4: attribute Male has value 'nan'" in message


def test_partition_and_attribute_files_list_different_images(tmp_path: Path) -> None:
    write_celeba(tmp_path)
    part = tmp_path / "list_eval_partition.txt"
    lines = part.read_text().splitlines()
    lines[4] = "000009.jpg 2"  # 000005.jpg only in the attribute file, 000009.jpg only here
    part.write_text("\n".join(lines) + "\n")
    message = fails(tmp_path)
    assert "list different images" in message
    assert "1 only in list_eval_partition.txt (first: 000009.jpg)" in message
    assert "1 only in list_attr_celeba.txt (first: 000005.jpg)" in message
