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

With gradient checkpointing, `run_sft` instead keeps glibc's heap and bounds its holes
(`trimmed_between_layers`): at each decoder layer's forward and backward, a `HeapTrimmer` compares
the resident set with what the heap has handed out (glibc's mallinfo2, ~1 us) and, when more than
TEACHWHY_SFT_HEAP_SLACK_MIB (512 by default) of freed memory is resident, gives it back with
malloc_trim. Its cost is refaulting the pages handed back: on the embedded model, selective
checkpointing, 8,000 tokens, nothing else running (`bench/bench_memory.py --repeat 3`), the peak
fell from 2,740 to 1,575 MiB at 0.908x the untrimmed tokens/s. Since SFT's forward runs under
autocast (no float32 copies of each adapter's input and output) the heap grows far less: untrimmed
1,623 MiB, trimmed 1,567 MiB at 0.933x, about one trim a run; the trimmer stays on as a guard.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from teachwhy.errors import UserError

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
TRAIN_MMAP_THRESHOLD = 1 << 20  # blocks of 1 MiB and more get their own mapping while training
GLIBC_MAX_DYNAMIC_THRESHOLD = 32 << 20  # where glibc's own threshold tops out on 64-bit


MAP_ENV = "TEACHWHY_SFT_MAP_MIB"
SLACK_ENV = "TEACHWHY_SFT_HEAP_SLACK_MIB"
DEFAULT_SLACK_MIB = 512


def _mib_env(name: str, default_mib: float, max_mib: float, how: str) -> int | None:
    """A size in MiB from the environment variable `name`, in bytes (unset or empty: `default_mib`;
    0: None). Anything else than a number from 0 to `max_mib` is one UserError line ending in `how`."""
    raw = os.environ.get(name, "").strip()
    try:
        mib = float(raw) if raw else default_mib
    except ValueError:
        mib = -1.0
    if not 0 <= mib <= max_mib:
        raise UserError(f"{name}={raw!r}: {how}")
    return int(mib * 2**20) or None


def train_map_threshold() -> int | None:
    """The mmap threshold in bytes to hold while training, from TEACHWHY_SFT_MAP_MIB (MiB), or None
    (unset, empty or 0: glibc's own heap, the faster default)."""
    return _mib_env(MAP_ENV, 0, 1024, f"give a size in MiB between 0 (off) and 1024, e.g. {MAP_ENV}=1")


def heap_slack() -> int | None:
    """How much freed heap memory may stay resident while training, in bytes, from
    TEACHWHY_SFT_HEAP_SLACK_MIB (MiB; unset or empty: 512; 0: never trim, None)."""
    return _mib_env(SLACK_ENV, DEFAULT_SLACK_MIB, 1 << 20,
                    f"give a size in MiB, 0 (never trim) or more, e.g. {SLACK_ENV}=512")


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def resident_mb() -> float:
    """This process's resident set size now, in MiB (Linux; 0.0 where /proc is absent)."""
    try:
        return _resident_bytes() / 2**20
    except OSError:
        return 0.0


def _glibc() -> Any:
    """glibc through ctypes; None off Linux or where libc.so.6 does not load."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def release_memory() -> None:
    """Collect reference cycles and, on glibc, hand the allocator's free memory back to the system."""
    gc.collect()
    libc = _glibc()
    if libc is not None:
        with contextlib.suppress(AttributeError):  # not glibc (musl): nothing to trim
            libc.malloc_trim(0)


def _mallopt(param: int, value: int) -> bool:
    """Set a glibc malloc parameter; False where there is no glibc (macOS, musl) or it refused."""
    libc = _glibc()
    try:
        return libc is not None and bool(libc.mallopt(param, value))
    except AttributeError:
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


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


class HeapTrimmer:
    """Gives freed heap memory back to the system once more than `slack` bytes of it are resident.

    Resident memory the heap has not handed out = the resident set less the heap's blocks in use
    (mallinfo2: uordblks + hblkhd) less what was resident outside the heap when the trimmer was made
    (libraries, Python's own arenas, the model's mapped files). Made after a trim, so that baseline
    holds no freed memory. `available` is False off glibc (or before 2.33): then `check` does nothing.
    """

    def __init__(self, slack: int):
        self.slack, self.trims, self.checks = slack, 0, 0
        self.seconds = 0.0  # time spent checking and trimming
        self._libc: Any = None
        libc = _glibc()
        if libc is not None:
            with contextlib.suppress(AttributeError):  # musl, or glibc before 2.33
                libc.mallinfo2.restype = _MallInfo2
                self._libc = libc
        self.available = self._libc is not None
        self.outside = 0
        if self.available:
            self._libc.malloc_trim(0)
            self.outside = _resident_bytes() - self._in_use()

    def _in_use(self) -> int:
        info = self._libc.mallinfo2()
        return info.uordblks + info.hblkhd

    def freed_resident(self) -> int:
        """Bytes of freed heap memory that are resident now (an estimate; 0 off glibc)."""
        if not self.available:
            return 0
        return _resident_bytes() - self._in_use() - self.outside

    def check(self) -> bool:
        """Trim when the freed resident memory is over the slack; returns whether it trimmed."""
        if not self.available:
            return False
        t0 = time.perf_counter()
        self.checks += 1
        trim = self.freed_resident() > self.slack
        if trim:
            self._libc.malloc_trim(0)
            self.trims += 1
        self.seconds += time.perf_counter() - t0
        return trim


def decoder_layers(model) -> list:
    """The model's decoder layers: the first module list as long as its config's num_hidden_layers
    (transformers' causal LMs, PEFT-wrapped or not); [] when there is none."""
    import torch

    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and n and len(module) == n:
            return list(module)
    return []


@contextlib.contextmanager
def trimmed_between_layers(model, slack: int | None) -> Iterator[HeapTrimmer | None]:
    """While inside, a HeapTrimmer checks at the end of each decoder layer's forward (recomputes
    included) and when its output's gradient arrives in the backward pass. Yields the trimmer (None
    when `slack` is None, off glibc, or the model has no decoder layers found); every hook is removed
    on leaving."""
    made = HeapTrimmer(slack) if slack else None
    layers = decoder_layers(model) if made is not None and made.available else []
    if made is None or not layers:
        yield None
        return
    trimmer: HeapTrimmer = made

    def on_grad(_grad):
        trimmer.check()

    def after_forward(_module, _inputs, output):
        trimmer.check()
        out = output[0] if isinstance(output, tuple) else output
        if getattr(out, "requires_grad", False):
            out.register_hook(on_grad)

    handles = [layer.register_forward_hook(after_forward) for layer in layers]
    try:
        yield trimmer
    finally:
        for h in handles:
            h.remove()
