"""Population inference: checked against per-model forward passes and hand-computed values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from scipy.special import softmax
from torch import nn

from compaudit.data.base import AuditDataset
from compaudit.errors import AuditInputError
from compaudit.models.architectures import build_model
from compaudit.predict import predict_population, write_predictions
from compaudit.tables import (
    TOPK_PREFIX,
    read_predictions,
    validate_examples,
    validate_predictions,
)

TOP5 = [f"{TOPK_PREFIX}{j}" for j in range(5)]


class TensorDataset(AuditDataset):
    """Fixed tensors as images; ids ``t/<i>``."""

    def __init__(self, images: torch.Tensor, labels, *, num_classes: int | None = None,
                 class_mask=None) -> None:
        super().__init__("unused")
        self.images = images
        self.labels = [int(v) for v in labels]
        if num_classes is not None:
            self.num_classes = num_classes
        if class_mask is not None:
            self.class_mask = np.asarray(class_mask)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i], f"t/{i}"

    def examples(self) -> pd.DataFrame:
        return pd.DataFrame({"example_id": [f"t/{i}" for i in range(len(self))],
                             "label": self.labels})


def random_images(n: int, *, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Noise images with per-image contrast and colour, so features differ between images."""
    g = torch.Generator().manual_seed(seed)
    contrast = torch.exp(torch.randn(n, 1, 1, 1, generator=g))
    colour = 2 * torch.randn(n, 3, 1, 1, generator=g)
    return torch.randn(n, 3, size, size, generator=g) * contrast + colour


def random_dataset(n: int, *, num_classes: int, size: int = 16, seed: int = 0) -> TensorDataset:
    labels = torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(seed))
    return TensorDataset(random_images(n, size=size, seed=seed), labels.tolist(),
                         num_classes=num_classes)


def make_models(arch: str, n: int, *, num_classes: int, seed: int, prune: float = 0.0):
    """Fresh replicas with non-trivial BatchNorm statistics, optionally magnitude-pruned."""
    models = []
    for k in range(n):
        torch.manual_seed(seed + k)
        model = build_model(arch, num_classes=num_classes)
        with torch.no_grad():
            for mod in model.modules():
                if isinstance(mod, nn.BatchNorm2d):
                    mod.running_mean.normal_(0, 0.2)
                    mod.running_var.uniform_(0.5, 2.0)
                    mod.weight.uniform_(0.5, 1.5)
                    mod.bias.normal_(0, 0.2)
            if prune:
                for p in model.parameters():
                    if p.ndim > 1:  # conv and linear weights, as pruning masks do
                        p.mul_(p.abs() > p.abs().flatten().quantile(prune))
            _spread_logits(model)
        models.append(model)
    return models


def _spread_logits(model: nn.Module) -> None:
    """Re-draw the last layer on centred features, so predictions vary by example.

    Untrained networks give nearly the same logits for every input (the pooled ReLU
    features share a large mean); comparing such predictions would prove little.
    """
    captured = []
    hook = model.fc.register_forward_hook(lambda mod, args, out: captured.append(args[0]))
    model.eval()
    model(random_images(64, seed=99))
    hook.remove()
    feats = captured[0]
    # keep the last layer's pruned weights at zero; scale logits to a spread of about 3
    weight = torch.randn(model.fc.weight.shape) * (model.fc.weight != 0)
    weight *= 3 / ((feats @ weight.T).std(0) + 1e-3).unsqueeze(1)
    model.fc.weight.copy_(weight)
    model.fc.bias.copy_(-(feats.mean(0) @ weight.T))
    model.train()


def reference(model: nn.Module, ds: TensorDataset, *, mask=None) -> dict[str, np.ndarray]:
    """One forward pass over the whole dataset; softmax, argmax and top-5 by NumPy."""
    model.eval()
    with torch.no_grad():
        logits = model(ds.images).double().numpy()
    classes = np.arange(logits.shape[1]) if mask is None else np.asarray(mask)
    sub = logits[:, classes]
    probs = softmax(sub, axis=1)
    labels = np.asarray(ds.labels)
    pos = np.searchsorted(classes, labels) if mask is not None else labels
    order = np.argsort(-sub, axis=1, kind="stable")
    rows_ = np.arange(len(labels))
    return {"pred": classes[order[:, 0]], "p_true": probs[rows_, pos],
            "p_pred": probs[rows_, order[:, 0]], "probs": probs, "top5": classes[order[:, :5]]}


def rows(frame: pd.DataFrame, variant: str, replica: int) -> pd.DataFrame:
    part = frame[(frame["variant"] == variant) & (frame["replica"] == replica)]
    return part.reset_index(drop=True)


@pytest.fixture(scope="module")
def ten_class():
    ds = random_dataset(60, num_classes=10)
    models = {
        "dense": make_models("small_cnn", 3, num_classes=10, seed=0),
        "gmp-50": make_models("small_cnn", 3, num_classes=10, seed=0, prune=0.5),
    }
    return models, ds


@pytest.mark.parametrize("stack", [True, False])
def test_matches_independent_per_model_computation(ten_class, stack):
    models, ds = ten_class
    frame = predict_population(models, ds, batch_size=16, stack=stack, progress=False)
    assert len(frame) == 6 * 60
    assert list(frame["variant"].unique()) == ["dense", "gmp-50"]
    assert frame["replica"].dtype == np.int32 and frame["pred"].dtype == np.int64
    assert frame["p_true"].dtype == np.float32
    assert "p_pos" not in frame
    for variant, replicas in models.items():
        for k, model in enumerate(replicas):
            got, ref = rows(frame, variant, k), reference(model, ds)
            assert list(got["example_id"]) == [f"t/{i}" for i in range(60)]
            np.testing.assert_array_equal(got["pred"], ref["pred"])
            np.testing.assert_allclose(got["p_true"], ref["p_true"], atol=1e-5)
            np.testing.assert_allclose(got["p_pred"], ref["p_pred"], atol=1e-5)
            np.testing.assert_array_equal(got[TOP5].to_numpy(), ref["top5"])
    assert frame["p_pred"].dtype == np.float32
    # the pruned population really is different from the dense one
    assert (rows(frame, "dense", 0)["pred"] != rows(frame, "gmp-50", 0)["pred"]).any()
    assert bool(frame.attrs["stacked"]) is stack


def test_output_validates_and_round_trips(ten_class, tmp_path):
    models, ds = ten_class
    frame = predict_population(models, ds, batch_size=32, progress=False)
    examples = validate_examples(ds.examples())
    checked = validate_predictions(frame, examples, num_classes=10)
    np.testing.assert_array_equal(checked["pred"], frame["pred"])
    path = write_predictions(frame, tmp_path / "run" / "predictions.parquet", examples=ds)
    assert str(pq.read_schema(path).field("top5").type) == "list<element: int32>"
    assert [p.name for p in path.parent.iterdir()] == ["predictions.parquet"]  # no temp left
    back = read_predictions(path, examples)
    for col in ["replica", "pred", "p_true", "p_pred", *TOP5]:
        np.testing.assert_array_equal(back[col].to_numpy(), frame[col].to_numpy())
    assert list(back["example_id"].astype(str)) == list(frame["example_id"].astype(str))


def test_write_requires_the_dense_variant(ten_class, tmp_path):
    models, ds = ten_class
    frame = predict_population({"gmp-50": models["gmp-50"]}, ds, progress=False)
    with pytest.raises(AuditInputError, match="no rows for the dense variant 'dense'"):
        write_predictions(frame, tmp_path / "p.parquet", examples=ds)
    assert not (tmp_path / "p.parquet").exists()
    write_predictions(frame, tmp_path / "p.parquet", examples=ds.examples(), dense="gmp-50")


class Scaled(nn.Module):
    """Logits = input vector x scale: the dataset's 'images' are the logits themselves."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([float(scale)]))

    def forward(self, x):
        return x * self.scale


@pytest.mark.parametrize("stack", [True, False])
def test_class_mask_restricts_argmax_and_softmax(stack):
    # class 3 has the largest logit in both rows but lies outside the mask {0, 2, 4}
    logits = torch.tensor([[5.0, 1, 3, 9, 2, 0], [0.0, 0, 0, 9, 1, 8]])
    ds = TensorDataset(logits, [2, 4], num_classes=6, class_mask=[0, 2, 4])
    models = {"dense": [Scaled(1.0), Scaled(2.0)]}
    frame = predict_population(models, ds, stack=stack, progress=False)
    e = math.exp
    expected_p = {  # replica -> p_true, p_pred of both rows
        0: ([e(3) / (e(5) + e(3) + e(2)), e(1) / (2 + e(1))],
            [e(5) / (e(5) + e(3) + e(2)), e(1) / (2 + e(1))]),
        1: ([e(6) / (e(10) + e(6) + e(4)), e(2) / (2 + e(2))],
            [e(10) / (e(10) + e(6) + e(4)), e(2) / (2 + e(2))]),
    }
    for k in (0, 1):
        got = rows(frame, "dense", k)
        assert got["pred"].tolist() == [0, 4]
        np.testing.assert_allclose(got["p_true"], expected_p[k][0], rtol=1e-6)
        np.testing.assert_allclose(got["p_pred"], expected_p[k][1], rtol=1e-6)
    assert not any(c.startswith(TOPK_PREFIX) for c in frame.columns)  # 3 classes: no top-5
    assert (len(frame.attrs["stacked"]) == 2) is stack


def test_class_mask_top5_maps_back_to_full_class_indices():
    # masked classes 1, 2, 4, 6, 7 have logits 3, 1, 5, 2, 4; classes 3 and 5 are larger
    ds = TensorDataset(torch.tensor([[0.0, 3, 1, 100, 5, 50, 2, 4]]), [6], num_classes=8,
                       class_mask=[1, 2, 4, 6, 7])
    frame = predict_population({"dense": [Scaled(1.0)]}, ds, progress=False)
    assert frame[TOP5].iloc[0].tolist() == [4, 7, 1, 6, 2]
    assert frame["pred"].iloc[0] == 4
    denom = sum(math.exp(v) for v in (3, 1, 5, 2, 4))
    assert frame["p_true"].iloc[0] == pytest.approx(math.exp(2) / denom, rel=1e-6)
    assert frame["p_pred"].iloc[0] == pytest.approx(math.exp(5) / denom, rel=1e-6)


def test_class_mask_on_conv_models_matches_reference():
    ds = random_dataset(30, num_classes=10, seed=3)
    mask = [1, 3, 4, 5, 8, 9]
    ds.labels = [mask[i % len(mask)] for i in range(len(ds))]
    ds.class_mask = np.asarray(mask)
    models = make_models("small_cnn", 3, num_classes=10, seed=5)
    frame = predict_population({"dense": models}, ds, batch_size=8, stack=True, progress=False)
    assert len(frame.attrs["stacked"]) == 3
    for k, model in enumerate(models):
        got, ref = rows(frame, "dense", k), reference(model, ds, mask=mask)
        np.testing.assert_array_equal(got["pred"], ref["pred"])
        np.testing.assert_allclose(got["p_true"], ref["p_true"], atol=1e-5)
        np.testing.assert_allclose(got["p_pred"], ref["p_pred"], atol=1e-5)
        np.testing.assert_array_equal(got[TOP5].to_numpy(), ref["top5"])
        assert set(got["pred"]) <= set(mask)


def test_label_outside_class_mask_is_an_error():
    ds = TensorDataset(torch.zeros(2, 6), [2, 3], num_classes=6, class_mask=[0, 2, 4])
    with pytest.raises(AuditInputError, match="example 't/1' has label 3, not in the dataset's"):
        predict_population({"dense": [Scaled(1.0)]}, ds, progress=False)


def test_stacked_equals_looped_across_architectures():
    ds = random_dataset(40, num_classes=10, seed=1)
    models = {
        "dense": make_models("small_cnn", 4, num_classes=10, seed=10)
        + make_models("resnet18", 2, num_classes=10, seed=20),
        "gmp-70": make_models("small_cnn", 4, num_classes=10, seed=10, prune=0.7),
    }
    kw = dict(batch_size=16, progress=False)
    stacked = predict_population(models, ds, stack=True, max_stacked=3, **kw)
    looped = predict_population(models, ds, stack=False, **kw)
    # small_cnn: 8 replicas in chunks 3 + 3 + 2; resnet18: 2 replicas
    assert len(stacked.attrs["stacked"]) == 10 and looped.attrs["stacked"] == []
    for col in ["variant", "replica", "example_id", "pred", *TOP5]:
        assert stacked[col].tolist() == looped[col].tolist(), col
    np.testing.assert_allclose(stacked["p_true"], looped["p_true"], atol=1e-5)
    np.testing.assert_allclose(stacked["p_pred"], looped["p_pred"], atol=1e-5)
    ref = reference(models["dense"][5], ds)  # a resnet18
    np.testing.assert_array_equal(rows(stacked, "dense", 5)["pred"], ref["pred"])


def test_binary_task_has_p_pos_and_no_top5():
    ds = random_dataset(50, num_classes=2, seed=2)
    models = make_models("small_cnn", 2, num_classes=2, seed=30)
    frame = predict_population({"dense": models}, ds, batch_size=16, progress=False)
    assert "p_pos" in frame and not any(c.startswith(TOPK_PREFIX) for c in frame.columns)
    for k, model in enumerate(models):
        got, ref = rows(frame, "dense", k), reference(model, ds)
        np.testing.assert_allclose(got["p_pos"], ref["probs"][:, 1], atol=1e-5)
        np.testing.assert_array_equal(got["pred"], ref["pred"])
        labels = np.asarray(ds.labels)
        np.testing.assert_allclose(
            got["p_true"], np.where(labels == 1, got["p_pos"], 1 - got["p_pos"]), atol=1e-6
        )
        np.testing.assert_allclose(got["p_pred"], np.maximum(got["p_pos"], 1 - got["p_pos"]),
                                   atol=1e-6)
    validate_predictions(frame, validate_examples(ds.examples()))


def test_top_k_width_and_switch():
    ds = random_dataset(12, num_classes=10)
    model = make_models("small_cnn", 1, num_classes=10, seed=0)
    f3 = predict_population({"dense": model}, ds, top_k=3, progress=False)
    assert [c for c in f3.columns if c.startswith(TOPK_PREFIX)] == TOP5[:3]
    f0 = predict_population({"dense": model}, ds, top_k=None, progress=False)
    assert not any(c.startswith(TOPK_PREFIX) for c in f0.columns)
    np.testing.assert_array_equal(f3["pred"], f0["pred"])
    np.testing.assert_array_equal(f3[TOP5[0]], f3["pred"])


def test_deterministic_across_runs_and_workers(ten_class):
    models, ds = ten_class
    first = predict_population(models, ds, batch_size=16, progress=False)
    again = predict_population(models, ds, batch_size=16, progress=False)
    workers = predict_population(models, ds, batch_size=16, num_workers=2, progress=True)
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_frame_equal(first, workers)


def test_explicit_replica_ids_and_row_order(ten_class):
    models, ds = ten_class
    dense = models["dense"]
    frame = predict_population({"dense": {7: dense[2], 3: dense[0]}}, ds, progress=False)
    assert frame["replica"].unique().tolist() == [7, 3]
    np.testing.assert_array_equal(rows(frame, "dense", 3)["pred"], reference(dense[0], ds)["pred"])
    np.testing.assert_array_equal(rows(frame, "dense", 7)["pred"], reference(dense[2], ds)["pred"])


def test_training_mode_and_batchnorm_statistics_untouched():
    ds = random_dataset(20, num_classes=10)
    models = make_models("small_cnn", 2, num_classes=10, seed=0)
    models[0].train()
    models[0].features[1].eval()  # a mixed state must come back as it was
    models[1].eval()
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    predict_population({"dense": models}, ds, progress=False)
    assert models[0].training and not models[0].features[1].training
    assert models[0].features[4].training and not models[1].training
    for model, state in zip(models, before):
        for key, value in model.state_dict().items():
            assert torch.equal(value, state[key]), key


class DataDependent(nn.Module):
    """Branches on a tensor value, which vmap cannot trace."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        out = self.fc(x.flatten(1))
        if out.mean() > 100:  # never true; still not allowed under vmap
            out = -out
        return out


def test_stacking_falls_back_when_vmap_fails():
    ds = random_dataset(10, num_classes=5, size=2)
    models = {"dense": [DataDependent(0), DataDependent(1)]}
    with pytest.warns(UserWarning, match="stacked inference of dense/0, dense/1 failed "
                                         r"\(RuntimeError: .*data-dependent control flow"):
        stacked = predict_population(models, ds, stack=True, progress=False)
    assert stacked.attrs["stacked"] == []
    looped = predict_population(models, ds, stack=False, progress=False)
    pd.testing.assert_frame_equal(stacked, looped)


class Tempered(nn.Module):
    """Logits divided by a plain float attribute, invisible to the stacked state."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(12, 5)
        self.temperature = temperature

    def forward(self, x):
        return self.fc(x.flatten(1)) / self.temperature


def test_stacking_falls_back_when_stacked_disagrees():
    ds = random_dataset(10, num_classes=5, size=2)
    models = [Tempered(1.0), Tempered(0.25)]
    with pytest.warns(UserWarning, match=r"disagreed with one-at-a-time evaluation on the "
                                         r"first batch \(largest logit difference [0-9.e+-]+; "
                                         r"tolerance 1e-04"):
        frame = predict_population({"dense": models}, ds, stack=True, progress=False)
    assert frame.attrs["stacked"] == []
    for k, model in enumerate(models):
        np.testing.assert_allclose(rows(frame, "dense", k)["p_true"],
                                   reference(model, ds)["p_true"], atol=1e-6)


def test_half_precision_models_get_half_inputs():
    ds = random_dataset(20, num_classes=10)
    models = make_models("small_cnn", 2, num_classes=10, seed=0)
    halves = [m.half() for m in make_models("small_cnn", 2, num_classes=10, seed=0)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback expected
        frame = predict_population({"dense": models, "fp16": halves}, ds, stack=True,
                                   progress=False)
    assert len(frame.attrs["stacked"]) == 4
    d, h = rows(frame, "dense", 0), rows(frame, "fp16", 0)
    np.testing.assert_allclose(d["p_true"], h["p_true"], atol=5e-3)


class OrtModule(nn.Module):
    """A model served by ONNX Runtime: no parameters, numpy in, numpy out."""

    def __init__(self, path) -> None:
        super().__init__()
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def forward(self, x):
        out = self.session.run(None, {self.input: x.detach().cpu().numpy()})[0]
        return torch.from_numpy(out).to(x.device)


def test_onnx_backed_modules_run_one_at_a_time(tmp_path):
    pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")
    pytest.importorskip("onnxscript", reason="needs the 'onnx' extra")
    ds = random_dataset(20, num_classes=10)
    models = make_models("small_cnn", 2, num_classes=10, seed=0)
    program = torch.onnx.export(models[1].eval(), (ds.images[:4],), dynamo=True,
                                dynamic_shapes=({0: torch.export.Dim("batch")},))
    program.save(str(tmp_path / "m1.onnx"))
    served = {1: OrtModule(tmp_path / "m1.onnx")}  # ONNX export of dense replica 1
    frame = predict_population({"dense": models, "onnx": served}, ds, batch_size=8,
                               stack=True, progress=False)
    assert frame.attrs["stacked"] == [("dense", 0), ("dense", 1)]
    d, o = rows(frame, "dense", 1), rows(frame, "onnx", 1)
    np.testing.assert_array_equal(d["pred"], o["pred"])
    np.testing.assert_allclose(d["p_true"], o["p_true"], atol=1e-5)
    assert (d["pred"] != rows(frame, "dense", 0)["pred"]).any()


def test_device_argument():
    ds = random_dataset(10, num_classes=10)
    models = make_models("small_cnn", 2, num_classes=10, seed=0)
    cpu = predict_population({"dense": models}, ds, device=torch.device("cpu"), progress=False)
    assert cpu.attrs["stacked"] == []  # "auto" loops on the CPU
    if torch.cuda.is_available():
        gpu = predict_population({"dense": models}, ds, device="cuda", progress=False)
        assert len(gpu.attrs["stacked"]) == 2  # and stacks on a GPU
        np.testing.assert_array_equal(gpu["pred"], cpu["pred"])
        np.testing.assert_allclose(gpu["p_true"], cpu["p_true"], atol=1e-4)
    else:
        with pytest.raises(AuditInputError, match="no CUDA device is available"):
            predict_population({"dense": models}, ds, device="cuda", progress=False)
    with pytest.raises(AuditInputError, match="is not a torch device"):
        predict_population({"dense": models}, ds, device="gpu0", progress=False)


class NaNModel(Scaled):
    def forward(self, x):
        return x * self.scale * float("nan")


class BadItems(TensorDataset):
    def __getitem__(self, i):
        return self.images[i].numpy(), self.labels[i], f"t/{i}"


class RepeatedIds(TensorDataset):
    def __getitem__(self, i):
        return self.images[i], self.labels[i], "same"


_LOGITS6 = torch.zeros(3, 6)


@pytest.mark.parametrize(
    ("models", "dataset", "kwargs", "message"),
    [
        ({}, None, {}, "models must be a non-empty mapping"),
        ({"dense": []}, None, {}, r"models\['dense'\] has no replicas"),
        ({"dense": [object()]}, None, {}, "expected an nn.Module, got object"),
        ({"dense": {0: Scaled(1), -1: Scaled(1)}}, None, {}, "replica id -1 is not"),
        ({"": [Scaled(1)]}, None, {}, "variant names must be non-empty strings"),
        ({"dense": Scaled(1)}, None, {}, "must be a list of nn.Module replicas"),
        (None, None, {"batch_size": 0}, "batch_size: got 0; expected an integer >= 1"),
        (None, None, {"batch_size": True}, "batch_size: got True; expected an integer >= 1"),
        (None, None, {"batch_size": "big"}, "batch_size must be 'auto' or an integer >= 1"),
        (None, None, {"num_workers": -1}, "num_workers: got -1; expected an integer >= 0"),
        (None, None, {"top_k": 0}, "top_k: got 0; expected an integer >= 1"),
        (None, None, {"max_stacked": 0}, "max_stacked: got 0; expected an integer >= 1"),
        (None, None, {"stack": "yes"}, "stack must be True, False or 'auto'"),
        (None, None, {"stack": 1}, "stack must be True, False or 'auto'"),
        (None, TensorDataset(_LOGITS6, [0, 1, 2], num_classes=4), {},
         "returned 6 logits but other models or the dataset have 4 classes"),
        (None, TensorDataset(_LOGITS6, [0, 1, 7]), {},
         "example 't/2' has label 7, outside 0..5"),
        (None, TensorDataset(_LOGITS6, [0, 1, 2], class_mask=[0, 6]), {},
         "class_mask names class 6 but the models have 6 classes"),
        (None, TensorDataset(_LOGITS6, [0, 1, 2], class_mask=[1, 1]), {},
         "class_mask must hold distinct indices"),
        (None, TensorDataset(_LOGITS6[:0], []), {}, "is empty"),
        (None, BadItems(_LOGITS6, [0, 1, 2]), {}, "expected dataset\\[i\\] to return"),
        (None, RepeatedIds(_LOGITS6, [0, 1, 2]), {}, "yields example_id 'same' more than once"),
        ({"dense": [NaNModel(1.0)]}, None, {}, r"models\['dense'\] replica 0 produced NaN"),
        ({"dense": [Scaled(1.0)], "x": [nn.Linear(6, 3)]}, None, {},
         "returned 3 logits but other models or the dataset have 6 classes"),
    ],
)
def test_bad_input_is_reported(models, dataset, kwargs, message):
    models = {"dense": [Scaled(1.0)]} if models is None else models
    dataset = TensorDataset(_LOGITS6, [0, 1, 2]) if dataset is None else dataset
    with pytest.raises(AuditInputError, match=message):
        predict_population(models, dataset, progress=False, **kwargs)


def test_synthetic_celeba_faces_end_to_end(tmp_path):
    from torchvision.transforms import ToTensor

    from compaudit.data.celeba import CelebA
    from compaudit.data.synthetic import generate_synthetic_faces

    root = generate_synthetic_faces(tmp_path / "faces", n=40, image_size=16, seed=0, workers=1)
    ds = CelebA(root, split="all", transform=ToTensor())
    models = make_models("small_cnn", 2, num_classes=2, seed=0)
    frame = predict_population({"dense": models}, ds, batch_size=16, num_workers=1,
                               progress=False)
    path = write_predictions(frame, tmp_path / "predictions.parquet", examples=ds)
    examples = validate_examples(ds.examples())
    back = read_predictions(path, examples)
    assert len(back) == 2 * len(ds) and "p_pos" in back
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    with torch.no_grad():
        expected = models[1].eval()(images).argmax(1).numpy()
    np.testing.assert_array_equal(rows(frame, "dense", 1)["pred"], expected)
    assert list(rows(frame, "dense", 1)["example_id"]) == list(examples["example_id"])


def test_models_pruned_with_torch_prune_hooks_stack():
    # torch.nn.utils.prune keeps weight_orig and weight_mask and recomputes the weight in
    # a forward pre-hook; stacking must see the masked weights, not weight_orig.
    from torch.nn.utils import prune

    ds = random_dataset(16, num_classes=10)
    models = make_models("small_cnn", 2, num_classes=10, seed=0)
    for model in models:
        prune.l1_unstructured(model.fc, "weight", amount=0.6)
    stacked = predict_population({"dense": models}, ds, stack=True, progress=False)
    assert len(stacked.attrs["stacked"]) == 2
    for k, model in enumerate(models):
        np.testing.assert_allclose(rows(stacked, "dense", k)["p_true"],
                                   reference(model, ds)["p_true"], atol=1e-5)


@pytest.mark.parametrize("outputs, output", [(1, 0), (40, 9)])
def test_a_sigmoid_head_reads_p_pos_from_one_logit(outputs, output):
    """p_pos is torch.sigmoid of the chosen logit, pred is p_pos >= 0.5, and p_true /
    p_pred follow; replicas of a 40-output model run stacked or looped alike."""
    from compaudit.configs.head import Head

    ds = random_dataset(50, num_classes=2, seed=4)
    models = make_models("small_cnn", 2, num_classes=outputs, seed=40)
    head = Head(kind="sigmoid", outputs=outputs, output=output)
    for stack in (False, True):
        frame = predict_population({"dense": models}, ds, batch_size=16, progress=False,
                                   head=head, stack=stack)
        labels = np.asarray(ds.labels)
        for k, model in enumerate(models):
            with torch.no_grad():
                p_pos = torch.sigmoid(model.eval()(ds.images)[:, output]).numpy()
            got = rows(frame, "dense", k)
            np.testing.assert_allclose(got["p_pos"], p_pos, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(got["pred"], (got["p_pos"] >= 0.5).astype(np.int64))
            np.testing.assert_allclose(got["p_true"], np.where(labels == 1, p_pos, 1 - p_pos),
                                       rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(got["p_pred"], np.maximum(p_pos, 1 - p_pos),
                                       rtol=1e-5, atol=1e-6)
        assert 0 < frame["pred"].sum() < len(frame)
        validate_predictions(frame, validate_examples(ds.examples()))


def test_a_sigmoid_head_refuses_outputs_of_another_width():
    from compaudit.configs.head import Head

    ds = random_dataset(8, num_classes=2, seed=4)
    models = make_models("small_cnn", 1, num_classes=2, seed=40)
    with pytest.raises(AuditInputError, match=r"expected shape \(batch, 40\) \(\[model\]"
                                              r"\.outputs\)"):
        predict_population({"dense": models}, ds, progress=False,
                           head=Head(kind="sigmoid", outputs=40, output=3))


class Photos(AuditDataset):
    """8-bit RGB images of odd sizes under the pipeline's transform (TransformSpec)."""

    num_classes = 10

    def __init__(self, root, *, transform=None, n: int = 37) -> None:
        super().__init__(root, transform=transform)
        rng = np.random.default_rng(1)
        self._images = [rng.integers(0, 256, (30 + i % 5, 41, 3), dtype=np.uint8)
                        for i in range(n)]

    def __len__(self) -> int:
        return len(self._images)

    def _load(self, index: int):
        from PIL import Image

        return Image.fromarray(self._images[index]), index % 10, f"photos/{index}"

    def examples(self) -> pd.DataFrame:
        return pd.DataFrame({"example_id": [f"photos/{i}" for i in range(len(self))],
                             "label": [i % 10 for i in range(len(self))]})


def test_the_decoded_uint8_cache_predicts_exactly_what_the_dataset_does(tmp_path) -> None:
    from functools import partial

    from compaudit.data.base import TransformSpec
    from compaudit.data.decoded import DecodedDataset, decode_to_file

    factory = partial(Photos, tmp_path, transform=TransformSpec(resize=28, crop=24))
    path = decode_to_file(factory, tmp_path / "eval.npy")
    assert np.load(path).dtype == np.uint8
    torch.manual_seed(0)
    models = {"dense": [build_model("small_cnn", num_classes=10, small_input=True)
                        for _ in range(2)]}
    for batch_size in (8, "auto"):
        ref = predict_population(models, factory(), batch_size=batch_size, progress=False)
        got = predict_population(models, DecodedDataset(factory, path),
                                 batch_size=batch_size, progress=False)
        pd.testing.assert_frame_equal(got, ref, check_exact=True)  # same floats, same logits
        assert got.attrs["batch_size"] == ref.attrs["batch_size"]
    assert ref.attrs["batch_size"] == 256  # small_cnn at 24 px: far within the budget


def test_auto_batch_size_predicts_what_a_fixed_one_does() -> None:
    images, labels = random_images(40), np.arange(40) % 3
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(64, 3))
    # 3x16x16 in, 64x16x16 out: 3 KiB + 64 KiB per image; the ReLU 128 KiB: batch 256
    auto = predict_population({"dense": [model]}, TensorDataset(images, labels), progress=False)
    fixed = predict_population({"dense": [model]}, TensorDataset(images, labels),
                               batch_size=7, progress=False)
    assert auto.attrs["batch_size"] == 256 and fixed.attrs["batch_size"] == 7
    assert auto["pred"].tolist() == fixed["pred"].tolist()
    np.testing.assert_allclose(auto["p_true"], fixed["p_true"], rtol=1e-5)
