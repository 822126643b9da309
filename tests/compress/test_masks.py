"""Masks: prunable parameters, exact-k magnitude/random masks, applying and reporting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compaudit.compress.masks import (
    MaskCallback,
    apply_masks,
    magnitude_masks,
    masks_from_scores,
    prunable_parameters,
    random_masks,
    sparsity_report,
)
from compaudit.errors import AuditInputError


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.body = nn.Conv2d(4, 6, 3)
        self.fc1 = nn.Linear(6, 5)
        self.head = nn.Linear(5, 2)


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(7, 11, generator=gen), "b": torch.randn(3, 5, 2, generator=gen),
            "c": torch.randn(13, generator=gen)}


def test_prunable_parameters_selects_conv_and_linear_weights_only():
    net = Net()
    assert list(prunable_parameters(net)) == ["stem.weight", "body.weight", "fc1.weight",
                                              "head.weight"]
    assert list(prunable_parameters(net, exclude_first_conv=True, exclude_classifier=True)) == [
        "body.weight", "fc1.weight"]
    assert "bn.weight" in prunable_parameters(net, include_norm=True)
    assert "bn.bias" not in prunable_parameters(net, include_norm=True)


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.33, 0.5, 0.77, 0.9])
def test_layer_scope_prunes_exactly_round_s_n_smallest_per_tensor(sparsity):
    params = _tensors()
    masks = magnitude_masks(params, sparsity=sparsity, scope="layer")
    for name, w in params.items():
        m = masks[name]
        assert m.dtype == torch.bool and m.shape == w.shape
        assert int((~m).sum()) == round(sparsity * w.numel())
        if (~m).any() and m.any():
            assert w.abs()[~m].max() <= w.abs()[m].min()


@pytest.mark.parametrize("sparsity", [0.05, 0.5, 0.9])
def test_global_scope_prunes_exactly_round_s_total_by_one_threshold(sparsity):
    params = _tensors(1)
    params["b"] = params["b"] * 0.1  # a layer of small weights is pruned first
    masks = magnitude_masks(params, sparsity=sparsity, scope="global")
    total = sum(w.numel() for w in params.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(sparsity * total)
    pruned = torch.cat([params[n].abs()[~masks[n]] for n in params])
    kept = torch.cat([params[n].abs()[masks[n]] for n in params])
    assert pruned.max() <= kept.min()
    # Global pruning is uneven: the small layer loses more than its share.
    assert (~masks["b"]).float().mean() >= (~masks["a"]).float().mean()


def test_ties_are_broken_by_index_so_exactly_k_are_pruned():
    # |w| = [1, 1, 2, 1, 2, 1]; k = 3 falls inside the block of four ones -> the first three.
    w = {"w": torch.tensor([1.0, -1.0, 2.0, 1.0, -2.0, 1.0])}
    assert magnitude_masks(w, sparsity=0.5, scope="layer")["w"].tolist() == [
        False, False, True, False, True, True]
    # All equal: k = round(0.25 * 8) = 2 -> indices 0 and 1.
    flat = {"w": torch.ones(2, 4)}
    assert magnitude_masks(flat, sparsity=0.25, scope="layer")["w"].flatten().tolist() == [
        False, False, True, True, True, True, True, True]
    # Global ties follow the order of the tensors: 0.5 first, then a[0], a[1].
    two = {"a": torch.tensor([1.0, 1.0]), "b": torch.tensor([1.0, 1.0, 0.5])}
    masks = magnitude_masks(two, sparsity=0.6, scope="global")
    assert masks["a"].tolist() == [False, False] and masks["b"].tolist() == [True, True, False]


def test_rounding_follows_python_round():
    # 0.5 * 5 = 2.5 rounds to 2 (half to even); 0.7 * 5 = 3.5 rounds to 4.
    w = {"w": torch.arange(1.0, 6.0)}
    assert int((~magnitude_masks(w, sparsity=0.5, scope="layer")["w"]).sum()) == 2
    assert int((~magnitude_masks(w, sparsity=0.7, scope="layer")["w"]).sum()) == 4


def test_keep_pruned_entries_stay_pruned_even_when_large():
    w = {"w": torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])}
    prev = {"w": torch.tensor([False, True, True, True, True])}  # the largest was pruned
    m = magnitude_masks(w, sparsity=0.4, scope="layer", keep_pruned=prev)["w"]
    assert m.tolist() == [False, True, True, True, False]


def test_random_masks_hit_sparsity_are_seeded_and_differ_from_magnitude():
    params = _tensors(2)
    for scope in ("layer", "global"):
        r1 = random_masks(params, sparsity=0.6, scope=scope, seed=3)
        r2 = random_masks(params, sparsity=0.6, scope=scope, seed=3)
        r3 = random_masks(params, sparsity=0.6, scope=scope, seed=4)
        mag = magnitude_masks(params, sparsity=0.6, scope=scope)
        total = sum(w.numel() for w in params.values())
        assert sum(int((~m).sum()) for m in r1.values()) == (
            round(0.6 * total) if scope == "global"
            else sum(round(0.6 * w.numel()) for w in params.values()))
        assert all(torch.equal(r1[n], r2[n]) for n in params)
        assert not all(torch.equal(r1[n], r3[n]) for n in params)
        assert not all(torch.equal(r1[n], mag[n]) for n in params)
    for name, w in params.items():
        m = random_masks(params, sparsity=0.6, scope="layer", seed=0)[name]
        assert int((~m).sum()) == round(0.6 * w.numel())


def test_apply_masks_zeroes_exactly_the_false_entries():
    net = Net()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    masks = magnitude_masks(prunable_parameters(net), sparsity=0.5, scope="layer")
    apply_masks(net, masks)
    for name, p in net.named_parameters():
        if name in masks:
            assert torch.all(p[~masks[name]] == 0)
            assert torch.equal(p[masks[name]], before[name][masks[name]])
        else:
            assert torch.equal(p, before[name])


def test_apply_masks_rejects_bad_masks_naming_the_parameter():
    net = Net()
    with pytest.raises(AuditInputError, match="'nope.weight'"):
        apply_masks(net, {"nope.weight": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(AuditInputError, match=r"'fc1.weight' has shape \(3,\)"):
        apply_masks(net, {"fc1.weight": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(AuditInputError, match="torch.bool"):
        apply_masks(net, {"fc1.weight": torch.ones(5, 6)})


def test_mask_builders_reject_bad_sparsity_and_scope():
    with pytest.raises(AuditInputError, match=r"\[0, 1\)"):
        masks_from_scores({"w": torch.ones(3)}, sparsity=1.0, scope="layer")
    with pytest.raises(AuditInputError, match="'global'"):
        masks_from_scores({"w": torch.ones(3)}, sparsity=0.5, scope="network")


def test_sparsity_report_counts_hand_example():
    net = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))  # 12+3+6+2 = 23 params
    masks = {"0.weight": torch.tensor([[True, False, False, True]] * 3),  # 6 of 12 pruned
             "1.weight": torch.tensor([[True, True, False], [True, True, True]])}  # 1 of 6
    rep = sparsity_report(net, masks)
    assert (rep.pruned, rep.prunable, rep.model_params) == (7, 18, 23)
    assert rep.sparsity == pytest.approx(7 / 18)
    assert rep.model_sparsity == pytest.approx(7 / 23)
    assert rep.layers["0.weight"].sparsity == 0.5
    assert rep.to_dict()["layers"]["1.weight"] == {"numel": 6, "pruned": 1, "sparsity": 1 / 6}


def test_mask_callback_rezeroes_after_an_optimizer_step():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    masks = magnitude_masks(prunable_parameters(net), sparsity=0.5, scope="layer")
    apply_masks(net, masks)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    net(torch.randn(8, 6)).square().sum().backward()
    opt.step()
    assert net[0].weight[~masks["0.weight"]].abs().sum() > 0  # the step revived them
    MaskCallback(masks)(1, net)
    for name, p in net.named_parameters():
        if name in masks:
            assert torch.all(p[~masks[name]] == 0)


# --- against torch.nn.utils.prune ------------------------------------------------------


def _distinct_net(seed: int) -> Net:
    """A Net whose prunable weights have pairwise distinct magnitudes (no ties to break)."""
    torch.manual_seed(seed)
    net = Net()
    params = prunable_parameters(net)
    sizes = [p.numel() for p in params.values()]
    # A random permutation of distinct magnitudes with random signs, so the ranking
    # crosses layers and neither method can lean on tie-breaking.
    magnitudes = (torch.randperm(sum(sizes)).double() + 1) / sum(sizes)
    signs = torch.randint(0, 2, (sum(sizes),)).double() * 2 - 1
    values = (magnitudes * signs).float().split(sizes)
    with torch.no_grad():
        for p, v in zip(params.values(), values, strict=True):
            p.copy_(v.reshape(p.shape))
    flat = torch.cat([p.detach().abs().flatten() for p in params.values()])
    assert flat.unique().numel() == flat.numel()
    return net


def _torch_masks(net: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    modules = dict(net.named_modules())
    return {n: modules[n.rsplit(".", 1)[0]].weight_mask.bool() for n in names}


@pytest.mark.parametrize("amount", [0.1, 0.25, 0.5, 0.7, 0.95])
def test_global_magnitude_masks_match_torch_global_unstructured(amount):
    import torch.nn.utils.prune as prune

    net = _distinct_net(seed=int(amount * 100))
    params = prunable_parameters(net)
    ours = magnitude_masks(params, sparsity=amount, scope="global")
    modules = dict(net.named_modules())
    prune.global_unstructured(
        [(modules[n.rsplit(".", 1)[0]], "weight") for n in params],
        pruning_method=prune.L1Unstructured, amount=amount,
    )
    theirs = _torch_masks(net, list(params))
    assert list(ours) == list(theirs)
    for name in params:
        assert torch.equal(ours[name], theirs[name]), name
    total = sum(m.numel() for m in ours.values())
    assert sum(int((~m).sum()) for m in ours.values()) == round(amount * total)


@pytest.mark.parametrize("amount", [0.1, 0.25, 0.5, 0.7, 0.95])
def test_layer_magnitude_masks_match_torch_l1_unstructured(amount):
    import torch.nn.utils.prune as prune

    net = _distinct_net(seed=1 + int(amount * 100))
    params = prunable_parameters(net)
    ours = magnitude_masks(params, sparsity=amount, scope="layer")
    modules = dict(net.named_modules())
    for name in params:
        prune.l1_unstructured(modules[name.rsplit(".", 1)[0]], "weight", amount=amount)
    theirs = _torch_masks(net, list(params))
    for name in params:
        assert torch.equal(ours[name], theirs[name]), name
