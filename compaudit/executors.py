"""Running independent jobs: in this process, in local processes, or on a Ray cluster.

Every executor has ``map(fn, jobs) -> list`` returning results in job order, shows a
progress bar, and re-raises a failed job's error saying which job failed (an
:class:`~compaudit.errors.AuditInputError` stays one, so the command line still exits
with code 2). ``fn`` and the jobs must be picklable for the local and Ray executors: use
a module-level function and plain data.

Each job runs with a fixed number of torch CPU threads, so parallel workers do not
oversubscribe the cores. Training pins its own thread count (``TrainConfig.num_threads``)
because CPU results depend on it; that is what makes a population identical whichever
executor trained it.

Examples
--------
>>> import math
>>> get_executor("serial", progress=False).map(math.sqrt, [1.0, 4.0, 9.0])
[1.0, 2.0, 3.0]
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Literal, Protocol, TypeVar

from tqdm.auto import tqdm

from compaudit.errors import AuditInputError
from compaudit.registry import Registry

__all__ = [
    "EXECUTORS",
    "ExecutorKind",
    "Executor",
    "SerialExecutor",
    "LocalExecutor",
    "RayExecutor",
    "JobError",
    "get_executor",
    "list_executors",
    "RAY_EXTRA_MESSAGE",
]

J = TypeVar("J")
R = TypeVar("R")

RAY_EXTRA_MESSAGE = (
    "the 'ray' executor needs Ray, which is the optional extra 'ray'; install it with "
    "pip install -e \".[ray]\" (or pip install \"compaudit[ray]\")"
)
_JOB_TEXT = 60  # characters of a plain job value quoted in an error


class Executor(Protocol):
    """What the pipeline needs from an executor."""

    def map(self, fn: Callable[[J], R], jobs: Sequence[J], *, desc: str = "jobs") -> list[R]:
        """Run ``fn(job)`` for every job; results in job order."""
        ...


class JobError(RuntimeError):
    """A job raised; ``index`` and ``job`` say which, ``__cause__`` holds its error."""

    def __init__(self, message: str, *, index: int, job: str) -> None:
        super().__init__(message)
        self.index = index
        self.job = job


def _describe(job: Any) -> str:
    """A job's short human label: its ``label`` attribute (the pipeline's jobs say which
    variant or replica they are), a short plain value as written, else its type."""
    label = getattr(job, "label", None)
    if isinstance(label, str) and label:
        return label
    if isinstance(job, (str, int, float)) and len(repr(job)) <= _JOB_TEXT:
        return repr(job)
    return type(job).__name__


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""


def _job_failed(index: int, job: Any, err: BaseException) -> BaseException:
    where = f"job {index} ({_describe(job)})"
    if isinstance(err, AuditInputError):
        return AuditInputError([f"{where}: {p}" for p in err.problems])
    # One line: the whole text and traceback stay on the chained cause.
    return JobError(f"{where} failed: {type(err).__name__}: {_first_line(err)}", index=index,
                    job=_describe(job))


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _call_with_threads(fn: Callable[[J], R], threads: int | None, job: J) -> R:
    # Runs inside a worker: cap torch's intra-op pool before the job allocates work.
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return fn(job)


def _check_picklable(fn: Callable, name: str) -> None:
    try:
        pickle.dumps(fn)
    except (pickle.PicklingError, AttributeError, TypeError) as err:
        raise AuditInputError(
            f"{name} sends fn to other processes, but {fn!r} cannot be pickled ({err}); "
            "pass a module-level function (not a lambda or a nested function)"
        ) from err


class SerialExecutor:
    """Run the jobs one after another in this process (the reference for the others).

    Parameters
    ----------
    progress
        Show a progress bar.
    """

    def __init__(self, *, progress: bool = True) -> None:
        self.progress = progress

    def map(self, fn: Callable[[J], R], jobs: Sequence[J], *, desc: str = "jobs") -> list[R]:
        """Run ``fn(job)`` for every job, in order."""
        jobs = list(jobs)
        results: list[R] = []
        for i, job in enumerate(tqdm(jobs, desc=desc, disable=not self.progress)):
            try:
                results.append(fn(job))
            except Exception as err:
                raise _job_failed(i, job, err) from err
        return results


class LocalExecutor:
    """Run the jobs in parallel processes on this machine ("spawn" start method).

    The worker processes are started on first use and kept for later ``map`` calls
    (starting one costs seconds: it imports torch); :meth:`close` or leaving a
    ``with`` block stops them.

    Parameters
    ----------
    max_workers
        Worker processes; default: the CPUs available to this process.
    threads_per_worker
        torch CPU threads of each worker; default: available CPUs // workers (at least 1).
    progress
        Show a progress bar.
    """

    def __init__(self, max_workers: int | None = None, *, threads_per_worker: int | None = None,
                 progress: bool = True) -> None:
        checks = (("max_workers", max_workers), ("threads_per_worker", threads_per_worker))
        for name, value in checks:
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise AuditInputError(f"LocalExecutor: {name} must be None or an integer >= 1, "
                                      f"got {value!r}")
        self.max_workers = max_workers
        self.threads_per_worker = threads_per_worker
        self.progress = progress
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> tuple[ProcessPoolExecutor, int]:
        workers = self.max_workers or _available_cpus()
        threads = self.threads_per_worker or max(1, _available_cpus() // workers)
        if self._pool is None:
            # spawn, not fork: forking a process that runs torch threads can deadlock.
            # With spawn the pool starts workers only as jobs arrive.
            self._pool = ProcessPoolExecutor(max_workers=workers,
                                             mp_context=multiprocessing.get_context("spawn"))
        return self._pool, threads

    def map(self, fn: Callable[[J], R], jobs: Sequence[J], *, desc: str = "jobs") -> list[R]:
        """Run ``fn(job)`` for every job in worker processes; results in job order."""
        jobs = list(jobs)
        if not jobs:
            return []
        _check_picklable(fn, "LocalExecutor")
        pool, threads = self._get_pool()
        results: list[Any] = [None] * len(jobs)
        futures = {pool.submit(_call_with_threads, fn, threads, job): i
                   for i, job in enumerate(jobs)}
        with tqdm(total=len(jobs), desc=desc, disable=not self.progress) as bar:
            for future in as_completed(futures):
                i = futures[future]
                try:
                    results[i] = future.result()
                except Exception as err:
                    for other in futures:  # drop this map's queued jobs; keep the pool
                        other.cancel()
                    raise _job_failed(i, jobs[i], err) from err
                bar.update()
        return results

    def close(self, *, wait: bool = True) -> None:
        """Stop the worker processes (a later ``map`` starts new ones)."""
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise AuditInputError(RAY_EXTRA_MESSAGE) from err
    return ray


class RayExecutor:
    """Run the jobs as Ray tasks, on a running cluster or a local one started on demand.

    Parameters
    ----------
    address
        Address of a running cluster (``"auto"``, ``"ray://host:10001"``), or ``None`` to
        start a local one when Ray is not initialised yet.
    num_cpus
        CPUs of a local cluster started here (not allowed with ``address``).
    cpus_per_job
        CPUs Ray reserves for each job; also its torch thread count.
    progress
        Show a progress bar.

    Notes
    -----
    If this executor started Ray, :meth:`close` (or leaving a ``with`` block) shuts it
    down; a cluster that was already initialised is left running.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None, *,
                 cpus_per_job: int = 1, progress: bool = True) -> None:
        if address is not None and num_cpus is not None:
            raise AuditInputError("RayExecutor: num_cpus applies only to a local cluster "
                                  "started here; leave it out when connecting to an address")
        if isinstance(cpus_per_job, bool) or not isinstance(cpus_per_job, int) or cpus_per_job < 1:
            raise AuditInputError(f"RayExecutor: cpus_per_job must be an integer >= 1, "
                                  f"got {cpus_per_job!r}")
        self.address = address
        self.num_cpus = num_cpus
        self.cpus_per_job = cpus_per_job
        self.progress = progress
        self._started = False

    def _ensure_started(self) -> Any:
        ray = _ray()
        if not ray.is_initialized():
            ray.init(address=self.address, num_cpus=self.num_cpus, include_dashboard=False)
            self._started = True
        return ray

    def map(self, fn: Callable[[J], R], jobs: Sequence[J], *, desc: str = "jobs") -> list[R]:
        """Run ``fn(job)`` for every job as a Ray task; results in job order."""
        jobs = list(jobs)
        if not jobs:
            return []
        ray = self._ensure_started()
        task = ray.remote(num_cpus=self.cpus_per_job)(_call_with_threads)
        refs = [task.remote(fn, self.cpus_per_job, job) for job in jobs]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(jobs)
        pending = list(refs)
        with tqdm(total=len(jobs), desc=desc, disable=not self.progress) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    i = index[ref]
                    try:
                        results[i] = ray.get(ref)
                    except ray.exceptions.RayTaskError as err:
                        for other in pending:
                            ray.cancel(other)
                        cause = err.cause if isinstance(err.cause, BaseException) else err
                        raise _job_failed(i, jobs[i], cause) from err
                    bar.update()
        return results

    def close(self) -> None:
        """Shut Ray down if this executor started it."""
        if self._started:
            _ray().shutdown()
            self._started = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Executor classes by name; :func:`get_executor` builds one.
EXECUTORS: Registry[Callable[..., Executor]] = Registry("executor")
EXECUTORS.add("serial", SerialExecutor)
EXECUTORS.add("local", LocalExecutor)
EXECUTORS.add("ray", RayExecutor)


def list_executors() -> list[str]:
    """Names accepted by :func:`get_executor`."""
    return EXECUTORS.names()


#: The names of the executors (``[executor].kind``, ``--executor``).
ExecutorKind = Literal["local", "ray", "serial"]


def get_executor(kind: ExecutorKind, **kwargs: Any) -> Executor:
    """Build the executor called ``kind`` with its keyword arguments.

    Parameters
    ----------
    kind
        ``"serial"``, ``"local"`` or ``"ray"`` (see :func:`list_executors`).
    **kwargs
        Passed to :class:`SerialExecutor`, :class:`LocalExecutor` or :class:`RayExecutor`.

    Raises
    ------
    AuditInputError
        For an unknown ``kind`` (listing the valid ones) or an argument the executor
        does not take.
    """
    cls = EXECUTORS.get(kind)
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise AuditInputError(f"executor {kind!r}: {err}") from err
