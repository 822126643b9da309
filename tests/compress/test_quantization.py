"""Quantization: qparams vs hand formulas and ONNX Runtime; simulated vs real int8 agreement."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compaudit.compress.fold import fold_batchnorm_
from compaudit.compress.observers import MinMaxObserver, PercentileObserver
from compaudit.compress.qparams import (
    compute_qparams,
    dequantize,
    fake_quantize,
    quantize,
    quantize_bias,
    weight_qparams,
)
from compaudit.compress.quant_sim import round_float_precision
from compaudit.compress.quant_static import ActivationQuantizer
from compaudit.compress.quantization import (
    BFloat16Config,
    Float16Config,
    Int8StaticConfig,
    Int8WeightOnlyConfig,
    calibration_batches,
)
from compaudit.compress.registry import CompressionContext, compress
from compaudit.errors import AuditInputError
from compaudit.models.architectures import build_model


def _images(n: int = 64, size: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=gen)

    class Images(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int):
            return x[i], 0, f"img/{i}"

    return Images(), x


# --- weights ------------------------------------------------------------------------------


def test_per_channel_scales_are_max_abs_over_127():
    torch.manual_seed(0)
    w = torch.randn(6, 3, 3, 3) * torch.arange(1, 7).view(6, 1, 1, 1)
    w[2] = 0.0  # an all-zero channel gets scale 1 (ONNX Runtime's rule for an empty range)
    scale, zp = weight_qparams(w)
    expected = [max(abs(v) for v in w[c].flatten().tolist()) / 127 for c in range(6)]
    expected[2] = 1.0
    assert scale.dtype == torch.float32
    assert scale.tolist() == pytest.approx(expected, rel=1e-7)
    assert zp.tolist() == [0] * 6


def test_weight_round_trip_is_within_half_a_step_per_channel():
    torch.manual_seed(1)
    w = torch.randn(8, 4, 3, 3) * torch.linspace(0.01, 3.0, 8).view(8, 1, 1, 1)
    scale, zp = weight_qparams(w)
    q = quantize(w, scale, zp, dtype="int8", axis=0, symmetric=True)
    assert q.min() >= -127 and q.max() <= 127
    err = (dequantize(q, scale, zp, axis=0) - w).abs().amax(dim=(1, 2, 3))
    # half a step, plus float32 rounding of the product q * scale
    assert torch.all(err <= scale / 2 * (1 + 1e-6)), (err / scale).max()
    # the largest magnitude of each channel is exactly +-127 steps
    assert q.abs().amax(dim=(1, 2, 3)).tolist() == [127] * 8


def test_exactly_representable_weights_are_unchanged():
    # each channel holds integers times its step, the largest being 127 steps, so the
    # scale max|w| / 127 is exactly the step and every value is on the int8 grid
    steps = torch.tensor([2.0 ** -7, 2.0 ** -10, 0.75])
    k = torch.tensor([[-127, -64, 0, 1, 5, 127],
                      [3, -2, 0, 0, 1, -127],
                      [127, 126, -1, 0, 2, 64]], dtype=torch.float32)
    w = k * steps.view(3, 1)
    scale, zp = weight_qparams(w)
    assert scale.tolist() == steps.tolist()
    q = quantize(w, scale, zp, dtype="int8", axis=0, symmetric=True)
    assert torch.equal(q, k.long())
    assert torch.equal(dequantize(q, scale, zp, axis=0), w)


def test_int8_weight_only_quantizes_every_layer_and_leaves_the_original():
    torch.manual_seed(2)
    model = build_model("small_cnn", num_classes=3).eval()
    before = copy.deepcopy(model.state_dict())
    out = compress(model, Int8WeightOnlyConfig(), context=CompressionContext())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"original {k} changed"
    q = out.model
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            w = module.weight.detach()
            s = w.abs().amax(dim=tuple(range(1, w.ndim))).double() / 127
            s = s.float().view(-1, *[1] * (w.ndim - 1))
            expected = torch.clamp(torch.round(w / s), -127, 127) * s
            assert torch.equal(q.get_submodule(name).weight.detach(), expected), name
        elif isinstance(module, nn.BatchNorm2d):
            assert torch.equal(q.get_submodule(name).running_var, module.running_var)
    assert out.info["method"] == "int8_weight_only" and out.info["bits"] == 8
    assert out.info["parameters"] == {"per_channel": True, "symmetric": True}


def test_per_tensor_affine_weights_use_the_full_int8_range():
    w = torch.tensor([[-1.0, 0.0], [0.5, 3.0]])
    scale, zp = weight_qparams(w, per_channel=False, symmetric=False)
    # scale = (3 - (-1)) / 255, zero point = round(-128 + 1 / scale) = round(-64.25)
    assert float(scale) == pytest.approx(4 / 255, rel=1e-7)
    assert int(zp) == -64


# --- activations ----------------------------------------------------------------------------


def test_fake_quant_of_activations_matches_a_hand_computed_case():
    x = torch.tensor([-10.0, -5.25, 0.25, 0.75, 1.25, 3.0, 200.0])
    # x / 0.5 = [-20, -10.5, 0.5, 1.5, 2.5, 6, 400]; round half to even -> [-20, -10, 0,
    # 2, 2, 6, 400]; + 10 -> [-10, 0, 10, 12, 12, 16, 410]; clamp to [0, 255];
    # (q - 10) * 0.5
    y = fake_quantize(x, torch.tensor(0.5), torch.tensor(10), qmin=0, qmax=255)
    assert y.tolist() == [-5.0, -5.0, 0.0, 1.0, 1.0, 3.0, 122.5]
    q = quantize(x, torch.tensor(0.5), torch.tensor(10), dtype="uint8")
    assert q.tolist() == [0, 0, 10, 12, 12, 16, 255]


def test_activation_qparams_hand_cases():
    def qp(lo, hi, dtype="uint8"):
        s, z = compute_qparams(torch.tensor(lo), torch.tensor(hi), dtype=dtype, symmetric=False)
        return float(s), int(z)

    s, z = qp(-1.0, 3.0)  # scale 4/255, zero point round(1 / (4/255)) = round(63.75)
    assert s == pytest.approx(4 / 255, rel=1e-7) and z == 64
    s, z = qp(0.5, 2.0)  # the range is widened to include 0
    assert s == pytest.approx(2 / 255, rel=1e-7) and z == 0
    s, z = qp(-1.0, 3.0, "int8")  # round(-128 + 63.75) = -64
    assert s == pytest.approx(4 / 255, rel=1e-7) and z == -64
    assert qp(0.0, 0.0) == (1.0, 0)  # empty range: scale 1, zero point 0
    s, z = qp(-2.0, -1.0)  # all negative: rmax widened to 0, zero point at qmax
    assert s == pytest.approx(2 / 255, rel=1e-7) and z == 255


def test_qparams_equal_onnxruntime_compute_scale_zp():
    pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")
    from onnxruntime.quantization.quant_utils import compute_scale_zp

    rng = np.random.default_rng(0)
    for lo, hi in rng.normal(0, 3, size=(50, 2)).astype(np.float32):
        lo, hi = min(lo, hi), max(lo, hi)
        for dtype, (qmin, qmax) in (("uint8", (0, 255)), ("int8", (-128, 127))):
            npdt = np.uint8 if dtype == "uint8" else np.int8
            zp_ref, s_ref = compute_scale_zp(np.float32(lo), np.float32(hi), npdt(qmin),
                                             npdt(qmax), symmetric=False)
            s, z = compute_qparams(torch.tensor(lo), torch.tensor(hi), dtype=dtype,
                                   symmetric=False)
            assert float(s) == float(s_ref) and int(z) == int(zp_ref)


def test_bias_is_quantized_at_input_times_weight_scale():
    b = torch.tensor([0.1, -0.25, 3.0])
    q, bias_scale = quantize_bias(b, torch.tensor(0.02), torch.tensor([0.1, 0.5, 0.01]))
    assert bias_scale.tolist() == pytest.approx([0.002, 0.01, 0.0002], rel=1e-6)
    assert q.dtype == torch.int32
    assert q.tolist() == [50, -25, 15000]


def test_minmax_observer_spans_all_batches():
    obs = MinMaxObserver()
    for batch in (torch.tensor([1.0, 2.0]), torch.tensor([-3.0, 0.5]), torch.tensor([7.0])):
        obs.observe(batch, 0)
    lo, hi = obs.range()
    assert (float(lo), float(hi)) == (-3.0, 7.0)


def test_percentile_observer_equals_onnxruntime_histogram_collector():
    pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")
    from onnxruntime.quantization.calibrate import HistogramCollector

    gen = torch.Generator().manual_seed(3)
    batches = [torch.randn(16, 4, 5, 5, generator=gen) * 2 + 0.3 for _ in range(4)]
    batches[1][0, 0, 0, 0] = 40.0  # an outlier the percentile should clip
    for pct in (99.0, 99.999):
        obs = PercentileObserver(percentile=pct)
        for p in range(obs.passes):
            for b in batches:
                obs.observe(b, p)
        lo, hi = obs.range()
        ref = HistogramCollector(method="percentile", symmetric=True, num_bins=2048,
                                 num_quantized_bins=128, percentile=pct, scenario="same")
        ref.collect({"t": [b.numpy() for b in batches]})
        ref_lo, ref_hi = ref.compute_collection_result()["t"][:2]
        assert (float(lo), float(hi)) == (float(ref_lo), float(ref_hi))
        assert float(hi) < 40.0


def test_activation_quantizer_observes_then_quantizes():
    aq = ActivationQuantizer(MinMaxObserver(), dtype="uint8")
    x = torch.tensor([-1.0, 0.0, 1.5, 3.0])
    assert torch.equal(aq(x), x)  # observing passes values through
    aq.freeze()
    assert float(aq.scale) == pytest.approx(4 / 255, rel=1e-7) and int(aq.zero_point) == 64
    expected = (torch.clamp(torch.round(x / aq.scale) + 64, 0, 255) - 64) * aq.scale
    assert torch.equal(aq(x), expected)


# --- int8 static (simulated) ------------------------------------------------------------------


@pytest.mark.parametrize("activation, reference", [
    (nn.ReLU(), F.relu),
    (nn.ReLU6(), F.relu6),
    (nn.Hardtanh(-1.0, 2.0), lambda t: F.hardtanh(t, -1.0, 2.0)),
])
def test_simulated_static_matches_a_hand_written_quantized_forward(activation, reference):
    # The reference runs the activation in float and quantizes its output; the simulation
    # removes it (as ONNX Runtime removes Relu and Clip) and lets the quantizer clamp.
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), activation, nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 3)).eval()
    with torch.no_grad():
        model[0].weight.mul_(8)  # conv outputs beyond every bound: the clamps matter
    data, x = _images(n=32)
    out = compress(model, Int8StaticConfig(calibration_images=32, calibration_batch_size=8),
                   context=CompressionContext(calibration_dataset=data))

    def qp(t):  # uint8 affine over [min(t, 0), max(t, 0)]
        lo, hi = min(float(t.min()), 0.0), max(float(t.max()), 0.0)
        s = (hi - lo) / 255
        return torch.tensor(s, dtype=torch.float32), torch.tensor(round(-lo / s))

    def fq(t, s, z):
        return (torch.clamp(torch.round(t / s) + z, 0, 255) - z) * s

    def wq(w):
        s = (w.abs().amax(dim=tuple(range(1, w.ndim))).double() / 127).float()
        s = s.view(-1, *[1] * (w.ndim - 1))
        return torch.round(w / s) * s, s.flatten()

    conv, fc = model[0], model[3]
    with torch.no_grad():
        s_in, z_in = qp(x)
        h = reference(conv(x))
        s_h, z_h = qp(h)
        logits = fc(h.flatten(1))
        s_out, z_out = qp(logits)
        wc, sc = wq(conv.weight)
        bc = torch.round(conv.bias.double() / (s_in * sc).double()).float() * (s_in * sc)
        wf, sf = wq(fc.weight)
        bf = torch.round(fc.bias.double() / (s_h * sf).double()).float() * (s_h * sf)
        xt = torch.randn(10, 3, 8, 8, generator=torch.Generator().manual_seed(9))
        pre = F.conv2d(fq(xt, s_in, z_in), wc, bc, padding=1)
        h = fq(reference(pre), s_h, z_h)
        expected = fq(F.linear(fq(h.flatten(1), s_h, z_h), wf, bf), s_out, z_out)
        seen = []
        hook = out.model.get_submodule("1").register_forward_hook(
            lambda module, args, output: seen.append(output))
        got = out.model(xt)
        hook.remove()
    assert (reference(pre) != pre).float().mean() > 0.2  # the activation clamps often
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert [layer["relu_fused"] for layer in out.info["layers"]] == [True, False]
    # the activation left the graph: one quantizer reads the conv's output
    assert not any(node.op == "call_module" and type(out.model.get_submodule(node.target))
                   is type(activation) for node in out.model.graph.nodes)
    # its name stays (dissection hooks layers by name), now the quantized activation
    assert isinstance(out.model.get_submodule("1"), nn.Identity)
    torch.testing.assert_close(seen[0], h, rtol=0, atol=1e-5)


def test_static_folds_batchnorm_and_is_deterministic_and_picklable(tiny):
    torch.manual_seed(5)
    model = tiny.TinyCNN(bn=True).eval()
    with torch.no_grad():
        model.bn1.running_mean.uniform_(-0.5, 0.5)
        model.bn1.running_var.uniform_(0.5, 2.0)
    data, x = _images(n=48)
    cfg = Int8StaticConfig(calibration_images=40, calibration_batch_size=16)
    ctx = CompressionContext(calibration_dataset=data, seed=3)
    model.train()
    before = copy.deepcopy(model.state_dict())
    a = compress(model, cfg, context=ctx).model
    assert model.training and isinstance(model.bn1, nn.BatchNorm2d)  # original untouched
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    model.eval()
    b = compress(model, cfg, context=ctx).model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in a.modules())
    with torch.no_grad():
        ya, yb = a(x), b(x)
        assert torch.equal(ya, yb)
        assert torch.equal(pickle.loads(pickle.dumps(a))(x), ya)
        assert torch.equal(copy.deepcopy(a)(x), ya)
        # close to the float model: int8 error is a few output quantization steps
        assert (ya - model(x)).abs().max() < 0.1 * model(x).abs().max() + 0.05


def test_calibration_batches_are_a_seeded_subset():
    data, x = _images(n=20)
    b1 = calibration_batches(data, n_images=10, batch_size=4, seed=1)
    b2 = calibration_batches(data, n_images=10, batch_size=4, seed=1)
    assert [len(b) for b in b1] == [4, 4, 2]
    assert all(torch.equal(u, v) for u, v in zip(b1, b2))
    order = torch.randperm(20, generator=torch.Generator().manual_seed(1))[:10]
    assert torch.equal(torch.cat(b1), x[order])
    assert sum(len(b) for b in calibration_batches(data, n_images=100, batch_size=8,
                                                    seed=0)) == 20


# --- float16 / bfloat16 --------------------------------------------------------------------


@pytest.mark.parametrize("config, dtype, rtol", [
    (Float16Config(), torch.float16, 1e-2),   # 11-bit significand, unit roundoff 4.9e-4
    (BFloat16Config(), torch.bfloat16, 6e-2),  # 8-bit significand, unit roundoff 3.9e-3
])
def test_reduced_precision_is_close_to_float32(config, dtype, rtol):
    torch.manual_seed(6)
    model = build_model("small_cnn", num_classes=4).eval()
    _, x = _images(n=16, size=16)
    sim = compress(model, config, context=CompressionContext())
    native = compress(model, type(config)(execution="native"), context=CompressionContext())
    assert sim.info["execution"] == "simulated" and native.info["execution"] == "native"
    with torch.no_grad():
        ref, ys, yn = model(x), sim.model(x), native.model(x)
    scale = ref.abs().max()
    # stated tolerance: max logit error below rtol times the largest logit
    assert (ys - ref).abs().max() <= rtol * scale
    assert (yn - ref).abs().max() <= rtol * scale
    assert yn.dtype == torch.float32
    # the simulation stores values representable in the dtype, and is not a no-op
    for p in sim.model.parameters():
        assert torch.equal(p, p.to(dtype).float())
    assert not torch.equal(ys, ref)


# --- simulated vs ONNX Runtime -----------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_faces(tmp_path_factory):
    """A small_cnn trained briefly on synthetic faces (16 px), and the images as tensors."""
    from torchvision import transforms as T

    from compaudit.data.celeba import CelebA
    from compaudit.data.synthetic import generate_synthetic_faces
    from compaudit.models.training import TrainConfig, train

    root = generate_synthetic_faces(tmp_path_factory.mktemp("faces"), n=1200, image_size=16,
                                    seed=0, masks=False, workers=1)
    tf = T.Compose([T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])
    ds = CelebA(root, split="all", transform=tf)
    items = [ds[i] for i in range(len(ds))]
    x = torch.stack([it[0] for it in items])
    y = torch.tensor([it[1] for it in items])

    class Faces(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(y)

        def __getitem__(self, i: int):
            return x[i], int(y[i]), items[i][2]

    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=2)
    train(model, Faces(), TrainConfig(epochs=2, batch_size=64, lr=0.05, seed=0,
                                      num_threads=1), progress=False)
    return model.eval(), Faces(), x, y


@pytest.mark.parametrize("observer", ["minmax", "percentile"])
def test_simulated_int8_agrees_with_onnxruntime_int8(trained_faces, observer, tmp_path):
    pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")
    pytest.importorskip("onnxscript", reason="needs the 'onnx' extra")
    model, data, x, y = trained_faces
    ctx = CompressionContext(calibration_dataset=data, seed=0)
    common = dict(calibration_images=256, activation_observer=observer)
    sim = compress(model, Int8StaticConfig(**common), context=ctx)
    ort = compress(model, Int8StaticConfig(backend="onnxruntime", onnx_dir=str(tmp_path),
                                           **common), context=ctx)
    assert ort.info["execution"] == "onnxruntime" and ort.info["opset"] >= 17
    _assert_agree(sim, ort, model, x, y)


def _assert_agree(sim, ort, model, x, y):
    """Simulated and ONNX Runtime int8 give the same top-1 on >= 99% of ``x``, and the
    float model learned something, so agreement is not a constant prediction."""
    with torch.no_grad():
        ls, lo, lf = sim.model(x), ort.model(x), model(x)
    agreement = (ls.argmax(1) == lo.argmax(1)).float().mean().item()
    assert agreement >= 0.99, f"top-1 agreement {agreement:.4f}"
    assert (lf.argmax(1) == y).float().mean() > 0.8
    assert lf.argmax(1).unique().numel() == 2


class _ClipCall(nn.Module):
    """A functional activation that exports as ONNX ``Clip``: ``F.relu6`` or a clamp."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x) if self.kind == "relu6" else x.clamp(0.0, 6.0)


def _int8_graph_ops(onnx_dir) -> dict[str, int]:
    """Operator counts of the int8 model ONNX Runtime's quantizer wrote."""
    import collections
    import pathlib

    import onnx

    (path,) = pathlib.Path(onnx_dir).glob("*.int8.onnx")
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _relu6_small_cnn(model: nn.Module) -> nn.Module:
    """``model`` (a small_cnn) with its four ReLUs replaced by the forms of ReLU6/Hardtanh."""
    model = copy.deepcopy(model)
    clips = iter([nn.ReLU6(inplace=True), _ClipCall("relu6"), nn.Hardtanh(0.0, 4.0),
                  _ClipCall("clamp")])
    for i, m in enumerate(model.features):
        if isinstance(m, nn.ReLU):
            model.features[i] = next(clips)
    return model.eval()


@pytest.mark.parametrize("observer, dtype", [("minmax", "uint8"), ("percentile", "uint8"),
                                             ("minmax", "int8")])
def test_simulated_int8_agrees_with_onnxruntime_int8_with_clip_activations(
        trained_faces, observer, dtype, tmp_path):
    # ReLU6, F.relu6, Hardtanh and clamp export as Clip; ONNX Runtime removes a Clip that
    # alone reads a quantized conv output (QDQRemovableActivation) and quantizes the conv
    # output with the Clip's range; the simulation must place its quantizers alike.
    pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")
    pytest.importorskip("onnxscript", reason="needs the 'onnx' extra")
    base, data, x, y = trained_faces
    model = _relu6_small_cnn(base)
    ctx = CompressionContext(calibration_dataset=data, seed=0)
    common = dict(calibration_images=256, activation_observer=observer, activation_dtype=dtype)
    sim = compress(model, Int8StaticConfig(**common), context=ctx)
    ort = compress(model, Int8StaticConfig(backend="onnxruntime", onnx_dir=str(tmp_path),
                                           **common), context=ctx)
    ops = _int8_graph_ops(tmp_path)
    quantizers = [m for m in sim.model.modules() if isinstance(m, ActivationQuantizer)]
    # the input, each block's clipped output, the pooled features, the logits: one
    # QuantizeLinear each (with the Clips kept, 4 more: the conv outputs)
    assert ops["Clip"] == 0 and ops["QuantizeLinear"] == len(quantizers) == 7
    assert [layer["relu_fused"] for layer in sim.info["layers"]] == [True] * 4 + [False]
    _assert_agree(sim, ort, model, x, y)


def test_simulated_int8_places_quantizers_as_onnxruntime_on_mobilenet_v2(tmp_path):
    pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")
    pytest.importorskip("onnxscript", reason="needs the 'onnx' extra")
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10).eval()
    with torch.no_grad():  # BatchNorm statistics away from the identity
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.2, 0.3)
    data, x = _images(n=64, size=32)
    ctx = CompressionContext(calibration_dataset=data, seed=0)
    common = dict(calibration_images=64)
    sim = compress(model, Int8StaticConfig(**common), context=ctx)
    ort = compress(model, Int8StaticConfig(backend="onnxruntime", onnx_dir=str(tmp_path),
                                           **common), context=ctx)
    ops = _int8_graph_ops(tmp_path)
    quantizers = [m for m in sim.model.modules() if isinstance(m, ActivationQuantizer)]
    # 35 ReLU6 removed: one quantizer per block instead of two
    assert ops["Clip"] == 0 and ops["QuantizeLinear"] == len(quantizers) == 65
    assert sum(layer["relu_fused"] for layer in sim.info["layers"]) == 35
    # Random weights give nearly the same logits for every image, so top-1 agreement
    # would say nothing; the logits themselves agree within a step of the output
    # quantizer (ONNX Runtime requantizes in integer arithmetic, the simulation in float).
    with torch.no_grad():
        ls, lo = sim.model(x), ort.model(x)
    step = sim.info["layers"][-1]["output_scale"]
    assert (ls - lo).abs().max() <= 1.5 * step


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize("cls, kwargs, field", [
    (Int8StaticConfig, dict(calibration_images=0), "calibration_images"),
    (Int8StaticConfig, dict(backend="tensorrt"), "backend"),
    (Int8StaticConfig, dict(activation_observer="entropy"), "activation_observer"),
    (Int8StaticConfig, dict(percentile=0), "percentile"),
    (Int8StaticConfig, dict(opset=13), "opset"),
    (Float16Config, dict(execution="fast"), "execution"),
    (Int8WeightOnlyConfig, dict(per_channel="yes"), "per_channel"),
])
def test_invalid_fields_are_reported_by_name(cls, kwargs, field):
    value = next(iter(kwargs.values()))
    with pytest.raises(AuditInputError, match=rf"{cls.__name__}\.{field}: got {value!r}; expected"):
        cls(**kwargs)


def test_static_without_calibration_data_says_what_to_pass():
    with pytest.raises(AuditInputError, match="calibration_dataset"):
        compress(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), Int8StaticConfig(),
                 context=CompressionContext())


def test_onnxruntime_percentile_needs_equal_calibration_batches():
    data, _ = _images(n=10)
    config = Int8StaticConfig(backend="onnxruntime", activation_observer="percentile",
                              calibration_images=10, calibration_batch_size=4)
    with pytest.raises(AuditInputError, match="multiple of calibration_batch_size"):
        compress(nn.Sequential(nn.Conv2d(3, 2, 3)), config,
                 context=CompressionContext(calibration_dataset=data))


def test_onnxruntime_backend_quantizes_when_symbolic_shape_inference_fails(tmp_path,
                                                                          monkeypatch):
    # ONNX Runtime's symbolic shape inference raises on some exported graphs (Swin V2:
    # TypeError in _infer_Expand); the pre-processing then runs without it.
    ortq = pytest.importorskip("onnxruntime.quantization", reason="needs the 'onnx' extra")
    pre_process = ortq.quant_pre_process
    calls = []

    def fails_symbolically(src, dst, *args, skip_symbolic_shape=False, **kwargs):
        calls.append(skip_symbolic_shape)
        if not skip_symbolic_shape:
            raise TypeError("object of type 'NoneType' has no len()")
        return pre_process(src, dst, *args, skip_symbolic_shape=True, **kwargs)

    monkeypatch.setattr(ortq, "quant_pre_process", fails_symbolically)
    data, x = _images(n=8)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
    out = compress(model, Int8StaticConfig(backend="onnxruntime", onnx_dir=str(tmp_path),
                                           calibration_images=8, calibration_batch_size=4),
                   context=CompressionContext(calibration_dataset=data))
    assert calls == [False, True]
    with torch.no_grad():
        assert out.model(x[:2]).shape == (2, 2)


# --- the faster simulation computes what the plain one does ---------------------------------


def _round_every_leaf(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """The plain float16 simulation, written here: round weights, the input and every
    leaf's output into new tensors."""
    def r(t):
        return t.to(dtype).float() if isinstance(t, torch.Tensor) and t.is_floating_point() \
            else t

    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            t.copy_(r(t))
    model.register_forward_pre_hook(lambda m, args: tuple(r(a) for a in args))
    for m in model.modules():
        if not list(m.children()):
            m.register_forward_hook(lambda m, args, out: r(out))
    return model


class _SharedActivation(nn.Module):
    """Traps for rounding in place or skipping: a ReLU inside a Sequential also called
    after an in-place residual add, a view, and an Identity on a functional result."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU(inplace=True)
        self.block = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), self.act,
                                   nn.Identity(), nn.Flatten(2), nn.Unflatten(2, (12, 12)))
        self.bn = nn.BatchNorm2d(6)
        self.keep = nn.Identity()
        self.head = nn.Linear(6 * 144, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        z = self.bn(y)
        z += y * 1.001  # in place on a rounded output
        z = self.act(z)  # the shared in-place ReLU: its input is not rounded
        return self.head(self.keep(z * 0.999).flatten(1))


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("arch", ["mobilenet_v2", "resnet18", "shared"])
def test_simulated_reduced_precision_equals_rounding_every_leaf_output(arch, dtype, fold):
    import torchvision

    torch.manual_seed(3)
    model = _SharedActivation() if arch == "shared" else \
        getattr(torchvision.models, arch)(num_classes=7)
    for m in model.modules():  # statistics that make BatchNorm do work
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = 3 * torch.randn(4, 3, 12 if arch == "shared" else 64, 12 if arch == "shared" else 64)
    sim = round_float_precision(copy.deepcopy(model), dtype, fold_batchnorm=fold)
    plain = copy.deepcopy(model)
    if fold:  # the plain simulation of the folded model (folding: tests/compress/test_fold.py)
        fold_batchnorm_(plain)
    ref = _round_every_leaf(plain, dtype)
    with torch.inference_mode():
        got, want = sim(x), ref(x)
        again = copy.deepcopy(sim)(x)  # copies run the same (no state kept between calls)
    assert torch.equal(got, want) and torch.equal(again, want)
    assert not torch.equal(got, model(x))


def test_fake_quantize_equals_quantize_then_dequantize_written_out():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([3 * torch.randn(200_000, generator=g),
                   torch.tensor([0.0, -0.0, 1e30, -1e30, float("inf"), -float("inf"), 2.0**25,
                                 -(2.0**25), 0.5, -0.5, 1.5, 2.5, -2.5, 1e-30, -1e-30])])
    for scale, zp, qmin, qmax in [(0.05, 3, 0, 255), (0.01, 0, 0, 255), (0.02, 0, -128, 127),
                                  (0.03, -5, -128, 127), (0.07, 128, 0, 255)]:
        s, z = torch.tensor(scale), torch.tensor(zp)
        want = (torch.clamp(torch.round(x / s) + z, qmin, qmax) - z) * s  # QuantizeLinear + DQ
        got = fake_quantize(x, s, z, qmin=qmin, qmax=qmax)
        assert torch.equal(got, want)  # equal values (a zero may be -0.0)
        # per channel: the tensor path
        xc = x[:200_000].reshape(4, -1)
        sc, zc = torch.tensor([scale, 2 * scale, scale / 3, 1.0]), torch.tensor([zp, 0, 1, 2])
        want = (torch.clamp(torch.round(xc / sc[:, None]) + zc[:, None], qmin, qmax)
                - zc[:, None]) * sc[:, None]
        assert torch.equal(fake_quantize(xc, sc, zc, qmin=qmin, qmax=qmax, axis=0), want)


def test_simulated_float16_replicas_stack_and_predict_what_they_do_one_at_a_time():
    import warnings

    from compaudit.data.base import AuditDataset
    from compaudit.predict import predict_population

    class Images(AuditDataset):
        num_classes = 3

        def __init__(self) -> None:
            super().__init__("unused")
            self.x = 2 * torch.randn(20, 3, 16, 16, generator=torch.Generator().manual_seed(1))

        def __len__(self) -> int:
            return 20

        def __getitem__(self, i):
            return self.x[i], i % 3, f"i/{i}"

    torch.manual_seed(0)
    models = [round_float_precision(build_model("small_cnn", num_classes=3).eval(),
                                    torch.float16) for _ in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fall-back to looping
        stacked = predict_population({"f16": models}, Images(), stack=True, batch_size=8,
                                     progress=False)
    looped = predict_population({"f16": models}, Images(), stack=False, batch_size=8,
                                progress=False)
    assert len(stacked.attrs["stacked"]) == 3
    assert stacked["pred"].tolist() == looped["pred"].tolist()
    np.testing.assert_allclose(stacked["p_true"], looped["p_true"], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("arch", ["mobilenet_v2", "resnet18"])
def test_quantizers_of_unshared_tensors_work_in_place_and_change_nothing_else(arch):
    import torchvision

    from compaudit.compress.quant_static import calibrate, convert_static, prepare_static

    torch.manual_seed(4)
    model = getattr(torchvision.models, arch)(num_classes=5).eval()
    x = torch.randn(2, 3, 48, 48)
    gm, plan = prepare_static(model)
    calibrate(gm, lambda: [x], device="cpu")
    convert_static(gm, plan)
    quantizers = {n.target: (n, gm.get_submodule(n.target)) for n in gm.graph.nodes
                  if n.op == "call_module" and isinstance(gm.get_submodule(n.target),
                                                          ActivationQuantizer)}
    inplace = {name for name, (_, q) in quantizers.items() if q.inplace}
    # the model's input and the residual sums are shared: quantized into a new tensor
    for name, (node, _) in quantizers.items():
        if node.args[0].op != "call_module":
            assert name not in inplace
    assert len(inplace) > len(quantizers) // 2
    images = x.clone()
    with torch.inference_mode():
        got = gm(images)
    assert torch.equal(images, x)  # the caller's batch is left alone
    for _, q in quantizers.values():
        q.inplace = False
    with torch.inference_mode():
        assert torch.equal(gm(x), got)
    with torch.no_grad():
        assert torch.equal(gm(x), got)
