"""Before anything runs: the checks that need torch, and the plan a spec describes.

:func:`preflight` is what :func:`~compaudit.pipeline.run.run_audit` checks before it
writes anything (the spec itself was validated when parsed): the architecture can be
built, the dataset is registered and, unless generated, its folder exists; the
preprocessing agrees with pretrained weights. :func:`describe_plan` lists the stages,
replicas, variants and files, for ``compaudit check`` / ``compaudit run --dry-run``.
"""

from __future__ import annotations

from pathlib import Path

from compaudit.config import plain
from compaudit.errors import AuditInputError
from compaudit.spec import LOAD, AuditSpec

__all__ = ["describe_plan", "preflight"]


def preflight(spec: AuditSpec, run_dir: Path) -> None:
    """Every check possible without data or training; one error listing them all."""
    from compaudit.pipeline.data import check_dataset, eval_transform, resolve
    from compaudit.pipeline.train import check_architecture
    from compaudit.rundir import RunFolder

    problems: list[str] = []
    for check in (check_architecture, check_dataset, eval_transform):
        try:
            check(spec)
        except AuditInputError as err:
            problems += err.problems
    root = resolve(RunFolder(run_dir), spec.data.root)
    if spec.data.dataset != "synthetic-faces" and not root.exists():
        problems.append(f"{spec.source}: [data].root: {root} does not exist; compaudit never "
                        "downloads data: put the dataset there or fix the path")
    if problems:
        raise AuditInputError(problems)


def _settings(params: dict) -> str:
    return ", ".join(f"{k} = {v!r}" for k, v in params.items()) or "defaults"


def _files(paths: tuple[str, ...]) -> list[str]:
    from compaudit.models.artifact_format import artifact_format

    return [f"    {path}  ({artifact_format(path)})" for path in paths]


def describe_plan(spec: AuditSpec, run_dir: Path) -> str:
    """What running ``spec`` into ``run_dir`` would do, as readable lines."""
    from compaudit.pipeline.data import resolve
    from compaudit.rundir import RunFolder

    d, m, t = spec.data, spec.model, spec.train
    root = resolve(RunFolder(run_dir), d.root)
    lines = [f"audit {spec.name!r} from {spec.source} (sha256 {spec.sha256[:12]}), "
             f"seed {spec.seed}", f"run folder: {run_dir}", "", "data:"]
    if d.dataset == "synthetic-faces":
        lines.append(f"  generate {d.n} synthetic faces at {d.image_size} px into {root} "
                     f"(spurious {d.spurious}, label noise {d.label_noise})")
    else:
        lines.append(f"  {d.dataset} read from {root}"
                     + (f" (manifest {d.manifest})" if d.manifest else "")
                     + (f"; train split from {d.train_root}" if d.train_root else ""))
    lines += [f"  target {d.target or '(dataset default)'}; protected "
              f"{', '.join(d.protected) or '(none)'}; train split {d.train_split!r}, eval "
              f"split {d.eval_split!r}"
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
        if v.method == LOAD:
            lines += [f"  {v.name}: loaded artifacts, replica k paired with file k:",
                      *_files(v.config.files)]
        else:
            lines.append(f"  {v.name}: {v.method} ({_settings(v.params)})")
    lines += ["", f"shifts ({len(spec.shifts)}):"]
    for s in spec.shifts:
        lines.append(f"  corruptions {', '.join(s.corruptions)} x severities "
                     f"{list(s.severities)}" if s.kind == "corruptions"
                     else f"  {s.dataset} read from {s.root}")
    checks = [name for name, value in plain(spec.gate).items() if isinstance(value, dict)]
    lines += ["", f"analysis: bootstrap {spec.analysis.bootstrap}, level {spec.analysis.level}",
              f"gate: level {spec.gate.level}, inconclusive -> {spec.gate.inconclusive}; "
              f"checks {', '.join(checks) or '(none)'}"]
    if spec.dissection is not None:
        lines.append(f"dissection: concepts {spec.dissection.concepts}, layers "
                     f"{', '.join(spec.dissection.layers) or '(architecture default)'}")
    stages = ["data", "shifts", "examples",
              "train" if not (m.weights or m.pretrained) else "load dense",
              "variants", "analyze", "gate", "report"]
    lines += [f"executor: {spec.executor.kind}"
              + (f", {spec.executor.workers} workers" if spec.executor.kind == "local" else ""),
              "", "stages: " + " -> ".join(stages)]
    return "\n".join(lines)
