"""A team's workflow, end to end: artifacts made outside compaudit, audited by a spec.

Outside compaudit (plain torch, torchvision, torch.nn.utils.prune and ONNX Runtime, as a
team's own toolchain would): generate images with a protected attribute, train a tiny
torchvision model, prune a copy with ``torch.nn.utils.prune`` (saved with its
``weight_orig``/``weight_mask`` reparametrisation), export another to ONNX and quantize
it with ONNX Runtime's static quantization. Then ``compaudit run`` the shipped template
``audits/own_model.toml`` on those files. The int8 variant's predictions must be ONNX
Runtime's own; the pruned variant's recorded sparsity must be the artifact's.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from torch.nn.utils import prune
from torchvision import transforms as T

from compaudit.cli import main

TEMPLATE = Path(__file__).resolve().parents[1] / "audits" / "own_model.toml"
MEAN, STD = (0.5, 0.5, 0.5), (0.2, 0.2, 0.2)
#: The team's preprocessing, written independently of compaudit's.
PREPROCESS = T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor(), T.Normalize(MEAN, STD)])


def _images(root: Path, n: int = 480, seed: int = 0) -> None:
    """Stripes (label 1: vertical, 0: horizontal) on a background whose tint is the
    protected group; group B is noisier, so errors concentrate there."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True)
    rows = []
    for i in range(n):
        label, group = int(rng.integers(2)), "B" if rng.random() < 0.3 else "A"
        stripes = (np.arange(32) // 4 % 2).astype(np.float32)
        pattern = np.tile(stripes, (32, 1)) if label else np.tile(stripes[:, None], (1, 32))
        tint = np.array([0.6, 0.3, 0.3] if group == "A" else [0.3, 0.3, 0.6], np.float32)
        noise = rng.normal(0, 0.35 if group == "B" else 0.15, (32, 32, 3))
        pixels = np.clip(pattern[..., None] * 0.5 + tint + noise, 0, 1)
        Image.fromarray((pixels * 255).astype(np.uint8)).save(root / "img" / f"{i:04d}.png")
        rows.append({"path": f"img/{i:04d}.png", "label": label,
                     "split": "train" if i < n * 2 // 3 else "test", "attr.group": group})
    with (root / "manifest.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _load(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    table = pd.read_csv(root / "manifest.csv")
    table = table[table["split"] == split]
    x = torch.stack([PREPROCESS(Image.open(root / p).convert("RGB")) for p in table["path"]])
    return x, torch.tensor(table["label"].to_numpy()), list(table["path"])


def _train(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(num_classes=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(4):
        for i in torch.randperm(len(x)).split(32):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[i]), y[i]).backward()
            optimizer.step()
    return model.eval()


def _quantize(model: nn.Module, calibration: torch.Tensor, folder: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": calibration[i:i + 16].numpy()}
                                 for i in range(0, len(calibration), 16)])

        def get_next(self):
            return next(self.batches, None)

    fp32 = folder / "dense.onnx"
    torch.onnx.export(model, (calibration[:1],), fp32, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "n"}}, dynamo=False)
    int8 = folder / "int8.onnx"
    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ)
    return int8


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """The team's folder: the template next to its images and artifacts."""
    folder = tmp_path_factory.mktemp("team")
    files = folder / "own_model"
    _images(files / "images")
    x, y, _ = _load(files / "images", "train")
    dense = _train(x, y)
    torch.save(dense.state_dict(), files / "dense.pt")
    pruned = torchvision.models.mobilenet_v3_small(num_classes=2)
    pruned.load_state_dict(dense.state_dict())
    layers = [(m, "weight") for m in pruned.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=0.5)
    torch.save(pruned.state_dict(), files / "pruned.pt")  # weight_orig + weight_mask
    _quantize(dense, x[:64], files)
    shutil.copy(TEMPLATE, folder / "own_model.toml")
    return folder


def test_the_template_audits_a_teams_own_artifacts(team, capsys):
    import onnxruntime as ort

    run = team / "run"
    code = main(["run", str(team / "own_model.toml"), "--out", str(run), "--no-progress"])
    assert code in (0, 1), capsys.readouterr().err
    predictions = pd.read_parquet(run / "predictions.parquet")
    examples = pd.read_parquet(run / "examples.parquet")

    # int8: exactly what ONNX Runtime itself predicts on the same preprocessed images
    x, _, paths = _load(team / "own_model" / "images", "test")
    session = ort.InferenceSession(str(team / "own_model" / "int8.onnx"),
                                   providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": x.numpy()})[0]
    assert set(examples.loc[examples["shift"] == "clean", "example_id"]) == {
        f"manifest/{p}" for p in paths}
    got = predictions[predictions["variant"] == "int8-ort"].set_index("example_id").loc[
        [f"manifest/{p}" for p in paths]]
    np.testing.assert_array_equal(got["pred"].to_numpy(), logits.argmax(1))
    p_pos = np.exp(logits[:, 1]) / np.exp(logits).sum(1)
    np.testing.assert_allclose(got["p_pos"].to_numpy(), p_pos, rtol=1e-5, atol=1e-6)

    # pruned: the recorded sparsity is the artifact's (weight_orig * weight_mask)
    state = torch.load(team / "own_model" / "pruned.pt", weights_only=True)
    masks = {k[:-len("_mask")]: v for k, v in state.items() if k.endswith("_mask")}
    folded = {k: v for k, v in state.items() if not k.endswith(("_mask", "_orig"))}
    folded.update({k: state[f"{k}_orig"] * m for k, m in masks.items()})
    reference = torchvision.models.mobilenet_v3_small(num_classes=2)
    reference.load_state_dict(folded)
    values = torch.cat([p.detach().flatten() for p in reference.parameters()])
    weights = torch.cat([m.weight.detach().flatten() for m in reference.modules()
                         if isinstance(m, (nn.Conv2d, nn.Linear))])
    variants = json.loads((run / "variants.json").read_text())
    record = variants["variants"]["pruned-50"]
    assert record["sparsity"] == pytest.approx(float((weights == 0).float().mean()), abs=1e-9)
    assert record["nonzero_count"] == int((values != 0).sum())
    assert variants["variants"]["int8-ort"]["size_bytes"] == (
        team / "own_model" / "int8.onnx").stat().st_size
    # operating points: each loaded artifact is its own family (made by methods compaudit
    # does not know), not one "load" curve; fp16 by its method (variants.json)
    gate = json.loads((run / "gate" / "gate.json").read_text())
    assert {p["family"] for p in gate["operating_points"]} == {"pruned-50", "int8-ort",
                                                                 "float16"}
    assert variants["variants"]["pruned-50"]["method"] == "load"
    assert variants["variants"]["fp16"]["family"] == "float16"


USER_MODULE = '''
from torch import nn


def tiny(num_classes, width=8):
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))
'''


def test_a_spec_trains_and_prunes_the_users_own_module(team, capsys):
    """``arch = "module:callable"`` next to the spec: compaudit trains it and prunes it."""
    (team / "teamnets.py").write_text(USER_MODULE)
    spec = team / "mine.toml"
    spec.write_text('''[audit]
name = "mine"
[data]
dataset = "manifest"
root = "own_model/images"
protected = ["group"]
mean = [0.5, 0.5, 0.5]
std = [0.2, 0.2, 0.2]
[model]
arch = "teamnets:tiny"
options = { width = 6 }
replicas = 1
[train]
epochs = 2
fine_tune_epochs = 1
[[variants]]
name = "prune-50"
method = "one_shot_magnitude"
sparsity = 0.5
scope = "global"
exclude_first_conv = false
[analysis]
bootstrap = 50
[executor]
kind = "serial"
''')
    code = main(["run", str(spec), "--out", str(team / "mine-run"), "--no-progress"])
    assert code in (0, 1), capsys.readouterr().err
    import importlib
    import sys

    sys.path.insert(0, str(team))
    try:
        module = importlib.import_module("teamnets").tiny(num_classes=2, width=6)
    finally:
        sys.path.remove(str(team))
        sys.modules.pop("teamnets", None)
    n = sum(m.weight.numel() for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    record = json.loads((team / "mine-run" / "variants.json").read_text())["variants"]
    assert record["prune-50"]["method"] == "one_shot_magnitude"
    assert record["prune-50"]["sparsity"] == pytest.approx(round(0.5 * n) / n, abs=1e-9)
    assert record["dense"]["parameter_count"] == sum(p.numel() for p in module.parameters())


def test_a_replaced_artifact_is_audited_again_and_nothing_else(team, tmp_path, capsys):
    """The stage cache keys loaded files by their contents, not their paths."""
    folder = tmp_path / "team"
    shutil.copytree(team / "own_model", folder / "own_model")
    shutil.copy(TEMPLATE, folder / "own_model.toml")
    argv = ["run", str(folder / "own_model.toml"), "--out", str(folder / "run"),
            "--no-progress"]
    assert main(argv) in (0, 1)
    assert main(argv) in (0, 1)
    assert "stages run: none" in capsys.readouterr().out
    state = torch.load(folder / "own_model" / "dense.pt", weights_only=True)
    model = torchvision.models.mobilenet_v3_small(num_classes=2)
    model.load_state_dict(state)
    layers = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=0.7)
    torch.save(model.state_dict(), folder / "own_model" / "pruned.pt")
    assert main(argv) in (0, 1)
    out = capsys.readouterr().out
    assert "stages run: variant:pruned-50, analyze" in out
    record = json.loads((folder / "run" / "variants.json").read_text())["variants"]
    assert record["pruned-50"]["sparsity"] == pytest.approx(0.7, abs=1e-6)
