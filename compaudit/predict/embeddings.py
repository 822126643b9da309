"""Embeddings of a population: the input of each replica's final classification layer
(its penultimate features), averaged over replicas.

The final layer is found, not named: one forward pass with a hook on every module, and
the first module to finish whose output *is* the model's output (``fc`` of a ResNet or
of compaudit's ``small_cnn``, ``classifier[3]`` of ``mobilenet_v3_small``; not the
``classifier`` Sequential around it). A model that transforms its last layer's output
(a squeeze, a slice) falls back to the last module whose output has the logits' size.
Slice discovery (:mod:`compaudit.analysis.slices`) clusters these features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from compaudit.data.base import dataset_length
from compaudit.errors import AuditInputError

# One batch loop for inference and embedding: decoded arrays are read in place.
from compaudit.predict.population import _batches, _check_device, _first_image

__all__ = ["classifier_layer", "embed_population"]


def classifier_layer(model: nn.Module, image: torch.Tensor) -> str:
    """The name of the module of ``model`` that produces its logits, found by running
    ``image`` (one example, ``C x H x W``) through it."""
    order: list[tuple[str, torch.Tensor | None]] = []
    names = {id(m): n for n, m in model.named_modules() if n}
    hooks = [m.register_forward_hook(
        lambda mod, _args, out: order.append(
            (names[id(mod)], out if isinstance(out, torch.Tensor) else None)))
        for n, m in model.named_modules() if n]
    try:
        with torch.inference_mode():
            out = model(image.unsqueeze(0))
    finally:
        for h in hooks:
            h.remove()
    if not isinstance(out, torch.Tensor):
        raise AuditInputError(f"{type(model).__name__}: the model returns "
                              f"{type(out).__name__}; expected a tensor of logits to find "
                              "its final layer")
    for name, value in order:
        if value is out:
            return name
    same = [name for name, value in order if value is not None and value.numel() == out.numel()]
    if not same:
        raise AuditInputError(f"{type(model).__name__}: no module produces the logits "
                              f"(shape {tuple(out.shape)}); expected a final layer such as "
                              "an nn.Linear whose output the model returns")
    return same[-1]


def embed_population(models: Sequence[nn.Module], dataset: Dataset[Any], *, batch_size: int = 256,
                     device: str | torch.device = "cpu", progress: bool = True
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features of every example of ``dataset``, averaged over ``models``.

    Parameters
    ----------
    models
        The replicas (torch modules; evaluated in eval mode, their mode restored).
    dataset
        Map-style dataset of ``(image, label, example_id)``, or a run's decoded array.
    batch_size
        Images per forward pass.
    device
        Torch device for the models and the batches.
    progress
        Show a progress bar over batches.

    Returns
    -------
    example_ids, features
        ``(N,)`` strings in dataset order and ``(N, D)`` float32: the flattened input of
        each replica's final layer (:func:`classifier_layer`), averaged over replicas.
    """
    if not models:
        raise AuditInputError("embed_population: no models; expected at least one replica")
    dev = _check_device(device)
    n = dataset_length(dataset)
    modes = [m.training for m in models]
    for m in models:
        m.to(dev).eval()
    first = _first_image(dataset).to(dev)
    layers = [m.get_submodule(classifier_layer(m, first)) for m in models]
    captured: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(
        lambda _mod, args, _out: captured.append(args[0].flatten(1).float()))
        for layer in layers]
    ids: list[str] = []
    features: np.ndarray | None = None
    offset = 0
    try:
        with torch.inference_mode():
            batches = _batches(dataset, batch_size=batch_size, n_examples=n, num_workers=0,
                               pin_memory=dev.type == "cuda")
            for images, _labels, batch_ids in tqdm(batches, desc="embed", unit="batch",
                                                   total=-(-n // batch_size),
                                                   disable=not progress):
                images = images.to(dev, non_blocking=True)
                captured.clear()
                for m in models:
                    m(images)
                mean = torch.stack(captured).mean(0).cpu().numpy()
                if features is None:
                    features = np.empty((n, mean.shape[1]), np.float32)
                features[offset:offset + len(batch_ids)] = mean
                ids.extend(batch_ids)
                offset += len(batch_ids)
    finally:
        for h in hooks:
            h.remove()
        for m, mode in zip(models, modes):
            m.train(mode)
    assert features is not None  # n >= 1: dataset_length refuses an empty dataset
    return np.asarray(ids, dtype=str), features
