"""Freed activations stay in the heap inside reuse_freed_memory (glibc): page faults."""

from __future__ import annotations

import resource

import pytest
import torch

from compaudit._malloc import _LIBC, reuse_freed_memory

pytestmark = pytest.mark.skipif(_LIBC is None, reason="glibc's mallopt only")


def _faults_of_second_allocation(nbytes: int) -> int:
    """Minor page faults while allocating and writing a block that was just freed."""
    x = torch.empty(nbytes // 4)
    x.fill_(1.0)
    del x
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = torch.empty(nbytes // 4)
    y.fill_(2.0)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del y
    return faults


def test_a_freed_block_is_reused_inside_and_returned_to_the_system_after() -> None:
    nbytes = 64 * 2**20  # above glibc's largest mmap threshold (32 MiB)
    pages = nbytes // resource.getpagesize()
    assert _faults_of_second_allocation(nbytes) > pages // 2  # mmap'd anew, faulted in
    assert _faults_of_second_allocation(nbytes) > pages // 2  # every time
    with reuse_freed_memory() as active:
        assert active
        # The first blocks may be new heap: small objects allocated beside a freed
        # block keep it a little smaller than the next aligned request. After a few
        # rounds the free space has merged and every round reuses it.
        for _ in range(6):
            _faults_of_second_allocation(nbytes)
        with reuse_freed_memory():  # nests
            assert [_faults_of_second_allocation(nbytes) < pages // 20 for _ in range(3)] \
                == [True] * 3
        assert _faults_of_second_allocation(nbytes) < pages // 20  # still inside
    assert _faults_of_second_allocation(nbytes) > pages // 2  # defaults restored
