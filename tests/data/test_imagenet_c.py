"""ImageNet-C loader on tiny fake copies of the released layout and of a written copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from compaudit.data.base import EXAMPLE_COLUMNS, TransformSpec, get_dataset
from compaudit.data.imagenet_c import ImageNetC
from compaudit.errors import AuditInputError

# Class indices known independently of the shipped list (torchvision's ImageNet order).
TENCH, GOLDFISH, KIT_FOX = "n01440764", "n01443537", "n02119789"  # 0, 1, 278


def image(path: Path, color: tuple[int, int, int] = (200, 30, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "PNG" if path.suffix == ".png" else "JPEG"
    Image.new("RGB", (12, 10), color).save(path, fmt)
    return path


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """fog and gaussian_noise at severities 1-5, three classes, the real file names."""
    root = tmp_path / "ImageNet-C"
    for corruption in ("gaussian_noise", "fog"):
        for severity in range(1, 6):
            base = root / corruption / str(severity)
            image(base / KIT_FOX / "ILSVRC2012_val_00000001.JPEG")
            image(base / TENCH / "ILSVRC2012_val_00000002.JPEG", (10, 20, 30))
            image(base / GOLDFISH / "ILSVRC2012_val_00000003.JPEG")
    return root


def test_reads_the_released_layout(release):
    ds = ImageNetC(release)
    rows = ds.examples()
    assert list(rows.columns[:6]) == list(EXAMPLE_COLUMNS) and "path" in rows
    assert len(ds) == len(rows) == 2 * 5 * 3
    # ImageNet-C order of corruptions (noise before weather), then severity, then wnid.
    assert rows.example_id[:3].tolist() == [
        "imagenet-c/gaussian_noise/1/ILSVRC2012_val_00000002",  # tench
        "imagenet-c/gaussian_noise/1/ILSVRC2012_val_00000003",  # goldfish
        "imagenet-c/gaussian_noise/1/ILSVRC2012_val_00000001",  # kit fox
    ]
    assert rows.label[:3].tolist() == [0, 1, 278]
    assert rows.source_id[:3].tolist() == [f"imagenet/ILSVRC2012_val_0000000{n}" for n in (2, 3, 1)]
    assert rows.label.dtype == np.int64 and rows.severity.dtype == np.int8
    assert rows.severity.tolist() == sorted(rows.severity.tolist()[:15]) + sorted(
        rows.severity.tolist()[15:]
    )
    assert set(rows["shift"]) == {"gaussian_noise", "fog"} and set(rows.split) == {"val"}
    assert rows.example_id.is_unique and ds.num_classes == 1000
    img, label, example_id = ds[0]
    assert isinstance(img, Image.Image) and img.mode == "RGB"
    assert (label, example_id) == (0, "imagenet-c/gaussian_noise/1/ILSVRC2012_val_00000002")
    assert Path(rows.path[0]).is_file()


def test_selects_corruptions_and_severities_and_is_registered(release):
    ds = get_dataset("imagenet-c", release, corruptions=["fog"], severities=[3, 5],
                     transform=TransformSpec(resize=8, crop=8).build())  # fmt: skip
    rows = ds.examples()
    assert set(rows["shift"]) == {"fog"} and rows.severity.tolist() == [3, 3, 3, 5, 5, 5]
    x, label, _ = ds[2]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 8, 8) and label == 278


def test_ignores_hidden_and_non_image_files(release):
    (release / "fog" / "1" / TENCH / ".ILSVRC2012_val_00000009.JPEG.tmp").write_bytes(b"x")
    (release / "fog" / "1" / TENCH / "notes.txt").write_text("x")
    (release / ".cache").mkdir()
    (release / "README.txt").write_text("x")
    assert len(ImageNetC(release)) == 30


@pytest.fixture
def written_copy(tmp_path: Path) -> Path:
    """A corrupted copy of a 3-image face dataset, as write_corrupted_copy lays it out."""
    root = tmp_path / "faces-c"
    source = pd.DataFrame(
        {
            "example_id": ["faces/a/000001.jpg", "faces/a/000002.jpg", "faces/b/000003.jpg"],
            "label": np.array([1, 0, 1], dtype=np.int64),
            "split": ["test", "test", "valid"],
            "source_id": ["faces/a/000001.jpg", "faces/a/000002.jpg", "faces/b/000003.jpg"],
            "shift": "clean",
            "severity": np.int8(0),
            "attr.Male": [True, False, True],
            "attr.Young": pd.Categorical(["yes", "no", "no"]),
        }
    )
    root.mkdir()
    source.to_parquet(root / "source_examples.parquet")
    for severity in (2, 4):
        base = root / "contrast" / str(severity)
        image(base / "class_1" / "a__000001.png")
        image(base / "class_0" / "a__000002.png")
        image(base / "class_1" / "b__000003.png")
    return root


def test_reads_a_written_copy_and_keeps_attributes(written_copy):
    ds = ImageNetC(written_copy, severities=(2, 4))
    rows = ds.examples()
    assert rows.example_id[:3].tolist() == [
        "faces-c/contrast/2/a__000002",
        "faces-c/contrast/2/a__000001",
        "faces-c/contrast/2/b__000003",
    ]
    assert rows.source_id[:3].tolist() == [
        "faces/a/000002.jpg",
        "faces/a/000001.jpg",
        "faces/b/000003.jpg",
    ]
    assert rows.label[:3].tolist() == [0, 1, 1] and ds.num_classes == 2
    assert rows.split[:3].tolist() == ["test", "test", "valid"]
    assert rows["attr.Male"].dtype == bool and rows["attr.Male"][:3].tolist() == [False, True, True]
    assert isinstance(rows["attr.Young"].dtype, pd.CategoricalDtype)
    assert rows["attr.Young"][:3].tolist() == ["no", "yes", "no"]
    assert rows.severity.tolist() == [2, 2, 2, 4, 4, 4] and set(rows["shift"]) == {"contrast"}


def test_reads_a_csv_source_table(written_copy):
    table = pd.read_parquet(written_copy / "source_examples.parquet")
    (written_copy / "source_examples.parquet").unlink()
    table.to_csv(written_copy / "source_examples.csv", index=False)
    rows = ImageNetC(written_copy, severities=(2, 4)).examples()
    assert rows["attr.Male"][:3].tolist() == [False, True, True]


def test_split_and_protected_of_a_written_copy(written_copy):
    ds = get_dataset("imagenet-c", written_copy, split="valid", target=None,
                     protected=("Male", "attr.Young"), transform=None, severities=(2, 4))
    rows = ds.examples()
    assert rows.example_id.tolist() == ["faces-c/contrast/2/b__000003",
                                        "faces-c/contrast/4/b__000003"]
    assert len(ds) == 2 and ds[1][2] == "faces-c/contrast/4/b__000003"
    assert ds.protected == ("attr.Male", "attr.Young") and ds.split == "valid"
    assert len(ImageNetC(written_copy, split="all", severities=(2, 4))) == 6
    with pytest.raises(AuditInputError) as info:
        ImageNetC(written_copy, split="train", protected=("Skin",), severities=(2, 4))
    assert info.value.problems == [
        "ImageNetC: argument protected: 'attr.Skin' not found among the attribute columns "
        f"of {written_copy} (attr.Male, attr.Young)",
        f"ImageNetC: unknown split 'train'; the images of {written_copy} belong to: all, "
        "test, valid",
    ]


def test_release_split_and_no_attributes(release):
    assert len(ImageNetC(release, split="val")) == len(ImageNetC(release))
    with pytest.raises(AuditInputError, match="ImageNetC: argument target: got 'Male'"):
        ImageNetC(release, target="Male")
    with pytest.raises(AuditInputError, match="'attr.Male' not found .*none: attributes"):
        ImageNetC(release, protected=["Male"])
    with pytest.raises(AuditInputError, match="ImageNetC: argument protected: got 'Male'"):
        ImageNetC(release, protected="Male")


# ----------------------------------------------------------------- broken inputs


def test_missing_root(tmp_path):
    with pytest.raises(
        AuditInputError, match=r"nowhere does not exist.*<root>/<corruption>/<severity>"
    ):
        ImageNetC(tmp_path / "nowhere")


def test_unknown_corruption_folder_lists_the_valid_names(release):
    (release / "foggy" / "1").mkdir(parents=True)
    with pytest.raises(
        AuditInputError,
        match=r"foggy: 'foggy' is not a corruption name; valid folder names are: gaussian_noise, ",
    ):
        ImageNetC(release)


def test_unknown_requested_corruption(release):
    with pytest.raises(AuditInputError, match="unknown corruption 'smog'"):
        ImageNetC(release, corruptions=["smog"])
    with pytest.raises(
        AuditInputError,
        match=r"\['snow'\] were requested but have no folder; present are: fog, gaussian_noise",
    ):
        ImageNetC(release, corruptions=["snow"])


@pytest.mark.parametrize("name", ["6", "0", "three"])
def test_severity_folder_outside_1_to_5(release, name):
    (release / "fog" / name).mkdir()
    with pytest.raises(
        AuditInputError, match=f"fog/{name}: severity folder '{name}' is not one of 1, 2, 3, 4, 5"
    ):
        ImageNetC(release)


def test_missing_or_invalid_requested_severity(release):
    with pytest.raises(AuditInputError, match="expected an integer from 1 to 5"):
        ImageNetC(release, severities=[0])
    for s in (1, 2):
        for wnid in (TENCH, GOLDFISH, KIT_FOX):
            for f in (release / "fog" / str(s) / wnid).iterdir():
                f.unlink()
            (release / "fog" / str(s) / wnid).rmdir()
        (release / "fog" / str(s)).rmdir()
    with pytest.raises(
        AuditInputError,
        match=r"fog: severities \[1, 2\] have no folder \(found: 3, 4, 5\); pass severities=",
    ):
        ImageNetC(release)
    assert len(ImageNetC(release, corruptions=["fog"], severities=[3, 4, 5])) == 9


def test_empty(tmp_path):
    (tmp_path / "fog" / "3" / TENCH).mkdir(parents=True)
    with pytest.raises(
        AuditInputError, match=r"no images found for corruptions \['fog'\] at severities \[3\]"
    ):
        ImageNetC(tmp_path, severities=[3])
    with pytest.raises(AuditInputError, match="no corruption folders found"):
        ImageNetC(tmp_path / "fog" / "3" / TENCH)


def test_unknown_wnid(release):
    image(release / "fog" / "2" / "n99999999" / "x.JPEG")
    with pytest.raises(
        AuditInputError,
        match=r"fog/2/n99999999: unknown wnid 'n99999999'; expected one of the 1,000",
    ):
        ImageNetC(release)


def test_class_folder_neither_wnid_nor_class_label(release):
    image(release / "fog" / "2" / "dogs" / "x.JPEG")
    with pytest.raises(
        AuditInputError, match="'dogs' is neither an ImageNet wnid .* nor class_<label>"
    ):
        ImageNetC(release)


def test_mixed_class_folder_kinds(release):
    image(release / "fog" / "2" / "class_3" / "x.JPEG")
    with pytest.raises(AuditInputError, match="mix ImageNet wnids and class_<label>"):
        ImageNetC(release)


def test_copy_and_source_table_disagree(written_copy):
    image(written_copy / "contrast" / "2" / "class_0" / "c__000009.png")
    with pytest.raises(
        AuditInputError,
        match=r"source_examples.parquet: has no example for 1 image\(s\).*c__000009.png",
    ):
        ImageNetC(written_copy, severities=(2, 4))


def test_label_folder_disagrees_with_source_table(written_copy):
    moved = written_copy / "contrast" / "4" / "class_0" / "b__000003.png"
    (written_copy / "contrast" / "4" / "class_1" / "b__000003.png").rename(moved)
    with pytest.raises(AuditInputError, match="b__000003.png is 1 there but its folder says 0"):
        ImageNetC(written_copy, severities=(2, 4))


def test_source_table_without_ids(written_copy):
    pd.DataFrame({"id": ["x"]}).to_parquet(written_copy / "source_examples.parquet")
    with pytest.raises(
        AuditInputError,
        match=r"source_examples.parquet: lacks the columns \['example_id', 'label'\]",
    ):
        ImageNetC(written_copy, severities=(2, 4))


def test_duplicate_stems(release):
    image(release / "fog" / "1" / GOLDFISH / "ILSVRC2012_val_00000002.JPEG")  # also under tench
    with pytest.raises(
        AuditInputError, match="two images share the id 'imagenet-c/fog/1/ILSVRC2012_val_00000002'"
    ):
        ImageNetC(release)
