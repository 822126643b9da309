"""Synthetic CelebA-format faces: determinism, exact group sizes, the planted harm."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from compaudit.data.celeba import CELEBA_ATTRIBUTES, CelebA
from compaudit.data.synthetic import (
    CONCEPTS,
    allocate_counts,
    concept_table,
    generate_synthetic_faces,
    load_concept_mask,
)
from compaudit.errors import AuditInputError

N, SIZE = 400, 32
# REFERENCES.md Table 1 (CelebA test split), (Blond_Hair, Male, Young) -> images.
TABLE_1 = [
    ((True, True, False), 62), ((True, True, True), 118), ((True, False, True), 1961),
    ((True, False, False), 519), ((False, False, True), 8370), ((False, False, False), 1397),
    ((False, True, False), 2870), ((False, True, True), 4665),
]  # fmt: skip


def largest_remainder(weights: list[int], n: int) -> list[int]:
    """Integer-only largest-remainder scaling (ties to the earlier entry)."""
    total = sum(weights)
    floors = [w * n // total for w in weights]
    order = sorted(range(len(weights)), key=lambda i: (-(weights[i] * n % total), i))
    for i in order[: n - sum(floors)]:
        floors[i] += 1
    return floors


def generate(path: Path, **kw) -> Path:
    args = dict(n=N, image_size=SIZE, seed=3, workers=1)
    return generate_synthetic_faces(path, **(args | kw))


def hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def group_counts(root: Path) -> dict[tuple[bool, bool, bool], int]:
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    assert int(lines[0]) == len(lines) - 2
    names = lines[1].split()
    cols = [1 + names.index(a) for a in ("Blond_Hair", "Male", "Young")]
    counts: dict[tuple[bool, bool, bool], int] = {}
    for line in lines[2:]:
        fields = line.split()
        key = tuple(fields[c] == "1" for c in cols)
        counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("faces"))


def test_same_seed_gives_identical_bytes(faces: Path, tmp_path: Path) -> None:
    again = hashes(generate(tmp_path / "again"))
    first = hashes(faces)
    assert len(first) == 2 * N + 6  # images, masks, concepts.csv, 2 lists, meta, json, marker
    assert again == first
    other = hashes(generate(tmp_path / "other", seed=4, masks=False))
    assert other["list_attr_celeba.txt"] != first["list_attr_celeba.txt"]


def test_group_counts_match_table_1(faces: Path) -> None:
    expected = largest_remainder([w for _, w in TABLE_1], N)
    assert sum(expected) == N
    assert allocate_counts([w for _, w in TABLE_1], N).tolist() == expected
    got = group_counts(faces)
    assert {key: got.get(key, 0) for key, _ in TABLE_1} == {
        key: count for (key, _), count in zip(TABLE_1, expected)
    }


def test_requested_joint_is_exact(tmp_path: Path) -> None:
    joint = {(True, True, True): 1, (False, False, False): 3, (True, False, True): 2.5}
    root = generate(tmp_path / "joint", n=45, image_size=16, masks=False)
    root = generate(tmp_path / "joint", n=45, image_size=16, masks=False, joint=joint,
                    overwrite=True)
    assert group_counts(root) == {(True, True, True): 7, (False, False, False): 21,
                                  (True, False, True): 17}
    assert allocate_counts([2, 6, 5], 45).tolist() == largest_remainder([2, 6, 5], 45)


def test_celeba_loader_reads_the_folder(faces: Path) -> None:
    ds = CelebA(faces, split="all", protected=("Male", "Young"), attributes=["Black_Hair"])
    assert len(ds) == N
    ex = ds.examples()
    meta = pd.read_csv(faces / "synthetic_meta.csv", dtype={"image": str})
    assert ex["example_id"].tolist() == ("celeba/" + meta["image"]).tolist()
    assert ex["label"].tolist() == meta["blond"].astype(int).tolist()
    assert ex["attr.Male"].tolist() == meta["male"].tolist()
    assert ex["attr.Young"].tolist() == meta["young"].tolist()
    assert ex["split"].tolist() == meta["split"].tolist()
    assert not (ex["label"].astype(bool) & ex["attr.Black_Hair"]).any()
    sizes = {s: len(CelebA(faces, split=s)) for s in ("train", "valid", "test")}
    assert sum(sizes.values()) == N and abs(sizes["test"] - N * 0.1) <= 8
    image, label, _ = ds[0]
    assert image.size == (SIZE, SIZE) and label == int(meta["blond"][0])
    assert meta["noisy"].sum() == round(0.02 * N)
    assert (meta["drawn_blond"] == meta["blond"] ^ meta["noisy"]).all()


def test_ambiguity_is_the_same_share_of_every_group(faces: Path) -> None:
    meta = pd.read_csv(faces / "synthetic_meta.csv")
    share = json.loads((faces / "synthetic.json").read_text())["ambiguous"]
    for _, group in meta.groupby(["blond", "male", "young"]):
        assert group["ambiguous"].sum() == int(np.floor(share * len(group) + 0.5))


def hair_pixels(root: Path, meta: pd.DataFrame) -> np.ndarray:
    hair = CONCEPTS.index("hair")
    return np.array([(load_concept_mask(root, f"celeba/{name}") == hair).sum()
                     for name in meta["image"]])


def test_spurious_links_hair_length_to_gender(faces: Path, tmp_path: Path) -> None:
    control = generate(tmp_path / "control", spurious=0.0)
    for root, men_long, women_long in ((faces, 0.1, 0.9), (control, 0.5, 0.5)):
        meta = pd.read_csv(root / "synthetic_meta.csv", dtype={"image": str})
        long_share = meta.groupby("male")["long_hair"].mean()
        # Binomial: about 190 men and 210 women, so 4 standard errors are under 0.14.
        assert abs(long_share[True] - men_long) < 0.14
        assert abs(long_share[False] - women_long) < 0.14
        # Read back from the concept masks: short hair shows far fewer hair pixels.
        area = hair_pixels(root, meta)
        is_long = meta["long_hair"].to_numpy()
        assert area[~is_long].mean() < 0.5 * area[is_long].mean()
        by_gender = area[meta["male"].to_numpy()].mean() / area[~meta["male"].to_numpy()].mean()
        if root == faces:
            assert by_gender < 0.6  # men's hair colour covers few pixels
        else:
            assert 0.8 < by_gender < 1.25


def test_concept_masks(faces: Path) -> None:
    table = concept_table(faces)
    assert table["concept"].tolist() == list(CONCEPTS)
    mask = load_concept_mask(faces, "celeba/000001.jpg")
    assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= set(range(len(CONCEPTS)))
    assert {CONCEPTS.index(c) for c in ("background", "face", "hair")} <= set(np.unique(mask))
    assert np.array_equal(mask, load_concept_mask(faces, "000001.jpg"))
    with pytest.raises(AuditInputError, match="no concept mask"):
        load_concept_mask(faces, "celeba/999999.jpg")


def test_attribute_file_header(faces: Path) -> None:
    names = (faces / "list_attr_celeba.txt").read_text().splitlines()[1].split()
    assert tuple(names) == CELEBA_ATTRIBUTES


def test_bad_arguments(tmp_path: Path, faces: Path) -> None:
    with pytest.raises(AuditInputError) as info:
        generate_synthetic_faces(tmp_path / "x", n=0, image_size=8, spurious=1.0)
    message = str(info.value)
    assert "n: expected a positive integer" in message and "image_size" in message
    assert "spurious" in message
    with pytest.raises(AuditInputError, match="output folder is not empty"):
        generate_synthetic_faces(faces, n=10)


def test_worker_count_does_not_change_the_bytes(tmp_path: Path) -> None:
    # 501 images make two rendering chunks of 500 and 1, so two processes share the work.
    kw = dict(n=501, image_size=16, masks=False)
    one = hashes(generate(tmp_path / "one", **kw))
    two = hashes(generate(tmp_path / "two", workers=2, **kw))
    assert one == two


def test_ambiguous_hair_is_drawn_between_the_classes(faces: Path) -> None:
    """Read back from pixels: hair luminance orders clear dark < ambiguous < clear blond."""
    meta = pd.read_csv(faces / "synthetic_meta.csv")
    luminance = []
    for name in meta["image"]:
        with Image.open(faces / "img_align_celeba" / name) as image:
            rgb = np.asarray(image, dtype=float) / 255
        hair = load_concept_mask(faces, name) == CONCEPTS.index("hair")
        luminance.append(float((rgb[hair] @ [0.299, 0.587, 0.114]).mean()))
    meta["lum"] = luminance
    mean = meta.groupby(["drawn_blond", "ambiguous"])["lum"].mean()
    # Palette luminances before lighting: dark hair 0.09-0.34, middle 0.57, blond 0.80-0.91;
    # ambiguous hair sits 20% of the way from the middle towards its class mean.
    assert mean[(False, False)] < 0.35 < mean[(False, True)] < mean[(True, True)] < 0.68
    assert mean[(True, False)] > 0.7
    assert 0.05 < mean[(True, True)] - mean[(False, True)] < 0.2
