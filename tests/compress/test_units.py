"""Unit pruning: eligible layers, scores, removal, mean replacement and its penalty."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compaudit.compress._common import draw_sample
from compaudit.compress.registry import CompressionContext, compress
from compaudit.compress.units import (
    UnitPruningConfig,
    find_unit_layers,
    unit_scores,
    unit_statistics,
    unit_statistics_all,
)
from compaudit.errors import AuditInputError


def _consumer_inputs(model: nn.Module, consumer: str, x: torch.Tensor) -> torch.Tensor:
    """What ``consumer`` reads when ``model`` runs on ``x`` (eval mode)."""
    box = []
    h = model.get_submodule(consumer).register_forward_pre_hook(lambda m, a: box.append(a[0]))
    model.eval()
    with torch.no_grad():
        model(x)
    h.remove()
    return box[0]


def _replaced_output(model, consumer, x, units, values, positions):
    """Reference: run ``model`` with the consumer's input units set to constants."""
    def hook(m, args):
        a = args[0].clone()
        view = a.reshape(a.shape[0], -1, positions) if a.dim() == 2 else a.reshape(
            a.shape[0], a.shape[1], -1)
        for k, v in zip(units, values):
            view[:, k] = v
        return (view.reshape(a.shape),)

    h = model.get_submodule(consumer).register_forward_pre_hook(hook)
    model.eval()
    with torch.no_grad():
        out = model(x)
    h.remove()
    return out


class FlatCNN(nn.Module):
    """conv -> relu -> flatten -> linear: a linear layer reading 4 positions per channel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, stride=3)
        self.fc1 = nn.Linear(5 * 2 * 2, 6, bias=False)
        self.fc2 = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(self.conv(x).relu().flatten(1))))


def test_eligible_layers_of_a_resnet_skip_residual_producers():
    from torchvision.models import resnet18

    eligible, ineligible = find_unit_layers(resnet18(num_classes=3))
    assert eligible["layer1.0.conv1"].consumer == "layer1.0.conv2"
    assert eligible["layer1.0.conv1"].norms == ("layer1.0.bn1",)
    assert "add" in ineligible["layer1.0.conv2"]
    assert "classifier" in ineligible["fc"]
    assert "branch" in ineligible["conv1"]  # the stem's output feeds conv and shortcut


def test_eligible_layers_of_flattening_networks(tiny):
    e, i = find_unit_layers(FlatCNN())
    assert e["conv"].consumer == "fc1" and e["conv"].flat and e["conv"].num_units == 5
    assert e["fc1"].consumer == "fc2" and not e["fc1"].flat
    e, _ = find_unit_layers(tiny.TinyCNN(bn=True))
    assert e["conv2"].consumer == "fc" and e["conv2"].flat and e["conv2"].norms == ("bn2",)


@pytest.mark.parametrize("net_name", ["mlp", "cnn_valid", "flat"])
@pytest.mark.parametrize("mean_replacement", [True, False])
def test_removal_equals_replacing_the_units_by_their_mean_or_zero(tiny, net_name,
                                                                  mean_replacement):
    torch.manual_seed(0)
    data = tiny.make_images(48, size=6)
    net, layer, consumer = {
        "mlp": (tiny.TinyMLP(inputs=3 * 36), "hidden.0", "hidden.1"),
        "cnn_valid": (tiny.TinyCNN(padding=0, bias=False), "conv1", "conv2"),
        "flat": (FlatCNN(), "conv", "fc1"),
    }[net_name]
    dense = copy.deepcopy(net)
    cfg = UnitPruningConfig(count=3, score="random", mean_replacement=mean_replacement,
                            layers=(layer,), n_batches=1, batch_size=64)
    out = compress(net, cfg, context=CompressionContext(train_dataset=data, seed=2))
    removed = out.info["units"][layer]["removed_units"]
    assert len(removed) == 3
    # Independent reference: the mean of each removed unit over the whole data set and
    # over its positions, substituted at the consumer's input of the dense model.
    a = _consumer_inputs(dense, consumer, data.x)
    units = out.info["units"][layer]["num_units"]
    positions = a[0].numel() // units
    per_unit = a.reshape(len(a), units, positions)
    values = [per_unit[:, k].mean().item() if mean_replacement else 0.0 for k in removed]
    expected = _replaced_output(dense, consumer, data.x, removed, values, positions)
    net.eval()
    with torch.no_grad():
        got = net(data.x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    # The pruned units' activations are exactly zero in the pruned model.
    pruned_a = _consumer_inputs(net, consumer, data.x).reshape(len(a), units, positions)
    assert torch.all(pruned_a[:, removed] == 0)
    # Penalty = loss after - loss before on the sample (the whole data set here).
    with torch.no_grad():
        dense.eval()
        before = F.cross_entropy(dense(data.x), data.y).item()
        after = F.cross_entropy(got, data.y).item()
    assert out.info["pruning_penalty"] == pytest.approx(after - before, rel=1e-4, abs=1e-6)


def test_batchnorm_units_are_silenced_and_masked(tiny):
    torch.manual_seed(0)
    data = tiny.make_images(64)
    net = tiny.TinyCNN(bn=True)
    tiny.make_fine_tune(data, steps=20)(net, [])  # non-trivial running statistics
    out = compress(net, UnitPruningConfig(fraction=0.25, score="l2", layers=("conv1",),
                                          n_batches=1),
                   context=CompressionContext(train_dataset=data))
    removed = out.info["units"]["conv1"]["removed_units"]
    assert len(removed) == 2
    a = _consumer_inputs(net, "conv2", data.x)
    assert torch.all(a[:, removed] == 0)
    for key in ("conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias", "conv2.weight"):
        assert key in out.masks
    assert out.masks["conv2.weight"][:, removed].sum() == 0
    assert out.masks["conv2.weight"].sum() == 12 * 6 * 9


def test_l2_score_picks_the_smallest_incoming_norms(tiny):
    torch.manual_seed(3)
    net = tiny.TinyMLP(inputs=3 * 16, hidden=(6, 5))
    with torch.no_grad():
        net.hidden[0].weight.mul_(torch.tensor([3.0, 0.1, 2.0, 0.2, 5.0, 4.0])[:, None])
    smallest = sorted(torch.argsort(net.hidden[0].weight.norm(dim=1))[:2].tolist())
    data = tiny.make_images(16, size=4)
    out = compress(net, UnitPruningConfig(count=2, score="l2", layers=("hidden.0",)),
                   context=CompressionContext(train_dataset=data))
    assert out.info["units"]["hidden.0"]["removed_units"] == smallest == [1, 3]


def test_consumer_bias_is_created_for_mean_replacement(tiny):
    torch.manual_seed(0)
    net = tiny.TinyCNN(bias=False)
    assert net.conv2.bias is None
    compress(net, UnitPruningConfig(count=2, score="random", layers=("conv1",), n_batches=1),
             context=CompressionContext(train_dataset=tiny.make_images(32)))
    assert isinstance(net.conv2.bias, nn.Parameter) and net.conv2.bias.abs().sum() > 0


def _brute_force_scores(model, consumer, x, y, units):
    """Per example and per unit: E_n[sum_p g (a_bar - a)] and -E_n[sum_p g a]."""
    a_all = _consumer_inputs(model, consumer, x)
    a_bar = a_all.reshape(len(x), units, -1).mean(dim=(0, 2))
    mrs = torch.zeros(units, dtype=torch.float64)
    rs = torch.zeros(units, dtype=torch.float64)
    for n in range(len(x)):
        box = []

        def hook(m, args):
            t = args[0].detach().requires_grad_(True)
            box.append(t)
            return (t,)

        h = model.get_submodule(consumer).register_forward_pre_hook(hook)
        loss = F.cross_entropy(model(x[n:n + 1]), y[n:n + 1])
        h.remove()
        (g,) = torch.autograd.grad(loss, box[0])
        a = box[0].detach()
        for k in range(units):
            gk, ak = g[0, k].double(), a[0, k].double()
            mrs[k] += (gk * (a_bar[k].double() - ak)).sum()
            rs[k] += -(gk * ak).sum()
    return mrs / len(x), rs / len(x), a_bar


def test_abs_mrs_and_rs_equal_a_brute_force_per_unit_computation(tiny):
    torch.manual_seed(0)
    data = tiny.make_images(20, size=5)
    net = tiny.TinyCNN(padding=0)
    net.eval()
    layer = find_unit_layers(net)[0]["conv1"]
    batches = draw_sample(data, n_batches=3, batch_size=8, seed=0)  # 8 + 8 + 4 examples
    stats = unit_statistics(net, layer, batches, device="cpu")
    mrs, rs, a_bar = _brute_force_scores(net, "conv2", data.x, data.y, 8)
    gen = torch.Generator()
    torch.testing.assert_close(stats.mean, a_bar.double(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(
        unit_scores(stats, score="abs_mrs", weight=net.conv1.weight, generator=gen), mrs.abs(),
        rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(
        unit_scores(stats, score="mrs", weight=net.conv1.weight, generator=gen), mrs,
        rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(
        unit_scores(stats, score="abs_rs", weight=net.conv1.weight, generator=gen), rs.abs(),
        rtol=1e-4, atol=1e-8)
    assert stats.positions == 9 and stats.examples == 20


def test_mean_replacement_lowers_the_pruning_penalty_without_batchnorm(tiny):
    """Positive control from the paper: bias propagation beats plain removal."""
    with_mr, without_mr = [], []
    for seed in range(3):
        torch.manual_seed(seed)
        data = tiny.make_images(192, seed=seed)
        trained = tiny.TinyCNN()
        tiny.make_fine_tune(data, steps=100, seed=seed)(trained, [])
        for layer in ("conv1", "conv2"):
            for mr, sink in ((True, with_mr), (False, without_mr)):
                out = compress(copy.deepcopy(trained),
                               UnitPruningConfig(fraction=0.5, score="random",
                                                 mean_replacement=mr, layers=(layer,),
                                                 n_batches=3, batch_size=64),
                               context=CompressionContext(train_dataset=data, seed=seed))
                sink.append((out.info["units"][layer]["removed_units"],
                             out.info["pruning_penalty"]))
    # The same units go in both arms (random score, same seed), so only the fold differs.
    assert [u for u, _ in with_mr] == [u for u, _ in without_mr]
    pen_with = torch.tensor([p for _, p in with_mr])
    pen_without = torch.tensor([p for _, p in without_mr])
    assert pen_with.mean() < 0.7 * pen_without.mean()
    assert int((pen_with < pen_without).sum()) >= 4  # of 6 (seed, layer) cases


def test_all_eligible_layers_are_pruned_in_order_and_penalties_add_up(tiny):
    torch.manual_seed(0)
    data = tiny.make_images(64)
    net = tiny.TinyCNN(bn=True)
    out = compress(net, UnitPruningConfig(fraction=0.25, score="abs_mrs", n_batches=1,
                                          order="sequential"),
                   context=CompressionContext(train_dataset=data))
    assert list(out.info["units"]) == ["conv1", "conv2"]
    assert [len(v["removed_units"]) for v in out.info["units"].values()] == [2, 3]
    total = sum(v["pruning_penalty"] for v in out.info["units"].values())
    assert out.info["pruning_penalty"] == pytest.approx(total)
    assert out.info["pruning_penalty"] == pytest.approx(
        out.info["loss_after_pruning"] - out.info["loss_before"])


def test_simultaneous_order_measures_the_total_penalty_only(tiny):
    torch.manual_seed(0)
    data = tiny.make_images(64)
    net = tiny.TinyCNN(bn=True)
    dense = copy.deepcopy(net).eval()
    out = compress(net, UnitPruningConfig(fraction=0.25, score="abs_mrs", n_batches=1,
                                          batch_size=64),
                   context=CompressionContext(train_dataset=data))
    assert out.info["parameters"]["order"] == "simultaneous"  # the default
    assert list(out.info["units"]) == ["conv1", "conv2"]
    assert [len(v["removed_units"]) for v in out.info["units"].values()] == [2, 3]
    for v in out.info["units"].values():
        assert v["pruning_penalty"] is None and isinstance(v["estimated_penalty"], float)
    net.eval()
    with torch.no_grad():
        before = F.cross_entropy(dense(data.x), data.y).item()
        after = F.cross_entropy(net(data.x), data.y).item()
    assert out.info["loss_before"] == pytest.approx(before, rel=1e-5)
    assert out.info["loss_after_pruning"] == pytest.approx(after, rel=1e-5)
    assert out.info["pruning_penalty"] == pytest.approx(after - before, rel=1e-4, abs=1e-6)


class TokenMLP(nn.Module):
    """Pixels as tokens, (N, S, 3) -> linear -> gelu -> linear -> gelu -> linear -> mean."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 16)
        self.fc2 = nn.Linear(16, 12)
        self.fc3 = nn.Linear(12, 6)
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        t = x.flatten(2).transpose(1, 2)
        t = self.fc3(F.gelu(self.fc2(F.gelu(self.fc1(t)))))
        return self.head(t.mean(1))


def _nets(tiny):
    return {
        "cnn_bn": tiny.TinyCNN(bn=True),
        "flat": FlatCNN(),
        "mlp": tiny.TinyMLP(inputs=3 * 36, hidden=(16, 12, 10, 8)),
        "tokens": TokenMLP(),
    }


@pytest.mark.parametrize("net_name", ["cnn_bn", "flat", "mlp", "tokens"])
def test_statistics_of_all_layers_in_one_pass_equal_layer_by_layer(tiny, net_name):
    torch.manual_seed(0)
    net = _nets(tiny)[net_name].double()
    data = tiny.make_images(20, size=6)
    batches = [(x.double(), y) for x, y in draw_sample(data, n_batches=3, batch_size=8,
                                                       seed=0)]
    layers = list(find_unit_layers(net)[0].values())
    assert len(layers) >= 2
    together = unit_statistics_all(net, layers, batches, device="cpu")
    assert list(together) == [layer.producer for layer in layers]
    for layer in layers:
        alone = unit_statistics(net, layer, batches, device="cpu")
        got = together[layer.producer]
        assert (got.positions, got.examples) == (alone.positions, alone.examples)
        for field in ("mean", "rs", "mrs"):
            a, b = getattr(got, field), getattr(alone, field)
            assert a.dtype == b.dtype == torch.float64
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-12), (layer.producer, field)


def test_statistics_of_a_linear_layer_on_tokens_take_units_on_the_last_axis(tiny):
    torch.manual_seed(0)
    net = TokenMLP()
    data = tiny.make_images(12, size=3)
    layer = find_unit_layers(net)[0]["fc1"]
    assert layer.consumer == "fc2" and layer.num_units == 16
    stats = unit_statistics(net, layer, [(data.x, data.y)], device="cpu")
    # Direct reference: (N, S, U) activations and each example's own loss gradient.
    box = []

    def hook(m, args):
        t = args[0].detach().requires_grad_(True)
        box.append(t)
        return (t,)

    h = net.fc2.register_forward_pre_hook(hook)
    net.eval()
    loss = F.cross_entropy(net(data.x), data.y, reduction="sum")
    h.remove()
    (g,) = torch.autograd.grad(loss, box[0])
    a, g = box[0].detach().double(), g.double()
    a_bar = a.mean(dim=(0, 1))
    assert stats.positions == 9 and stats.examples == 12
    torch.testing.assert_close(stats.mean, a_bar)
    torch.testing.assert_close(stats.rs, -(g * a).sum(dim=(0, 1)) / 12)
    torch.testing.assert_close(stats.mrs, (g * (a_bar - a)).sum(dim=(0, 1)) / 12)


def test_mean_replacement_on_tokens_replaces_each_unit_at_every_token(tiny):
    torch.manual_seed(0)
    net = TokenMLP()
    dense = copy.deepcopy(net)
    data = tiny.make_images(16, size=3)
    out = compress(net, UnitPruningConfig(count=5, score="random", layers=("fc1",),
                                          n_batches=1, batch_size=16),
                   context=CompressionContext(train_dataset=data, seed=1))
    removed = out.info["units"]["fc1"]["removed_units"]
    a = _consumer_inputs(dense, "fc2", data.x)  # (N, S, 16)
    means = a.mean(dim=(0, 1))

    def hook(m, args):
        t = args[0].clone()
        t[..., removed] = means[removed]
        return (t,)

    h = dense.fc2.register_forward_pre_hook(hook)
    with torch.no_grad():
        expected = dense.eval()(data.x)
        got = net.eval()(data.x)
    h.remove()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_a_flattened_sequence_of_linear_features_is_not_eligible():
    class FlatTokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(3, 4)
            self.fc2 = nn.Linear(4 * 9, 2)

        def forward(self, x):
            return self.fc2(self.fc1(x.flatten(2).transpose(1, 2)).relu().flatten(1))

    eligible, ineligible = find_unit_layers(FlatTokens())
    assert "fc1" not in eligible
    assert "reads 36 inputs, not its 4 features" in ineligible["fc1"]


class FixedTableBias(nn.Module):
    """Like Swin V2's position bias: an MLP on a fixed buffer, added to every example."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("table", torch.randn(1, 5, 2))
        self.mlp = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3))
        self.fc1 = nn.Linear(3, 6)
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x):
        tokens = x.flatten(2).transpose(1, 2)[:, :5] + self.mlp(self.table)
        return self.fc2(self.fc1(tokens).relu()).mean(1)


def test_layers_reading_a_fixed_table_are_not_eligible(tiny):
    eligible, ineligible = find_unit_layers(FixedTableBias())
    assert list(eligible) == ["fc1"]
    assert "does not depend on the model's input" in ineligible["mlp.0"]
    data = tiny.make_images(8, size=4, classes=2)
    torch.manual_seed(0)
    out = compress(FixedTableBias(), UnitPruningConfig(fraction=0.5, score="l2", n_batches=1,
                                                       batch_size=4),
                   context=CompressionContext(train_dataset=data))
    # fc1's units are pruned (masks of fc1 and of its reader fc2); the table's MLP is kept.
    assert {k.rsplit(".", 1)[0] for k in out.masks} == {"fc1", "fc2"}


@pytest.mark.parametrize("score", ["abs_mrs", "rs", "l2", "random"])
@pytest.mark.parametrize("mean_replacement", [True, False])
def test_with_one_layer_both_orders_remove_the_same_units(tiny, score, mean_replacement):
    torch.manual_seed(0)
    data = tiny.make_images(64)
    base = tiny.TinyCNN(bn=True)
    tiny.make_fine_tune(data, steps=10)(base, [])
    outs = {}
    for order in ("simultaneous", "sequential"):
        net = copy.deepcopy(base)
        outs[order] = compress(net, UnitPruningConfig(
            fraction=0.5, score=score, mean_replacement=mean_replacement, layers=("conv2",),
            n_batches=2, batch_size=16, order=order),
            context=CompressionContext(train_dataset=data, seed=5))
    a, b = outs["simultaneous"], outs["sequential"]
    assert a.info["units"]["conv2"]["removed_units"] == b.info["units"]["conv2"]["removed_units"]
    assert a.masks.keys() == b.masks.keys()
    assert all(torch.equal(a.masks[k], b.masks[k]) for k in a.masks)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.info["units"]["conv2"]["estimated_penalty"] == b.info["units"]["conv2"][
        "estimated_penalty"]
    assert a.info["pruning_penalty"] == pytest.approx(b.info["pruning_penalty"], rel=1e-5,
                                                      abs=1e-7)


def _count_passes(model: nn.Module) -> tuple[dict[str, int], object]:
    """Forwards of the whole model, and backwards through its output."""
    counts = {"forward": 0, "backward": 0}

    def on_backward(grad):
        counts["backward"] += 1

    def hook(m, args, out):
        counts["forward"] += 1
        if out.requires_grad:
            out.register_hook(on_backward)

    return counts, model.register_forward_hook(hook)


@pytest.mark.parametrize("net_name", ["cnn_bn", "flat", "mlp", "tokens"])
def test_simultaneous_passes_grow_with_batches_not_layers(tiny, net_name):
    torch.manual_seed(0)
    data = tiny.make_images(40, size=6)
    n_batches = 3
    for order in ("simultaneous", "sequential"):
        net = _nets(tiny)[net_name]
        n_layers = len(find_unit_layers(net)[0])
        counts, handle = _count_passes(net)
        compress(net, UnitPruningConfig(count=1, n_batches=n_batches, batch_size=8,
                                        order=order),
                 context=CompressionContext(train_dataset=data))
        handle.remove()
        if order == "simultaneous":
            # One scoring forward + backward per batch (it also gives the loss before),
            # then one forward per batch for the loss after, whatever the layer count.
            assert counts == {"forward": 2 * n_batches, "backward": n_batches}
        else:  # the reference: a loss pass, then 2 forwards + 1 backward per layer
            assert counts == {"forward": n_batches * (1 + 2 * n_layers),
                              "backward": n_batches * n_layers}


def test_unit_pruning_is_deterministic(tiny):
    data = tiny.make_images(64)
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        net = tiny.TinyCNN()
        compress(net, UnitPruningConfig(fraction=0.5, score="random", n_batches=1),
                 context=CompressionContext(train_dataset=data, seed=4))
        states.append(net.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(fraction=0.5, count=2), "exactly one of fraction"),
        (dict(), "exactly one of fraction"),
        (dict(fraction=1.5), r"UnitPruningConfig\.fraction: got 1.5; expected a number in \(0, 1\)"),
        (dict(count=2, score="taylor"), r"score: got 'taylor'; expected one of 'random'"),
        (dict(count=2, layers="conv1"), r"UnitPruningConfig\.layers"),
        (dict(count=2, layers=()), r"UnitPruningConfig\.layers: got \(\); expected a non-empty"),
    ],
)
def test_unit_config_errors_when_built(kwargs, match):
    with pytest.raises(AuditInputError, match=match):
        UnitPruningConfig(**kwargs)


@pytest.mark.parametrize(
    "cfg, match",
    [
        (UnitPruningConfig(count=2, layers=("fc",)), "'fc' cannot be unit-pruned.*classifier"),
        (UnitPruningConfig(count=2, layers=("nope",)), "'nope' is not a conv or linear"),
        (UnitPruningConfig(count=8, layers=("conv1",)), "8 of the 8 units of 'conv1'"),
    ],
)
def test_unit_config_errors_against_the_model(tiny, cfg, match):
    with pytest.raises(AuditInputError, match=match):
        compress(tiny.TinyCNN(), cfg,
                 context=CompressionContext(train_dataset=tiny.make_images(16)))


def test_unit_pruning_needs_training_data(tiny):
    with pytest.raises(AuditInputError, match="no train_dataset"):
        compress(tiny.TinyCNN(), UnitPruningConfig(count=1), context=CompressionContext())
