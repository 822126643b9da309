"""Concept loaders: a fake Broden folder written here, and the synthetic-face masks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from compaudit.data.synthetic import generate_synthetic_faces, load_concept_mask
from compaudit.dissection.concepts import Broden, SyntheticFaceConcepts
from compaudit.errors import AuditInputError

LABELS = pd.DataFrame({
    "number": [0, 1, 2, 3, 4, 5],
    "name": ["-", "red-c", "dog", "dog-head", "kitchen", "striped"],
    "category": ["", "color(5)", "object(9);part(1)", "part(3)", "scene(2)", "texture(1)"],
    "frequency": [0, 5, 9, 3, 2, 1], "coverage": [0] * 6, "syns": [""] * 6,
})


def write_mask(path, numbers: np.ndarray) -> None:
    rgb = np.zeros((*numbers.shape, 3), np.uint8)
    rgb[..., 0], rgb[..., 1] = numbers % 256, numbers // 256
    Image.fromarray(rgb).save(path)


def fake_broden(root, *, mask_size=(4, 4)) -> None:
    (root / "images" / "ade").mkdir(parents=True)
    rows = []
    for i in range(2):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / f"images/ade/{i}.jpg")
        obj = np.zeros(mask_size, np.int64)
        obj[:2] = 2  # dog in the top half
        part = np.zeros(mask_size, np.int64)
        part[0, 0] = 3
        write_mask(root / f"images/ade/{i}_object.png", obj)
        write_mask(root / f"images/ade/{i}_part.png", part)
        rows.append({"image": f"ade/{i}.jpg", "split": "train" if i == 0 else "val",
                     "ih": 8, "iw": 8, "sh": 4, "sw": 4, "color": "",
                     "object": f"ade/{i}_object.png", "part": f"ade/{i}_part.png",
                     "material": "", "scene": "4" if i == 0 else "", "texture": "5"})
    pd.DataFrame(rows).to_csv(root / "index.csv", index=False)
    LABELS.to_csv(root / "label.csv", index=False)


def test_broden_happy_path(tmp_path):
    fake_broden(tmp_path)
    ds = Broden(tmp_path)
    assert len(ds) == 2
    assert ds.concepts["concept"].tolist() == ["red-c", "dog", "dog-head", "kitchen", "striped"]
    assert ds.concepts["category"].tolist() == ["color", "object", "part", "scene", "texture"]
    image, labels = ds[0]
    assert tuple(image.shape) == (3, 8, 8)
    # Maps: object, part, scene (whole image), texture (whole image).
    assert tuple(labels.shape) == (4, 4, 4)
    masks = ds.masks(0)
    assert set(masks) == {1, 2, 3, 4}  # dog, dog-head, kitchen, striped
    assert masks[1][:2].all() and not masks[1][2:].any()
    assert masks[2].sum() == 1 and masks[2][0, 0]
    assert masks[3].all() and masks[4].all()
    assert len(Broden(tmp_path, split="val")) == 1
    assert tuple(Broden(tmp_path, categories=["object"])[0][1].shape) == (1, 4, 4)
    ds.verify()


def test_broden_missing_files(tmp_path):
    with pytest.raises(AuditInputError, match="index.csv: not found; expected the Broden"):
        Broden(tmp_path)
    fake_broden(tmp_path)
    (tmp_path / "images/ade/1_part.png").unlink()
    with pytest.raises(AuditInputError, match="1 files named in index.csv are missing; "
                                              "first: ade/1_part.png"):
        Broden(tmp_path)


def test_broden_mask_size_mismatch(tmp_path):
    fake_broden(tmp_path)
    write_mask(tmp_path / "images/ade/1_object.png", np.zeros((5, 4), np.int64))
    ds = Broden(tmp_path)
    ds[0]  # the good one reads
    with pytest.raises(AuditInputError, match="mask is 5x4 but index.csv \\(line 3\\) gives "
                                              "sh x sw = 4x4"):
        ds[1]
    with pytest.raises(AuditInputError, match="1_object.png"):
        ds.verify()


def test_broden_unknown_label_numbers(tmp_path):
    fake_broden(tmp_path)
    write_mask(tmp_path / "images/ade/0_part.png", np.full((4, 4), 300, np.int64))
    with pytest.raises(AuditInputError, match="label numbers 300 \\(R \\+ 256\\*G\\) are not "
                                              "in label.csv"):
        Broden(tmp_path)[0]
    index = pd.read_csv(tmp_path / "index.csv", dtype=str, keep_default_na=False)
    index.loc[1, "scene"] = "77"
    index.to_csv(tmp_path / "index.csv", index=False)
    with pytest.raises(AuditInputError, match="line 3, column scene: label number 77"):
        Broden(tmp_path)


def test_broden_bad_tables(tmp_path):
    fake_broden(tmp_path)
    index = pd.read_csv(tmp_path / "index.csv", dtype=str, keep_default_na=False)
    index.drop(columns=["sh"]).to_csv(tmp_path / "index.csv", index=False)
    with pytest.raises(AuditInputError, match="missing columns sh"):
        Broden(tmp_path)
    index.assign(sh="four").to_csv(tmp_path / "index.csv", index=False)
    with pytest.raises(AuditInputError, match="must be positive integers; bad on lines 2, 3"):
        Broden(tmp_path)
    index.to_csv(tmp_path / "index.csv", index=False)
    with pytest.raises(AuditInputError, match="no rows with split 'test'"):
        Broden(tmp_path, split="test")
    with pytest.raises(AuditInputError, match="categories \\['fur'\\] are not columns"):
        Broden(tmp_path, categories=["fur"])


def test_synthetic_face_concepts(tmp_path):
    root = generate_synthetic_faces(tmp_path / "faces", n=40, image_size=16, seed=3, workers=1)
    ds = SyntheticFaceConcepts(root, split="all")
    assert len(ds) == 40
    assert ds.concepts["concept"].tolist() == ["background", "face", "hair", "beard", "eyes",
                                               "mouth", "wrinkles"]
    assert ds.categories == ("background", "part")
    image, labels = ds[5]
    assert tuple(image.shape) == (3, 16, 16) and float(image.max()) <= 1.0
    expected = load_concept_mask(root, ds.example_ids[5])
    np.testing.assert_array_equal(labels[0].numpy(), expected)
    masks = ds.masks(5)
    assert set(masks) == set(np.unique(expected).tolist())
    np.testing.assert_array_equal(masks[2], expected == 2)


def test_synthetic_face_concepts_without_masks(tmp_path):
    root = generate_synthetic_faces(tmp_path / "faces", n=20, image_size=16, masks=False,
                                    workers=1)
    with pytest.raises(AuditInputError, match="concept table not found"):
        SyntheticFaceConcepts(root)
