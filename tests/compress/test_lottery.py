"""Iterative magnitude pruning with weight rewinding (lottery tickets)."""

from __future__ import annotations

import pytest
import torch

from compaudit.compress.lottery import (
    LotteryTicketConfig,
    RewindPoint,
    lottery_round_targets,
    rewind_weights,
)
from compaudit.compress.registry import CompressionContext, compress
from compaudit.errors import AuditInputError


def test_round_targets_prune_a_fifth_of_the_remaining_weights():
    t = lottery_round_targets(0.9, per_round_fraction=0.2)
    # 0.8^10 = 0.107 remaining is not yet 0.1, so an 11th round goes to exactly 0.9.
    assert len(t) == 11
    assert t[:3] == pytest.approx([0.2, 0.36, 0.488])
    assert t[9] == pytest.approx(1 - 0.8 ** 10) and t[-1] == 0.9
    assert lottery_round_targets(0.36) == pytest.approx([0.2, 0.36])  # default 20%
    assert lottery_round_targets(0.875, rounds=3) == pytest.approx([0.5, 0.75, 0.875])


@pytest.mark.parametrize("rewind_step", [0, 3])
def test_rewinding_restores_the_saved_early_weights_under_the_mask(tiny, rewind_step):
    torch.manual_seed(0)
    data = tiny.make_images(96)
    model = tiny.TinyCNN(bn=True)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    early: dict[str, torch.Tensor] = {}
    at_start: list[dict[str, torch.Tensor]] = []

    def record(call, step, m):
        # Independent of the method: the test keeps its own copies.
        if call == 0 and step == rewind_step:
            early.update({k: v.clone() for k, v in m.state_dict().items()})
        if call > 0 and step == 0:
            at_start.append({k: v.clone() for k, v in m.state_dict().items()})

    cfg = LotteryTicketConfig(sparsity=0.5, rewind_step=rewind_step, scope="global")
    out = compress(model, cfg, context=CompressionContext(
        fine_tune=tiny.make_fine_tune(data, steps=8, record=record)))
    if rewind_step == 0:
        assert all(torch.equal(early[k], initial[k]) for k in initial)
    rounds = lottery_round_targets(0.5)
    assert len(at_start) == len(rounds) == out.info["rounds"] == 4
    final = out.masks
    total = sum(m.numel() for m in final.values())
    for state, target in zip(at_start, rounds):
        pruned = sum(int((state[n] == 0).sum()) for n in final)
        assert pruned == round(target * total)  # this round's mask is in force
        for key, value in state.items():
            if key in final:  # prunable weight: saved value where kept, zero where pruned
                kept = value != 0
                assert torch.equal(value[kept], early[key][kept])
            else:  # everything else (biases, BN, first conv, running stats) rewinds fully
                assert torch.equal(value, early[key]), key
    # Pruned sets only grow: a weight zero at the start of a round stays zero later.
    for prev, nxt in zip(at_start, at_start[1:]):
        for n in final:
            assert torch.all(nxt[n][prev[n] == 0] == 0)
    assert sum(int((~m).sum()) for m in final.values()) == round(0.5 * total)
    assert out.info["sparsity"] == pytest.approx(round(0.5 * total) / total)
    for n, m in final.items():
        assert torch.all(model.get_parameter(n)[~m] == 0)


def test_rewind_step_beyond_training_is_a_clear_error(tiny):
    data = tiny.make_images(32)
    with pytest.raises(AuditInputError, match="rewind_step.*before step 50"):
        compress(tiny.TinyCNN(), LotteryTicketConfig(sparsity=0.5, rewind_step=50),
                 context=CompressionContext(fine_tune=tiny.make_fine_tune(data, steps=5)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sparsity=0.0), r"LotteryTicketConfig\.sparsity: got 0.0; expected a number in \(0, 1\)"),
        (dict(sparsity=0.9, rounds=3, per_round_fraction=0.2), "not both"),
        (dict(sparsity=0.9, rounds=0), r"LotteryTicketConfig\.rounds"),
        (dict(sparsity=0.9, rewind_step=-1), r"LotteryTicketConfig\.rewind_step"),
    ],
)
def test_lottery_config_errors(kwargs, match):
    with pytest.raises(AuditInputError, match=match):
        LotteryTicketConfig(**kwargs)


def test_lottery_needs_a_fine_tune_function(tiny):
    with pytest.raises(AuditInputError, match="fine_tune"):
        compress(tiny.TinyCNN(), LotteryTicketConfig(sparsity=0.5), context=CompressionContext())


def test_rewinding_restores_modules_whose_loading_hooks_need_metadata():
    # torchvision's MNASNet refuses load_state_dict without version metadata, which a
    # saved copy of the state lacks; rewinding copies into the model's own tensors.
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.mnasnet0_5(num_classes=3)
    point = RewindPoint(0)
    point.save(model)
    saved = {k: v.clone() for k, v in point.state.items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    weight = "layers.0.weight"
    mask = torch.ones_like(model.get_parameter(weight), dtype=torch.bool)
    mask[0] = False
    rewind_weights(model, state=point.state, masks={weight: mask})
    now = model.state_dict()
    assert all(torch.equal(now[k], saved[k]) for k in saved if k != weight)
    assert torch.all(now[weight][0] == 0) and torch.equal(now[weight][1:], saved[weight][1:])


def test_rewinding_to_a_state_of_another_model_is_refused(tiny):
    model = tiny.TinyCNN()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state.pop(next(iter(state)))
    with pytest.raises(RuntimeError, match="does not match the model .missing"):
        rewind_weights(model, state=state, masks={})
