"""Chunked prediction: ranges, the row view over a decoded array, and a chunked run on a
real two-worker Ray cluster predicting exactly what the serial, unchunked run predicts."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from compaudit.data.base import TransformSpec
from compaudit.data.celeba import CelebA
from compaudit.data.decoded import DecodedDataset, decode_to_file
from compaudit.data.synthetic import generate_synthetic_faces
from compaudit.pipeline import run_audit
from compaudit.pipeline.chunks import ExampleRange, chunk_ranges
from compaudit.spec import parse_spec

SPEC = (Path(__file__).with_name("tiny_spec.toml").read_text() + """\
[analysis]
bootstrap = 20
[predict]
batch_size = 32
chunk_examples = {chunk}
""")


def _quiet(_: str) -> None:
    pass


@pytest.mark.parametrize("n, chunk, batch, expected", [
    (10, 4, 1, [(0, 4), (4, 8), (8, 10)]),
    (10, 4, 3, [(0, 6), (6, 10)]),  # rounded up to whole batches
    (10, 50, 4, [(0, 10)]),
    (300, 1, 0, [(0, 256), (256, 300)]),  # automatic batch: multiples of 256
    (512, 256, 0, [(0, 256), (256, 512)]),
])
def test_chunks_cover_the_set_in_whole_batches(n, chunk, batch, expected):
    ranges = chunk_ranges(n, chunk, batch)
    assert ranges == expected
    assert [i for a, b in ranges for i in range(a, b)] == list(range(n))


def test_a_range_reads_only_its_rows_of_the_decoded_array(tmp_path: Path):
    root = generate_synthetic_faces(tmp_path / "faces", n=60, image_size=16, masks=False,
                                    split_fractions=(0.2, 0.1, 0.7))
    spec = TransformSpec(resize=16, crop=16, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    factory = partial(CelebA, root, split="test", transform=spec)
    path = decode_to_file(factory, tmp_path / "eval-0.npy")
    source = factory()
    start, stop = 7, 19
    # Rows outside the range are overwritten: a range that read them would differ.
    array = np.load(path, mmap_mode="r+")
    array[:start] = 0
    array[stop:] = 255
    array.flush()
    rows = ExampleRange(DecodedDataset(factory, path), start, stop)
    assert len(rows) == stop - start and rows.num_classes == source.num_classes
    images, labels, ids = rows.read_batch(2, 9)
    assert torch.equal(images, torch.stack([source[i][0] for i in range(start + 2, start + 9)]))
    assert (labels, ids) == ([source[i][1] for i in range(start + 2, start + 9)],
                             [source[i][2] for i in range(start + 2, start + 9)])
    image, _, example_id = rows[0]
    assert torch.equal(image, source[start][0]) and example_id == source[start][2]
    with pytest.raises(IndexError):
        rows[stop - start]
    # A dataset without batch reads gets none: predict_population then loads items.
    assert not hasattr(ExampleRange(source, 0, 5), "read_batch")


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="needs the 'ray' extra")
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


def test_chunks_on_a_two_worker_ray_cluster_predict_what_the_serial_run_predicts(
        tmp_path: Path, ray_cluster):
    serial = run_audit(parse_spec(SPEC.format(chunk=0), source="tiny.toml"),
                       tmp_path / "serial", executor="serial", progress=False, log=_quiet,
                       report=False)
    lines: list[str] = []
    chunked = run_audit(parse_spec(SPEC.format(chunk=64), source="tiny.toml"),
                        tmp_path / "ray", executor="ray", progress=False, log=lines.append,
                        report=False)
    examples = pd.read_parquet(chunked.run_dir / "examples.parquet")
    assert examples["shift"].value_counts().to_dict() == {"clean": 319, "contrast": 40}
    # 3 variants x (319 test images in 5 chunks + 40 corrupted ones in 1)
    assert "[variants] predicting in 18 chunks of up to 64 examples" in lines
    a = pd.read_parquet(serial.run_dir / "predictions.parquet")
    b = pd.read_parquet(chunked.run_dir / "predictions.parquet")
    assert len(a) == 3 * 2 * len(examples)
    assert a.equals(b)  # same rows, same values, same order
    for name in ("dense", "gmp-50", "float16"):  # compressed once, predicted in 6 chunks
        record = json.loads((chunked.run_dir / "variants" / name / "record.json").read_text())
        assert record["timing"]["chunks"] == 6
    # Chunks change where predictions are made, not what they are: no variant re-runs.
    again = run_audit(parse_spec(SPEC.format(chunk=0), source="tiny.toml"), tmp_path / "ray",
                      executor="serial", progress=False, log=_quiet, report=False)
    assert again.stages_run == []
