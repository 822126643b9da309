"""The embed stage: ``embeddings.npz`` from the dense replicas' files, cached, and skipped
with one line when the dense replicas are ONNX models."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from compaudit.executors import get_executor
from compaudit.models.architectures import build_model
from compaudit.pipeline.data import DataStage
from compaudit.pipeline.decoding import RunDecoder
from compaudit.pipeline.embed import embed_dense
from compaudit.pipeline.plan import describe_plan
from compaudit.pipeline.stages import StageCache
from compaudit.pipeline.train import DenseStage
from compaudit.rundir import RunFolder
from compaudit.spec import load_spec
from compaudit.tables import read_embeddings
from tests.predict.test_population import random_dataset

SPEC = """\
[data]
dataset = "synthetic-faces"
image_size = 16
[model]
arch = "small_cnn"
replicas = 2
weights = {weights}
[[variants]]
name = "{variant}"
method = "{method}"
{extra}
[analysis.slices]
enabled = {enabled}
n_slices = 3
"""


def _spec(tmp_path: Path, weights: list[str], *, enabled: str = "true", method: str = "float16",
          extra: str = ""):
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.format(weights=weights, enabled=enabled, variant="v", method=method,
                                extra=extra))
    return load_spec(path)


def _replicas(tmp_path: Path) -> list[str]:
    names = []
    for k in range(2):
        torch.manual_seed(k)
        model = build_model("small_cnn", num_classes=2, small_input=True)
        with torch.no_grad():  # non-trivial BatchNorm statistics
            for mod in model.modules():
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.running_mean.normal_(0, 0.2)
        torch.save(model.state_dict(), tmp_path / f"d{k}.pt")
        names.append(f"d{k}.pt")
    return names


def _stage(spec, tmp_path: Path, log: list[str]):
    folder = RunFolder(tmp_path / "run")
    folder.create()
    data = DataStage(root=tmp_path, key="data", train=None,
                     eval=partial(random_dataset, 21, num_classes=2, size=16, seed=5),
                     transform=None)
    dense = DenseStage(paths=tuple(Path(w) for w in spec.model.weights), key="dense")
    cache = StageCache(folder.stages_json)
    pool = get_executor("serial", progress=False)
    with RunDecoder(folder, pool, log.append, budget=2**20) as decoder:
        key = embed_dense(spec, folder, cache, data=data, dense=dense, examples_key="ex",
                          decoder=decoder, pool=pool, log=log.append)
    return folder, cache, key


def test_embeddings_are_the_dense_replicas_mean_penultimate_features(tmp_path):
    spec = _spec(tmp_path, _replicas(tmp_path))
    log: list[str] = []
    folder, cache, key = _stage(spec, tmp_path, log)
    assert key is not None and cache.ran == ["embed"]
    emb = read_embeddings(folder.embeddings)
    ds = random_dataset(21, num_classes=2, size=16, seed=5)
    direct = []
    for w in spec.model.weights:  # independent: load each file with torch, run to the pool
        model = build_model("small_cnn", num_classes=2, small_input=True)
        model.load_state_dict(torch.load(w, weights_only=True))
        with torch.no_grad():
            direct.append(model.eval().pool(model.features(ds.images)).flatten(1).numpy())
    assert emb.example_ids.tolist() == [f"t/{i}" for i in range(21)]
    np.testing.assert_allclose(emb.features, np.mean(direct, axis=0), rtol=1e-5, atol=1e-6)
    # A second run with the same models and examples reuses the file.
    before = folder.embeddings.stat().st_mtime_ns
    _, again, key2 = _stage(spec, tmp_path, [])
    assert (key2, again.skipped, again.ran) == (key, ["embed"], [])
    assert folder.embeddings.stat().st_mtime_ns == before


def test_off_unless_enabled(tmp_path):
    spec = _spec(tmp_path, _replicas(tmp_path), enabled="false")
    folder, cache, key = _stage(spec, tmp_path, [])
    assert key is None and not folder.embeddings.exists() and cache.ran == []
    assert "slices: off" in describe_plan(spec, tmp_path / "run")


def test_onnx_dense_replicas_skip_slices_with_one_line(tmp_path):
    for k in range(2):
        model = build_model("small_cnn", num_classes=2, small_input=True).eval()
        torch.onnx.export(model, (torch.zeros(1, 3, 16, 16),), tmp_path / f"d{k}.onnx",
                          dynamo=False)
        torch.save(model.state_dict(), tmp_path / f"v{k}.pt")
    spec = _spec(tmp_path, ["d0.onnx", "d1.onnx"], method="load",
                 extra='files = ["v0.pt", "v1.pt"]')
    log: list[str] = []
    folder, cache, key = _stage(spec, tmp_path, log)
    assert key is None and not folder.embeddings.exists()
    assert len(log) == 1 and log[0].startswith("[embed] slices skipped: dense replica ")
    assert "d0.onnx is an ONNX model" in log[0]
    plan = describe_plan(spec, tmp_path / "run")
    assert "d0.onnx is an ONNX model without torch layers" in plan
