"""ImageNet validation (folders, devkit, Kaggle csv) and ImageNet-A on tiny fake copies."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from compaudit.data.base import EXAMPLE_COLUMNS, TransformSpec, get_dataset
from compaudit.data.imagenet import ImageNetA, ImageNetVal
from compaudit.data.imagenet_classes import imagenet_wnids
from compaudit.errors import AuditInputError

# Class indices known independently of the shipped list (torchvision's ImageNet order).
TENCH, GOLDFISH = "n01440764", "n01443537"  # 0, 1
KIT_FOX, ENGLISH_SETTER, HUSKY = "n02119789", "n02100735", "n02110185"  # 278, 212, 250
SEA_SNAKE, ALP, SHELTIE = "n01751748", "n09193705", "n02105855"  # 65, 970, 230
STINGRAY, GOLDFINCH, JUNCO = "n01498041", "n01531178", "n01534433"  # 6, 11, 13 (ImageNet-A)

# Copied from REFERENCES.md, "ImageNet-A".
REFERENCE_A_INDICES = [int(x) for x in """
6 11 13 15 17 22 23 27 30 37 39 42 47 50 57 70 71 76 79 89 90 94 96 97 99 105 107 108 110
113 124 125 130 132 143 144 150 151 207 234 235 254 277 283 287 291 295 298 301 306 307
308 309 310 311 313 314 315 317 319 323 324 326 327 330 334 335 336 347 361 363 372 378
386 397 400 401 402 404 407 411 416 417 420 425 428 430 437 438 445 456 457 461 462 470
472 483 486 488 492 496 514 516 528 530 539 542 543 549 552 557 561 562 569 572 573 575
579 589 606 607 609 614 626 627 640 641 642 643 658 668 677 682 684 687 701 704 719 736
746 749 752 758 763 765 768 773 774 776 779 780 786 792 797 802 803 804 813 815 820 823
831 833 835 839 845 847 850 859 862 870 879 880 888 890 897 900 907 913 924 932 933 934
937 943 945 947 951 954 956 957 959 971 972 980 981 984 986 987 988
""".split()]

SMALL = TransformSpec(resize=8, crop=8)


def jpeg(path: Path, color: tuple[int, int, int] = (200, 30, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), color).save(path, "JPEG", quality=95)
    return path


def val_name(number: int) -> str:
    return f"ILSVRC2012_val_{number:08d}.JPEG"


def write_devkit(where: Path, truth_lines: list[str]) -> Path:
    """A devkit with the official meta.mat struct layout and a few synsets."""
    data = where / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    # ILSVRC2012_ID order of the real devkit (1 kit fox, 2 English setter, 3 husky), not
    # the sorted-wnid order; 1001 is an internal (non-leaf) node.
    rows = [
        (1, KIT_FOX, "kit fox", 0),
        (2, ENGLISH_SETTER, "English setter", 0),
        (3, HUSKY, "Siberian husky", 0),
        (1001, "n02084071", "dog", 3),
    ]
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children",
              "wordnet_height", "num_train_images"]  # fmt: skip
    synsets = np.zeros((len(rows), 1), dtype=[(f, object) for f in fields])
    for k, (ident, wnid, words, children) in enumerate(rows):
        synsets[k, 0] = (ident, wnid, words, "a gloss", children,
                         np.zeros((1, children)), 0, 1300)  # fmt: skip
    scipy.io.savemat(data / "meta.mat", {"synsets": synsets})
    truth = "".join(f"{x}\n" for x in truth_lines)
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text(truth)
    return data


def write_loc(path: Path, rows: list[tuple[str, str]]) -> Path:
    lines = ["ImageId,PredictionString"] + [f"{i},{w} 10 20 300 400 {w} 1 2 3 4" for i, w in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


# --- ImageNet validation, one folder per wnid -------------------------------------------


def test_folder_layout_labels_ids_and_rows(tmp_path: Path) -> None:
    root = tmp_path / "val"
    jpeg(root / TENCH / "ILSVRC2012_val_00000293.JPEG")
    jpeg(root / GOLDFISH / "ILSVRC2012_val_00000001.JPEG", (0, 255, 0))
    jpeg(root / KIT_FOX / "ILSVRC2012_val_00000007.JPEG")
    (root / TENCH / ".DS_Store").write_bytes(b"\0")  # hidden files are ignored
    ds = ImageNetVal(root, transform=SMALL)
    assert ds.layout == "folders" and len(ds) == 3 and ds.num_classes == 1000
    assert ds.class_mask is None
    # Folders sorted by wnid: tench (0), goldfish (1), kit fox (278).
    rows = ds.examples()
    assert list(rows.columns) == [*EXAMPLE_COLUMNS, "path"]
    assert rows.label.tolist() == [0, 1, 278]
    assert rows.example_id.tolist() == [
        "imagenet/ILSVRC2012_val_00000293",
        "imagenet/ILSVRC2012_val_00000001",
        "imagenet/ILSVRC2012_val_00000007",
    ]
    assert (rows.source_id == rows.example_id).all()
    assert set(rows["shift"]) == {"clean"} and set(rows.split) == {"val"}
    assert rows.severity.dtype == np.int8 and (rows.severity == 0).all()
    assert rows.label.dtype == np.int64
    assert rows.path[1] == str(root.absolute() / GOLDFISH / "ILSVRC2012_val_00000001.JPEG")
    image, label, example_id = ds[1]
    assert (label, example_id) == (1, "imagenet/ILSVRC2012_val_00000001")
    assert isinstance(image, torch.Tensor) and image.shape == (3, 8, 8)
    # A flat green image normalized with ImageNet mean/std: green channel ~ (1-.456)/.224.
    assert image[1].mean().item() == pytest.approx((1 - 0.456) / 0.224, abs=0.05)


def test_registry_and_transform_options(tmp_path: Path) -> None:
    jpeg(tmp_path / GOLDFISH / "a.JPEG")
    ds = get_dataset("imagenet", tmp_path)
    assert isinstance(ds, ImageNetVal)
    image = ds[0][0]  # no transform: the decoded PIL image
    assert image.size == (12, 10) and image.mode == "RGB"
    usual = ImageNetVal(tmp_path, transform=ImageNetVal.default_transform)
    assert usual[0][0].shape == (3, 224, 224)  # resize 256, center crop 224
    assert ImageNetVal(tmp_path, transform=lambda im: im.size)[0][0] == (12, 10)


def test_listing_all_1000_wnid_folders(tmp_path: Path) -> None:
    # Two empty files per class: listing never decodes, and creating the real 50,000
    # files takes tens of seconds on slow disks (listing them took ~0.2-2 s).
    number = 0
    for wnid in imagenet_wnids():
        os.mkdir(tmp_path / wnid)
        for _ in range(2):
            number += 1
            open(tmp_path / wnid / val_name(number), "wb").close()
    rows = ImageNetVal(tmp_path).examples()
    assert len(rows) == 2000 and rows.example_id.is_unique
    assert rows.label.tolist()[:4] == [0, 0, 1, 1] and rows.label.iloc[-1] == 999
    assert rows.example_id.iloc[-1] == "imagenet/ILSVRC2012_val_00002000"


# --- ImageNet validation, flat files ------------------------------------------------------


def test_devkit_layout_maps_ilsvrc_ids_through_meta(tmp_path: Path) -> None:
    root = tmp_path / "val"
    for number in (1, 2, 3):
        jpeg(root / val_name(number))
    write_devkit(tmp_path, ["3", "1", "2", ""])  # beside the image folder; blank end line
    ds = ImageNetVal(root, transform=SMALL)
    assert ds.layout == "devkit"
    rows = ds.examples()
    # ID 3 = husky (250), ID 1 = kit fox (278), ID 2 = English setter (212).
    assert rows.label.tolist() == [250, 278, 212]
    assert rows.example_id.tolist() == [f"imagenet/ILSVRC2012_val_0000000{n}" for n in (1, 2, 3)]
    assert rows.path.tolist() == [str(root.absolute() / val_name(n)) for n in (1, 2, 3)]
    assert ds[2][1:] == (212, "imagenet/ILSVRC2012_val_00000003")


def test_devkit_inside_root_and_explicit_layout(tmp_path: Path) -> None:
    jpeg(tmp_path / val_name(1))
    write_devkit(tmp_path, ["2"])
    ds = ImageNetVal(tmp_path, layout="devkit")
    assert ds.examples().label.tolist() == [212]


def test_loc_csv_in_kaggle_layout(tmp_path: Path) -> None:
    root = tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    for number in (1, 2, 3):
        jpeg(root / val_name(number))
    rows = [("ILSVRC2012_val_00000002", ALP), ("ILSVRC2012_val_00000001", SEA_SNAKE),
            ("ILSVRC2012_val_00000003", SHELTIE)]  # fmt: skip
    write_loc(tmp_path / "LOC_val_solution.csv", rows)
    ds = ImageNetVal(root)
    assert ds.layout == "loc"
    assert ds.examples().label.tolist() == [65, 970, 230]
    assert ds.examples().example_id[2] == "imagenet/ILSVRC2012_val_00000003"


def test_explicit_labels_argument(tmp_path: Path) -> None:
    jpeg(tmp_path / "val" / val_name(1))
    rows = [("ILSVRC2012_val_00000001", GOLDFISH)]
    csv = write_loc(tmp_path / "elsewhere" / "solution.csv", rows)
    assert ImageNetVal(tmp_path / "val", labels=csv).examples().label.tolist() == [1]
    with pytest.raises(AuditInputError, match="loc label file but layout='devkit'"):
        ImageNetVal(tmp_path / "val", labels=csv, layout="devkit")


def test_shared_constructor_shape(tmp_path: Path) -> None:
    jpeg(tmp_path / GOLDFISH / "a.JPEG")
    ds = get_dataset("imagenet", tmp_path, split="val", target=None, protected=(),
                     transform=None)
    assert ds.split == "val" and len(ds) == 1
    with pytest.raises(AuditInputError, match="ImageNetVal: argument split: got 'test'; "
                                              "expected one of 'val'"):
        ImageNetVal(tmp_path, split="test")
    with pytest.raises(AuditInputError) as info:
        ImageNetVal(tmp_path, target="Blond_Hair", protected=("Male",))
    assert info.value.problems == [
        "ImageNetVal: argument target: got 'Blond_Hair'; this dataset has no target "
        "attribute (labels are the ImageNet classes of the image folders); leave target "
        "unset (None)",
        "ImageNetVal: argument protected: got ('Male',); this dataset has no protected "
        "attributes; leave protected unset (())",
    ]
    with pytest.raises(AuditInputError, match="dataset 'imagenet': unknown argument.s. "
                                              "corruptions; valid arguments: split, target"):
        get_dataset("imagenet", tmp_path, corruptions=["fog"])
    with pytest.raises(AuditInputError, match="argument transform: got 3"):
        ImageNetVal(tmp_path, transform=3)


# --- ImageNet-A --------------------------------------------------------------------------


def test_imagenet_a_has_its_own_module_and_the_old_import_path() -> None:
    from compaudit.data import imagenet_a
    from compaudit.data.base import DATASETS

    assert imagenet_a.ImageNetA is ImageNetA is DATASETS.get("imagenet-a")
    assert DATASETS.get("imagenet") is ImageNetVal


def test_imagenet_a_shared_constructor_shape(tmp_path: Path) -> None:
    jpeg(tmp_path / STINGRAY / "a.jpg")
    assert ImageNetA(tmp_path, split="test", target=None, protected=()).split == "test"
    with pytest.raises(AuditInputError, match="ImageNetA: argument split: got 'val'"):
        ImageNetA(tmp_path, split="val")
    with pytest.raises(AuditInputError, match="ImageNetA: argument protected: got 'Male'"):
        ImageNetA(tmp_path, protected="Male")


def test_imagenet_a_labels_mask_and_ids(tmp_path: Path) -> None:
    root = tmp_path / "imagenet-a"
    jpeg(root / JUNCO / "0.000116_junco _ junco_0.9.jpg")
    jpeg(root / STINGRAY / "0.001_stingray.jpg")
    jpeg(root / GOLDFINCH / "x.jpg")
    (root / "README.txt").write_text("ImageNet-A")  # shipped in the official archive
    ds = get_dataset("imagenet-a", root, transform=SMALL)
    assert isinstance(ds, ImageNetA) and ds.num_classes == 1000
    assert ds.class_mask.tolist() == REFERENCE_A_INDICES
    rows = ds.examples()
    assert rows.label.tolist() == [6, 11, 13]  # 1,000-class indices, not 0..199
    assert rows.example_id.tolist() == [
        f"imagenet-a/{STINGRAY}/0.001_stingray.jpg",
        f"imagenet-a/{GOLDFINCH}/x.jpg",
        f"imagenet-a/{JUNCO}/0.000116_junco _ junco_0.9.jpg",
    ]
    assert (rows.source_id == rows.example_id).all()
    assert set(rows["shift"]) == {"imagenet-a"} and (rows.severity == 0).all()
    assert ds[2][1] == 13


def test_imagenet_a_rejects_class_outside_the_200(tmp_path: Path) -> None:
    jpeg(tmp_path / STINGRAY / "a.jpg")
    jpeg(tmp_path / TENCH / "b.jpg")  # an ImageNet class, but not an ImageNet-A one
    with pytest.raises(AuditInputError, match="not ImageNet-A") as err:
        ImageNetA(tmp_path)
    assert TENCH in str(err.value) and STINGRAY in str(err.value)  # lists valid examples


def test_imagenet_a_rejects_stray_file(tmp_path: Path) -> None:
    jpeg(tmp_path / STINGRAY / "a.jpg")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(AuditInputError, match=r"notes\.txt"):
        ImageNetA(tmp_path)


# --- broken inputs -----------------------------------------------------------------------


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(AuditInputError, match="does not exist"):
        ImageNetVal(tmp_path / "nowhere")
    with pytest.raises(AuditInputError, match="does not exist"):
        ImageNetA(tmp_path / "nowhere")


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / ".hidden").write_text("x")
    with pytest.raises(AuditInputError, match="empty"):
        ImageNetVal(tmp_path)
    with pytest.raises(AuditInputError, match="empty"):
        ImageNetA(tmp_path)


def test_empty_class_folders_only(tmp_path: Path) -> None:
    (tmp_path / TENCH).mkdir()
    with pytest.raises(AuditInputError, match="no images found"):
        ImageNetVal(tmp_path)


def test_unknown_wnid_folders(tmp_path: Path) -> None:
    jpeg(tmp_path / TENCH / "a.JPEG")
    jpeg(tmp_path / "cats" / "b.JPEG")
    jpeg(tmp_path / "n99999999" / "c.JPEG")
    (tmp_path / TENCH / "nested").mkdir()
    with pytest.raises(AuditInputError) as err:
        ImageNetVal(tmp_path)
    problems = err.value.problems  # every problem is reported, one message each
    assert len(problems) == 2
    assert "2 folder(s) are not ImageNet-1k wnids: cats, n99999999" in problems[0]
    assert TENCH in problems[0]  # an example of a valid name
    assert f"{TENCH}/nested/" in problems[1]


def test_non_image_file_in_class_folder(tmp_path: Path) -> None:
    jpeg(tmp_path / TENCH / "a.JPEG")
    (tmp_path / TENCH / "labels.txt").write_text("x")
    with pytest.raises(AuditInputError, match=f"{TENCH}/labels.txt"):
        ImageNetVal(tmp_path)


def test_image_beside_wnid_folders(tmp_path: Path) -> None:
    jpeg(tmp_path / TENCH / "a.JPEG")
    jpeg(tmp_path / val_name(1))
    with pytest.raises(AuditInputError, match="lie beside the wnid folders"):
        ImageNetVal(tmp_path)


def test_same_image_in_two_folders(tmp_path: Path) -> None:
    jpeg(tmp_path / TENCH / val_name(5))
    jpeg(tmp_path / GOLDFISH / val_name(5))
    duplicate = "more than one folder: imagenet/ILSVRC2012_val_00000005"
    with pytest.raises(AuditInputError, match=duplicate):
        ImageNetVal(tmp_path)


def test_flat_without_labels(tmp_path: Path) -> None:
    jpeg(tmp_path / "val" / val_name(1))
    with pytest.raises(AuditInputError, match="ILSVRC2012_validation_ground_truth.txt") as err:
        ImageNetVal(tmp_path / "val")
    assert "LOC_val_solution.csv" in str(err.value)
    with pytest.raises(AuditInputError, match="expected LOC_val_solution.csv"):
        ImageNetVal(tmp_path / "val", layout="loc")


def test_flat_file_with_foreign_name(tmp_path: Path) -> None:
    jpeg(tmp_path / "val" / val_name(1))
    (tmp_path / "val" / "readme.md").write_text("x")
    write_devkit(tmp_path, ["1"])
    with pytest.raises(AuditInputError, match=r"readme\.md.*ILSVRC2012_val_00000001\.JPEG"):
        ImageNetVal(tmp_path / "val")


def test_ground_truth_lists_absent_images(tmp_path: Path) -> None:
    for number in (1, 3):
        jpeg(tmp_path / "val" / val_name(number))
    write_devkit(tmp_path, ["1", "2", "3", "1"])
    with pytest.raises(AuditInputError) as err:
        ImageNetVal(tmp_path / "val")
    message = str(err.value)
    assert "2 image(s) listed in the ground truth are missing" in message
    assert f"{val_name(2)}, {val_name(4)}" in message


def test_truncated_ground_truth(tmp_path: Path) -> None:
    for number in (1, 2, 3):
        jpeg(tmp_path / "val" / val_name(number))
    write_devkit(tmp_path, ["1", "2"])
    with pytest.raises(AuditInputError) as err:
        ImageNetVal(tmp_path / "val")
    message = str(err.value)
    assert "ground truth has 2 entries for 3 images" in message
    assert f"1 image(s) have no label: {val_name(3)}" in message


def test_ground_truth_bad_line(tmp_path: Path) -> None:
    jpeg(tmp_path / "val" / val_name(1))
    jpeg(tmp_path / "val" / val_name(2))
    write_devkit(tmp_path, ["1", "1001"])  # 1001 is not one of the 1,000 leaf classes
    with pytest.raises(AuditInputError, match="line 2: '1001'"):
        ImageNetVal(tmp_path / "val")


def test_devkit_without_meta(tmp_path: Path) -> None:
    jpeg(tmp_path / "val" / val_name(1))
    (write_devkit(tmp_path, ["1"]) / "meta.mat").unlink()
    with pytest.raises(AuditInputError, match=r"missing .*meta\.mat"):
        ImageNetVal(tmp_path / "val")


def test_loc_csv_problems(tmp_path: Path) -> None:
    jpeg(tmp_path / "val" / val_name(1))
    csv = write_loc(tmp_path / "LOC_val_solution.csv", [("ILSVRC2012_val_00000001", "n00000000")])
    with pytest.raises(AuditInputError, match="line 2.*starting with an ImageNet wnid"):
        ImageNetVal(tmp_path / "val")
    csv.write_text("id,label\nILSVRC2012_val_00000001,n01440764\n")
    with pytest.raises(AuditInputError, match="expected ImageId,PredictionString"):
        ImageNetVal(tmp_path / "val")


def test_bad_layout_value(tmp_path: Path) -> None:
    jpeg(tmp_path / TENCH / "a.JPEG")
    with pytest.raises(AuditInputError, match="'tree'.*'auto', 'folders', 'devkit', 'loc'"):
        ImageNetVal(tmp_path, layout="tree")  # type: ignore[arg-type]


def test_undecodable_image_names_the_file(tmp_path: Path) -> None:
    good = jpeg(tmp_path / TENCH / "a.JPEG")
    truncated = tmp_path / TENCH / "b.JPEG"
    truncated.write_bytes(good.read_bytes()[:200])
    (tmp_path / TENCH / "c.JPEG").write_text("not an image")
    ds = ImageNetVal(tmp_path, transform=SMALL)  # listing does not decode
    assert ds[0][1] == 0
    for index, name in ((1, "b.JPEG"), (2, "c.JPEG")):
        with pytest.raises(AuditInputError, match=f"{name}: not a readable image"):
            ds[index]
