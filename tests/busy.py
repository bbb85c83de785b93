"""Busy processes for the contention tests: a plain Python loop, or a torch process multiplying
matrices. Each prints "ready" once it is in its loop; the caller kills it."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

PLAIN = "print('ready', flush=True)\nwhile True:\n    pass\n"
TORCH = ("import torch\ntorch.set_num_threads(1)\na = torch.randn(256, 256)\nprint('ready', flush=True)\n"
         "while True:\n    a @ a\n")


@contextlib.contextmanager
def busy(kind: str = "plain", timeout: float = 120) -> Iterator[subprocess.Popen]:
    """A busy-loop subprocess, running until the block ends (killed in a finally)."""
    p = subprocess.Popen([sys.executable, "-c", TORCH if kind == "torch" else PLAIN], stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout is not None
        line = p.stdout.readline()  # blocks until the loop starts (torch: after its import)
        assert line.strip() == "ready", line
        yield p
    finally:
        p.kill()
        p.wait(timeout=timeout)
