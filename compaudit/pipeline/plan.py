"""Before anything runs: the one validation entry, and the plan a spec describes.

:func:`preflight` is what ``compaudit check``, ``run --dry-run`` and
:func:`~compaudit.pipeline.run.run_audit` check before anything is written: every
input ``run`` would refuse (options, device, architecture, dataset and its splits,
the datasets' index files, model files, dissection, schedules), so that ``check``
passing means the run raises no input error. :func:`describe_plan` lists the stages,
replicas, variants and files.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

from compaudit.artifact_format import artifact_format
from compaudit.config import plain
from compaudit.configs.compress import METHODS, method_of
from compaudit.data import get_dataset
from compaudit.data.base import dataset_length
from compaudit.errors import AuditInputError
from compaudit.executors import RAY_EXTRA_MESSAGE
from compaudit.models.architectures import build_model
from compaudit.models.artifacts import load_artifact
from compaudit.pipeline.data import (
    check_dataset,
    data_path,
    eval_split,
    eval_transform,
    is_generated,
    split_factories,
    split_problems,
)
from compaudit.pipeline.train import check_architecture, dense_paths, model_search_path
from compaudit.pipeline.variants import check_schedules, dissection_plan, variant_bases
from compaudit.rundir import RunFolder
from compaudit.spec import AuditSpec

__all__ = ["derivation_problems", "describe_plan", "device_problems", "executor_problems",
           "needs_training_set", "preflight"]


def preflight(spec: AuditSpec, run_dir: Path, *, executor: str | None = None,
              ray_address: str | None = None) -> None:
    """Everything ``run`` refuses on input, before it writes anything; one error
    listing every problem.

    The one validation entry of ``compaudit check``, ``run --dry-run`` and
    :func:`~compaudit.pipeline.run.run_audit` (the spec itself was validated when
    parsed). In order: contradictory options (before any data is looked at); the
    device; the architecture, dataset, splits and preprocessing; the datasets
    themselves, built as the run builds them (their index files, not their pixels;
    generated synthetic faces excepted); every model file loaded into the
    architecture; the dissection's layers and concept masks; pruning schedules.
    """
    problems = executor_problems(spec, executor, ray_address) + derivation_problems(spec)
    if problems:  # contradictions in the spec or on the command line first, before any data
        raise AuditInputError(problems)
    problems = device_problems(spec)
    failed: set[str] = set()
    for name, check in (("model", check_architecture), ("data", check_dataset),
                        ("transform", eval_transform)):
        try:
            check(spec)
        except AuditInputError as err:
            problems += err.problems
            failed.add(name)
    folder = RunFolder(run_dir)
    generated = "data" not in failed and is_generated(spec)
    root = data_path(spec, folder, spec.data.root, generated=generated)
    training = needs_training_set(spec)
    if "data" not in failed:
        problems += split_problems(spec, training=training)
    if not generated and not root.exists():
        problems.append(f"{spec.source}: [data].root: {root} does not exist; compaudit never "
                        "downloads data: put the dataset there or fix the path")
    elif not problems:
        problems += _data_problems(spec, folder, training)
    if "model" not in failed:
        problems += _model_problems(spec)
    if problems:
        raise AuditInputError(problems)


def derivation_problems(spec: AuditSpec) -> list[str]:
    """A derived variant's base must be another variant of the spec, made by a pruning
    method, and following bases may not lead back to it (a cycle)."""
    names = {v.name: (i, v) for i, v in enumerate(spec.variants, 1)}
    bases = variant_bases(spec)
    problems = []
    for name, base in bases.items():
        i, v = names[name]
        entry = method_of(v.config)
        at = f"{spec.source}: [[variants]] #{i}.{entry.derives_from}"
        if base == name:
            problems.append(f"{at}: got {base!r}, the variant itself; expected another "
                            "variant's name")
        elif base not in names:
            problems.append(f"{at}: got {base!r}, which names no variant; expected one of "
                            f"{', '.join(n for n in names if n != name) or '(none)'}")
        elif not method_of(names[base][1].config).prunes:
            problems.append(f"{at}: got {base!r}, made by {names[base][1].method!r}, which does "
                            f"not prune; {v.method} keeps the zeros of a pruned variant: "
                            "expected a variant of a pruning method "
                            f"({', '.join(n for n, e in METHODS.items() if e.prunes)})")
        else:
            seen, at_name = [name], base
            while at_name in bases and at_name not in seen:
                seen.append(at_name)
                at_name = bases[at_name]
            if at_name in seen:
                problems.append(f"{at}: got {base!r}; the bases form a cycle "
                                f"({' -> '.join([*seen, at_name])}); expected a chain that "
                                "ends at a variant made from the dense replicas")
    return problems


def needs_training_set(spec: AuditSpec) -> bool:
    """Whether a run reads the training split: to train the dense population, or for a
    method that fine-tunes or calibrates."""
    return (not (spec.model.weights or spec.model.pretrained)
            or any(METHODS.get(v.method).reads_training_set for v in spec.variants))


def executor_problems(spec: AuditSpec, kind: str | None, ray_address: str | None
                      ) -> list[str]:
    """The executor the run would use, from the spec and the command line: options that
    contradict each other, and Ray when it is not installed."""
    kind = kind or spec.executor.kind
    if ray_address and kind != "ray":
        return [f"--ray-address {ray_address}: the executor is {kind!r}; expected "
                "--executor ray (or [executor].kind = \"ray\"), or no --ray-address"]
    if kind == "ray" and importlib.util.find_spec("ray") is None:
        return [f"{spec.source}: [executor].kind: {RAY_EXTRA_MESSAGE}"]
    return []


def device_problems(spec: AuditSpec) -> list[str]:
    """``[train].device`` (also the device of inference and dissection) must exist here."""
    name = spec.train.device
    where = f"{spec.source}: [train].device: got {name!r}"
    try:
        device = torch.device(name)
    except RuntimeError as err:
        return [f"{where}; {_first_line(err)}; expected a torch device such as 'cpu'"]
    if device.type == "cpu":
        return []
    backend = getattr(torch, device.type, None)
    available = bool(backend is not None and getattr(backend, "is_available", bool)())
    count = int(getattr(backend, "device_count", lambda: 1)()) if available else 0
    if available and (device.index is None or device.index < count):
        return []
    have = (f"{count} {device.type} device(s), {device.type}:0 to {device.type}:{count - 1}"
            if count else f"no {device.type} device")
    return [f"{where}; this machine has {have}; expected 'cpu'"
            + (f" or one of its {device.type} devices" if count else "")]


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _data_problems(spec: AuditSpec, folder: Any, training: bool) -> list[str]:
    """Build the datasets as the run does (index files only), and what depends on them:
    shift datasets, the dissection plan, pruning schedules."""
    problems: list[str] = []
    transform = eval_transform(spec)
    d = spec.data
    n_train = None
    if not is_generated(spec):  # generated by the run: nothing to read yet
        train, evaluation = split_factories(spec, folder, transform)
        for key, factory in (("eval_split", evaluation),) + ((("train_split", train),)
                                                            if training else ()):
            try:
                n = dataset_length(factory())
            except AuditInputError as err:
                problems += [f"{spec.source}: [data] ({key} {factory.keywords['split']!r}): "
                             f"{p}" for p in err.problems]
                continue
            if key == "train_split":
                n_train = min(n, d.max_train) if d.max_train else n
    for i, shift in enumerate(spec.shifts, 1):
        if shift.kind == "dataset":
            try:
                dataset_length(get_dataset(shift.dataset, shift.root, transform=transform))
            except AuditInputError as err:
                problems += [f"{spec.source}: [[shifts]] #{i}: {p}" for p in err.problems]
    checks = [lambda: dissection_plan(spec, folder, transform=transform, load_concepts=not (
        spec.dissection is not None and not spec.dissection.root
        and is_generated(spec)))]
    if n_train is not None:
        checks.append(lambda: check_schedules(spec, lambda: n_train))
    for check in checks:
        try:
            check()
        except AuditInputError as err:
            problems += err.problems
    return problems


def _model_problems(spec: AuditSpec) -> list[str]:
    """Every model file loaded as the run loads it: dense replicas into the
    architecture, loaded variants paired with their dense replica (truncated files,
    weights that do not fit, pretrained weights missing from the local cache)."""
    m = spec.model
    if not (m.weights or m.pretrained):
        return []
    try:
        paths = dense_paths(spec)
    except AuditInputError as err:
        return list(err.problems)
    structure = build_model(m.arch, num_classes=m.n_outputs, small_input=m.small_input,
                            options=m.options, search_path=model_search_path(spec))
    problems: list[str] = []
    key = "[model].pretrained" if m.pretrained else "[model].weights"
    dense = []
    for k, path in enumerate(paths):
        try:
            dense.append(load_artifact(path, structure=structure))
        except AuditInputError as err:
            problems += [f"{spec.source}: {key}[{k}]: {p}" for p in err.problems]
    if len(dense) != len(paths):
        return problems
    for i, v in enumerate(spec.variants, 1):
        for k, file in enumerate(METHODS.get(v.method).files(v.config)):
            try:
                load_artifact(file, structure=dense[min(k, len(dense) - 1)])
            except AuditInputError as err:
                problems += [f"{spec.source}: [[variants]] #{i}.files[{k}]: {p}"
                             for p in err.problems]
    return problems


def _settings(params: dict) -> str:
    return ", ".join(f"{k} = {v!r}" for k, v in params.items()) or "defaults"


def _files(paths: tuple[str, ...]) -> list[str]:
    return [f"    {path}  ({artifact_format(path)})" for path in paths]


def _slices_line(spec: AuditSpec) -> str:
    """The ``[analysis.slices]`` settings as the plan prints them."""
    s = spec.analysis.slices
    if not s.enabled:
        return "slices: off ([analysis.slices].enabled = false)"
    line = (f"slices: {s.n_slices} per variant from the dense replicas' penultimate "
            f"features (PCA to {s.pca_dims} dims, error weight {s.error_weight:g}, "
            f"{s.discovery_fraction:g} of the examples to discover, {s.typical} typical "
            "images each)")
    from compaudit.pipeline.embed import onnx_dense

    onnx = onnx_dense(spec)
    return line + (f"; skipped: dense replica {onnx} is an ONNX model without torch "
                   "layers to embed with" if onnx else "")


def describe_plan(spec: AuditSpec, run_dir: Path) -> str:
    """What running ``spec`` into ``run_dir`` would do, as readable lines."""
    d, m, t = spec.data, spec.model, spec.train
    root = data_path(spec, RunFolder(run_dir), d.root)
    lines = [f"audit {spec.name!r} from {spec.source} (sha256 {spec.sha256[:12]}), "
             f"seed {spec.seed}", f"run folder: {run_dir}", "", "data:"]
    if is_generated(spec):
        options = ", ".join(f"{k} {v}" for k, v in d.options.items() if k != "joint")
        lines.append(f"  generate {d.dataset} at {d.image_size} px into {root}"
                     + (f" ({options})" if options else ""))
    else:
        lines.append(f"  {d.dataset} read from {root}"
                     + (f" (manifest {d.manifest})" if d.manifest else "")
                     + (f"; train split from {data_path(spec, RunFolder(run_dir), d.train_root)}"
                        if d.train_root else ""))
    lines += [f"  target {d.target or '(dataset default)'}; protected "
              f"{', '.join(d.protected) or '(none)'}; train split {d.train_split!r}, eval "
              f"split {eval_split(spec)!r}"
              + (f"; at most {d.max_train} train / {d.max_eval} eval images"
                 if d.max_train or d.max_eval else ""),
              f"  preprocessing: resize {d.resize or d.input_size}, crop {d.input_size}, mean "
              f"{list(d.mean) or [0.5] * 3}, std {list(d.std) or [0.25] * 3}"
              + (" (pretrained: the weights' own statistics and resize ratio)"
                 if m.pretrained else ""),
              "", f"dense population: {m.arch}, {m.num_classes} classes, {m.replicas} "
                  f"replica(s); {m.n_outputs} output(s), head {m.task_head().describe()}"]
    if m.pretrained:
        lines.append(f"  pretrained {m.pretrained} from the local torch hub cache")
    elif m.weights:
        lines += ["  loaded from:", *_files(m.weights)]
    else:
        lines.append(f"  trained by compaudit: {t.epochs} epochs, batch {t.batch_size}, lr "
                     f"{t.lr}, device {t.device}")
    lines += ["", f"variants ({len(spec.variants)}):"]
    for v in spec.variants:
        files = METHODS.get(v.method).files(v.config)
        if files:
            lines += [f"  {v.name}: loaded artifacts, replica k paired with file k:",
                      *_files(files)]
        else:
            base = method_of(v.config).base_of(v.config)
            lines.append(f"  {v.name}: {v.method} ({_settings(v.params)})"
                         + (f"; starts from {base}'s replicas, after them" if base else ""))
    lines += ["", f"shifts ({len(spec.shifts)}):"]
    for s in spec.shifts:
        lines.append(f"  corruptions {', '.join(s.corruptions)} x severities "
                     f"{list(s.severities)}" if s.kind == "corruptions"
                     else f"  {s.dataset} read from {s.root}")
    checks = [name for name, value in plain(spec.gate).items() if isinstance(value, dict)]
    lines += ["", f"analysis: bootstrap {spec.analysis.bootstrap}, level {spec.analysis.level}",
              f"gate: level {spec.gate.level}, inconclusive -> {spec.gate.inconclusive}; "
              f"checks {', '.join(checks) or '(none)'}"]
    lines.append(_slices_line(spec))
    if spec.dissection is not None:
        lines.append(f"dissection: concepts {spec.dissection.concepts}, layers "
                     f"{', '.join(spec.dissection.layers) or '(architecture default)'}")
    stages = ["data", "shifts", "examples",
              "train" if not (m.weights or m.pretrained) else "load dense",
              "variants", *(["embed"] if spec.analysis.slices.enabled else []),
              "analyze", "gate", "report"]
    lines += [f"executor: {spec.executor.kind}"
              + (f", {spec.executor.workers} workers" if spec.executor.kind == "local" else ""),
              "", "stages: " + " -> ".join(stages)]
    return "\n".join(lines)
