"""The last stages: analyze (predictions → metrics.json + tables), then the gate's
verdict, the provenance record and the report."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from compaudit.pipeline.stages import StageCache, fingerprint, stage_key
from compaudit.pipeline.variants import variant_names
from compaudit.rundir import RunFolder, read_json, write_json
from compaudit.schema import read_metrics
from compaudit.spec import AuditSpec

__all__ = ["analyze_run", "gate_and_report", "write_provenance"]


def analyze_run(spec: AuditSpec, folder: RunFolder, cache: StageCache, *,
                variant_keys: dict[str, str], plan: Any, progress: bool,
                log: Callable[[str], None], embed_key: str | None = None) -> None:
    """Join the variants' outputs and run the analysis (cached on its inputs' keys);
    with ``embed_key`` (the embed stage ran), slices from ``embeddings.npz`` too."""
    key = stage_key(list(variant_keys.values()), spec.section("analysis"), spec.data.protected,
                    embed_key)
    if cache.fresh("analyze", key, [folder.metrics, folder.predictions]):
        return
    from compaudit import tables
    from compaudit.analysis.audit import analyze_files
    from compaudit.compress.footprint import write_variants_json

    log("[analyze] population statistics")
    names = list(variant_keys)
    examples = tables.read_examples(folder.examples)
    parts = [pd.read_parquet(folder.variant_predictions(n)) for n in names]
    tables.write_predictions(pd.concat(parts, ignore_index=True), folder.predictions,
                             examples=examples)
    records = {n: read_json(folder.variant_record(n), what="variant record",
                            fix="re-run 'compaudit run'") for n in names}
    write_variants_json(folder.variants_json, records)
    if embed_key is not None:
        log("[analyze] slices from the dense embeddings")
    analysis = analyze_files(folder.examples, folder.predictions, spec.analysis,
                             progress=progress,
                             embeddings=folder.embeddings if embed_key is not None else None)
    if plan is not None:
        from compaudit.dissection.audit import dissection_block, read_population

        log("[analyze] dissection")
        units, concepts = read_population({n: folder.variant(n) for n in names})
        analysis.add_dissection(*dissection_block(units, concepts, plan.describe(),
                                                  level=spec.analysis.level))
    analysis.write(folder.root)
    cache.finish("analyze", key)


def gate_and_report(spec: AuditSpec, folder: RunFolder, *, report: bool) -> tuple[Any, Path | None]:
    """The gate's verdict on ``metrics.json`` (outputs in ``gate/``) and the report."""
    from compaudit.gate import run_gate, write_gate_outputs
    from compaudit.gate.operating import variants_info

    result = run_gate(read_metrics(folder.metrics), spec.gate,
                      variants_info=variants_info(folder.root))
    write_gate_outputs(result, folder.gate)
    path = None
    if report:
        from compaudit.report import render_report

        path = render_report(folder.root)
    return result, path


def write_provenance(spec: AuditSpec, folder: RunFolder, data_root: Path, started: float, *,
                     timings: dict[str, dict[str, float]], dense: Any) -> None:
    """``run.json``: the spec, seeds, library versions, the data's fingerprint, and the
    time of every step of this run and of every job (as recorded by the job).

    The CPU time of the train and variants steps includes the jobs they ran in worker
    processes (``timings`` is updated in place)."""
    import numpy
    import torch
    import torchvision

    import compaudit

    jobs = _job_timings(folder, dense, variant_names(spec),
                        embed=spec.analysis.slices.enabled)
    for step, prefix in (("train", "train:"), ("variants", "variant:"), ("embed", "embed")):
        ran = [t for name, t in jobs.items() if name.startswith(prefix) and t
               and t.get("finished", 0) >= started]
        own, in_jobs = timings.get(step, {}).get("cpu_s", 0.0), sum(t["cpu_s"] for t in ran)
        # Jobs in this process (serial executor) are already in its own CPU time; jobs in
        # worker processes are not (their CPU is counted when the pool is closed).
        if step in timings and own < in_jobs:
            timings[step]["cpu_s"] = round(own + in_jobs, 3)
    write_json(folder.run_json, {
        "spec": spec.text,
        "spec_path": spec.source,
        "spec_sha256": spec.sha256,
        "seeds": {"audit": spec.seed,
                  "replicas": [spec.seed + k for k in range(spec.model.replicas)],
                  "bootstrap": spec.analysis.seed},
        "versions": {"compaudit": compaudit.__version__, "python": platform.python_version(),
                     "torch": torch.__version__, "torchvision": torchvision.__version__,
                     "numpy": numpy.__version__, "pandas": pd.__version__},
        "data": {"name": spec.data.dataset, "root": str(data_root),
                 "fingerprint": fingerprint(data_root) if data_root.exists() else None},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "timings": {"steps": timings, "jobs": jobs},
    })


def _job_timings(folder: RunFolder, dense: Any, names: list[str], *,
                 embed: bool) -> dict[str, Any]:
    """Each job's own wall/CPU seconds (from its record; a cached job keeps the time of
    the run that made it); ``embed``: the embed jobs' together, when slices are on."""
    jobs: dict[str, Any] = {}
    for path in dense.paths:
        meta = path.with_suffix(".json")
        if meta.is_file() and folder.root in path.parents:
            timing = read_json(meta, what="replica record", fix="re-run 'compaudit run'")
            jobs[f"train:{path.stem}"] = timing.get("timing")
    for name in names:
        doc = read_json(folder.variant_record(name), what="variant record",
                        fix="re-run 'compaudit run'")
        jobs[f"variant:{name}"] = doc.get("timing")
    from compaudit.pipeline.embed import embed_record

    if embed and embed_record(folder).is_file():
        doc = read_json(embed_record(folder), what="embed record", fix="re-run 'compaudit run'")
        jobs["embed"] = doc.get("timing")
    return jobs
