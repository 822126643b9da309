"""CIFAR-10 (python batches) and CIFAR-10-C on tiny fake copies of the official files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from compaudit.data.base import EXAMPLE_COLUMNS, get_dataset
from compaudit.data.cifar10 import CIFAR10, CIFAR10_TRANSFORM, CIFAR10C, CIFAR10C_CORRUPTIONS
from compaudit.errors import AuditInputError

PER_BATCH = 3
NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer",
         b"dog", b"frog", b"horse", b"ship", b"truck"]  # fmt: skip


def batch_data(batch: int) -> tuple[np.ndarray, list[int]]:
    """Rows whose R, G and B planes hold distinct constants; labels (batch + k) % 10."""
    data = np.zeros((PER_BATCH, 3072), dtype=np.uint8)
    for k in range(PER_BATCH):
        data[k, :1024] = 10 * batch + k  # red plane
        data[k, 1024:2048] = 100 + k  # green plane
        data[k, 2048:] = 200 + batch  # blue plane
    return data, [(batch + k) % 10 for k in range(PER_BATCH)]


def dump(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_cifar(parent: Path, skip: str | None = None) -> Path:
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for number, name in enumerate(names, start=1):
        if name == skip:
            continue
        data, labels = batch_data(number)
        dump(folder / name, {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                             b"filenames": [b"f%d.png" % k for k in range(PER_BATCH)]})  # fmt: skip
    dump(folder / "batches.meta", {b"label_names": NAMES, b"num_cases_per_batch": PER_BATCH})
    return folder


def test_train_split_from_parent_folder(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    ds = CIFAR10(tmp_path, split="train")
    assert len(ds) == 5 * PER_BATCH and ds.num_classes == 10
    assert ds.classes[0] == "airplane" and ds.classes[9] == "truck"
    rows = ds.examples()
    assert list(rows.columns) == list(EXAMPLE_COLUMNS)
    # Batches 1..5 in order, labels (batch + k) % 10.
    assert rows.label.tolist() == [1, 2, 3, 2, 3, 4, 3, 4, 5, 4, 5, 6, 5, 6, 7]
    assert rows.example_id.tolist()[:2] == ["cifar10/train/0", "cifar10/train/1"]
    assert rows.example_id.iloc[-1] == "cifar10/train/14"
    assert (rows.source_id == rows.example_id).all() and set(rows.split) == {"train"}
    assert set(rows["shift"]) == {"clean"} and rows.severity.dtype == np.int8
    # Position 4 = batch 2, k = 1: channel-major row -> pixel (R, G, B) = (21, 101, 202).
    image, label, example_id = ds[4]
    assert (label, example_id) == (3, "cifar10/train/4")
    assert image.size == (32, 32)
    assert tuple(np.asarray(image)[5, 7]) == (21, 101, 202)


def test_test_split_from_batch_folder_with_usual_transform(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path)
    ds = get_dataset("cifar10", folder, split="test", transform=CIFAR10.default_transform)
    assert isinstance(ds, CIFAR10) and len(ds) == PER_BATCH
    assert ds.examples().label.tolist() == [6, 7, 8]
    image, label, example_id = ds[2]
    assert (label, example_id) == (8, "cifar10/test/2")
    assert isinstance(image, torch.Tensor) and image.shape == (3, 32, 32)  # no resize
    # test_batch is batch 6, k = 2: (R, G, B) = (62, 102, 206), normalized by CIFAR stats.
    expected = [(62 / 255 - 0.4914) / 0.2470, (102 / 255 - 0.4822) / 0.2435,
                (206 / 255 - 0.4465) / 0.2616]  # fmt: skip
    assert image[:, 3, 3].tolist() == pytest.approx(expected, abs=1e-5)


def test_missing_batch_file(tmp_path: Path) -> None:
    write_cifar(tmp_path, skip="data_batch_3")
    with pytest.raises(AuditInputError, match="missing CIFAR-10 file.*data_batch_3"):
        CIFAR10(tmp_path, split="train")
    assert len(CIFAR10(tmp_path, split="test")) == PER_BATCH  # the test split is complete


def test_missing_root_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(AuditInputError, match="does not exist"):
        CIFAR10(tmp_path / "nowhere")
    with pytest.raises(AuditInputError, match="empty"):
        CIFAR10(tmp_path)


def test_wrong_data_shape(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path)
    dump(folder / "test_batch", {b"data": np.zeros((3, 32, 32, 3), np.uint8), b"labels": [0, 1, 2]})
    with pytest.raises(AuditInputError, match=r"test_batch: field data has shape \(3, 32, 32, 3\)"):
        CIFAR10(folder)


def test_label_count_mismatch(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path)
    dump(folder / "test_batch", {b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]})
    with pytest.raises(AuditInputError, match="2 labels for 3 images"):
        CIFAR10(folder)


def test_label_out_of_range(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path)
    dump(folder / "test_batch", {b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 10, 2]})
    with pytest.raises(AuditInputError, match="1 label.* outside 0..9, first 10 at position 1"):
        CIFAR10(folder)


def test_garbage_batch_and_bad_split(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path)
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(AuditInputError, match="test_batch: cannot unpickle"):
        CIFAR10(folder)
    with pytest.raises(AuditInputError, match="'val'.*'train', 'test'"):
        CIFAR10(folder, split="val")  # type: ignore[arg-type]


def test_shared_constructor_shape_without_attributes(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path)
    ds = get_dataset("cifar10", folder, split="test", target=None, protected=(),
                     transform=None)
    assert ds.split == "test"
    with pytest.raises(AuditInputError, match="CIFAR10: argument target: got 'Male'"):
        CIFAR10(folder, target="Male")
    with pytest.raises(AuditInputError, match=r"CIFAR10: argument protected: got \('Male',\)"):
        CIFAR10(folder, protected=("Male",))


# --- CIFAR-10-C ----------------------------------------------------------------------------

N = 4  # clean test images per severity in the fake copy (10,000 in the official one)
LABELS = np.array([3, 0, 9, 5])


def write_cifar_c(parent: Path, corruptions: tuple[str, ...] = ("fog", "snow")) -> Path:
    folder = parent / "CIFAR-10-C"
    folder.mkdir(parents=True)
    np.save(folder / "labels.npy", np.tile(LABELS, 5).astype(np.uint8))
    for offset, name in enumerate(corruptions):
        images = np.zeros((5 * N, 32, 32, 3), dtype=np.uint8)
        for severity in range(1, 6):
            for index in range(N):
                # Encodes (corruption, severity, index) so each image can be told apart.
                images[(severity - 1) * N + index, :, :, 0] = 100 * offset + 10 * severity + index
        np.save(folder / f"{name}.npy", images)
    return folder


def test_cifar10c_selection_ids_and_pixels(tmp_path: Path) -> None:
    write_cifar_c(tmp_path)
    ds = get_dataset("cifar10-c", tmp_path, corruptions=["snow", "fog"], severities=[2, 5])
    assert isinstance(ds, CIFAR10C) and len(ds) == 2 * 2 * N
    rows = ds.examples()
    assert list(rows.columns) == list(EXAMPLE_COLUMNS)
    # Order: corruption, then severity, then clean index.
    assert rows.example_id.tolist()[:5] == [
        "cifar10-c/snow/2/0", "cifar10-c/snow/2/1", "cifar10-c/snow/2/2", "cifar10-c/snow/2/3",
        "cifar10-c/snow/5/0",
    ]  # fmt: skip
    assert rows.example_id.iloc[-1] == "cifar10-c/fog/5/3"
    assert rows.source_id.tolist()[4:8] == [f"cifar10/test/{i}" for i in range(4)]
    assert rows["shift"].tolist() == ["snow"] * 8 + ["fog"] * 8
    assert rows.severity.dtype == np.int8
    assert rows.severity.tolist() == [2, 2, 2, 2, 5, 5, 5, 5] * 2
    assert rows.label.tolist() == LABELS.tolist() * 4
    assert rows.label.dtype == np.int64 and set(rows.split) == {"test"}
    assert rows.example_id.is_unique
    # Position 13 = fog (offset 0 in the file set), severity 5, index 1 -> red = 51.
    image, label, example_id = ds[13]
    assert (label, example_id) == (0, "cifar10-c/fog/5/1")
    assert tuple(np.asarray(image)[0, 0]) == (51, 0, 0)
    # Position 2 = snow (offset 1), severity 2, index 2 -> red = 100 + 20 + 2.
    assert tuple(np.asarray(ds[2][0])[31, 31]) == (122, 0, 0)


def test_cifar10c_is_memory_mapped_and_pickles_small(tmp_path: Path) -> None:
    folder = write_cifar_c(tmp_path)
    ds = CIFAR10C(folder, corruptions=["fog"], transform=CIFAR10_TRANSFORM)
    assert ds[0][0].shape == (3, 32, 32)
    assert isinstance(ds._array("fog"), np.memmap)
    clone = pickle.loads(pickle.dumps(ds))  # as DataLoader workers receive it
    assert clone._arrays == {} and clone[7][2] == "cifar10-c/fog/2/3"


def test_cifar10c_default_needs_the_15_corruptions(tmp_path: Path) -> None:
    write_cifar_c(tmp_path)
    with pytest.raises(AuditInputError) as err:
        CIFAR10C(tmp_path)
    message = str(err.value)
    assert "missing CIFAR-10-C file(s) gaussian_noise.npy, shot_noise.npy" in message
    assert "snow.npy" not in message and "fog.npy" not in message
    assert len(CIFAR10C_CORRUPTIONS) == 15


def test_cifar10c_bad_arguments(tmp_path: Path) -> None:
    write_cifar_c(tmp_path)
    with pytest.raises(AuditInputError, match="'rain'.*expected distinct names.*fog"):
        CIFAR10C(tmp_path, corruptions=["fog", "rain"])
    with pytest.raises(AuditInputError, match=r"severities: got \[0, 6\]"):
        CIFAR10C(tmp_path, corruptions=["fog"], severities=[0, 6])
    with pytest.raises(AuditInputError, match="CIFAR10C: argument split: got 'train'; "
                                              "expected one of 'test'"):
        CIFAR10C(tmp_path, corruptions=["fog"], split="train")
    with pytest.raises(AuditInputError, match="CIFAR10C: argument target: got 'y'"):
        CIFAR10C(tmp_path, corruptions=["fog"], target="y")
    ds = CIFAR10C(tmp_path, corruptions=["fog"], split="test", target=None, protected=[])
    assert ds.split == "test"


def test_cifar10c_wrong_array_shape(tmp_path: Path) -> None:
    folder = write_cifar_c(tmp_path)
    np.save(folder / "fog.npy", np.zeros((5 * N, 3, 32, 32), dtype=np.uint8))  # channel-first
    with pytest.raises(AuditInputError, match=r"fog\.npy: array has shape \(20, 3, 32, 32\)"):
        CIFAR10C(folder, corruptions=["fog"])
    np.save(folder / "fog.npy", np.zeros((5 * N - 1, 32, 32, 3), dtype=np.uint8))  # truncated
    with pytest.raises(AuditInputError, match=r"expected \(20, 32, 32, 3\) uint8"):
        CIFAR10C(folder, corruptions=["fog"])


def test_cifar10c_bad_labels(tmp_path: Path) -> None:
    folder = write_cifar_c(tmp_path)
    np.save(folder / "labels.npy", np.arange(7))
    with pytest.raises(AuditInputError, match=r"labels\.npy: shape \(7,\); expected \(5 \* N,\)"):
        CIFAR10C(folder, corruptions=["fog"])
    np.save(folder / "labels.npy", np.arange(20) % 10)  # blocks differ between severities
    with pytest.raises(AuditInputError, match="5 severity blocks hold different labels"):
        CIFAR10C(folder, corruptions=["fog"])
    np.save(folder / "labels.npy", np.tile([1, 2, 12, 3], 5))
    with pytest.raises(AuditInputError, match="outside 0..9, first 12 at position 2"):
        CIFAR10C(folder, corruptions=["fog"])
    (folder / "labels.npy").unlink()
    with pytest.raises(AuditInputError, match="missing CIFAR-10-C file.*labels.npy"):
        CIFAR10C(folder, corruptions=["fog"])
