"""UTKFace on tiny copies of the official folders (aligned .chip.jpg and in-the-wild)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compaudit.data import get_dataset
from compaudit.data.base import EXAMPLE_COLUMNS, TransformSpec
from compaudit.data.utkface import UTKFace, UTKFaceNameWarning, parse_utkface_name
from compaudit.errors import AuditInputError
from compaudit.tables import validate_examples

# Aligned & cropped names as released: [age]_[gender]_[race]_[date&time].jpg.chip.jpg
ALIGNED = [
    "1_0_2_20161219140623097.jpg.chip.jpg",   # 0-2, Male, Asian
    "26_1_0_20170116234741024.jpg.chip.jpg",  # 20-29, Female, White
    "45_0_3_20170119171823145.jpg.chip.jpg",  # 40-49, Male, Indian
    "70_1_1_20170110154118462.jpg.chip.jpg",  # more than 70, Female, Black
    "9_1_4_20161220222856346.jpg.chip.jpg",   # 3-9, Female, Others
]
# The release's known malformed names (race missing) and one with a bad gender.
MALFORMED = [
    "39_1_20170116174525125.jpg.chip.jpg",
    "61_1_20170109150557335.jpg.chip.jpg",
    "30_2_0_20170119180000000.jpg.chip.jpg",
]
SMALL = TransformSpec(resize=6, crop=6)


def jpeg(path: Path, k: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (10, 10), (40 * k % 256, 120, 60)).save(path, "JPEG", quality=95)


def write_utkface(root: Path, names=ALIGNED) -> Path:
    for k, name in enumerate(names):
        jpeg(root / name, k)
    return root


def test_happy_path_through_the_registry(tmp_path: Path) -> None:
    root = write_utkface(tmp_path / "UTKFace")
    (root / "README.txt").write_text("not an image")
    ds = get_dataset("utkface", root, split="all", target="race", protected=["age", "gender"],
                     transform=SMALL)
    assert isinstance(ds, UTKFace) and len(ds) == 5 and ds.num_classes == 5
    assert ds.malformed == {}
    assert sorted(ALIGNED) == ALIGNED  # examples come in sorted path order
    ex = ds.examples()
    assert list(ex.columns[: len(EXAMPLE_COLUMNS)]) == list(EXAMPLE_COLUMNS)
    assert ex["example_id"].tolist() == [f"utkface/{n}" for n in ALIGNED]
    assert ex["label"].dtype == np.int64 and ex["label"].tolist() == [2, 0, 3, 1, 4]
    assert ex["attr.age"].tolist() == ["0-2", "20-29", "40-49", "more than 70", "3-9"]
    assert ex["attr.gender"].tolist() == ["Male", "Female", "Male", "Female", "Female"]
    assert set(ex["split"]) <= {"train", "test"} and (ex["shift"] == "clean").all()
    assert (ex["source_id"] == ex["example_id"]).all() and (ex["severity"] == 0).all()
    assert Path(ex["path"][1]) == (root / ALIGNED[1]).resolve()
    validate_examples(ex, num_classes=ds.num_classes)
    image, label, example_id = ds[3]
    assert isinstance(image, torch.Tensor) and image.shape == (3, 6, 6)
    assert label == 1 and example_id == f"utkface/{ALIGNED[3]}"


def test_defaults_gender_target_official_codes(tmp_path: Path) -> None:
    ds = UTKFace(write_utkface(tmp_path))
    assert ds.split == "all" and ds.target == "gender" and ds.protected == ("age", "race")
    assert ds.class_names == ("Male", "Female")
    ex = ds.examples()
    assert ex["label"].tolist() == [0, 1, 0, 1, 1]
    assert ex["attr.race"].tolist() == ["Asian", "White", "Indian", "Black", "Others"]


def test_age_target_fine_and_coarse_bins(tmp_path: Path) -> None:
    root = write_utkface(tmp_path)
    fine = UTKFace(root, target="age")
    assert fine.num_classes == 9 and fine.examples()["label"].tolist() == [0, 3, 5, 8, 1]
    coarse = UTKFace(root, target="age", age_groups="coarse")
    assert coarse.num_classes == 4 and coarse.examples()["label"].tolist() == [0, 1, 2, 3, 0]
    assert UTKFace(root, age_groups="coarse").examples()["attr.age"].tolist() == [
        "0-19", "20-39", "40-59", "60+", "0-19"]


def test_in_the_wild_names_and_subfolders(tmp_path: Path) -> None:
    root = tmp_path / "wild"
    write_utkface(root / "part1", ["100_0_0_20170112213303693.jpg"])
    write_utkface(root / "part2", ["5_1_1_20170109194005140.jpg", ".hidden_1_1_1.jpg"])
    ds = UTKFace(root, target="age", protected=("race",))
    ex = ds.examples()
    assert ex["example_id"].tolist() == ["utkface/part1/100_0_0_20170112213303693.jpg",
                                         "utkface/part2/5_1_1_20170109194005140.jpg"]
    assert ex["label"].tolist() == [8, 1] and ex["attr.race"].tolist() == ["White", "Black"]
    assert ds[1][2] == "utkface/part2/5_1_1_20170109194005140.jpg"


def ids(ds: UTKFace) -> set[str]:
    return set(ds.examples()["example_id"])


def test_hash_split_is_stable_disjoint_and_seeded(tmp_path: Path) -> None:
    names = [f"{20 + i % 50}_{i % 2}_{i % 5}_2017011{i:010d}.jpg.chip.jpg" for i in range(60)]
    root = write_utkface(tmp_path / "a", names)
    every = UTKFace(root, split="all", protected=())
    train, test = UTKFace(root, split="train"), UTKFace(root, split="test")
    assert ids(train) | ids(test) == ids(every) and not ids(train) & ids(test)
    assert 3 <= len(test) <= 25  # 20% of 60 in expectation
    sides = dict(zip(every.examples()["example_id"], every.examples()["split"]))
    assert all(sides[i] == "test" for i in ids(test))
    # The assignment depends on the name only: half the files elsewhere, same sides.
    write_utkface(tmp_path / "b", names[::2])
    half = UTKFace(tmp_path / "b", split="all").examples()
    assert all(sides[i] == s for i, s in zip(half["example_id"], half["split"]))
    # The aligned and in-the-wild crop of one photo fall on the same side.
    wild = [n.removesuffix(".chip.jpg") for n in names]
    write_utkface(tmp_path / "c", wild)
    wild_sides = UTKFace(tmp_path / "c").examples()["split"].tolist()
    assert wild_sides == every.examples()["split"].tolist()
    other = UTKFace(root, split_seed=1).examples()["split"].tolist()
    assert other != every.examples()["split"].tolist()
    assert len(UTKFace(root, split="test", test_fraction=0.9)) > len(test)


def test_malformed_names_skipped_with_count_and_first_few(tmp_path: Path) -> None:
    root = write_utkface(tmp_path, ALIGNED + MALFORMED)
    with pytest.warns(UTKFaceNameWarning) as record:
        ds = UTKFace(root)
    message = str(record[0].message)
    assert f"{root}: 3 of 8 image names do not follow" in message
    assert "30_2_0_20170119180000000.jpg.chip.jpg (gender '2' is not 0 (male) or 1" in message
    assert "39_1_20170116174525125.jpg.chip.jpg (3 fields, expected 4)" in message
    assert "strict=True" in message
    assert len(ds) == 5 and sorted(ds.malformed) == sorted(MALFORMED)
    assert ds.malformed["61_1_20170109150557335.jpg.chip.jpg"] == "3 fields, expected 4"


def test_malformed_names_are_an_error_when_strict_or_all_bad(tmp_path: Path) -> None:
    root = write_utkface(tmp_path / "mixed", ALIGNED + MALFORMED)
    with pytest.raises(AuditInputError, match=r"3 of 8 image names .*strict=True"):
        UTKFace(root, strict=True)
    bad = write_utkface(tmp_path / "bad", MALFORMED[:2])
    with pytest.raises(AuditInputError, match=r"2 of 2 image names .*every image is malformed"):
        UTKFace(bad)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("117_0_0_20170101000000000.jpg", "age '117' is not an integer 0-116"),
        ("x_0_0_20170101000000000.jpg", "age 'x' is not an integer 0-116"),
        ("20_0_5_20170101000000000.jpg", "race '5' is not 0-4"),
        ("20_0_1_.jpg.chip.jpg", "date&time is empty"),
        ("20_0_1_2_3.jpg", "5 fields, expected 4"),
    ],
)
def test_parse_reasons(name: str, why: str) -> None:
    assert parse_utkface_name(name) == why


def test_missing_or_empty_root_and_bad_options(tmp_path: Path) -> None:
    with pytest.raises(AuditInputError, match=r"nowhere: UTKFace folder not found.*\[age\]"):
        UTKFace(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AuditInputError, match=r"empty: no \.jpg images found"):
        UTKFace(tmp_path / "empty")
    root = write_utkface(tmp_path / "ok")
    with pytest.raises(AuditInputError) as info:
        UTKFace(root, split="val", target="ethnicity")
    assert "UTKFace: argument split: got 'val'; expected one of 'all', 'train', 'test'" \
        in str(info.value)
    with pytest.raises(AuditInputError) as info:
        UTKFace(root, target="ethnicity", protected=["gender", "Male"])
    target, protected = info.value.problems
    assert "argument target: got 'ethnicity'; expected one of 'age', 'gender', 'race'" in target
    assert "unknown attribute(s) 'Male'; valid attributes: 'age', 'gender', 'race'" in protected
    with pytest.raises(AuditInputError) as info:
        UTKFace(root, test_fraction=1.0, split_seed="a")
    fraction, seed = info.value.problems
    assert "argument test_fraction: got 1.0; expected a number strictly between 0 and 1" \
        in fraction
    assert "argument split_seed: got 'a'; expected an integer" in seed
