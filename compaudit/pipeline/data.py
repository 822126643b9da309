"""The data stages: the dataset (generated or read), the shift sets, examples.parquet.

Datasets travel to worker processes as picklable zero-argument factories
(``functools.partial`` of a registered dataset class), built with the one dataset
constructor shape ``cls(root, *, split, target, protected, transform, **options)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from compaudit.errors import NEVER_DOWNLOADS, AuditInputError
from compaudit.pipeline.stages import StageCache, fingerprint, stage_key
from compaudit.rundir import RunFolder, write_json
from compaudit.spec import AuditSpec

__all__ = ["DataStage", "ShiftStage", "eval_split", "is_generated", "prepare_data", "prepare_shifts",
           "split_factories", "split_problems", "write_examples", "write_class_names"]

Factory = Callable[[], Any]


@dataclass(frozen=True)
class DataStage:
    """Where the data is and how to build its splits (picklable factories)."""

    root: Path
    key: str
    train: Factory
    eval: Factory
    transform: Any


@dataclass(frozen=True)
class ShiftStage:
    """One dataset factory and one cache key per shift set."""

    factories: tuple[Factory, ...]
    keys: tuple[str, ...]


def resolve(folder: RunFolder, path: str) -> Path:
    """A spec path: absolute as given, relative against the run folder."""
    return Path(path) if Path(path).is_absolute() else folder.root / path


def eval_transform(spec: AuditSpec) -> Any:
    """The evaluation transform: ``[data]`` resize/crop/mean/std, where pretrained
    weights bring their own statistics and resize ratio (a conflict is an error)."""
    from compaudit.data.base import TransformSpec

    d = spec.data
    crop, ratio = d.input_size, 1.0
    mean, std = d.mean or (0.5, 0.5, 0.5), d.std or (0.25, 0.25, 0.25)
    if spec.model.pretrained:
        import torchvision

        # Pretrained weights expect their own evaluation transform (IMAGENET1K_V2:
        # resize 232, crop 224, ImageNet statistics), scaled to the spec's crop.
        ref = torchvision.models.get_weight(spec.model.pretrained).transforms()
        ratio = ref.resize_size[0] / ref.crop_size[0]
        for key, given, theirs in (("mean", d.mean, ref.mean), ("std", d.std, ref.std)):
            if given and any(abs(a - b) > 1e-6 for a, b in zip(given, theirs)):
                raise AuditInputError(
                    f"{spec.source}: [data].{key} = {list(given)} conflicts with "
                    f"[model].pretrained = {spec.model.pretrained!r}, whose weights were "
                    f"trained with {key} {list(theirs)}; remove [data].{key} or the "
                    "pretrained weights")
        mean, std = tuple(ref.mean), tuple(ref.std)
    return TransformSpec(resize=d.resize or round(crop * ratio), crop=crop, mean=mean,
                         std=std).build()


def check_dataset(spec: AuditSpec) -> str:
    """The registered dataset the spec names, with its ``[data].options`` checked
    against its signature (a generated dataset's: its generator's) before anything
    is generated."""
    from compaudit.data import DATASETS
    from compaudit.data.base import dataset_options, generator_options

    name = spec.data.dataset
    if name not in DATASETS:
        raise AuditInputError(f"{spec.source}: [data].dataset: got {name!r}; "
                              f"expected one of {', '.join(DATASETS)}")
    cls = DATASETS.get(name)
    valid = (generator_options(cls) if cls.generator is not None else
             [o for o in dataset_options(cls)
              if o not in ("split", "target", "protected", "transform", "manifest")])
    unknown = [key for key in spec.data.options if key not in valid]
    if unknown:
        raise AuditInputError(f"{spec.source}: [data].options: {', '.join(unknown)} not "
                              f"options of {name!r}; expected "
                              f"{', '.join(valid) if valid else 'none (it has no options)'}")
    if cls.check_generator_options is not None:
        try:
            cls.check_generator_options(spec.data.options, image_size=spec.data.image_size)
        except AuditInputError as err:
            raise AuditInputError([f"{spec.source}: [data].options: {p}"
                                   for p in err.problems]) from None
    return name


def is_generated(spec: AuditSpec) -> bool:
    """Whether the run generates the spec's dataset (nothing to read before it runs)."""
    from compaudit.data import DATASETS

    return DATASETS.get(check_dataset(spec)).generator is not None


def eval_split(spec: AuditSpec) -> str:
    """``[data].eval_split``, or the dataset's own evaluation split (ImageNet: ``val``)."""
    from compaudit.data import DATASETS

    return spec.data.eval_split or DATASETS.get(check_dataset(spec)).eval_split


def split_problems(spec: AuditSpec, *, training: bool) -> list[str]:
    """The splits the spec names must be splits the dataset has; the training split of
    a dataset whose splits are folders of their own (ImageNet) needs its train_root."""
    from compaudit.data import DATASETS
    from compaudit.data.base import dataset_splits

    cls = DATASETS.get(check_dataset(spec))
    valid = dataset_splits(cls)
    named = [("eval_split", eval_split(spec))] + ([("train_split", spec.data.train_split)]
                                                    if training else [])
    problems = [f"{spec.source}: [data].{key}: got {split!r}; the {spec.data.dataset} dataset "
                f"has the splits {', '.join(map(repr, valid))}"
                + ("" if spec.data.eval_split or key != "eval_split"
                   else " (this is its default; set [data].eval_split)")
                for key, split in named if valid is not None and split not in valid]
    if training and cls.split_folders and not spec.data.train_root:
        problems.append(f"{spec.source}: [data].train_root: missing; the {spec.data.dataset} "
                        f"training split ({spec.data.train_split!r}) is a folder of its own, "
                        "needed to fine-tune or calibrate; expected the folder of training "
                        "images")
    return problems


def split_factories(spec: AuditSpec, folder: RunFolder, transform: Any
                    ) -> tuple[partial[Any], partial[Any]]:
    """(train, eval) factories of the spec's dataset, before any subset or caching."""
    d = spec.data
    root = resolve(folder, d.root)
    train_root = resolve(folder, d.train_root) if d.train_root else root
    return (dataset_factory(spec, train_root, d.train_split, transform),
            dataset_factory(spec, root, eval_split(spec), transform))


def dataset_factory(spec: AuditSpec, root: Path, split: str, transform: Any) -> partial[Any]:
    """A picklable zero-argument factory building the spec's dataset for one split."""
    from compaudit.data import DATASETS

    cls = DATASETS.get(check_dataset(spec))
    # A generated dataset's options are its generator's, not its constructor's.
    options = {} if cls.generator is not None else dict(spec.data.options)
    if spec.data.manifest:
        options["manifest"] = spec.data.manifest
    # Every registered dataset takes these keywords (one constructor shape); the base
    # class declares only root and transform.
    build: Callable[..., Any] = cls
    return partial(build, root, split=split,
                   target=spec.data.target or None, protected=tuple(spec.data.protected),
                   transform=transform, **options)


def prepare_data(spec: AuditSpec, folder: RunFolder, cache: StageCache, *,
                 log: Callable[[str], None]) -> DataStage:
    """Generate the dataset (a generated one: the synthetic faces) and describe the
    train/eval splits."""
    from compaudit.data import DATASETS
    from compaudit.data.base import subset
    from compaudit.data.in_memory import in_memory

    d = spec.data
    cls = DATASETS.get(check_dataset(spec))
    transform = eval_transform(spec)  # checks preprocessing against pretrained weights
    root = resolve(folder, d.root)
    # The cache budget changes where images are decoded, never what they are.
    settings = {k: v for k, v in spec.section("data").items() if k != "cache_gib"}
    key = stage_key(settings, spec.seed)
    if cls.generator is not None:
        if not cache.fresh("data", key, [root / cls.generated_marker]):
            log(f"[data] generating {d.dataset} at {d.image_size} px into {root}")
            cls.generator(root, image_size=d.image_size, seed=spec.seed, overwrite=True,
                          **d.options)
            cache.finish("data", key)
    elif not root.exists():
        raise AuditInputError(f"{spec.source}: [data].root: {root} does not exist; "
                              f"{NEVER_DOWNLOADS} data: put the dataset there or fix the path")
    train_factory, eval_factory = split_factories(spec, folder, transform)
    # Kept in memory once read: a replica trains on it for every epoch.
    train = partial(in_memory, partial(subset, train_factory, d.max_train, spec.seed))
    evaluation = partial(subset, eval_factory, d.max_eval, spec.seed)
    return DataStage(root=root, key=key, train=train, eval=evaluation, transform=transform)


def prepare_shifts(spec: AuditSpec, folder: RunFolder, cache: StageCache, data: DataStage,
                   *, progress: bool, log: Callable[[str], None],
                   pool: Any = None) -> ShiftStage:
    """Write the corrupted copies (cached) and describe every shift set."""
    from compaudit.data import get_dataset
    from compaudit.data.base import subset
    from compaudit.data.corrupted_copy import write_corrupted_copy
    from compaudit.data.imagenet_c import ImageNetC

    factories: list[Factory] = []
    keys: list[str] = []
    for i, shift in enumerate(spec.shifts):
        section = spec.section("shifts")[i]
        if shift.kind == "corruptions":
            out = folder.shift_data(i)
            key = stage_key(data.key, section)
            if not cache.fresh(f"shift-{i}", key, [out]):
                log(f"[shifts] writing corrupted copy {i}: {', '.join(shift.corruptions)} "
                    f"x severities {list(shift.severities)}")
                source = subset(data.eval, shift.max_images, spec.seed + i)
                write_corrupted_copy(source, out, corruptions=shift.corruptions,
                                     severities=shift.severities, seed=spec.seed,
                                     progress=progress, executor=pool)
                cache.finish(f"shift-{i}", key)
            factories.append(partial(ImageNetC, out, corruptions=shift.corruptions,
                                     severities=shift.severities, transform=data.transform))
        else:
            root = Path(shift.root)
            key = stage_key(section, fingerprint(root) if root.exists() else "missing")
            factories.append(partial(get_dataset, shift.dataset, root,
                                     transform=data.transform))
        keys.append(key)
    return ShiftStage(factories=tuple(factories), keys=tuple(keys))


def write_examples(folder: RunFolder, cache: StageCache, data: DataStage,
                   shifts: ShiftStage) -> str:
    """``examples.parquet``: the eval split and every shift set; returns its key."""
    from compaudit import tables

    key = stage_key(data.key, list(shifts.keys))
    if not cache.fresh("examples", key, [folder.examples]):
        frames = [data.eval().examples()] + [f().examples() for f in shifts.factories]
        examples = pd.concat(frames, ignore_index=True)
        if "path" in examples:
            examples["path"] = [_relative(p, folder.root) for p in examples["path"]]
        tables.write_examples(examples, folder.examples)
        cache.finish("examples", key)
    return key


def _relative(path: Any, root: Path) -> Any:
    """Paths inside the run folder relative to it, so the folder can be moved."""
    if not isinstance(path, str) or not Path(path).is_absolute():
        return path
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path  # outside the run folder: the dataset root recorded in run.json


def write_class_names(spec: AuditSpec, folder: RunFolder, data: DataStage) -> None:
    """``class_names.json`` for the report: the dataset's own class names (FairFace,
    UTKFace), the target's two names (CelebA), or ImageNet's."""
    names: list[str] | None = getattr(data.eval(), "class_names", None)
    target = spec.data.target
    if not target:
        from compaudit.data import DATASETS

        target = DATASETS.get(check_dataset(spec)).default_target
    if names is not None:
        names = [str(n) for n in names]
    elif spec.model.num_classes == 2 and target:
        names = [f"not {target}", target]
    elif spec.model.num_classes == 1000 and spec.data.dataset.startswith("imagenet"):
        from compaudit.data.imagenet_classes import imagenet_class_names

        names = [n.split(",")[0] for n in imagenet_class_names()]
    if names is not None:
        write_json(folder.class_names, names)
