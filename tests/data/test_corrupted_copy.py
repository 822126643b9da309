"""Writing corrupted copies of a dataset, and reading them back with the ImageNet-C loader."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from compaudit.data.base import AuditDataset
from compaudit.data.corrupted_copy import copy_name, file_stem, write_corrupted_copy
from compaudit.data.corruptions import corrupt
from compaudit.data.imagenet_c import ImageNetC
from compaudit.errors import AuditInputError
from compaudit.executors import LocalExecutor

pytest.importorskip(
    "imagecorruptions", reason="needs the 'corruptions' extra (pip install -e '.[corruptions]')"
)


class TinyFaces(AuditDataset):
    """Three generated 40x48 images with a binary label and two attributes."""

    num_classes = 2

    def __init__(self, ids: list[str] | None = None) -> None:
        super().__init__(".")
        self.ids = ids or ["tiny/img/000001.png", "tiny/img/000002.png", "tiny/img/000003.png"]
        rng = np.random.default_rng(0)
        self.images = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in self.ids]
        self.labels = [1, 0, 1][: len(self.ids)]

    def __len__(self) -> int:
        return len(self.ids)

    def _load(self, index: int):
        return Image.fromarray(self.images[index]), self.labels[index], self.ids[index]

    def examples(self) -> pd.DataFrame:
        n = len(self.ids)
        return pd.DataFrame(
            {
                "example_id": self.ids,
                "label": np.array(self.labels, dtype=np.int64),
                "split": "test",
                "source_id": self.ids,
                "shift": "clean",
                "severity": np.zeros(n, dtype=np.int8),
                "attr.Male": [True, False, False][:n],
                "attr.Young": pd.Categorical(["a", "b", "a"][:n]),
            }
        )


class TinyImageNet(TinyFaces):
    num_classes = 1000

    def __init__(self) -> None:
        super().__init__([f"imagenet/ILSVRC2012_val_0000000{n}" for n in (1, 2, 3)])
        self.labels = [278, 0, 1]


def test_round_trip_keeps_attributes_and_equals_the_transform(tmp_path):
    ds = TinyFaces()
    out = write_corrupted_copy(ds, tmp_path / "c", corruptions=["fog", "glass_blur"],
                               severities=[1, 3], image_format="PNG", progress=False)  # fmt: skip
    assert (out / "fog" / "3" / "class_0" / "img__000002.png").is_file()
    assert (out / "source_examples.parquet").is_file()
    copy = ImageNetC(out, severities=[1, 3])
    rows = copy.examples()
    assert len(rows) == 3 * 2 * 2 and copy.num_classes == 2
    row = rows[rows.example_id == "tiny-c/glass_blur/3/img__000002"].iloc[0]
    assert (row.source_id, row.label, row["attr.Male"], row["attr.Young"]) == (
        "tiny/img/000002.png",
        0,
        False,
        "b",
    )
    assert rows["attr.Male"].dtype == bool
    # PNG is lossless: the file equals the on-the-fly transform of the same image.
    written = np.asarray(Image.open(row.path))
    assert np.array_equal(written, corrupt(ds.images[1], "glass_blur", 3, seed=0))


def test_imagenet_family_uses_wnid_folders_and_release_names(tmp_path):
    out = write_corrupted_copy(TinyImageNet(), tmp_path / "c", corruptions=["contrast"],
                               severities=[2], progress=False)  # fmt: skip
    assert (out / "contrast" / "2" / "n02119789" / "ILSVRC2012_val_00000001.JPEG").is_file()
    rows = ImageNetC(out, severities=[2]).examples()
    assert rows.example_id.tolist() == [
        f"imagenet-c/contrast/2/ILSVRC2012_val_0000000{n}" for n in (2, 3, 1)
    ]
    assert rows.source_id.tolist() == [f"imagenet/ILSVRC2012_val_0000000{n}" for n in (2, 3, 1)]
    assert rows.label.tolist() == [0, 1, 278]


def test_resumes_without_rewriting_existing_images(tmp_path):
    kwargs = dict(
        corruptions=["gaussian_noise"], severities=[1, 2], image_format="PNG", progress=False
    )
    out = write_corrupted_copy(TinyFaces(), tmp_path / "c", **kwargs)
    kept = out / "gaussian_noise" / "1" / "class_1" / "img__000001.png"
    gone = out / "gaussian_noise" / "2" / "class_0" / "img__000002.png"
    first = gone.read_bytes()
    Image.new("RGB", (40, 48)).save(kept)  # a marker: must survive the second run
    gone.unlink()
    write_corrupted_copy(TinyFaces(), tmp_path / "c", **kwargs)
    assert gone.read_bytes() == first and not np.asarray(Image.open(kept)).any()
    assert not list(out.rglob(".*"))  # no temporary files left behind


def test_refuses_a_folder_holding_another_dataset(tmp_path):
    write_corrupted_copy(
        TinyFaces(), tmp_path / "c", corruptions=["contrast"], severities=[1], progress=False
    )
    with pytest.raises(
        AuditInputError,
        match="holds the examples of a different dataset .*write the copy to an empty folder",
    ):
        write_corrupted_copy(
            TinyImageNet(), tmp_path / "c", corruptions=["contrast"], severities=[1], progress=False
        )


def test_bad_arguments(tmp_path):
    ds = TinyFaces()
    with pytest.raises(AuditInputError, match="unknown corruption 'mist'"):
        write_corrupted_copy(ds, tmp_path, corruptions=["mist"])
    with pytest.raises(AuditInputError, match="severity 7 is not valid"):
        write_corrupted_copy(ds, tmp_path, severities=[7])
    with pytest.raises(
        AuditInputError,
        match=r"image_format 'GIF' is not supported; expected one of \['JPEG', 'PNG'\]",
    ):
        write_corrupted_copy(ds, tmp_path, image_format="GIF")
    with pytest.raises(AuditInputError, match="quality 0 is not valid"):
        write_corrupted_copy(ds, tmp_path, quality=0)
    clash = TinyFaces(["tiny/a/1.png", "tiny/a/1.jpg"])
    with pytest.raises(
        AuditInputError,
        match="'tiny/a/1.png' and 'tiny/a/1.jpg' would be written to the same file name 'a__1'",
    ):
        write_corrupted_copy(clash, tmp_path, progress=False)


def test_file_stem_and_copy_name():
    assert file_stem("imagenet/ILSVRC2012_val_00000001") == "ILSVRC2012_val_00000001"
    assert file_stem("celeba/182638.jpg") == "182638"
    assert file_stem("custom/cats/img.1.PNG") == "cats__img.1"
    assert file_stem("plain") == "plain"
    assert copy_name(["celeba/1.jpg", "celeba/2.jpg"]) == "celeba-c"
    assert copy_name(["a/1", "b/2"]) == "corrupted"


class ManyFaces(TinyFaces):
    """260 tiny images: two chunks, so two worker processes share the writing."""

    def __init__(self) -> None:
        super().__init__([f"many/img/{i:06d}.png" for i in range(260)])
        rng = np.random.default_rng(1)
        self.images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in self.ids]
        self.labels = [i % 2 for i in range(260)]

    def examples(self) -> pd.DataFrame:
        n = len(self.ids)
        return pd.DataFrame({
            "example_id": self.ids, "label": np.array(self.labels, dtype=np.int64),
            "split": "test", "source_id": self.ids, "shift": "clean",
            "severity": np.zeros(n, dtype=np.int8), "attr.Male": [i % 3 == 0 for i in range(n)],
        })


def test_worker_processes_write_the_same_bytes(tmp_path):
    kwargs = {"corruptions": ["gaussian_noise", "contrast"], "severities": [3],
              "image_format": "PNG", "progress": False}
    one = write_corrupted_copy(ManyFaces(), tmp_path / "one", **kwargs)
    with LocalExecutor(max_workers=2, progress=False) as pool:
        two = write_corrupted_copy(ManyFaces(), tmp_path / "two", executor=pool, **kwargs)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert len(files) == 260 * 2 + 1  # the images and the source table
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)
    # Each image is the on-the-fly corruption of its source, whichever process wrote it.
    ref = corrupt(ManyFaces()._load(259)[0], "contrast", 3, seed=0)
    written = Image.open(two / "contrast" / "3" / "class_1" / "img__000259.png")
    assert np.array_equal(np.asarray(written), np.asarray(ref))
