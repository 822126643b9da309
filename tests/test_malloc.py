"""Freed activations stay in the heap inside reuse_freed_memory (glibc): page faults.

Page faults depend on what the process's heap already holds (a large free area left by
an earlier test serves a large request without a new mapping), so the check runs in a
fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from compaudit._malloc import _LIBC

pytestmark = pytest.mark.skipif(_LIBC is None, reason="glibc's mallopt only")

CHECK = textwrap.dedent('''
    import resource

    import torch

    from compaudit._malloc import reuse_freed_memory


    def faults_of_second_allocation(nbytes):
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


    nbytes = 64 * 2**20  # above glibc's largest mmap threshold (32 MiB)
    pages = nbytes // resource.getpagesize()
    assert faults_of_second_allocation(nbytes) > pages // 2  # mmap'd anew, faulted in
    assert faults_of_second_allocation(nbytes) > pages // 2  # every time
    with reuse_freed_memory() as active:
        assert active
        # The first blocks may be new heap: small objects allocated beside a freed
        # block keep it a little smaller than the next aligned request. After a few
        # rounds the free space has merged and every round reuses it.
        for _ in range(6):
            faults_of_second_allocation(nbytes)
        with reuse_freed_memory():  # nests
            assert [faults_of_second_allocation(nbytes) < pages // 20
                    for _ in range(3)] == [True] * 3
        assert faults_of_second_allocation(nbytes) < pages // 20  # still inside
    assert faults_of_second_allocation(nbytes) > pages // 2  # defaults restored
''')


def test_a_freed_block_is_reused_inside_and_returned_to_the_system_after() -> None:
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
