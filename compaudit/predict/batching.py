"""The inference batch size: the largest whose activations stay in a cache-sized budget.

On a CPU, a forward pass is memory-bound once a layer's input and output no longer fit
in the caches. On one thread of this 2-core Xeon (2 MiB L2 per core), with system time
already removed (:mod:`compaudit._malloc`), a torchvision ``mobilenet_v2`` at
224 px ran at 11.7-12.6 ms per image at batches 2-8 and 14.3-14.8 ms at 16-64, and a
``resnet50`` at 65.7 ms at batches 4-8 and 68.5 ms at 2; small CNNs at 32 px keep
gaining up to a few hundred images per batch, where per-call overhead dominates.

:func:`choose_batch_size` measures, with forward hooks on one image, the largest working
set of any leaf layer (its input plus its output) of every model, and picks the largest
power of two that keeps that working set within :data:`BATCH_BUDGET` bytes:
``mobilenet_v2`` at 224 px (9.2 MiB per image) gets 4, ``resnet50`` (6.1 MiB) 8,
``small_cnn`` at 32 px (64 KiB) the cap of 256. The rule depends on the models and the
image size only, never on a timing, so predictions do not depend on the machine's load
(the batch size changes float sums in the last bit). Accelerators get the cap: they
want large batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from compaudit.predict.stacking import Runner, _input_dtype

__all__ = ["BATCH_BUDGET", "MAX_BATCH", "choose_batch_size", "working_set"]

#: Bytes of one leaf layer's input and output that a batch may span (see module doc).
BATCH_BUDGET = 64 * 2**20
#: The largest batch chosen automatically.
MAX_BATCH = 256


def _nbytes(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 0


def working_set(module: nn.Module, image: torch.Tensor) -> int:
    """Largest input + output bytes of any leaf module of ``module`` on ``image`` (one
    item, no batch dimension); a module without children (an ONNX Runtime module)
    counts its own input and output."""
    sizes = [0]

    def hook(_: nn.Module, args: tuple, output: object) -> None:
        sizes.append(_nbytes(args) + _nbytes(output))

    leaves = [m for m in module.modules() if not list(m.children())] or [module]
    handles = [m.register_forward_hook(hook) for m in leaves]
    dtype = _input_dtype(list(module.parameters()))
    x = image.unsqueeze(0)
    try:
        with torch.inference_mode():
            module(x if dtype is None else x.to(dtype))
    finally:
        for h in handles:
            h.remove()
    return max(sizes)


def choose_batch_size(runners: Sequence[Runner], image: torch.Tensor, *,
                      device: torch.device, budget: int = BATCH_BUDGET,
                      cap: int = MAX_BATCH) -> int:
    """The batch size for ``runners`` on items like ``image`` (see the module doc).

    A stacked runner holds the activations of all its members at once, so its working
    set counts once per member.
    """
    if device.type != "cpu":
        return cap
    per_image = max(working_set(r.members[0].module, image.to(device))
                    * (len(r.members) if r.stacked else 1) for r in runners)
    batch = 1
    while batch * 2 <= cap and batch * 2 * per_image <= budget:
        batch *= 2
    return batch
