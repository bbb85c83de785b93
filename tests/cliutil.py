"""Running the real `teachwhy` command in tests, and checking its one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent / "teachwhy"


def run_cli(*args: str, env: dict | None = None, cwd=None, timeout: float = 600) -> subprocess.CompletedProcess:
    """The CLI in a subprocess, offline, with a wide console so that lines are not folded."""
    e = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="200")
    e.update(env or {})
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, env=e, cwd=cwd, timeout=timeout)


def one_error_line(p: subprocess.CompletedProcess, *needles: str, code: int | None = None) -> str:
    """A non-zero exit (exactly `code` when given), exactly one non-empty stderr line starting with
    'error: ', no traceback, and every needle in that line."""
    assert p.returncode != 0 if code is None else p.returncode == code, (p.returncode, p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in p.stderr, p.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]
