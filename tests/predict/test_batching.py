"""The inference batch size from the models' largest layer working set (hand-computed)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from compaudit.predict.batching import MAX_BATCH, choose_batch_size, working_set
from compaudit.predict.stacking import LoopRunner, Member, StackedRunner


def _model() -> nn.Module:
    # On a 3x10x10 float32 image: conv reads 3*100*4 = 1,200 B and writes 8*100*4 =
    # 3,200 B; the ReLU reads and writes 3,200 B each (6,400 B, the largest); the
    # pooled head is smaller.
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)).eval()


def test_the_working_set_is_the_largest_leaf_input_plus_output() -> None:
    assert working_set(_model(), torch.zeros(3, 10, 10)) == 6400
    # a model without children (as an ONNX Runtime module): its own input and output
    assert working_set(nn.Flatten().eval(), torch.zeros(3, 10, 10)) == 2 * 1200
    # hooks are removed afterwards
    model = _model()
    working_set(model, torch.zeros(3, 10, 10))
    assert all(not m._forward_hooks for m in model.modules())


def test_the_batch_is_the_largest_power_of_two_within_the_budget() -> None:
    runner = LoopRunner(Member(0, "dense", 0, _model()))
    image, cpu = torch.zeros(3, 10, 10), torch.device("cpu")
    assert choose_batch_size([runner], image, device=cpu, budget=6400 * 5) == 4
    assert choose_batch_size([runner], image, device=cpu, budget=6400 * 8) == 8
    assert choose_batch_size([runner], image, device=cpu, budget=6399) == 1  # at least one
    assert choose_batch_size([runner], image, device=cpu, budget=2**40) == MAX_BATCH
    assert choose_batch_size([runner], image, device=cpu, budget=2**40, cap=48) == 32
    # accelerators get the cap without a measurement
    assert choose_batch_size([runner], image, device=torch.device("cuda"), cap=96) == 96


def test_a_stacked_group_counts_every_member_and_the_largest_model_decides() -> None:
    members = [Member(i, "dense", i, _model()) for i in range(3)]
    stacked = StackedRunner(members, device=torch.device("cpu"))
    image, cpu = torch.zeros(3, 10, 10), torch.device("cpu")
    assert choose_batch_size([stacked], image, device=cpu, budget=6400 * 3 * 4) == 4
    wide = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.Flatten(), nn.Linear(3200, 2))
    # the wide conv: 1,200 + 12,800 B; its flatten 12,800 + 12,800 B = 25,600 B
    runners = [LoopRunner(Member(0, "a", 0, _model())),
               LoopRunner(Member(1, "b", 0, copy.deepcopy(wide).eval()))]
    assert choose_batch_size(runners, image, device=cpu, budget=25600 * 2) == 2
