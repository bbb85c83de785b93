"""The benches' guard: a timing taken while other work shares the machine is refused, not reported.

Every bench registers the flag and runs its main through the guard:

    import _guard
    ...
    _guard.add_flag(ap)            # --allow-contended
    ...
    if __name__ == "__main__":
        sys.exit(_guard.run(main))

`run` takes a snapshot of the machine (teachwhy.machine.snapshot: load average, cores, other busy
processes) before and after `main`, prints both, and when `contended()` says so prints a line starting
with CONTENDED and exits 3, unless --allow-contended was given (then the numbers are printed as
contended). A bench that starts its own worker processes passes their pids to `exclude()`, so they do
not count as other work.

    python bench/_guard.py --check [--allow-contended]

samples the machine for 1 s and gives the verdict, nothing else (the guard's own test uses it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from teachwhy import machine

SAMPLE_S = 1.0
EXIT_CONTENDED = 3


class _State:
    allow: ClassVar[bool] = False
    exclude: ClassVar[set[int]] = set()


class _Allow(argparse.Action):
    """--allow-contended: a store_true that the guard also sees."""

    def __init__(self, option_strings: list[str], dest: str, **kw: Any):
        super().__init__(option_strings, dest, nargs=0, default=False, **kw)

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, True)
        _State.allow = True


def add_flag(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--allow-contended", action=_Allow,
                    help="report the numbers even when other work shared the machine (they are marked contended)")


def exclude(*pids: int) -> None:
    """This bench's own worker processes: not other work."""
    _State.exclude.update(pids)


def _own_cpu() -> float:
    """CPU seconds of this process, its finished children and its live excluded workers."""
    t = os.times()
    live = 0.0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in _State.exclude:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            live += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            pass
    return t.user + t.system + t.children_user + t.children_system + live


def _show(when: str, snap: dict) -> None:
    busy = "; ".join(f"pid {p['pid']} {p['command']} {p['cpu']:.1f} cores{' (torch)' if p['torch'] else ''}"
                     for p in snap["busy"]) or "none"
    print(f"machine at {when}: load {snap['load1']:.2f} / {snap['load5']:.2f} (1 / 5 min), {snap['cores']} cores, "
          f"own use {snap['own']:.2f} cores, other busy processes: {busy}", flush=True)


def verdict(start: dict, end: dict, rc: int = 0) -> int:
    """Print the verdict on two snapshots; the exit status the bench ends with."""
    bad, why = machine.contended(start, end)
    if not bad:
        print("machine quiet at both ends: timings are usable", flush=True)
        return rc
    if _State.allow:
        print(f"contended ({why}): --allow-contended given, so the numbers above are indicative only", flush=True)
        return rc
    print(f"CONTENDED: {why}; these timings are not usable (rerun on a quiet machine, or pass "
          "--allow-contended to keep them as indicative)", flush=True)
    return rc or EXIT_CONTENDED


def run(main: Callable[[], int | None]) -> int:
    """main() between two snapshots of the machine, then the verdict (see the module docstring)."""
    start = machine.snapshot(SAMPLE_S, exclude=_State.exclude)
    _show("start", start)
    t0, c0 = time.monotonic(), _own_cpu()
    rc = main() or 0
    wall = time.monotonic() - t0
    own = min(machine.cores(), (_own_cpu() - c0) / wall) if wall > 0 else 0.0
    end = machine.snapshot(SAMPLE_S, exclude=_State.exclude, own=own)
    _show("end", end)
    return verdict(start, end, rc)


def main() -> int:
    ap = argparse.ArgumentParser(description="Sample this machine for 1 s and say whether a timing taken "
                                 "now would be contended.")
    ap.add_argument("--check", action="store_true", help="sample and give the verdict (the default)")
    add_flag(ap)
    ap.parse_args()
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
