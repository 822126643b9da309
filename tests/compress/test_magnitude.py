"""Gradual magnitude pruning, one-shot magnitude pruning and the random control."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compaudit.compress.magnitude import (
    GradualMagnitudeConfig,
    GradualPruningCallback,
    OneShotMagnitudeConfig,
    RandomPruningConfig,
)
from compaudit.compress.masks import magnitude_masks, prunable_parameters
from compaudit.compress.registry import CompressionContext, compress
from compaudit.errors import AuditInputError


def _zeros(model: nn.Module, name: str) -> int:
    return int((dict(model.named_parameters())[name] == 0).sum())


def test_gmp_during_training_follows_the_schedule_and_fixes_masks(tiny):
    torch.manual_seed(0)
    data = tiny.make_images(128)
    model = tiny.TinyCNN()
    cfg = GradualMagnitudeConfig(sparsity=0.8, begin_step=10, end_step=40, frequency=10)
    sched = cfg.schedule()
    seen: dict[int, dict[str, int]] = {}
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    cb = GradualPruningCallback(cfg)
    names = list(prunable_parameters(model, exclude_first_conv=True))
    assert names == ["conv2.weight", "fc.weight"]

    def record(call, step, m):
        seen[step] = {n: _zeros(m, n) for n in names + ["conv1.weight"]}
        if cb.masks is not None:
            snapshots[step] = {n: t.clone() for n, t in cb.masks.items()}

    fine_tune = tiny.make_fine_tune(data, steps=60, record=record)
    fine_tune(model, [cb])
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    for step in range(1, 10):
        assert all(v == 0 for v in seen[step].values())  # nothing pruned before t0
    for step in range(10, 61):
        # The masks in force were computed at the last update step <= step.
        last = max(t for t in (10, 20, 30, 40) if t <= step)
        target = sched.sparsity_at(last)
        for n in names:
            assert seen[step][n] == round(target * sizes[n]), (step, n)
        assert seen[step]["conv1.weight"] == 0  # the first conv stays dense
    assert cb.finished and [s for s, _ in cb.updates] == [10, 20, 30, 40]
    for step in range(40, 61):
        assert all(torch.equal(snapshots[step][n], snapshots[40][n]) for n in names)


def test_gmp_regrowth_follows_tf_model_pruning():
    """A pruned weight returns with its old value when it out-ranks a shrunken live one."""
    cfg = dict(sparsity=0.5, initial_sparsity=0.5, begin_step=1, end_step=2, frequency=1,
               exclude_first_conv=False)
    results = {}
    for regrow in (True, False):
        layer = nn.Linear(4, 1, bias=False)
        with torch.no_grad():
            layer.weight.copy_(torch.tensor([[4.0, 3.0, 2.0, 1.0]]))
        cb = GradualPruningCallback(GradualMagnitudeConfig(allow_regrowth=regrow, **cfg))
        cb(1, layer)
        assert layer.weight.tolist() == [[4.0, 3.0, 0.0, 0.0]]
        with torch.no_grad():  # "training" shrinks the largest weight
            layer.weight.copy_(torch.tensor([[0.5, 3.0, 0.7, 0.9]]))  # pruned ones moved too
        cb(2, layer)
        results[regrow] = layer.weight.tolist()
    # Ranked on [0.5, 3, 2 (frozen), 1 (frozen)]: keep 3 and the returning 2.
    assert results[True] == [[0.0, 3.0, 2.0, 0.0]]
    # Without regrowth the pruned ones stay pruned: keep 3 and 0.5.
    assert results[False] == [[0.5, 3.0, 0.0, 0.0]]


def test_gmp_handler_reaches_target_and_reports(tiny):
    torch.manual_seed(1)
    data = tiny.make_images(128)
    model = tiny.TinyCNN()
    cfg = GradualMagnitudeConfig(sparsity=0.75, begin_step=5, end_step=25, frequency=5,
                                 scope="global")
    out = compress(model, cfg, context=CompressionContext(
        fine_tune=tiny.make_fine_tune(data, steps=40)))
    total = sum(model.get_parameter(n).numel() for n in out.masks)
    assert sum(int((~m).sum()) for m in out.masks.values()) == round(0.75 * total)
    assert out.info["method"] == "gradual_magnitude"
    assert out.info["sparsity"] == pytest.approx(round(0.75 * total) / total)
    assert out.info["parameters"]["begin_step"] == 5
    assert [u["step"] for u in out.info["mask_updates"]] == [5, 10, 15, 20, 25]
    for n, m in out.masks.items():
        assert torch.all(model.get_parameter(n)[~m] == 0)


def test_gmp_handler_fails_clearly_when_training_ends_before_end_step(tiny):
    data = tiny.make_images(64)
    cfg = GradualMagnitudeConfig(sparsity=0.5, begin_step=5, end_step=100, frequency=5)
    with pytest.raises(AuditInputError, match="end_step.*ran 20 optimizer steps"):
        compress(tiny.TinyCNN(), cfg, context=CompressionContext(
            fine_tune=tiny.make_fine_tune(data, steps=20)))


def test_gmp_needs_a_fine_tune_function(tiny):
    cfg = GradualMagnitudeConfig(sparsity=0.5, begin_step=5, end_step=10, frequency=5)
    with pytest.raises(AuditInputError, match="fine_tune"):
        compress(tiny.TinyCNN(), cfg, context=CompressionContext())


def _trained(tiny, seed=0):
    torch.manual_seed(seed)
    data = tiny.make_images(96, seed=seed)
    model = tiny.TinyCNN()
    tiny.make_fine_tune(data, steps=40, seed=seed)(model, [])
    return model, data


def test_one_shot_prunes_smallest_and_reports_penalty(tiny):
    model, data = _trained(tiny)
    dense = copy.deepcopy(model)
    cfg = OneShotMagnitudeConfig(sparsity=0.6, fine_tune=False, penalty_batches=2, batch_size=64)
    out = compress(model, cfg, context=CompressionContext(train_dataset=data, seed=3))
    expected = magnitude_masks(prunable_parameters(dense, exclude_first_conv=True),
                               sparsity=0.6, scope="layer")
    assert set(out.masks) == set(expected)
    assert all(torch.equal(out.masks[n], expected[n]) for n in expected)
    # 2 batches of 64 cover all 96 examples, so the sample is the whole dataset.
    dense.eval(); model.eval()
    with torch.no_grad():
        before = F.cross_entropy(dense(data.x), data.y).item()
        after = F.cross_entropy(model(data.x), data.y).item()
    assert out.info["loss_before"] == pytest.approx(before, rel=1e-5)
    assert out.info["pruning_penalty"] == pytest.approx(after - before, rel=1e-4, abs=1e-6)
    assert out.info["fine_tuned"] is False
    assert out.info["layer_sparsity"]["conv2.weight"] == pytest.approx(round(0.6 * 864) / 864)


def test_one_shot_fine_tunes_with_masks_held(tiny):
    model, data = _trained(tiny)
    pruned_only = copy.deepcopy(model)
    compress(pruned_only, OneShotMagnitudeConfig(sparsity=0.5, fine_tune=False,
                                                 penalty_batches=0), context=CompressionContext())
    out = compress(model, OneShotMagnitudeConfig(sparsity=0.5), context=CompressionContext(
        train_dataset=data, fine_tune=tiny.make_fine_tune(data, steps=15, seed=9)))
    for n, m in out.masks.items():
        p = model.get_parameter(n)
        assert torch.all(p[~m] == 0)
        assert not torch.equal(p[m], pruned_only.get_parameter(n)[m])  # training moved them
    assert out.info["fine_tuned"] is True and out.info["pruning_penalty"] is not None


def test_one_shot_is_deterministic(tiny):
    runs = []
    for _ in range(2):
        model, data = _trained(tiny, seed=5)
        compress(model, OneShotMagnitudeConfig(sparsity=0.7, scope="global"),
                 context=CompressionContext(fine_tune=tiny.make_fine_tune(data, steps=10)))
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_random_pruning_hits_sparsity_and_differs_from_magnitude(tiny):
    model, data = _trained(tiny)
    mag = magnitude_masks(prunable_parameters(model, exclude_first_conv=True),
                          sparsity=0.5, scope="layer")
    outs = []
    for seed in (None, 7, 7):
        m = copy.deepcopy(model)
        outs.append(compress(m, RandomPruningConfig(sparsity=0.5, seed=seed, fine_tune=False),
                             context=CompressionContext(seed=1)))
    for n, mask in outs[1].masks.items():
        assert int((~mask).sum()) == round(0.5 * mask.numel())
    assert all(torch.equal(outs[1].masks[n], outs[2].masks[n]) for n in mag)
    assert not all(torch.equal(outs[0].masks[n], outs[1].masks[n]) for n in mag)
    assert not all(torch.equal(outs[1].masks[n], mag[n]) for n in mag)
    assert outs[1].info["method"] == "random" and outs[1].info["parameters"]["seed"] == 7


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (OneShotMagnitudeConfig, dict(sparsity=1.2),
         r"OneShotMagnitudeConfig\.sparsity: got 1.2; expected a number in \[0, 1\)"),
        (OneShotMagnitudeConfig, dict(sparsity=0.5, scope="net"),
         r"OneShotMagnitudeConfig\.scope: got 'net'; expected one of 'global', 'layer'"),
        (OneShotMagnitudeConfig, dict(sparsity=0.5, penalty_batches=-1),
         r"penalty_batches: got -1; expected an integer >= 0"),
        (RandomPruningConfig, dict(sparsity=0.5, seed=-3), r"RandomPruningConfig\.seed"),
        (GradualMagnitudeConfig, dict(sparsity=0.95, begin_step=10, end_step=5, frequency=1),
         r"GradualMagnitudeConfig\.end_step: got 5; expected an integer greater than begin_step"),
        (GradualMagnitudeConfig, dict(sparsity=1.5, begin_step=0, end_step=5, frequency=1),
         r"GradualMagnitudeConfig\.sparsity"),
        (GradualMagnitudeConfig, dict(sparsity=0.5, initial_sparsity=0.6, begin_step=0,
                                      end_step=5, frequency=1), "sparsity may only grow"),
    ],
)
def test_configs_reject_bad_fields_when_built(cls, kwargs, match):
    with pytest.raises(AuditInputError, match=match):
        cls(**kwargs)


def test_one_shot_without_fine_tune_function_says_how_to_fix(tiny):
    with pytest.raises(AuditInputError, match="CompressionContext has no fine_tune"):
        compress(tiny.TinyCNN(), OneShotMagnitudeConfig(sparsity=0.5),
                 context=CompressionContext())


def test_gradual_schedule_in_fractions_follows_the_run_length(tiny):
    from compaudit.configs.compress import GradualMagnitudeConfig as Config

    fractions = Config(sparsity=0.5, begin=0.0, end=0.5, frequency=2)
    steps = Config(sparsity=0.5, begin_step=0, end_step=10, frequency=2)
    data = tiny.make_images(64)
    outs = []
    for config in (fractions, steps):
        torch.manual_seed(0)
        net = tiny.TinyCNN()
        ctx = CompressionContext(fine_tune=tiny.make_fine_tune(data, steps=20),
                                 fine_tune_steps=20)
        outs.append(compress(net, config, context=ctx))
    # end = 0.5 of a 20-step run is step 10: the same schedule as end_step = 10.
    assert [u["step"] for u in outs[0].info["mask_updates"]] == \
        [u["step"] for u in outs[1].info["mask_updates"]]
    assert all(torch.equal(outs[0].masks[n], outs[1].masks[n]) for n in outs[1].masks)
    with pytest.raises(AuditInputError, match="fine_tune_steps"):
        compress(tiny.TinyCNN(), fractions,
                 context=CompressionContext(fine_tune=tiny.make_fine_tune(data, steps=20)))
