"""Populations: one file per replica, resume, and identical results on every executor."""

from __future__ import annotations

import dataclasses
import functools
import json

import pytest
import torch
from torchvision.transforms import ToTensor

from compaudit.data.celeba import CelebA
from compaudit.data.synthetic import generate_synthetic_faces
from compaudit.errors import AuditInputError
from compaudit.executors import LocalExecutor, RayExecutor, SerialExecutor
from compaudit.models.architectures import build_model
from compaudit.models.population import replica_path, train_population
from compaudit.models.training import TrainConfig, train
from compaudit.models.weights import read_state_dict

CONFIG = TrainConfig(epochs=1, batch_size=32, lr=0.05, weight_decay=0.0, seed=10)


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    generate_synthetic_faces(root, n=300, image_size=16, seed=0, workers=1)
    return root


@pytest.fixture(scope="module")
def train_set(faces):
    return CelebA(faces, split="train", transform=ToTensor())


@pytest.fixture(scope="module")
def serial_population(train_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    paths = train_population("small_cnn", train_set, CONFIG, replicas=2,
                             executor=SerialExecutor(progress=False), out_dir=out)
    return out, paths, [read_state_dict(p) for p in paths]


def _identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_one_state_dict_and_one_record_per_replica(serial_population):
    out, paths, states = serial_population
    assert paths == [out / "replica-000.pt", out / "replica-001.pt"]
    assert paths == [replica_path(out, k) for k in range(2)]
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())
    meta = [json.loads(p.with_suffix(".json").read_text()) for p in paths]
    assert [m["seed"] for m in meta] == [10, 11]  # config.seed + k by default
    assert all(m["arch"] == "small_cnn" and m["num_classes"] == 2 for m in meta)
    assert not _identical(*states)  # different seeds, different models


def test_replica_k_is_exactly_a_plain_training_run_from_its_seed(serial_population, train_set):
    _, _, states = serial_population
    torch.manual_seed(11)
    model = build_model("small_cnn", num_classes=2)
    train(model, train_set, dataclasses.replace(CONFIG, seed=11, num_threads=1), progress=False)
    assert _identical(model.state_dict(), states[1])


def test_existing_replicas_are_skipped_and_a_missing_one_is_retrained(serial_population, train_set):
    out, paths, states = serial_population
    first_mtime = paths[0].stat().st_mtime_ns
    paths[1].unlink()
    again = train_population("small_cnn", train_set, CONFIG, replicas=2, executor="serial",
                             out_dir=out)
    assert again == paths and paths[0].stat().st_mtime_ns == first_mtime
    assert _identical(read_state_dict(paths[1]), states[1])


def test_local_executor_gives_the_serial_population(serial_population, faces, tmp_path):
    _, _, states = serial_population
    # A dataset factory: each worker builds its own dataset instead of unpickling one.
    factory = functools.partial(CelebA, faces, split="train", transform=ToTensor())
    with LocalExecutor(2, progress=False) as executor:
        paths = train_population("small_cnn", factory, CONFIG, replicas=2, executor=executor,
                                 out_dir=tmp_path)
    assert all(_identical(read_state_dict(p), s)
               for p, s in zip(paths, states, strict=True))


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="needs the 'ray' extra")
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


def test_ray_executor_gives_the_serial_population(ray_cluster, serial_population, train_set,
                                                  tmp_path):
    _, _, states = serial_population
    paths = train_population("small_cnn", train_set, CONFIG, replicas=2,
                             executor=RayExecutor(progress=False), out_dir=tmp_path)
    assert all(_identical(read_state_dict(p), s)
               for p, s in zip(paths, states, strict=True))


@pytest.mark.parametrize("kw, match", [
    (dict(replicas=0), "replicas must be an integer >= 1"),
    (dict(replicas=2, seeds=[1]), "seeds has 1 entries but replicas is 2"),
    (dict(replicas=2, seeds=[3, 3]), "seeds must be distinct"),
    (dict(replicas=1, arch="vgg"), "unknown architecture 'vgg'"),
    (dict(replicas=1, executor="dask"), "unknown executor 'dask'"),
])
def test_bad_population_arguments_are_explained(train_set, tmp_path, kw, match):
    args = dict(arch="small_cnn", config=CONFIG, out_dir=tmp_path) | kw
    with pytest.raises(AuditInputError, match=match):
        train_population(dataset=train_set, **args)
    assert not any(tmp_path.iterdir())


def test_num_classes_is_required_when_the_dataset_has_none(tmp_path):
    with pytest.raises(AuditInputError, match="pass num_classes="):
        train_population("small_cnn", [(torch.zeros(3, 16, 16), 0, "a")], CONFIG, replicas=1,
                         out_dir=tmp_path)
