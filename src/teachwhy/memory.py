"""Giving memory back between runs in one long-lived process (an experiment runner, a notebook, the
controls, the examples).

A finished eval or training run leaves nothing alive, but two things keep the process large: the
trainer and model objects sit in reference cycles until the cycle collector runs, and glibc's
allocator keeps freed blocks in its free lists instead of returning them to the system. On the
embedded model, a process that ran one SFT stays at ~3.2 GB resident without this and drops back to
~0.85 GB with it (`bench/bench_memory.py` measures both).

Inside a training step the same allocator is the larger cost: torch's activations are 1-10 MB
blocks, glibc raises its mmap threshold to the largest block freed so far (up to 32 MiB), and from
then on those blocks come from the heap, where freed holes between live blocks stay resident. On
the embedded model at ~1,400 tokens a step holds ~1.1 GB of live memory while the heap grows to
~2.3 GB. `mapped_large_blocks` fixes the threshold at 1 MiB while training, so each large block is
mapped on its own and returned to the system when freed. That costs time (a mapping and fresh
zeroed pages per block): measured with nothing else running, selective checkpointing took 106 tokens/s
mapped against 176 with glibc's own heap (peak 1,247 against 2,344 MiB). So it is opt-in:
`TEACHWHY_SFT_MAP_MIB=N` maps blocks of N MiB and more while training (`train_map_threshold`).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import sys
from collections.abc import Iterator

from teachwhy.errors import UserError

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
TRAIN_MMAP_THRESHOLD = 1 << 20  # blocks of 1 MiB and more get their own mapping while training
GLIBC_MAX_DYNAMIC_THRESHOLD = 32 << 20  # where glibc's own threshold tops out on 64-bit


MAP_ENV = "TEACHWHY_SFT_MAP_MIB"


def train_map_threshold() -> int | None:
    """The mmap threshold in bytes to hold while training, from TEACHWHY_SFT_MAP_MIB (MiB), or None
    (unset, empty or 0: glibc's own heap, the faster default)."""
    raw = os.environ.get(MAP_ENV, "").strip()
    if not raw:
        return None
    try:
        mib = float(raw)
    except ValueError:
        mib = -1.0
    if mib < 0 or mib > 1024:
        raise UserError(f"{MAP_ENV}={raw!r}: give a size in MiB between 0 (off) and 1024, e.g. {MAP_ENV}=1")
    return int(mib * 2**20) or None


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


def _mallopt(param: int, value: int) -> bool:
    """Set a glibc malloc parameter; False where there is no glibc (macOS, musl) or it refused."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(param, value))
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def mapped_large_blocks(threshold: int = TRAIN_MMAP_THRESHOLD) -> Iterator[bool]:
    """While inside, glibc serves blocks of `threshold` bytes and more with their own mapping, so a
    freed activation goes back to the system instead of leaving a resident hole in the heap. Yields
    whether it applied (glibc only). glibc cannot go back to its self-adjusting threshold, so on
    leaving the threshold is set to where that one tops out (32 MiB)."""
    applied = _mallopt(M_MMAP_THRESHOLD, threshold)
    try:
        yield applied
    finally:
        if applied:
            _mallopt(M_MMAP_THRESHOLD, GLIBC_MAX_DYNAMIC_THRESHOLD)
