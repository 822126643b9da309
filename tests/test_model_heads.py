"""Sigmoid heads end to end: models trained outside compaudit with binary cross-entropy,
audited through ``compaudit run`` on CelebA's official layout, without wrappers.

Outside compaudit (plain torch, torch.onnx, ONNX Runtime): a tiny CelebA copy in the
released layout, a single-logit Blond_Hair classifier trained with
``BCEWithLogitsLoss``, and a 40-logit multi-label model trained on every attribute, both
saved with ``torch.save(state_dict)``; an fp32 ONNX export of the multi-label model.
Then specs with ``[model].head = "sigmoid"`` (and ``outputs = 40, output = 9`` for the
multi-label model) run pruning with BCE fine-tuning, float16, int8 static through ONNX
Runtime and loaded artifacts. ``p_pos`` must be ``torch.sigmoid`` of the model's own
logit, computed here independently; the int8 variant's must be ONNX Runtime's own
output for that logit, read from the file compaudit quantized.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from compaudit.cli import main
from compaudit.data.celeba import CELEBA_ATTRIBUTES

BLOND = CELEBA_ATTRIBUTES.index("Blond_Hair")
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
#: The team's preprocessing, written independently of compaudit's.
PREPROCESS = T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor(), T.Normalize(MEAN, STD)])

NETS = '''
from torch import nn


def tiny(num_classes):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))
'''


def _net(outputs: int) -> nn.Module:
    """The team's architecture, built the team's way (the same as NETS)."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, outputs))


def _celeba(root: Path, n: int = 200, seed: int = 0) -> None:
    """The released layout: ``img_align_celeba/``, ``list_attr_celeba.txt`` (-1/1) and
    ``list_eval_partition.txt``. Blond hair is a yellow band at the top; a few other
    attributes tint other regions, so a multi-label model has something to learn."""
    rng = np.random.default_rng(seed)
    (root / "img_align_celeba").mkdir(parents=True)
    attrs = rng.random((n, 40)) < 0.4
    lines, parts = [], []
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        pixels = rng.normal(0.4, 0.12, (44, 36, 3))
        if attrs[i, BLOND]:
            pixels[:12] += np.array([0.45, 0.4, -0.2])
        pixels[30:, :, 2] += 0.4 * attrs[i, 20]  # Male: a blue chin
        pixels[:, :8, 1] += 0.4 * attrs[i, 39]  # Young: a green side
        Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8)).save(
            root / "img_align_celeba" / name, "JPEG", quality=95)
        lines.append(name + "".join(f" {1 if a else -1:2d}" for a in attrs[i]))
        parts.append(f"{name} {0 if i < n * 3 // 5 else 2}\n")
    (root / "list_attr_celeba.txt").write_text(
        f"{n}\n{' '.join(CELEBA_ATTRIBUTES)} \n" + "\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(parts))


def _load(root: Path, split: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Preprocessed images, the 40 attributes as 0/1, and the file names of a partition."""
    names = [line.split()[0] for line in (root / "list_eval_partition.txt").read_text().split("\n")
             if line and int(line.split()[1]) == split]
    table = {line.split()[0]: [int(v) > 0 for v in line.split()[1:]]
             for line in (root / "list_attr_celeba.txt").read_text().split("\n")[2:] if line}
    x = torch.stack([PREPROCESS(Image.open(root / "img_align_celeba" / n).convert("RGB"))
                     for n in names])
    return x, torch.tensor([table[n] for n in names], dtype=torch.float32), names


def _train_bce(x: torch.Tensor, y: torch.Tensor, outputs: int) -> nn.Module:
    """Plain torch: BCE-with-logits on one logit (Blond_Hair) or on all 40."""
    torch.manual_seed(0)
    model = _net(outputs)
    target = y[:, BLOND:BLOND + 1] if outputs == 1 else y
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(6):
        for i in torch.randperm(len(x)).split(32):
            optimizer.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(model(x[i]), target[i]).backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """The team's folder: CelebA, nets.py, the two BCE-trained state dicts, an ONNX file."""
    folder = tmp_path_factory.mktemp("heads")
    _celeba(folder / "celeba")
    (folder / "nets.py").write_text(NETS)
    x, y, _ = _load(folder / "celeba", 0)
    single, multi = _train_bce(x, y, 1), _train_bce(x, y, 40)
    torch.save(single.state_dict(), folder / "single.pt")
    torch.save(multi.state_dict(), folder / "multi.pt")
    torch.onnx.export(multi, (x[:2],), folder / "multi.onnx", input_names=["input"],
                      output_names=["attributes"], dynamic_axes={"input": {0: "n"}},
                      dynamo=False)
    return folder


SPEC = '''[audit]
name = "{name}"
[data]
dataset = "celeba"
root = "celeba"
target = "Blond_Hair"
protected = ["Male", "Young"]
image_size = 32
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]
[model]
arch = "nets:tiny"
num_classes = 2
head = "sigmoid"
{outputs}
replicas = 1
weights = ["{weights}"]
[train]
batch_size = 32
fine_tune_epochs = 1
fine_tune_lr = 0.01
[[variants]]
name = "prune-50"
method = "one_shot_magnitude"
sparsity = 0.5
scope = "global"
exclude_first_conv = false
[[variants]]
name = "fp16"
method = "float16"
{extra}
[analysis]
bootstrap = 20
[gate]
min_subgroup_size = 5
[gate.subgroup_rate]
metrics = ["fpr", "fnr"]
max_abs_increase = 0.5
[executor]
kind = "serial"
'''


def _run(team: Path, name: str, capsys, **fields: str) -> tuple[pd.DataFrame, dict, str]:
    """``compaudit check`` (its plan) then ``compaudit run`` of the spec."""
    spec = team / f"{name}.toml"
    spec.write_text(SPEC.format(name=name, **fields))
    run = team / f"{name}-run"
    capsys.readouterr()
    assert main(["check", str(spec)]) == 0
    plan = capsys.readouterr().out
    code = main(["run", str(spec), "--out", str(run), "--no-progress"])
    assert code in (0, 1), capsys.readouterr().err
    predictions = pd.read_parquet(run / "predictions.parquet")
    variants = json.loads((run / "variants.json").read_text())["variants"]
    return predictions, variants, plan


def _rows(predictions: pd.DataFrame, variant: str, names: list[str]) -> pd.DataFrame:
    ids = [f"celeba/{n}" for n in names]
    return predictions[predictions["variant"] == variant].set_index("example_id").loc[ids]


def _check_binary(rows: pd.DataFrame, p_pos: np.ndarray, labels: np.ndarray) -> None:
    """p_pos is the reference; pred, p_true and p_pred follow from it."""
    np.testing.assert_allclose(rows["p_pos"].to_numpy(), p_pos, rtol=1e-6, atol=1e-7)
    pred = (rows["p_pos"].to_numpy() >= 0.5).astype(np.int64)
    np.testing.assert_array_equal(rows["pred"].to_numpy(), pred)
    np.testing.assert_allclose(rows["p_true"].to_numpy(),
                               np.where(labels == 1, p_pos, 1 - p_pos), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(rows["p_pred"].to_numpy(),
                               np.where(pred == 1, p_pos, 1 - p_pos), rtol=1e-6, atol=1e-7)


def test_a_single_logit_bce_model_is_audited_as_it_is(team, capsys):
    predictions, variants, plan = _run(team, "single", capsys, outputs="",
                                       weights="single.pt", extra="")
    assert "1 output(s), head sigmoid on its one logit" in plan
    x, y, names = _load(team / "celeba", 2)
    model = _net(1)
    model.load_state_dict(torch.load(team / "single.pt", weights_only=True))
    with torch.no_grad():
        p_pos = torch.sigmoid(model.eval()(x)[:, 0]).numpy()
    labels = y[:, BLOND].numpy().astype(np.int64)
    _check_binary(_rows(predictions, "dense", names), p_pos, labels)
    assert 0 < (p_pos >= 0.5).sum() < len(p_pos)  # the model separates the classes
    # float16 of the same logit: close to dense, read through the same sigmoid
    fp16 = _rows(predictions, "fp16", names)
    np.testing.assert_allclose(fp16["p_pos"].to_numpy(), p_pos, atol=5e-3)
    assert variants["prune-50"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert variants["prune-50"]["fine_tuned"] is True
    n_params = sum(p.numel() for p in model.parameters())
    assert variants["dense"]["parameter_count"] == n_params
    assert variants["prune-50"]["parameter_count"] == n_params
    # float16 counts the folded model it ships: BatchNorm's weight and bias (8 + 8) gone
    # into the conv's existing bias (compaudit/compress/fold.py)
    assert variants["fp16"]["parameter_count"] == n_params - 16
    assert variants["fp16"]["batchnorm_folded"] == 1


def test_a_40_logit_multi_label_model_is_audited_on_one_attribute(team, capsys):
    import onnxruntime as ort

    extra = f'''[[variants]]
name = "int8"
method = "int8_static"
backend = "onnxruntime"
calibration_images = 64
calibration_batch_size = 32
onnx_dir = "{team / 'int8'}"
[[variants]]
name = "team-onnx"
method = "load"
files = ["multi.onnx"]'''
    predictions, variants, plan = _run(team, "multi", capsys,
                                       outputs=f"outputs = 40\noutput = {BLOND}",
                                       weights="multi.pt", extra=extra)
    assert "40 output(s), head sigmoid on logit 9 of 40" in plan
    x, y, names = _load(team / "celeba", 2)
    labels = y[:, BLOND].numpy().astype(np.int64)
    model = _net(40)
    model.load_state_dict(torch.load(team / "multi.pt", weights_only=True))
    with torch.no_grad():
        logits = model.eval()(x)
    assert logits.shape == (len(names), 40)
    _check_binary(_rows(predictions, "dense", names), torch.sigmoid(logits[:, BLOND]).numpy(),
                  labels)

    def ort_p_pos(path: Path) -> np.ndarray:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert out.shape == (len(names), 40)
        return torch.sigmoid(torch.from_numpy(out[:, BLOND])).numpy()

    # int8 static: compaudit exported the 40-output model, ONNX Runtime quantized it,
    # and the predictions are ONNX Runtime's own output for logit 9 of that file.
    int8_file = team / "int8" / "model.int8.onnx"
    assert int8_file.is_file()
    _check_binary(_rows(predictions, "int8", names), ort_p_pos(int8_file), labels)
    assert variants["int8"]["latency_kernel"] == "onnxruntime"
    # a loaded ONNX artifact of the team's toolchain, read the same way
    _check_binary(_rows(predictions, "team-onnx", names), ort_p_pos(team / "multi.onnx"),
                  labels)
    assert variants["prune-50"]["sparsity"] == pytest.approx(0.5, abs=0.01)
