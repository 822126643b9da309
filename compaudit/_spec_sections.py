"""The sections of an audit spec (:mod:`compaudit.spec`) as config classes: what each
of ``[audit]``, ``[data]``, ``[model]``, ``[train]``, ``[[variants]]``, ``[[shifts]]``,
``[predict]`` and ``[executor]`` holds, its defaults and ranges (declared on the fields,
:func:`compaudit.config.setting`) and the rules among its own keys (``_problems``).
Rules that span sections, and the files a spec names, are checked by the parser.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

from compaudit.config import Checked, narrow, setting
from compaudit.configs.head import Head
from compaudit.configs.train import TrainConfig

__all__ = [
    "AuditSection", "DataSpec", "DEPRECATED_DATA_KEYS", "ExecutorSpec", "ModelSpec",
    "PredictSpec", "ShiftSpec", "TrainSpec", "VariantSpec", "move_deprecated_keys",
]


@dataclass(frozen=True, kw_only=True)
class AuditSection(Checked):
    """``[audit]``: the run's name (default: the spec file's stem) and its seed."""

    name: str = setting("", slug=True)
    seed: int = setting(0, ge=0)


@dataclass(frozen=True, kw_only=True)
class DataSpec(Checked):
    """Which dataset, where, and which attributes matter.

    ``dataset``: a registered dataset name (default: the demo's generated synthetic
    faces). A generated dataset is written into ``root`` by the run (relative paths
    resolve against the run folder); any other reads existing files from ``root``
    (relative paths resolve against the spec's folder, as every input path of a spec
    does). ``target``: the attribute predicted where labels are
    attributes (CelebA, synthetic faces; empty: their default, Blond_Hair); datasets
    with class labels take none. ``train_split`` (default ``train``) and
    ``eval_split`` (default: the dataset's evaluation split, ``val`` for ImageNet,
    else ``test``) name splits the dataset has (checked before anything runs).
    ``train_root``: a separate folder for the training
    split (e.g. ImageNet train). ``max_train``/``max_eval``: a seeded subset (0: all).
    ``manifest``: the CSV of ``dataset = "manifest"`` (relative to the spec's folder
    when it is there, else to ``root``; default ``root/manifest.csv``). ``options``:
    the dataset's own keyword arguments, e.g. ``{ age_groups = "coarse" }`` for
    FairFace and UTKFace, ``{ test_fraction = 0.2 }`` for UTKFace (checked against the
    dataset's signature before anything runs). A generated dataset takes its
    generator's arguments instead: for the synthetic faces ``n``, ``split_fractions``
    (train, valid, test), ``spurious`` (strength of the planted harm: the link between
    gender and hair length), ``ambiguous``, ``label_noise`` and ``joint`` (weights of
    the eight (Blond_Hair, Male, Young) groups as rows ``[blond, male, young, weight]``;
    default CelebA's test split); see
    :func:`~compaudit.data.synthetic.generate_synthetic_faces`. The top-level keys
    ``n``, ``splits``, ``spurious``, ``label_noise`` and ``joint`` of earlier versions
    still work, with a warning; they move into ``options``.

    ``cache_gib``: disk (and page cache) the run may fill with decoded images, in GiB:
    each set is decoded once per run into a memory-mapped array that every job reads,
    as uint8 pixels at the crop size (ImageNet val at 224 px: 7.0 GiB); a set that no
    longer fits is decoded again in every job that reads it (0: never cached).

    Preprocessing (the evaluation transform, also used for training): resize the
    shorter side to ``resize``, centre-crop ``crop`` (the model's input side; default
    ``image_size``), normalise with ``mean``/``std`` (three values each). Defaults:
    ``resize = crop``, mean 0.5 and std 0.25 per channel. ``[model].pretrained``
    weights bring their own mean, std and resize ratio; a ``mean``/``std`` that
    differs from theirs is an error naming both keys.
    """

    # The demo's dataset; the one place outside the data package that names it.
    dataset: str = setting("synthetic-faces", nonempty=True)
    root: str = "data/synthetic-faces"
    target: str = ""
    protected: tuple[str, ...] = ("Male", "Young")
    image_size: int = setting(32, ge=16)
    train_split: str = "train"
    eval_split: str = ""
    train_root: str = ""
    max_train: int = setting(0, ge=0)
    max_eval: int = setting(0, ge=0)
    manifest: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    resize: int = setting(0, ge=0)
    crop: int = setting(0, ge=0)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    # the default of compaudit.data.decoded.DEFAULT_BUDGET (that module imports torch)
    cache_gib: float = setting(8.0, ge=0)

    @property
    def input_size(self) -> int:
        """The side of the images the model sees (``crop``, else ``image_size``)."""
        return self.crop or self.image_size

    def _problems(self):
        shared = {"root", "split", "target", "protected", "transform", "manifest"}
        if shared & set(self.options):
            yield "options", (f"sets {', '.join(sorted(shared & set(self.options)))}; "
                              "expected only the dataset's own options (these are [data] "
                              "keys of their own)")
        if self.manifest and self.dataset != "manifest":
            yield "manifest", (f"is set but dataset is {self.dataset!r}; expected dataset = "
                               "\"manifest\" (or remove manifest)")
        if self.crop and self.crop < 16:
            yield "crop", f"got {self.crop}; expected at least 16 (0: image_size)"
        if self.resize and self.resize < self.input_size:
            yield "resize", (f"got {self.resize}; expected at least the crop "
                             f"({self.input_size}), or 0 for the default")
        for key in ("mean", "std"):
            values = getattr(self, key)
            if values and len(values) != 3:
                yield key, f"got {list(values)}; expected three numbers (R, G, B)"
            elif key == "std" and any(v <= 0 for v in values):
                yield key, f"got {list(values)}; expected three positive numbers"


#: The synthetic faces' generator settings of earlier versions, top-level ``[data]``
#: keys, and the ``[data].options`` key each now is (kept one version, with a warning).
DEPRECATED_DATA_KEYS = {"n": "n", "splits": "split_fractions", "spurious": "spurious",
                        "label_noise": "label_noise", "joint": "joint"}

_warned: set[str] = set()


def move_deprecated_keys(table: Any, source: str) -> Any:
    """``[data]`` with the deprecated generator keys moved into ``options`` (warning
    once per key and process); an explicit ``options`` entry wins over an old key."""
    if not isinstance(table, dict) or not DEPRECATED_DATA_KEYS.keys() & table.keys():
        return table
    table = dict(table)
    options = table.get("options", {})
    moved = {new: table.pop(old) for old, new in DEPRECATED_DATA_KEYS.items() if old in table}
    if isinstance(options, dict):
        table["options"] = {**moved, **options}
    for old, new in DEPRECATED_DATA_KEYS.items():
        if new in moved and old not in _warned:
            _warned.add(old)
            warnings.warn(f"{source}: [data].{old} is deprecated and will be removed; "
                          f"write it as [data].options.{new}", FutureWarning, stacklevel=2)
    return table


@dataclass(frozen=True, kw_only=True)
class ModelSpec(Checked):
    """The architecture, and optionally weights to load instead of training.

    ``arch``: ``small_cnn``, ``resnet18``, ``resnet50``, any torchvision classification
    model such as ``mobilenet_v3_small``, ``"timm:NAME"`` (a timm model, e.g.
    ``"timm:resnet10t"``; needs the ``timm`` extra), or ``"package.module:callable"``:
    your own Python code, imported from ``sys.path`` or from the spec's folder and
    called as ``callable(num_classes=..., **options)``; it must return an
    ``nn.Module``. This runs that code, in this process and in every worker: name only
    modules you trust. Every form is built with ``num_classes`` and without downloaded
    weights. ``options``: a table of extra keyword arguments for the torchvision, timm
    or user builder (not for the registered names). ``weights``: one file per replica,
    relative to the spec's folder: a state dict (``torch.save(model.state_dict())``,
    training and ``torch.nn.utils.prune`` checkpoints too) or an ONNX model (then only
    ``method = "load"`` variants, and no dissection; ``.pt2`` programs are refused);
    ``pretrained``: one torchvision weights enum found in the local torch hub cache
    (e.g. ``"ResNet50_Weights.IMAGENET1K_V2"``; never downloaded).

    ``head``: how the outputs become probabilities (:mod:`compaudit.configs.head`).
    ``"softmax"`` (default): one logit per class, softmax. ``"sigmoid"``: a binary task
    (``num_classes = 2``) read from one logit ``z``: ``p_pos = sigmoid(z)``, ``pred =
    p_pos >= 0.5``, trained and fine-tuned with binary cross-entropy on ``z``; a model
    trained with ``BCEWithLogitsLoss`` on one output needs nothing else. ``outputs``:
    the model's output width, what the architecture is built with (default: ``num_classes``
    for softmax, 1 for sigmoid); a multi-label model, e.g. a 40-attribute CelebA head,
    sets ``outputs = 40`` with ``head = "sigmoid"`` and ``output = k``, the index of the
    audited attribute's logit (required then, and only then). ``num_classes`` stays the
    task's class count.
    """

    arch: str = setting("small_cnn", nonempty=True)
    num_classes: int = setting(2, ge=2)
    small_input: bool = True
    replicas: int = setting(5, ge=1)
    weights: tuple[str, ...] = ()
    pretrained: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    head: Literal["softmax", "sigmoid"] = "softmax"
    outputs: int = setting(0, ge=0)
    output: int | None = setting(None, ge=0)

    @property
    def n_outputs(self) -> int:
        """The model's output width: ``outputs``, else 1 (sigmoid) or ``num_classes``."""
        return self.outputs or (1 if self.head == "sigmoid" else self.num_classes)

    def task_head(self) -> Head:
        """The :class:`~compaudit.configs.head.Head` that prediction and training apply."""
        return Head(kind=self.head, outputs=self.n_outputs, output=self.output or 0)

    def _problems(self):
        yield from _head_problems(self)
        if self.weights and len(self.weights) != self.replicas:
            yield "weights", (f"got {len(self.weights)} file(s); expected one file per "
                              f"replica ({self.replicas})")
        if self.pretrained and (self.replicas != 1 or self.weights):
            yield "pretrained", ("expected replicas = 1 and no [model].weights (one "
                                 "pretrained model)")


def _head_problems(model: ModelSpec):
    """``head``, ``outputs`` and ``output`` against each other and ``num_classes``."""
    if model.head == "sigmoid" and model.num_classes != 2:
        yield "head", (f"got 'sigmoid' with num_classes = {model.num_classes}; a sigmoid head "
                       "reads one binary attribute: expected num_classes = 2, or head = "
                       "\"softmax\" for a many-class task")
    if model.head == "softmax" and model.outputs not in (0, model.num_classes):
        yield "outputs", (f"got {model.outputs} with head = 'softmax' and num_classes = "
                          f"{model.num_classes}; a softmax head has one logit per class: "
                          "expected outputs = num_classes (or leave it out), or head = "
                          "\"sigmoid\" with output = k to read logit k of a multi-label model")
    multi = model.head == "sigmoid" and model.n_outputs > 1
    if model.output is not None and not multi:
        yield "output", (f"got {model.output}; it picks one logit of a multi-label model: "
                         "expected it only with head = \"sigmoid\" and outputs > 1 "
                         "(or remove it)")
    elif multi and model.output is None:
        yield "output", (f"missing; head = 'sigmoid' with outputs = {model.n_outputs} needs "
                         "the index of the audited attribute's logit: expected output = k, "
                         f"0 <= k < {model.n_outputs}")
    elif multi and model.output is not None and model.output >= model.n_outputs:
        yield "output", (f"got {model.output}; expected the index of a logit, 0 <= output < "
                         f"outputs ({model.n_outputs})")


@dataclass(frozen=True, kw_only=True)
class TrainSpec(TrainConfig):
    """``[train]``: the dense population's :class:`TrainConfig` (``seed`` defaults to
    ``[audit].seed``) plus the fine-tuning budget of the compression methods that
    train (``fine_tune_epochs``, ``fine_tune_lr``)."""

    fine_tune_epochs: int = setting(3, ge=1)
    fine_tune_lr: float = setting(0.01, gt=0)

    def fine_tune(self) -> TrainConfig:
        """The fine-tuning run: these settings with the fine-tuning budget, one thread."""
        return narrow(self, TrainConfig, epochs=self.fine_tune_epochs,
                      lr=self.fine_tune_lr, num_threads=1)

    def dense(self) -> TrainConfig:
        """The dense population's training run."""
        return narrow(self, TrainConfig)


@dataclass(frozen=True)
class VariantSpec:
    """One compressed variant: a name, a method and the method's config."""

    name: str
    method: str
    config: Any
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ShiftSpec(Checked):
    """A shift set: corruptions generated from the eval split (``kind = "corruptions"``),
    or a shifted dataset read from ``root`` (``kind = "dataset"``, e.g. imagenet-a)."""

    kind: Literal["corruptions", "dataset"] = "corruptions"
    corruptions: tuple[str, ...] = setting(
        ("gaussian_noise", "defocus_blur", "contrast", "jpeg_compression"), nonempty=True)
    severities: tuple[int, ...] = setting((1, 3, 5), ge=1, le=5, nonempty=True)
    max_images: int = setting(0, ge=0)
    dataset: str = ""
    root: str = ""

    def _problems(self):
        if self.kind == "dataset" and not (self.dataset and self.root):
            yield None, "kind = 'dataset' needs dataset (a registered name) and root"


@dataclass(frozen=True, kw_only=True)
class PredictSpec(Checked):
    """``[predict]``: how the variant jobs run inference.

    ``batch_size``: images per forward pass; 0 (the default) chooses it from the models
    on the CPU, the largest power of two whose largest layer input + output stays
    within 64 MiB (:mod:`compaudit.predict.batching`: 4 for ``mobilenet_v2`` and 8
    for ``resnet50`` at 224 px, 256 for small CNNs at 32 px), and 256 on a GPU.

    ``chunk_examples``: 0 (the default) predicts each variant in its own job; N > 0
    splits each variant's evaluation into chunks of about N examples of one evaluation
    set, which the executor spreads over its workers (so N Ray workers divide one
    variant's wall time; :mod:`compaudit.pipeline.chunks`). The variant's job then only
    compresses; N is rounded up to a multiple of the batch size (of 256 when it is
    chosen automatically), so predictions are identical to the unchunked run's.
    """

    batch_size: int = setting(0, ge=0)
    chunk_examples: int = setting(0, ge=0)


@dataclass(frozen=True, kw_only=True)
class ExecutorSpec(Checked):
    """Where the independent jobs run: this process, local processes, or Ray."""

    kind: Literal["local", "ray", "serial"] = "local"
    workers: int = setting(2, ge=1)
    address: str = ""
