"""Runners that evaluate population members: stacked with ``torch.func`` or one at a time.

Replicas with the same architecture (same module class, same printed structure, same
parameter and buffer names, shapes and dtypes) are stacked: their state is stacked
along a new leading dimension with :func:`torch.func.stack_module_state` and one
:func:`torch.vmap` of :func:`torch.func.functional_call` evaluates all of them on a
batch. In eval mode BatchNorm reads its running statistics, which are stacked buffers,
so no batch-norm replacement is needed. Everything else runs one module at a time.

The first batch of every stacked group is also evaluated one module at a time; if the
stacked call fails (an op without a batching rule, data-dependent control flow) or
disagrees (state that is not a parameter or buffer, such as a per-replica float), the
group warns and loops from then on.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from compaudit.errors import AuditInputError

__all__ = ["Member", "Runner", "LoopRunner", "StackedRunner", "check_tolerance", "plan_runners",
           "restore_modes"]

#: Relative tolerance of the first-batch check of stacked against looped logits; it
#: only has to catch gross mismatches (a per-replica attribute the stack cannot see).
_CHECK_TOL = {torch.float16: 1e-2, torch.bfloat16: 5e-2}
_DEFAULT_TOL = 1e-4


def check_tolerance(dtype: torch.dtype | None, device: torch.device) -> float:
    """Relative tolerance of the first-batch check for weights of ``dtype`` on ``device``.

    float32 on CUDA runs in TF32 where torch allows it (cuDNN convolutions do by
    default), which keeps float16's 10 mantissa bits, so TF32 gets float16's tolerance.
    On an H200 the stacked (grouped) and looped convolutions of a trained small CNN
    differed by 1.1e-4 of (1 + max |logit|) with TF32 and 1.8e-7 without, and the
    strict 1e-4 made every float32 population fall back to looping
    (``benchmarks/bench_cuda.py``).
    """
    if dtype in _CHECK_TOL:
        return _CHECK_TOL[dtype]
    tf32 = torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32
    if device.type == "cuda" and tf32:
        return _CHECK_TOL[torch.float16]
    return _DEFAULT_TOL


@dataclass(frozen=True)
class Member:
    """One model of the population and its row block in the output."""

    index: int
    variant: str
    replica: int
    module: nn.Module


def _plain(t: torch.Tensor) -> bool:
    # Tensor subclasses (torchao quantized weights) and quantized or sparse tensors do
    # not stack; such models run one at a time.
    return (type(t) in (torch.Tensor, nn.Parameter) and not t.is_quantized
            and t.layout == torch.strided)


def _signature(module: nn.Module) -> tuple | None:
    """Key under which modules can share one stacked call; ``None`` if not stackable."""
    params = list(module.named_parameters())
    buffers = list(module.named_buffers())
    if not params or not all(_plain(t) for _, t in params + buffers):
        return None
    # repr() covers hyper-parameters that do not show in shapes (stride, padding, ...).
    return (
        type(module),
        repr(module),
        tuple((n, tuple(t.shape), t.dtype) for n, t in params),
        tuple((n, tuple(t.shape), t.dtype) for n, t in buffers),
    )


def _input_dtype(tensors: Sequence[torch.Tensor]) -> torch.dtype | None:
    """Dtype inputs are cast to: that of the first floating-point weight (fp16 models)."""
    return next((t.dtype for t in tensors if t.is_floating_point()), None)


def _call(module: nn.Module, images: torch.Tensor, dtype: torch.dtype | None,
          who: Member) -> torch.Tensor:
    out = module(images if dtype is None else images.to(dtype))
    if not isinstance(out, torch.Tensor):
        raise AuditInputError(
            f"models[{who.variant!r}] replica {who.replica} returned "
            f"{type(out).__name__}; expected a logits tensor of shape (batch, num_classes)"
        )
    return out.float()


class Runner:
    """Evaluates some members on a batch: ``runner(images) -> logits (members, batch, C)``."""

    stacked = False

    def __init__(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        self.indices = [m.index for m in members]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class LoopRunner(Runner):
    """One module, called directly (also the path for ONNX-backed modules)."""

    def __init__(self, member: Member) -> None:
        super().__init__([member])
        self.dtype = _input_dtype(list(member.module.parameters()))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        member = self.members[0]
        return _call(member.module, images, self.dtype, member).unsqueeze(0)


class StackedRunner(Runner):
    """Several same-architecture modules evaluated in one ``vmap`` call.

    The first batch is also run one module at a time; if the stacked call fails or
    disagrees, a warning is issued and the runner loops from then on.
    """

    stacked = True

    def __init__(self, members: Sequence[Member], *, device: torch.device) -> None:
        super().__init__(members)
        modules = [m.module for m in members]
        params, buffers = stack_module_state(modules)
        # The default memory format: CUDA kernels ask a channels-last weight (a model
        # trained with TrainConfig.channels_last) for its layout, which vmap does not
        # support ("NYI: querying is_contiguous inside of vmap"; measured on an H200).
        self.params = {k: v.detach().to(device).contiguous() for k, v in params.items()}
        self.buffers = {k: v.detach().to(device).contiguous() for k, v in buffers.items()}
        self.dtype = _input_dtype(list(self.params.values()))
        # functional_call swaps the stacked state in for the call and restores it after,
        # so the first member itself serves as the stateless template.
        base = modules[0]

        def one(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
            return functional_call(base, (p, b), (x,))

        self._vmapped = torch.vmap(one, in_dims=(0, 0, None))
        self._check = True
        self._tolerance = check_tolerance(self.dtype, device)

    def _loop(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([_call(m.module, images, self.dtype, m) for m in self.members])

    def _fall_back(self, reason: str) -> None:
        who = ", ".join(f"{m.variant}/{m.replica}" for m in self.members[:4])
        more = f" and {len(self.members) - 4} more" if len(self.members) > 4 else ""
        warnings.warn(
            f"stacked inference of {who}{more} {reason}; evaluating them one at a time "
            "(pass stack=False to skip the attempt)",
            UserWarning, stacklevel=5,  # the caller of predict_population
        )
        self.stacked = False
        self._check = False

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if not self.stacked:
            return self._loop(images)
        x = images if self.dtype is None else images.to(self.dtype)
        if not self._check:
            return self._vmapped(self.params, self.buffers, x).float()
        try:
            stacked = self._vmapped(self.params, self.buffers, x).float()
        except Exception as err:  # any op without a batching rule, data-dependent flow, ...
            self._fall_back(f"failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})")
            return self._loop(images)
        looped = self._loop(images)
        self._check = False
        if stacked.shape != looped.shape:
            self._fall_back(f"returned logits of shape {tuple(stacked.shape)}, not "
                            f"{tuple(looped.shape)}")
            return looped
        gap = (stacked - looped).abs().max().item()
        scale = 1 + looped.abs().max().item()
        if not gap <= self._tolerance * scale:  # also catches NaN
            self._fall_back(f"disagreed with one-at-a-time evaluation on the first batch "
                            f"(largest logit difference {gap:.2g}; tolerance "
                            f"{self._tolerance:.0e} x (1 + largest |logit| {scale - 1:.3g}))")
            return looped
        return stacked


def plan_runners(
    members: Sequence[Member], *, device: torch.device, stack: bool, max_stacked: int,
) -> list[Runner]:
    """Move members to ``device`` and group them into runners.

    With ``stack``, members with equal :func:`_signature` are stacked in chunks of at
    most ``max_stacked``; a group or chunk of one loops.
    """
    for m in members:
        m.module.to(device)
    if stack is False:
        return [LoopRunner(m) for m in members]
    groups: dict[tuple, list[Member]] = {}
    runners: list[Runner] = []
    for m in members:
        sig = _signature(m.module)
        if sig is None:
            runners.append(LoopRunner(m))
        else:
            groups.setdefault(sig, []).append(m)
    for group in groups.values():
        for start in range(0, len(group), max_stacked):
            chunk = group[start:start + max_stacked]
            if len(chunk) == 1:
                runners.append(LoopRunner(chunk[0]))
            else:
                runners.append(StackedRunner(chunk, device=device))
    return sorted(runners, key=lambda r: r.indices[0])


@contextmanager
def restore_modes(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Put ``modules`` in eval mode for the block; restore every submodule's flag after."""
    saved = [(sub, sub.training) for mod in modules for sub in mod.modules()]
    try:
        for mod in modules:
            mod.eval()
        yield
    finally:
        for sub, flag in saved:
            sub.training = flag
