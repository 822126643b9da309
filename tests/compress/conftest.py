"""Tiny data, models and a fine_tune function for the pruning tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset


class TensorImages(Dataset):
    """``(image, label, example_id)`` items from in-memory tensors."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i]), f"ex/{i}"


def make_images(n: int = 256, *, size: int = 8, classes: int = 4, seed: int = 0) -> TensorImages:
    """A learnable task: each class adds its own fixed pattern to noise."""
    gen = torch.Generator().manual_seed(seed)
    patterns = torch.randn(classes, 3, size, size, generator=gen)
    y = torch.arange(n) % classes
    x = 0.8 * patterns[y] + torch.randn(n, 3, size, size, generator=gen)
    return TensorImages(x, y)


class TinyCNN(nn.Module):
    """conv -> (bn) -> relu -> conv -> (bn) -> relu -> avg pool -> flatten -> linear."""

    def __init__(self, *, classes: int = 4, bn: bool = False, padding: int = 1,
                 bias: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=padding, bias=bias)
        self.bn1 = nn.BatchNorm2d(8) if bn else nn.Identity()
        self.conv2 = nn.Conv2d(8, 12, 3, padding=padding, bias=bias)
        self.bn2 = nn.BatchNorm2d(12) if bn else nn.Identity()
        self.fc = nn.Linear(12, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class TinyMLP(nn.Module):
    """flatten -> linear -> relu -> linear -> relu -> linear, no normalization."""

    def __init__(self, *, inputs: int = 3 * 8 * 8, hidden: Sequence[int] = (32, 24),
                 classes: int = 4) -> None:
        super().__init__()
        dims = [inputs, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(dims[-1], classes)

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.out(x)


def make_fine_tune(
    data: TensorImages, *, steps: int = 30, lr: float = 0.05, batch_size: int = 32,
    seed: int = 0, record: Callable[[int, int, nn.Module], None] | None = None,
) -> Callable:
    """A small SGD loop with the ``fine_tune(model, step_callbacks)`` contract.

    ``record(call, step, model)`` runs before step 1 (``step=0``) and after each step's
    callbacks, so tests can look at the model at those moments.
    """
    calls = [0]

    def fine_tune(model: nn.Module, callbacks) -> None:
        call = calls[0]
        calls[0] += 1
        gen = torch.Generator().manual_seed(seed + call)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        model.train()
        if record:
            record(call, 0, model)
        for step in range(1, steps + 1):
            idx = torch.randint(0, len(data), (batch_size,), generator=gen)
            loss = F.cross_entropy(model(data.x[idx]), data.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            for cb in callbacks:
                cb(step, model)
            if record:
                record(call, step, model)

    return fine_tune


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: tiny models gain nothing from more, and on a shared, loaded
    machine spinning thread pools make them many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny():
    """Namespace of the helpers above."""

    class _T:
        TensorImages = TensorImages
        TinyCNN = TinyCNN
        TinyMLP = TinyMLP
        make_images = staticmethod(make_images)
        make_fine_tune = staticmethod(make_fine_tune)

    return _T
