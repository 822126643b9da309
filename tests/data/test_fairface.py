"""FairFace on tiny copies of the official label CSVs and image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compaudit.data import get_dataset
from compaudit.data.base import EXAMPLE_COLUMNS, TransformSpec
from compaudit.data.fairface import FAIRFACE_CLASSES, FairFace
from compaudit.errors import AuditInputError
from compaudit.tables import read_examples, validate_examples, write_examples

HEADER = "file,age,gender,race,service_test\n"
# Rows as in the released files: file, age bin, gender, race, service_test.
TRAIN = [
    "train/1.jpg,50-59,Male,East Asian,True\n",
    "train/2.jpg,30-39,Female,Indian,False\n",
    "train/3.jpg,3-9,Female,Black,False\n",
]
VAL = [
    "val/1.jpg,3-9,Male,East Asian,False\n",
    "val/2.jpg,50-59,Female,East Asian,True\n",
    "val/3.jpg,more than 70,Female,Latino_Hispanic,True\n",
    "val/4.jpg,20-29,Male,Middle Eastern,False\n",
]


def jpeg(path: Path, k: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 9), (30 * k % 256, 90, 160)).save(path, "JPEG", quality=95)


def write_fairface(root: Path, train=TRAIN, val=VAL, *, images: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "fairface_label_train.csv").write_text(HEADER + "".join(train))
    (root / "fairface_label_val.csv").write_text(HEADER + "".join(val))
    if images:
        for k, row in enumerate(train + val):
            jpeg(root / row.split(",")[0], k)
    return root


def fails(root: Path, **kw) -> str:
    with pytest.raises(AuditInputError) as info:
        FairFace(root, **kw)
    return str(info.value)


def test_happy_path_through_the_registry(tmp_path: Path) -> None:
    root = write_fairface(tmp_path / "ff")
    ds = get_dataset("fairface", root, split="val", target="race",
                     protected=["gender", "age"], transform=TransformSpec(resize=8, crop=8))
    assert isinstance(ds, FairFace) and len(ds) == 4 and ds.num_classes == 7
    image, label, example_id = ds[2]
    assert isinstance(image, torch.Tensor) and image.shape == (3, 8, 8)
    assert label == 2 and example_id == "fairface/val/3.jpg"  # Latino_Hispanic
    ex = ds.examples()
    assert list(ex.columns[: len(EXAMPLE_COLUMNS)]) == list(EXAMPLE_COLUMNS)
    assert ex["example_id"].tolist() == [f"fairface/val/{i}.jpg" for i in range(1, 5)]
    assert (ex["source_id"] == ex["example_id"]).all()
    # East Asian=3, East Asian=3, Latino_Hispanic=2, Middle Eastern=6
    assert ex["label"].dtype == np.int64 and ex["label"].tolist() == [3, 3, 2, 6]
    assert ex["attr.gender"].tolist() == ["Male", "Female", "Female", "Male"]
    assert ex["attr.age"].tolist() == ["3-9", "50-59", "more than 70", "20-29"]
    assert "attr.race" not in ex
    assert (ex["split"] == "val").all() and (ex["shift"] == "clean").all()
    assert ex["severity"].dtype == np.int8 and (ex["severity"] == 0).all()
    assert Path(ex["path"][3]) == (root / "val" / "4.jpg").resolve()
    checked = validate_examples(ex, num_classes=ds.num_classes)
    assert checked["attr.gender"].dtype == "category" and len(checked) == 4
    back = read_examples(write_examples(ex, tmp_path / "examples.parquet"), num_classes=7)
    assert back["attr.age"].astype(str).tolist() == ex["attr.age"].tolist()


def test_defaults_gender_target_other_attributes_protected(tmp_path: Path) -> None:
    root = write_fairface(tmp_path)
    ds = FairFace(root)
    assert ds.split == "val" and ds.target == "gender" and ds.protected == ("age", "race")
    assert ds.class_names == ("Female", "Male") and ds.num_classes == 2
    ex = ds.examples()
    assert ex["label"].tolist() == [1, 0, 0, 1]
    assert ex["attr.race"].tolist() == ["East Asian", "East Asian", "Latino_Hispanic",
                                        "Middle Eastern"]
    assert [c for c in ex.columns if c.startswith("attr.")] == ["attr.age", "attr.race"]
    assert not [c for c in FairFace(root, protected=()).examples() if c.startswith("attr.")]


def test_splits_test_alias_and_all(tmp_path: Path) -> None:
    root = write_fairface(tmp_path)
    train = FairFace(root, split="train", target="age")
    assert train.num_classes == 9
    # 50-59=6, 30-39=4, 3-9=1
    assert train.examples()["label"].tolist() == [6, 4, 1]
    test = FairFace(root, split="test")
    assert test.examples().equals(FairFace(root, split="val").examples())
    every = FairFace(root, split="all")
    ex = every.examples()
    assert ex["split"].tolist() == ["train"] * 3 + ["val"] * 4
    assert ex["example_id"].iloc[0] == "fairface/train/1.jpg"
    validate_examples(ex, num_classes=2)


def test_coarse_age_groups(tmp_path: Path) -> None:
    root = write_fairface(tmp_path)
    ds = FairFace(root, split="all", target="age", age_groups="coarse")
    assert ds.num_classes == 4 and ds.class_names == ("0-19", "20-39", "40-59", "60+")
    # 50-59, 30-39, 3-9, 3-9, 50-59, more than 70, 20-29
    assert ds.examples()["label"].tolist() == [2, 1, 0, 0, 2, 3, 1]
    by_gender = FairFace(root, split="val", age_groups="coarse").examples()
    assert by_gender["attr.age"].tolist() == ["0-19", "40-59", "60+", "20-39"]


def test_label_order_is_the_documented_one() -> None:
    assert FAIRFACE_CLASSES["gender"] == ("Female", "Male")
    assert FAIRFACE_CLASSES["race"] == ("White", "Black", "Latino_Hispanic", "East Asian",
                                        "Southeast Asian", "Indian", "Middle Eastern")
    assert FAIRFACE_CLASSES["age"][0] == "0-2" and FAIRFACE_CLASSES["age"][-1] == "more than 70"


def test_missing_label_file(tmp_path: Path) -> None:
    root = write_fairface(tmp_path)
    (root / "fairface_label_val.csv").unlink()
    message = fails(root, split="val")
    assert str(root / "fairface_label_val.csv") in message
    assert "label file not found" in message and "never downloads" in message
    assert len(FairFace(root, split="train")) == 3


def test_missing_columns(tmp_path: Path) -> None:
    root = write_fairface(tmp_path)
    (root / "fairface_label_val.csv").write_text("file,age,sex\nval/1.jpg,3-9,Male\n")
    message = fails(root)
    assert "fairface_label_val.csv: missing column(s) 'gender', 'race'" in message
    assert "found 'file', 'age', 'sex'" in message


def test_empty_label_file(tmp_path: Path) -> None:
    root = write_fairface(tmp_path, val=[])
    assert "fairface_label_val.csv: the label file lists no images" in fails(root)


def test_values_outside_the_published_bins_all_reported(tmp_path: Path) -> None:
    val = list(VAL)
    val[1] = "val/2.jpg,70+,Female,East Asian,True\n"
    val[3] = "val/4.jpg,20-29,male,Asian,False\n"
    root = write_fairface(tmp_path, val=val)
    with pytest.raises(AuditInputError) as info:
        FairFace(root)
    problems = info.value.problems
    assert len(problems) == 3
    age, gender, race = problems
    assert "fairface_label_val.csv: column 'age': 1 row(s) (rows 2)" in age
    assert "found '70+'" in age and "'more than 70'" in age
    assert "column 'gender': 1 row(s) (rows 4)" in gender and "found 'male'" in gender
    assert "expected one of 'Female', 'Male'" in gender
    assert "column 'race': 1 row(s) (rows 4)" in race and "'Latino_Hispanic'" in race


def test_problems_in_both_files_reported_at_once(tmp_path: Path) -> None:
    train = list(TRAIN)
    train[0] = "train/1.jpg,50-59,Male,Asian,True\n"
    root = write_fairface(tmp_path, train=train)
    (root / "fairface_label_val.csv").unlink()
    with pytest.raises(AuditInputError) as info:
        FairFace(root, split="all")
    assert len(info.value.problems) == 2
    assert "fairface_label_train.csv: column 'race'" in info.value.problems[0]
    assert "fairface_label_val.csv: FairFace label file not found" in info.value.problems[1]


def test_repeated_and_unsafe_paths(tmp_path: Path) -> None:
    val = [*VAL, VAL[0], "../outside.jpg,3-9,Male,White,False\n",
           "/abs/x.jpg,3-9,Male,White,True\n"]
    root = write_fairface(tmp_path / "ff", val=val, images=False)
    message = fails(root)
    assert "column 'file': 2 row(s) (rows 6, 7) are absolute or contain '..'" in message
    assert "column 'file': 2 row(s) (rows 1, 5) repeat an image (val/1.jpg)" in message


def test_missing_images_collected_at_once(tmp_path: Path) -> None:
    val = [f"val/{i}.jpg,20-29,Male,White,False\n" for i in range(1, 9)]
    root = write_fairface(tmp_path, val=val, images=False)
    jpeg(root / "val" / "1.jpg")
    message = fails(root)
    assert "7 of 8 images listed in fairface_label_val.csv are missing" in message
    assert "first missing: val/2.jpg, val/3.jpg, val/4.jpg, val/5.jpg, val/6.jpg" in message
    assert "(and 2 more)" in message and "column 'file'" in message


def test_unknown_target_protected_split_and_age_groups(tmp_path: Path) -> None:
    root = write_fairface(tmp_path)
    with pytest.raises(AuditInputError) as info:
        FairFace(root, target="Male", protected=("race", "skin"), age_groups="decades")
    target, protected, groups = info.value.problems
    assert "FairFace: argument target: got 'Male'; expected one of 'age', 'gender', 'race'" \
        in target
    assert "unknown attribute(s) 'skin'; valid attributes: 'age', 'gender', 'race'" in protected
    assert "argument age_groups: got 'decades'; expected one of 'fine', 'coarse'" in groups
    message = fails(root, split="valid")
    assert "argument split: got 'valid'; expected one of 'train', 'val', 'test', 'all'" \
        in message
    assert "('race',)" in fails(root, protected="race")


def test_unreadable_image_named(tmp_path: Path) -> None:
    root = write_fairface(tmp_path)
    (root / "val" / "2.jpg").write_bytes(b"not a jpeg")
    ds = FairFace(root)
    with pytest.raises(AuditInputError, match=r"val/2\.jpg: not a readable image"):
        ds[1]


def test_ragged_row_named(tmp_path: Path) -> None:
    root = write_fairface(tmp_path, val=[*VAL, "val/9.jpg,3-9,Male,White,True,extra\n"])
    message = fails(root)
    assert "fairface_label_val.csv: cannot be parsed as CSV" in message
    assert "Expected 5 fields in line 6, saw 6" in message and "\n" not in message
