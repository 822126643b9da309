"""Executors: results in job order, failures name the job, a real local Ray cluster."""

from __future__ import annotations

import functools
import math
import os

import pytest

from compaudit.errors import AuditInputError
from compaudit.executors import (
    EXECUTORS,
    JobError,
    LocalExecutor,
    RayExecutor,
    SerialExecutor,
    get_executor,
    list_executors,
)
from compaudit.models.architectures import build_model

# Job functions must be importable in other processes: stdlib and compaudit functions.
# ``eval`` of this expression reports the torch thread count a worker runs with.
THREADS = "__import__('torch').get_num_threads()"
JOBS = [float(i * i) for i in range(7)]
SQRT_FAILED = r"job 2 \(-1\.0\) failed: ValueError: math domain error"


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="needs the 'ray' extra")
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local():
    """One pool of 2 workers for the module: each worker start imports torch (seconds)."""
    with LocalExecutor(2, progress=False) as executor:
        yield executor


@pytest.fixture
def executors(local):
    return [SerialExecutor(progress=False), local]


def test_registry_names_and_unknown_name():
    assert list_executors() == ["local", "ray", "serial"] == EXECUTORS.names()
    assert EXECUTORS.get("serial") is SerialExecutor
    assert isinstance(get_executor("local", max_workers=2), LocalExecutor)
    with pytest.raises(AuditInputError, match="unknown executor 'dask'.*local, ray, serial"):
        get_executor("dask")
    with pytest.raises(AuditInputError, match="executor 'serial'.*max_workers"):
        get_executor("serial", max_workers=2)


@pytest.mark.parametrize("kw", [dict(max_workers=0), dict(max_workers=True),
                                dict(threads_per_worker=0)])
def test_local_executor_validates_its_arguments(kw):
    with pytest.raises(AuditInputError, match=next(iter(kw))):
        LocalExecutor(**kw)


def test_ray_executor_refuses_num_cpus_with_an_address():
    with pytest.raises(AuditInputError, match="num_cpus applies only to a local cluster"):
        RayExecutor(address="auto", num_cpus=2)


def test_serial_and_local_return_results_in_job_order(executors):
    expected = [float(i) for i in range(7)]  # sqrt(i^2)
    for executor in executors:
        assert executor.map(math.sqrt, JOBS) == expected
        assert executor.map(math.sqrt, []) == []


def test_local_workers_share_the_cores_instead_of_oversubscribing(local):
    per_worker = max(1, len(os.sched_getaffinity(0)) // 2)  # 1 on this 2-core machine
    assert local.map(eval, [THREADS] * 2) == [per_worker] * 2
    with LocalExecutor(1, threads_per_worker=2, progress=False) as one:
        assert one.map(eval, [THREADS]) == [2]


def test_a_failed_job_is_reraised_naming_the_job(executors):
    for executor in executors:
        with pytest.raises(JobError, match=SQRT_FAILED) as info:
            executor.map(math.sqrt, [4.0, 1.0, -1.0, 9.0])
        assert info.value.index == 2 and isinstance(info.value.__cause__, ValueError)


def test_bad_input_in_a_job_stays_an_audit_input_error(executors):
    fn = functools.partial(build_model, num_classes=2)
    for executor in executors:
        with pytest.raises(AuditInputError,
                           match=r"job 1 \('resnet19'\): \[model\]\.arch: unknown architecture"):
            executor.map(fn, ["small_cnn", "resnet19"])


def test_local_executor_explains_an_unpicklable_function(local):
    with pytest.raises(AuditInputError, match="module-level function"):
        local.map(lambda x: x, [1, 2])


def test_ray_executor_on_a_real_local_cluster(ray_cluster):
    executor = RayExecutor(progress=False)
    assert executor.map(math.sqrt, JOBS) == [float(i) for i in range(7)]
    assert executor.map(eval, [THREADS] * 2) == [1, 1]  # cpus_per_job threads per task
    with pytest.raises(JobError, match=SQRT_FAILED):
        executor.map(math.sqrt, [4.0, 1.0, -1.0])
    with pytest.raises(AuditInputError, match=r"job 0 \('resnet19'\): \[model\]\.arch: unknown architecture"):
        executor.map(functools.partial(build_model, num_classes=2), ["resnet19"])
    executor.close()  # it did not start the cluster, so it must leave it running
    assert ray_cluster.is_initialized()


def test_missing_ray_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(AuditInputError, match=r'pip install -e "\.\[ray\]"'):
        RayExecutor(progress=False).map(math.sqrt, [1.0])


def _fails_on_cuda(job):
    raise RuntimeError("Attempting to deserialize object on CUDA device 7\nbut there are 0")


def test_a_pipeline_job_is_named_by_its_label_in_one_line_never_its_repr(tmp_path):
    from pathlib import Path

    from compaudit.configs.train import TrainConfig
    from compaudit.models.population import ReplicaJob

    job = ReplicaJob(replica=3, seed=7, arch="small_cnn", num_classes=2, small_input=True,
                     dataset=functools.partial(dict), config=TrainConfig(),
                     out_path=Path("r.pt"), checkpoint_dir=Path("c"))
    with pytest.raises(JobError) as info:
        SerialExecutor(progress=False).map(_fails_on_cuda, [job])
    assert str(info.value) == ("job 0 (dense replica 3 (seed 7, small_cnn)) failed: "
                               "RuntimeError: Attempting to deserialize object on CUDA device 7")
    assert "\n" in str(info.value.__cause__)  # the whole text stays on the cause
