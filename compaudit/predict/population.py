"""Population inference: every replica of every variant on one dataset -> predictions rows.

:func:`predict_population` loads each batch once and runs all models on it. On a GPU
(or with ``stack=True``) replicas that share an architecture are evaluated together:
their weights are stacked with :func:`torch.func.stack_module_state` and one
:func:`torch.vmap` over :func:`torch.func.functional_call` runs them as a single batched
model (see :mod:`compaudit.predict.stacking`). Other models (ONNX Runtime-backed modules,
tensor-subclass quantized weights, a lone architecture) run one at a time.

The result holds the rows of the ``predictions.parquet`` contract (DESIGN.md, plus
``p_pred``, the probability of the predicted class that calibration and AURRA use), in
the in-memory form :func:`compaudit.tables.validate_predictions` returns: top-k
predictions as int columns ``top5.0 .. top5.{k-1}``; :func:`write_predictions` stores
them as the ``top5`` list column.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from compaudit import tables
from compaudit._malloc import reuse_freed_memory
from compaudit.config import check_int
from compaudit.data.base import dataset_length
from compaudit.errors import AuditInputError
from compaudit.models.head import Head
from compaudit.predict.batching import choose_batch_size
from compaudit.predict.rows import Outputs, Task, check_labels, check_logits, to_frame
from compaudit.predict.stacking import Member, Runner, plan_runners, restore_modes

__all__ = ["predict_population", "write_predictions", "StackMode"]

#: ``True`` stacks every group of same-architecture replicas (checking the first batch
#: against one-at-a-time evaluation and falling back, with a warning, on any problem);
#: ``False`` runs one model at a time; ``"auto"`` stacks on accelerators and loops on
#: the CPU, where stacking measured slower (see :func:`predict_population`).
StackMode = bool | Literal["auto"]

_ITEM_HELP = (
    "expected dataset[i] to return (image tensor, label int, example_id str), "
    "as compaudit.data.base.AuditDataset does"
)


# --------------------------------------------------------------------------- checks


def _check_int(value: Any, *, name: str, low: int) -> int:
    problem = check_int(name, value, minimum=low)
    if problem:
        raise AuditInputError(problem)
    return int(value)


def _check_models(models: object) -> list[Member]:
    """Flatten ``variant -> replicas`` into members in output order, validating it."""
    if not isinstance(models, Mapping) or not models:
        raise AuditInputError(
            f"models must be a non-empty mapping variant -> list of nn.Module replicas "
            f"(e.g. {{'dense': [m0, m1]}}), got {type(models).__name__}"
        )
    members: list[Member] = []
    for variant, replicas in models.items():
        if not isinstance(variant, str) or not variant:
            raise AuditInputError(
                f"models: variant names must be non-empty strings, got {variant!r}"
            )
        if isinstance(replicas, Mapping):
            pairs = list(replicas.items())  # explicit replica ids
        elif isinstance(replicas, Sequence) and not isinstance(replicas, (str, bytes)):
            pairs = list(enumerate(replicas))
        else:
            raise AuditInputError(
                f"models[{variant!r}] must be a list of nn.Module replicas or a mapping "
                f"replica id -> nn.Module, got {type(replicas).__name__}"
            )
        if not pairs:
            raise AuditInputError(f"models[{variant!r}] has no replicas; expected at least one")
        seen: set[int] = set()
        for rid, module in pairs:
            if isinstance(rid, bool) or not isinstance(rid, (int, np.integer)) or rid < 0:
                raise AuditInputError(
                    f"models[{variant!r}]: replica id {rid!r} is not an integer >= 0"
                )
            if int(rid) in seen:
                raise AuditInputError(f"models[{variant!r}]: replica id {rid} occurs twice")
            seen.add(int(rid))
            if not isinstance(module, nn.Module):
                raise AuditInputError(
                    f"models[{variant!r}] replica {rid}: expected an nn.Module, got "
                    f"{type(module).__name__} (pass CompressedModel.model, not the wrapper)"
                )
            members.append(Member(len(members), variant, int(rid), module))
    return members


def _check_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise AuditInputError(
            f"device {device!r} is not a torch device; expected e.g. 'cpu' or 'cuda:0'"
        ) from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AuditInputError(
            f"device {device!r} asks for CUDA but no CUDA device is available; use device='cpu'"
        )
    return dev


def _check_class_mask(dataset: object) -> np.ndarray | None:
    mask = getattr(dataset, "class_mask", None)
    if mask is None:
        return None
    arr = np.asarray(mask)
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise AuditInputError(
            f"{type(dataset).__name__}.class_mask must be a non-empty 1-D array of class "
            f"indices, got {arr.dtype} with shape {arr.shape}"
        )
    if (arr < 0).any() or len(np.unique(arr)) != arr.size:
        raise AuditInputError(
            f"{type(dataset).__name__}.class_mask must hold distinct indices >= 0"
        )
    return arr.astype(np.int64)


def _collate(items: list) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Stack images and labels; keep ids as strings (checking each item's shape)."""
    images, labels, ids = [], [], []
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise AuditInputError(f"dataset item is {type(item).__name__}; {_ITEM_HELP}")
        image, label, example_id = item
        if not isinstance(image, torch.Tensor) or not isinstance(example_id, str):
            raise AuditInputError(
                f"dataset item ({type(image).__name__}, {type(label).__name__}, "
                f"{type(example_id).__name__}); {_ITEM_HELP} (set a transform that "
                "returns tensors)"
            )
        images.append(image)
        labels.append(int(label))
        ids.append(example_id)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64), ids


def _batches(dataset: Dataset[Any], *, batch_size: int, n_examples: int, num_workers: int,
             pin_memory: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
    """``(images, labels, ids)`` batches in dataset order.

    A dataset with ``read_batch(start, stop, out=)`` (a run's decoded array,
    :class:`compaudit.data.decoded.DecodedDataset`) fills one reused image buffer per
    batch; any other map-style dataset goes through a ``DataLoader``.
    """
    read = getattr(dataset, "read_batch", None)
    if callable(read) and num_workers == 0:
        buffer = None
        for start in range(0, n_examples, batch_size):
            images, labels, ids = read(start, min(start + batch_size, n_examples), out=buffer)
            buffer = images if buffer is None else buffer
            yield images, torch.tensor(labels, dtype=torch.int64), list(ids)
        return
    yield from DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=_collate, pin_memory=pin_memory, worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(0),
    )


def _first_image(dataset: Dataset[Any]) -> torch.Tensor:
    """The first image, as a batch would hold it (checks the item like a batch does)."""
    read = getattr(dataset, "read_batch", None)
    if callable(read):
        return read(0, 1)[0][0]
    return _collate([dataset[0]])[0][0]


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; align NumPy and random too,
    # so any randomness in a transform repeats from run to run.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


# ------------------------------------------------------------------- public API


def predict_population(
    models: Mapping[str, Sequence[nn.Module] | Mapping[int, nn.Module]],
    dataset,
    *,
    batch_size: int | Literal["auto"] = "auto",
    device: str | torch.device = "cpu",
    stack: StackMode = "auto",
    top_k: int | None = 5,
    max_stacked: int = 32,
    num_workers: int = 0,
    progress: bool = True,
    head: Head | None = None,
) -> pd.DataFrame:
    """Predict every example of ``dataset`` with every replica of every variant.

    Parameters
    ----------
    models
        ``variant -> replicas``: a list (replica id = position) or a mapping
        ``replica id -> module`` for explicit ids. Modules are moved to ``device`` and
        run in eval mode; their training flag is restored afterwards. Pruned models need
        nothing special (masked weights are zeros).
    dataset
        Map-style dataset yielding ``(image, label, example_id)``. A ``class_mask``
        attribute (ImageNet-A) restricts predictions to those classes: argmax, top-k and
        softmax are taken over the subset and mapped back to full class indices.
    batch_size
        Images per batch, or ``"auto"``: chosen from the models and the image size
        (:func:`compaudit.predict.batching.choose_batch_size`: on the CPU, the largest
        power of two up to 256 whose largest layer input + output fits 64 MiB; 256 on
        accelerators). A stacked group holds its members' activations at once.
    device
        Torch device for the models and the batches.
    stack
        See :data:`StackMode`. On the CPU, stacking (grouped convolutions and a
        decomposed batch norm under ``vmap``) ran at 0.3-0.75x the loop's speed at
        batch size 256 (small_cnn x30, resnet18 x8) and was faster only for batches of
        one or a few images, where per-call overhead dominates
        (``benchmarks/bench_predict.py``); hence ``"auto"`` loops there. On an H200,
        stacking 48 small CNNs ran 2.1x faster than looping them
        (``benchmarks/bench_cuda.py``).
    top_k
        Width of the top-k columns for tasks with at least 5 (unmasked or masked)
        classes; ``None`` for none.
    max_stacked
        Most replicas evaluated in one stacked call. Bounds memory: each stacked group
        also holds a stacked copy of its replicas' weights on ``device``.
    num_workers
        DataLoader worker processes.
    progress
        Show a progress bar over batches.
    head
        How the models' outputs become probabilities (:class:`~compaudit.models.head.Head`;
        default softmax over class logits). A sigmoid head reads a binary task from one
        logit of each model's ``head.outputs``: ``p_pos`` is its sigmoid, ``pred`` is
        ``p_pos >= 0.5``.

    Returns
    -------
    pandas.DataFrame
        One row per (variant, replica, example), ordered that way: ``variant``
        (category), ``replica`` (int32), ``example_id`` (category), ``pred`` (int64),
        ``p_true`` and ``p_pred`` (float32: probability of the true and of the predicted
        class), ``p_pos`` (float32, two-class tasks) and ``top5.0 ..`` (int32,
        many-class tasks). ``attrs["stacked"]`` lists the ``(variant, replica)``
        pairs that were evaluated stacked; ``attrs["batch_size"]`` the batch size used.

    Example (not run here: it needs files on disk)::

        frame = predict_population({"dense": [m0, m1], "gmp-90": [p0, p1]}, ds)
    """
    members = _check_models(models)
    if isinstance(batch_size, str) and batch_size != "auto":
        raise AuditInputError(f"batch_size must be 'auto' or an integer >= 1, got "
                              f"{batch_size!r}")
    if batch_size != "auto":
        batch_size = _check_int(batch_size, name="batch_size", low=1)
    max_stacked = _check_int(max_stacked, name="max_stacked", low=1)
    num_workers = _check_int(num_workers, name="num_workers", low=0)
    if top_k is not None:
        top_k = _check_int(top_k, name="top_k", low=1)
    if stack not in (True, False, "auto") or not isinstance(stack, (bool, str)):
        raise AuditInputError(f"stack must be True, False or 'auto', got {stack!r}")
    dev = _check_device(device)
    mask = _check_class_mask(dataset)
    n_examples = dataset_length(dataset)

    # Freed activations stay in the heap for the next batch (see compaudit/_malloc.py).
    with restore_modes([m.module for m in members]), reuse_freed_memory():
        use_stack = stack is True or (stack == "auto" and dev.type != "cpu")
        runners = plan_runners(members, device=dev, stack=use_stack, max_stacked=max_stacked)
        if batch_size == "auto":
            batch_size = choose_batch_size(runners, _first_image(dataset), device=dev)
        batches = _batches(dataset, batch_size=batch_size, n_examples=n_examples,
                           num_workers=num_workers, pin_memory=dev.type == "cuda")
        out = _run(runners, batches, members=members, n_examples=n_examples, mask=mask,
                   known_classes=getattr(dataset, "num_classes", None), top_k=top_k,
                   device=dev, progress=progress, head=head or Head(),
                   n_batches=-(-n_examples // batch_size))
    frame = to_frame(out, members)
    frame.attrs["batch_size"] = batch_size
    frame.attrs["stacked"] = [
        (members[i].variant, members[i].replica)
        for r in runners if r.stacked for i in r.indices
    ]
    return frame


def _run(runners: list[Runner], batches: Iterator, *, members: list[Member],
         n_examples: int, mask: np.ndarray | None, known_classes: int | None,
         top_k: int | None, device: torch.device, progress: bool, head: Head,
         n_batches: int) -> Outputs:
    out = Outputs(len(members), n_examples)
    task = None
    offset = 0
    with torch.inference_mode():
        for images, labels, ids in tqdm(batches, desc="predict", unit="batch",
                                        total=n_batches, disable=not progress):
            images = images.to(device, non_blocking=True)
            n = len(ids)
            for i, runner in enumerate(runners):
                logits = runner(images)
                check_logits(logits, [members[j] for j in runner.indices],
                             task.num_classes if task else known_classes, head)
                if task is None:  # the class count is known once a model has answered
                    task = Task(num_classes=logits.shape[-1], mask=mask, top_k=top_k,
                                device=device, head=head)
                if i == 0:
                    check_labels(labels, ids, task)
                out.store(runner.indices, offset, task.summarize(logits, labels.to(device)))
            out.ids.extend(ids)
            offset += n
    return out


def write_predictions(
    predictions: pd.DataFrame, path: str | Path, *, examples, dense: str = "dense"
) -> Path:
    """Validate ``predictions`` and write ``predictions.parquet`` atomically.

    Parameters
    ----------
    predictions
        The frame :func:`predict_population` returned (or several concatenated).
    path
        Target file; written to a temporary file beside it, then renamed.
    examples
        The examples table, or the dataset whose ``examples()`` gives it.
    dense
        Name of the dense variant, which must be present.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    table = examples
    if not isinstance(examples, pd.DataFrame) and callable(getattr(examples, "examples", None)):
        table = examples.examples()
    if not isinstance(table, pd.DataFrame):
        raise AuditInputError(
            f"examples must be an examples DataFrame or a dataset with examples(), got "
            f"{type(examples).__name__}"
        )
    clean = tables.validate_examples(table, source="examples")
    return tables.write_predictions(predictions, path, examples=clean, dense=dense)
