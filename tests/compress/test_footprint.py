"""Footprint: MACs, sparsity and speedup against hand formulas; sizes on disk; variants.json."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from compaudit.compress.footprint import (
    VARIANT_FIELDS,
    count_macs,
    footprint,
    measure_latency,
    variant_record,
    write_variants_json,
)
from compaudit.compress.quantization import (
    BFloat16Config,
    Float16Config,
    Int8StaticConfig,
    Int8WeightOnlyConfig,
)
from compaudit.compress.registry import CompressionContext, compress
from compaudit.compress.storage import (
    decode_state,
    effective_state,
    encode_state,
    read_encoded,
    write_encoded,
)
from compaudit.errors import AuditInputError
from compaudit.models.architectures import build_model


def _conv_macs(c_in, c_out, k, h_out, w_out, groups=1):
    return c_out * h_out * w_out * (c_in // groups) * k * k


@pytest.mark.parametrize("layer, input_size, expected", [
    # H_out = floor((17 + 2*1 - 3) / 2) + 1 = 9
    (nn.Conv2d(3, 8, 3, stride=2, padding=1), (3, 17, 17), _conv_macs(3, 8, 3, 9, 9)),
    # grouped, no padding: 10 - 3 + 1 = 8
    (nn.Conv2d(8, 16, 3, groups=4, bias=False), (8, 10, 10), _conv_macs(8, 16, 3, 8, 8, 4)),
    # depthwise 5x5, padding 2 keeps 12x12
    (nn.Conv2d(6, 6, 5, padding=2, groups=6), (6, 12, 12), _conv_macs(6, 6, 5, 12, 12, 6)),
    (nn.Linear(10, 4), (10,), 10 * 4),
])
def test_macs_of_one_layer_equal_the_hand_formula(layer, input_size, expected):
    total, per_layer = count_macs(layer, input_size=input_size)
    assert total == expected
    assert per_layer == {"": expected}


def test_macs_of_a_network_add_up_per_layer():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 5))
    total, per_layer = count_macs(model, input_size=(3, 6, 6))
    assert per_layer == {"0": _conv_macs(3, 4, 3, 6, 6), "3": 4 * 6 * 6 * 5}
    assert total == sum(per_layer.values())


def test_half_pruned_layer_has_half_sparsity_and_twice_the_theoretical_speedup():
    layer = nn.Linear(8, 4, bias=False)
    keep = torch.zeros(4, 8, dtype=torch.bool)
    keep[:, ::2] = True  # 16 of 32 weights kept
    fp = footprint(layer, input_size=(8,), masks={"weight": keep}, measure_time=False)
    assert fp["parameter_count"] == 32 and fp["nonzero_count"] == 16
    assert fp["sparsity"] == 0.5 and fp["weight_sparsity"] == 0.5
    assert fp["macs"] == 32 and fp["nonzero_macs"] == 16
    assert fp["theoretical_speedup"] == 2.0
    assert fp["layers"][0]["weight_sparsity"] == 0.5
    assert torch.count_nonzero(layer.weight) == 32  # the model itself is untouched


def test_theoretical_speedup_weights_layers_by_their_macs():
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.Flatten(),
                          nn.Linear(4 * 5 * 5, 3, bias=False))
    with torch.no_grad():
        model[0].weight[:2] = 0.0  # conv: half its weights are zero (no mask needed)
    fp = footprint(model, input_size=(2, 5, 5), measure_time=False)
    conv, fc = _conv_macs(2, 4, 3, 5, 5), 4 * 5 * 5 * 3
    assert fp["macs"] == conv + fc
    assert fp["nonzero_macs"] == conv / 2 + fc
    assert fp["theoretical_speedup"] == pytest.approx((conv + fc) / (conv / 2 + fc))
    n_conv, n_fc = 2 * 4 * 9, 100 * 3
    assert fp["weight_sparsity"] == pytest.approx((n_conv / 2) / (n_conv + n_fc))


def test_compressed_size_of_a_90_percent_sparse_model_is_much_smaller():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    masks = {name: torch.rand(p.shape) >= 0.9 for name, p in model.named_parameters()
             if name.endswith("weight")}
    fp = footprint(model, input_size=(256,), masks=masks, measure_time=False)
    assert fp["weight_sparsity"] == pytest.approx(0.9, abs=0.01)
    assert fp["compressed_size_bytes"] < fp["size_bytes"]
    # bitmask (1 bit per weight) + float32 non-zeros: about 0.125 + 0.1 * 4 bytes a weight
    n = 256 * 256 + 2560
    expected = n / 8 + 0.1 * n * 4 + 4 * (256 + 10)
    assert fp["compressed_size_bytes"] == pytest.approx(expected, rel=0.15)
    assert fp["size_bytes"] >= 4 * (n + 266)


def test_int8_and_half_precision_representations_round_trip_exactly(tmp_path):
    torch.manual_seed(1)
    model = build_model("small_cnn", num_classes=2).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 16, 16, generator=gen)

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            return x[i], 0, str(i)

    ctx = CompressionContext(calibration_dataset=Images())
    dense_fp = footprint(model, input_size=(3, 16, 16), measure_time=False)
    for config, ratio in ((Int8WeightOnlyConfig(), 0.35), (Int8WeightOnlyConfig(
            per_channel=False, symmetric=False), 0.35), (Int8StaticConfig(), 0.35),
                          (Float16Config(), 0.55), (BFloat16Config(execution="native"), 0.55)):
        q = compress(model, config, context=ctx).model
        encoded = encode_state(q)
        path = tmp_path / f"{type(config).__name__}.bin"
        size = write_encoded(path, encoded)
        decoded = decode_state(read_encoded(path))
        state = effective_state(q)
        assert set(decoded) == set(state)
        for k, v in state.items():
            assert decoded[k].dtype == v.dtype and torch.equal(decoded[k], v), (config, k)
        fp = footprint(q, input_size=(3, 16, 16), measure_time=False)
        assert fp["compressed_size_bytes"] == size
        # about 1 (int8) or 2 (half) bytes per weight instead of 4
        assert fp["compressed_size_bytes"] < ratio * dense_fp["size_bytes"], config
        assert fp["macs"] == dense_fp["macs"]


def test_onnxruntime_module_is_sized_by_its_file(tmp_path):
    pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")
    pytest.importorskip("onnxscript", reason="needs the 'onnx' extra")
    torch.manual_seed(2)
    model = build_model("small_cnn", num_classes=2).eval()
    x = torch.randn(8, 3, 16, 16)

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return x[i], 0, str(i)

    out = compress(model, Int8StaticConfig(backend="onnxruntime", onnx_dir=str(tmp_path)),
                   context=CompressionContext(calibration_dataset=Images()))
    fp = footprint(out.model, input_size=(3, 16, 16), structure=model, repeats=3)
    assert fp["size_bytes"] == (tmp_path / "model.int8.onnx").stat().st_size
    assert fp["macs"] == count_macs(model, input_size=(3, 16, 16))[0]
    assert fp["latency"]["median_ms"] > 0


def test_latency_is_a_median_with_the_batch_size_stated():
    model = nn.Linear(4, 2)
    lat = measure_latency(model, input_size=(4,), batch_size=3, repeats=5, warmup=1)
    assert lat["batch_size"] == 3 and lat["repeats"] == 5 and lat["device"] == "cpu"
    assert 0 < lat["min_ms"] <= lat["median_ms"]
    with pytest.raises(AuditInputError, match="repeats"):
        measure_latency(model, input_size=(4,), repeats=0)


def test_bad_inputs_are_reported():
    with pytest.raises(AuditInputError, match="input_size"):
        footprint(nn.Linear(4, 2), input_size=4)
    with pytest.raises(AuditInputError, match="fc.weight"):
        footprint(nn.Linear(4, 2), input_size=(4,),
                  masks={"fc.weight": torch.ones(2, 4, dtype=torch.bool)})


def _records():
    dense_fp = footprint(nn.Linear(4, 2), input_size=(4,), repeats=2)
    return {
        "dense": variant_record(method="dense", parameters={}, derives_from=None,
                                footprint=dense_fp),
        "int8-static": variant_record(method="int8-static", parameters={"backend": "simulated"},
                                      derives_from="dense", footprint=dense_fp,
                                      execution="simulated", note=float("nan")),
    }


def test_variants_json_is_valid_json_written_atomically(tmp_path):
    path = tmp_path / "run" / "variants.json"
    write_variants_json(path, _records())
    doc = json.loads(path.read_text())
    assert doc["schema"] == "compaudit.variants/1"
    assert list(doc["variants"]) == ["dense", "int8-static"]
    for record in doc["variants"].values():
        assert set(VARIANT_FIELDS) <= set(record)
    assert doc["variants"]["int8-static"]["derives_from"] == "dense"
    assert doc["variants"]["int8-static"]["note"] is None  # NaN is not JSON
    assert doc["variants"]["dense"]["latency_batch_size"] == 1
    assert math.isclose(doc["variants"]["dense"]["macs"], 8)
    assert [p.name for p in path.parent.iterdir()] == ["variants.json"]  # no temp files

    # a failed write leaves the previous file as it was
    before = path.read_bytes()
    bad = _records()
    bad["int8-static"]["parameters"] = {"model": nn.Linear(1, 1)}
    with pytest.raises(AuditInputError, match="JSON"):
        write_variants_json(path, bad)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["variants.json"]


def test_variants_json_rejects_incomplete_records(tmp_path):
    records = _records()
    del records["int8-static"]["macs"]
    records["int8-static"]["derives_from"] = "dense-typo"
    with pytest.raises(AuditInputError) as err:
        write_variants_json(tmp_path / "variants.json", records)
    assert "lacks macs" in str(err.value) and "dense-typo" in str(err.value)
    assert not (tmp_path / "variants.json").exists()
