"""Run an audit spec stage by stage into one run folder, caching and resuming per stage.

Stages (DESIGN.md): data → shifts → examples → train → variants (compress + predict +
footprint [+ dissection], one job per variant) → [embed, with ``[analysis.slices]``] →
analyze → gate → report. Each stage
records a key in ``stages.json`` (:mod:`compaudit.pipeline.stages`); a stage whose key
and outputs are unchanged is skipped. So a killed run resumes (dense replicas and
training epochs are checkpointed too) and a changed spec recomputes only what depends
on the change: editing one variant re-runs that variant's job, the analysis, the gate
and the report. Paths inside the run folder: :mod:`compaudit.rundir`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compaudit.compress.configs import method_of
from compaudit.pipeline.data import (
    prepare_data,
    prepare_shifts,
    write_class_names,
    write_examples,
)
from compaudit.pipeline.decoding import RunDecoder
from compaudit.pipeline.embed import embed_dense
from compaudit.pipeline.outputs import analyze_run, gate_and_report, write_provenance
from compaudit.pipeline.plan import preflight
from compaudit.pipeline.stages import StageCache
from compaudit.pipeline.train import dense_population
from compaudit.pipeline.variants import check_schedules, dissection_plan, run_variants
from compaudit.record import record_run
from compaudit.rundir import RunFolder
from compaudit.schema import Metrics, read_metrics
from compaudit.spec import AuditSpec

if TYPE_CHECKING:  # the executors are imported when the jobs start
    from compaudit.executors import ExecutorKind

__all__ = ["RunResult", "run_audit"]


@dataclass
class RunResult:
    """Where a run wrote its outputs, and the gate's verdict."""

    run_dir: Path
    metrics: Metrics
    verdict: str
    exit_code: int
    report: Path | None
    stages_run: list[str]
    stages_skipped: list[str]
    #: Wall and CPU seconds per step of this run.
    timings: dict[str, dict[str, float]]


def run_audit(spec: AuditSpec, out_dir: str | Path, *, executor: ExecutorKind | None = None,
              ray_address: str | None = None, progress: bool = True, report: bool = True,
              log: Callable[[str], None] = print) -> RunResult:
    """Run every stage of ``spec`` into ``out_dir``; skip stages that are up to date."""
    from compaudit.gate import format_table

    # Every input check, before the run folder is created.
    preflight(spec, Path(out_dir), executor=executor, ray_address=ray_address)
    folder = RunFolder(Path(out_dir))
    folder.create()
    cache = StageCache(folder.stages_json)
    started = time.time()

    with cache.timed("data"):
        data = prepare_data(spec, folder, cache, log=log)
    with _executor(spec, executor, ray_address, progress=progress) as pool:
        with cache.timed("shifts"):
            shifts = prepare_shifts(spec, folder, cache, data, progress=progress, log=log,
                                    pool=pool)
        with cache.timed("examples"):
            write_class_names(spec, folder, data)
            examples_key = write_examples(folder, cache, data, shifts)
            plan = dissection_plan(spec, folder, transform=data.transform)
            check_schedules(spec, lambda: len(data.train()))
        with RunDecoder(folder, pool, log, budget=int(spec.data.cache_gib * 2**30)) as decoder:
            with cache.timed("train"):
                dense = dense_population(spec, folder, cache, data, pool=pool,
                                         decoder=decoder, log=log)
            with cache.timed("variants"):
                keys = run_variants(spec, folder, cache, data=data, shifts=shifts,
                                    dense=dense, examples_key=examples_key, plan=plan,
                                    pool=pool, decoder=decoder, log=log)
            embed_key = None
            if spec.analysis.slices.enabled:
                with cache.timed("embed"):
                    embed_key = embed_dense(spec, folder, cache, data=data, dense=dense,
                                            examples_key=examples_key, decoder=decoder,
                                            pool=pool, log=log)
    with cache.timed("analyze"):
        analyze_run(spec, folder, cache, variant_keys=keys, plan=plan, progress=progress,
                    log=log, embed_key=embed_key)
    write_provenance(spec, folder, data.root, started, timings=cache.timings, dense=dense)
    with cache.timed("gate + report"):
        gate, report_path = gate_and_report(spec, folder, report=report)
    record_run(spec, folder, model_files=[*dense.paths, *_loaded_files(spec)],
               verdict=gate.verdict, report=report_path)
    log(format_table(gate))
    return RunResult(run_dir=folder.root, metrics=read_metrics(folder.metrics),
                     verdict=gate.verdict, exit_code=gate.exit_code, report=report_path,
                     stages_run=cache.ran, stages_skipped=cache.skipped,
                     timings=cache.timings)


def _loaded_files(spec: AuditSpec) -> list[Path]:
    """The model files made elsewhere that a run loads (``method = "load"`` variants)."""
    return [Path(f) for v in spec.variants for f in method_of(v.config).files(v.config)]


@contextmanager
def _executor(spec: AuditSpec, kind: ExecutorKind | None, ray_address: str | None, *,
              progress: bool) -> Iterator[Any]:
    """The spec's executor (or the command line's), closed when the jobs are done."""
    from compaudit.executors import get_executor

    kind = kind or spec.executor.kind  # preflight refused contradictory options
    options: dict[str, Any] = {"progress": progress}
    if kind == "local":
        options["max_workers"] = spec.executor.workers
    elif kind == "ray":
        options["address"] = ray_address or spec.executor.address or None
    pool = get_executor(kind, **options)
    try:
        yield pool
    finally:
        if hasattr(pool, "close"):
            pool.close()
