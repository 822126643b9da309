"""Run an audit spec stage by stage into one run folder (see :mod:`compaudit.pipeline.run`)."""

from compaudit.pipeline.run import RunResult, run_audit

__all__ = ["RunResult", "run_audit"]
