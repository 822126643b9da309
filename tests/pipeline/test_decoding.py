"""RunDecoder: each dataset decoded once per run, items unchanged, arrays removed after."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from compaudit.data.base import TransformSpec
from compaudit.data.celeba import CelebA
from compaudit.data.synthetic import generate_synthetic_faces
from compaudit.executors import SerialExecutor
from compaudit.pipeline.decoding import RunDecoder
from compaudit.rundir import RunFolder


def test_sets_are_decoded_once_and_removed_when_the_jobs_are_done(tmp_path: Path) -> None:
    root = generate_synthetic_faces(tmp_path / "faces", n=60, image_size=16, masks=False,
                                    split_fractions=(0.5, 0.1, 0.4))
    spec = TransformSpec(resize=16, crop=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    train = partial(CelebA, root, split="train", transform=spec)
    folder = RunFolder(tmp_path / "run")
    logged: list[str] = []
    with RunDecoder(folder, SerialExecutor(progress=False), logged.append,
                    budget=2**30) as decoder:
        factory = decoder.get("train", train)
        assert decoder.get("train", train) is factory  # the second stage reuses it
        assert folder.decoded("train").is_file() and len(logged) == 1
        decoded, source = factory(), train()
        assert len(decoded) == len(source) > 20
        for i in range(len(source)):
            assert torch.equal(decoded[i][0], source[i][0])
            assert decoded[i][1:] == source[i][1:]
    assert not folder.decoded("train").exists()
    assert not folder.decoded("train").parent.exists()


def test_the_sets_of_a_run_share_one_budget_of_uint8_pixels(tmp_path: Path) -> None:
    root = generate_synthetic_faces(tmp_path / "faces", n=60, image_size=16, masks=False,
                                    split_fractions=(0.5, 0.1, 0.4))
    spec = TransformSpec(resize=16, crop=16)
    train = partial(CelebA, root, split="train", transform=spec)
    test = partial(CelebA, root, split="test", transform=spec)
    train_bytes = len(train()) * 3 * 16 * 16  # uint8 pixels, not float32
    folder = RunFolder(tmp_path / "run")
    logged: list[str] = []
    with RunDecoder(folder, SerialExecutor(progress=False), logged.append,
                    budget=train_bytes + 1000) as decoder:
        assert decoder.get("train", train) is not train
        # the test split alone would fit the budget, but not beside the training set
        assert len(test()) * 3 * 16 * 16 < train_bytes + 1000
        assert decoder.get("test", test) is test
        assert not folder.decoded("test").exists()
        assert "not cached" in logged[-1] and "[data].cache_gib" in logged[-1]
