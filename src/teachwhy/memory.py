"""Giving memory back between runs in one long-lived process (an experiment runner, a notebook, the
controls, the examples).

A finished eval or training run leaves nothing alive, but two things keep the process large: the
trainer and model objects sit in reference cycles until the cycle collector runs, and glibc's
allocator keeps freed blocks in its free lists instead of returning them to the system. On the
embedded model, a process that ran one SFT stays at ~3.2 GB resident without this and drops back to
~0.85 GB with it (`bench/bench_memory.py` measures both).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import sys


def resident_mb() -> float:
    """This process's resident set size now, in MiB (Linux; 0.0 where /proc is absent)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def release_memory() -> None:
    """Collect reference cycles and, on glibc, hand the allocator's free memory back to the system."""
    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # not glibc (musl): nothing to trim
            ctypes.CDLL("libc.so.6").malloc_trim(0)
