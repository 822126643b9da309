"""method = "load": the team's own artifacts, paired with dense replica k, audited as shipped.

Every artifact is made by the real tool (torch.nn.utils.prune, torch.onnx.export,
onnxruntime.quantization.quantize_static) and checked against an independent
reference: the saved tensors themselves, or an ``onnxruntime.InferenceSession`` run
on the same input.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from compaudit import tables
from compaudit.compress.footprint import footprint
from compaudit.compress.loaded import check_pairing
from compaudit.compress.registry import CompressionContext, compress
from compaudit.config import ConfigError, from_table
from compaudit.configs.compress import METHODS, Float16Config, LoadConfig
from compaudit.configs.train import TrainConfig
from compaudit.errors import AuditInputError
from compaudit.models.architectures import build_model
from compaudit.models.onnx_runtime import OnnxModule
from compaudit.pipeline.jobs import VariantJob, run_variant_job
from compaudit.predict import predict_population

ort = pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")
onnx = pytest.importorskip("onnx", reason="needs the 'onnx' extra")
quantization = pytest.importorskip("onnxruntime.quantization")

SIZE = 16


def _dense(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("small_cnn", num_classes=2)
    with torch.no_grad():  # BatchNorm statistics as after training
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _export(model: nn.Module, path: Path, *, batch: int | None = None,
            half: bool = False) -> Path:
    """torch.onnx.export, the classic exporter; a dynamic batch unless ``batch`` is given."""
    example = _images(batch or 2)
    if half:
        model, example = model.half(), example.half()
    dynamic = None if batch else {"images": {0: "n"}, "logits": {0: "n"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy TorchScript export"
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes=dynamic)
    return path


class _Calibration(quantization.CalibrationDataReader):
    """Three batches of images, as ONNX Runtime's quantizer reads them."""

    def __init__(self) -> None:
        self.batches = iter([{"images": _images(8, seed=s).numpy()} for s in range(3)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def _quantize(fp32: Path, path: Path, fmt: str) -> Path:
    quantization.quantize_static(
        str(fp32), str(path), _Calibration(), quant_format=getattr(quantization.QuantFormat, fmt),
        per_channel=True, weight_type=quantization.QuantType.QInt8,
        activation_type=quantization.QuantType.QUInt8)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The dense replica's artifacts: fp32, int8 QDQ and QOperator, fixed batch, fp16."""
    folder = tmp_path_factory.mktemp("artifacts")
    fp32 = _export(_dense(), folder / "fp32.onnx")
    return {
        "fp32": fp32,
        "qdq": _quantize(fp32, folder / "qdq.onnx", "QDQ"),
        "qoperator": _quantize(fp32, folder / "qoperator.onnx", "QOperator"),
        "fixed": _export(_dense(), folder / "fixed.onnx", batch=4),
        "fp16": _export(_dense(), folder / "fp16.onnx", half=True),
    }


def _session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _load(path: Path | tuple[Path, ...], *, dense: nn.Module | None = None, replica: int = 0):
    paths = path if isinstance(path, tuple) else (path,)
    config = LoadConfig(files=tuple(str(p) for p in paths))
    return compress(dense if dense is not None else _dense(), config,
                    context=CompressionContext(replica=replica))


# --- the config -------------------------------------------------------------------------


def test_load_is_a_method_with_a_nonempty_file_list():
    assert METHODS.get("load").config is LoadConfig
    problems: list[str] = []
    config = from_table(LoadConfig, {"files": ["a.onnx", "b.pt"]}, where="s.toml: [[variants]] #1",
                        problems=problems)
    assert problems == [] and config.files == ("a.onnx", "b.pt")
    with pytest.raises(ConfigError, match="files: got \\(\\); expected a non-empty list"):
        LoadConfig(files=())
    from_table(LoadConfig, {}, where="s.toml: [[variants]] #1", problems=problems)
    assert problems == ["s.toml: [[variants]] #1: missing required key(s) files"]


# --- ONNX: the logits ONNX Runtime computes, exactly ------------------------------------


@pytest.mark.parametrize("kind, op", [("fp32", "Conv"), ("qdq", "QuantizeLinear"),
                                      ("qoperator", "QLinearConv")])
def test_onnx_artifacts_give_onnx_runtime_logits_exactly(files, kind, op):
    path = files[kind]
    assert op in {n.op_type for n in onnx.load(str(path)).graph.node}  # really that format
    dense = _dense()
    before = {k: v.clone() for k, v in dense.state_dict().items()}
    out = _load(path, dense=dense)
    assert isinstance(out.model, OnnxModule) and out.masks == {}
    assert out.info == {"method": "load", "parameters": {"files": [str(path)]},
                        "artifact": str(path), "format": "onnx"}
    x = _images(5, seed=1)
    expected = _session(path).run(None, {"images": x.numpy()})[0]
    got = out.model(x)
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), expected)
    assert all(torch.equal(v, before[k]) for k, v in dense.state_dict().items())


def test_int8_artifacts_differ_from_fp32(files):
    x = _images(5, seed=1)
    fp32 = _load(files["fp32"]).model(x)
    for kind in ("qdq", "qoperator"):
        assert not torch.equal(_load(files[kind]).model(x), fp32)


def test_a_fixed_batch_export_runs_any_batch_in_chunks(files):
    model = _load(files["fixed"]).model
    assert model.input_shape[0] == 4
    x = _images(6, seed=2).numpy()
    session = _session(files["fixed"])
    last = np.concatenate([x[4:], np.zeros_like(x[:2])])  # padded to the fixed batch
    expected = np.concatenate([session.run(None, {"images": x[:4]})[0],
                               session.run(None, {"images": last})[0][:2]])
    np.testing.assert_array_equal(model(torch.from_numpy(x)).numpy(), expected)


def test_a_float16_export_gets_float16_inputs_and_returns_float32(files):
    session = _session(files["fp16"])
    assert session.get_inputs()[0].type == "tensor(float16)"
    model = _load(files["fp16"]).model
    x = _images(3, seed=3)
    expected = session.run(None, {"images": x.numpy().astype(np.float16)})[0]
    assert expected.dtype == np.float16
    got = model(x)
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), expected.astype(np.float32))


def test_loaded_onnx_models_predict_through_the_population_path(files):
    models = [_load(files["fixed"]).model, _load(files["qdq"]).model]
    x = _images(7, seed=4)
    data = [(x[i], i % 2, f"ex/{i}") for i in range(7)]
    frame = predict_population({"mine": models}, data, batch_size=5, progress=False)
    for replica, path in enumerate((files["fixed"], files["qdq"])):
        logits = models[replica](x).numpy()
        got = frame[frame["replica"] == replica]["pred"].to_numpy()
        np.testing.assert_array_equal(got, logits.argmax(1))
        assert path.is_file()


def test_footprint_of_a_loaded_onnx_variant(files):
    model = _load(files["qdq"]).model
    with_dense = footprint(model, input_size=(3, SIZE, SIZE), structure=_dense(),
                           measure_time=False)
    assert with_dense["parameter_count"] == sum(p.numel() for p in _dense().parameters())
    assert with_dense["size_bytes"] == files["qdq"].stat().st_size
    # A dense ONNX replica has no torch structure: footprint must still measure it.
    alone = footprint(model, input_size=(3, SIZE, SIZE), structure=None, repeats=2, warmup=1)
    assert alone["size_bytes"] == files["qdq"].stat().st_size
    assert alone["latency"]["median_ms"] > 0
    # ... and count nothing it cannot see: null, not a measured zero
    assert alone["parameter_count"] is None and alone["sparsity"] is None
    assert alone["macs"] is None


# --- state dicts, pairing ---------------------------------------------------------------


def _pruned_file(path: Path, seed: int, amount: float) -> dict[str, torch.Tensor]:
    model = _dense(seed)
    prune.global_unstructured([(model.features[0], "weight"), (model.fc, "weight")],
                              pruning_method=prune.L1Unstructured, amount=amount)
    torch.save(model.state_dict(), path)  # without prune.remove
    return torch.load(path, weights_only=True)


def test_a_pruned_state_dict_is_loaded_into_the_dense_architecture(tmp_path):
    saved = _pruned_file(tmp_path / "pruned.pt", seed=5, amount=0.5)
    dense = _dense(seed=0)
    before = {k: v.clone() for k, v in dense.state_dict().items()}
    out = _load(tmp_path / "pruned.pt", dense=dense)
    assert out.info["format"] == "state_dict" and out.model is not dense
    weight = out.model.state_dict()["features.0.weight"]
    assert torch.equal(weight, saved["features.0.weight_orig"] * saved["features.0.weight_mask"])
    assert int((weight == 0).sum()) == int((saved["features.0.weight_mask"] == 0).sum())
    assert all(torch.equal(v, before[k]) for k, v in dense.state_dict().items())


def test_replica_k_gets_file_k(tmp_path):
    saved = [_pruned_file(tmp_path / f"r{k}.pt", seed=10 + k, amount=0.3 + 0.2 * k)
             for k in range(2)]
    paths = (tmp_path / "r0.pt", tmp_path / "r1.pt")
    check_pairing(LoadConfig(files=tuple(map(str, paths))), 2)
    for k in range(2):
        out = _load(paths, dense=_dense(seed=k), replica=k)
        assert out.info["artifact"] == str(paths[k])
        assert out.info["parameters"] == {"files": [str(p) for p in paths]}
        expected = saved[k]["fc.weight_orig"] * saved[k]["fc.weight_mask"]
        assert torch.equal(out.model.state_dict()["fc.weight"], expected)


def test_one_file_for_two_replicas_is_refused(tmp_path):
    torch.save(_dense().state_dict(), tmp_path / "only.pt")
    config = LoadConfig(files=(str(tmp_path / "only.pt"),))
    check_pairing(config, 1)
    with pytest.raises(AuditInputError, match="files lists 1 file\\(s\\) for 2 dense "
                                              "replica\\(s\\); expected one file per replica"):
        check_pairing(config, 2)
    with pytest.raises(AuditInputError, match="no file for dense replica 1: files lists 1 "
                                              "file\\(s\\)"):
        _load(tmp_path / "only.pt", replica=1)


def test_a_state_dict_paired_with_an_onnx_dense_replica_is_refused(files, tmp_path):
    torch.save(_dense().state_dict(), tmp_path / "w.pt")
    onnx_dense = OnnxModule(files["fp32"])
    with pytest.raises(AuditInputError, match="a state dict holds weights without an "
                                              "architecture, and the model it would be paired "
                                              "with is a OnnxModule"):
        _load(tmp_path / "w.pt", dense=onnx_dense)


def test_a_torch_export_program_is_refused(tmp_path):
    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(nn.Linear(3, 2), (torch.randn(1, 3),)), path)
    with pytest.raises(AuditInputError, match="is a torch.export program \\(.pt2\\), which "
                                              "compaudit does not load"):
        _load(path)


# --- the variant job ----------------------------------------------------------------------


class _Images(torch.utils.data.Dataset):
    def __init__(self, n: int = 6) -> None:
        self.x = _images(n, seed=7)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], i % 2, f"ex/{i}"


def _no_training_data():
    raise AssertionError("a load variant must not read the training data")


def _job(tmp_path: Path, *, config, dense: tuple[Path, ...], method: str = "load",
         dissection=None) -> VariantJob:
    examples = tmp_path / "examples.parquet"
    n = len(_Images())
    tables.write_examples(pd.DataFrame({
        "example_id": [f"ex/{i}" for i in range(n)], "label": [i % 2 for i in range(n)],
        "split": "test", "source_id": [f"ex/{i}" for i in range(n)], "shift": "clean",
        "severity": 0}), examples)
    return VariantJob(
        name="mine", config=config, method=method, params={}, arch="small_cnn", num_classes=2,
        small_input=False, dense_paths=dense, train_data=_no_training_data,
        eval_data=(_Images,), fine_tune=TrainConfig(), seed=0, device="cpu", image_size=SIZE,
        predictions_path=tmp_path / "predictions.parquet", record_path=tmp_path / "mine.json",
        examples_path=examples, dissection=dissection)


def test_a_load_job_pairs_files_with_torch_dense_replicas(files, tmp_path):
    dense = tuple(tmp_path / f"dense-{k}.pt" for k in range(2))
    for k, path in enumerate(dense):
        torch.save(_dense(seed=k).state_dict(), path)
    config = LoadConfig(files=(str(files["qdq"]), str(files["qoperator"])))
    record = run_variant_job(_job(tmp_path, config=config, dense=dense))
    assert record["method"] == "load" and record["derives_from"] == "dense"
    assert (record["family"], record["axis"], record["bits"]) == ("mine", "sparsity", None)
    assert record["artifact"] == str(files["qdq"]) and record["format"] == "onnx"
    assert record["parameters"] == {"files": [str(files["qdq"]), str(files["qoperator"])]}
    assert record["parameter_count"] == sum(p.numel() for p in _dense().parameters())
    predictions = pd.read_parquet(tmp_path / "predictions.parquet")
    assert sorted(predictions["replica"].unique()) == [0, 1]
    x = _images(6, seed=7)
    for k, kind in enumerate(("qdq", "qoperator")):
        expected = _session(files[kind]).run(None, {"images": x.numpy()})[0].argmax(1)
        got = predictions[predictions["replica"] == k].sort_values("example_id")["pred"]
        np.testing.assert_array_equal(got.to_numpy(), expected)


def test_a_load_job_with_onnx_dense_replicas_has_no_torch_structure(files, tmp_path):
    config = LoadConfig(files=(str(files["qdq"]),))
    record = run_variant_job(_job(tmp_path, config=config, dense=(files["fp32"],)))
    assert record["format"] == "onnx"
    assert record["size_bytes"] == files["qdq"].stat().st_size
    dense = run_variant_job(dataclasses.replace(_job(tmp_path, config=None, dense=(files["fp32"],)),
                                                name="dense", method="dense"))
    assert dense["size_bytes"] == files["fp32"].stat().st_size


def test_a_job_refuses_what_needs_torch_weights_of_onnx_dense_replicas(files, tmp_path):
    with pytest.raises(AuditInputError, match="method 'float16' compresses the dense model's "
                                              "torch weights, but dense replica 0"):
        run_variant_job(_job(tmp_path, config=Float16Config(), method="float16",
                             dense=(files["fp32"],)))
    with pytest.raises(AuditInputError, match="\\[dissection\\] hooks torch layers, but "
                                              "replica 0 is an ONNX model"):
        run_variant_job(_job(tmp_path, config=LoadConfig(files=(str(files["qdq"]),)),
                             dense=(files["fp32"],), dissection=object()))
    torch.save(_dense().state_dict(), tmp_path / "dense.pt")
    with pytest.raises(AuditInputError, match="\\[dissection\\] hooks torch layers, but "
                                              "replica 0 is an ONNX model"):
        run_variant_job(_job(tmp_path, config=LoadConfig(files=(str(files["qdq"]),)),
                             dense=(tmp_path / "dense.pt",), dissection=object()))


def test_a_job_refuses_one_file_for_two_replicas(files, tmp_path):
    dense = tuple(tmp_path / f"dense-{k}.pt" for k in range(2))
    for k, path in enumerate(dense):
        torch.save(_dense(seed=k).state_dict(), path)
    with pytest.raises(AuditInputError, match="files lists 1 file\\(s\\) for 2 dense replica"):
        run_variant_job(_job(tmp_path, config=LoadConfig(files=(str(files["qdq"]),)),
                             dense=dense))
