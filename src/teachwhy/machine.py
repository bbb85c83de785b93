"""What else is running on this machine: usable cores, other busy processes, and whether a timing taken
now can be trusted.

Read from /proc (Linux only; elsewhere no process is ever seen busy). Nothing here imports torch: a
process "is a torch process" when its memory map names libtorch.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PROC = Path("/proc")
LOAD_SLACK = 0.0  # load1 above cores (after our own share) counts as contended
OTHERS_MAX = 0.5  # cores' worth of other busy processes together that counts as contended


def cores() -> int:
    """The cores this process may run on (its CPU affinity), else every core of the machine."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Busy:
    """Another process that used at least some CPU over a sampling interval."""

    pid: int
    command: str
    cpu: float  # cores' worth over the interval
    torch: bool

    def describe(self) -> str:
        return f"pid {self.pid}, {self.command}, {self.cpu:.1f} cores"


def _stat(pid: int | str, *fields: int) -> list[int] | None:
    """Numeric fields of /proc/<pid>/stat, counted from its state field after the command's closing
    parenthesis (0: state, 1: ppid, 11: utime, 12: stime); None when it is gone or unreadable."""
    try:
        rest = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        return [int(rest[f]) for f in fields]
    except (OSError, ValueError, IndexError):
        return None


def _ticks(pid: str) -> int | None:
    """utime + stime of one process, in clock ticks; None when it is gone or unreadable."""
    got = _stat(pid, 11, 12)
    return None if got is None else got[0] + got[1]


def sample() -> tuple[float, dict[int, int]]:
    """(time, {pid: CPU ticks so far}) for every process; an empty dict off Linux."""
    now = time.monotonic()
    if not PROC.is_dir():
        return now, {}
    out = {}
    for entry in os.listdir(PROC):
        if entry.isdigit():
            t = _ticks(entry)
            if t is not None:
                out[int(entry)] = t
    return now, out


def _command(pid: int) -> str:
    """A short command line: the program's name and its first arguments."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        raw = b""
    parts = [p.decode(errors="replace") for p in raw.split(b"\0") if p]
    if not parts:
        try:
            return (PROC / str(pid) / "comm").read_text().strip()
        except OSError:
            return "?"
    text = " ".join(" ".join([os.path.basename(parts[0]), *parts[1:]]).split())  # one line
    return text if len(text) <= 60 else text[:57] + "..."


def is_torch(pid: int) -> bool:
    """Whether a process has libtorch loaded (its memory map names it)."""
    try:
        with open(PROC / str(pid) / "maps") as f:
            return any("libtorch" in line for line in f)
    except OSError:
        return False


def _own_ids() -> set[int]:
    """This process and its threads."""
    try:
        return {os.getpid(), *(int(t) for t in os.listdir(PROC / "self" / "task"))}
    except OSError:
        return {os.getpid()}


def parent(pid: int) -> int | None:
    """A process's parent pid; None when it is gone or unreadable."""
    got = _stat(pid, 1)
    return None if got is None else got[0]


def is_descendant(pid: int, ancestor: int | None = None) -> bool:
    """Whether `pid` descends from `ancestor` (this process by default), following parent pids."""
    ancestor = os.getpid() if ancestor is None else ancestor
    seen: set[int] = set()
    p = parent(pid)
    while p and p not in seen:
        if p == ancestor:
            return True
        seen.add(p)
        p = parent(p)
    return False


def busy_between(a: tuple[float, dict[int, int]], b: tuple[float, dict[int, int]], min_cpu: float = 0.3,
                 exclude: set[int] | frozenset[int] | None = None) -> list[Busy]:
    """Processes other than this one, its own children and grandchildren (and `exclude`) that used at
    least `min_cpu` cores between two samples, busiest first."""
    wall = b[0] - a[0]
    if wall <= 0:
        return []
    skip = _own_ids() | set(exclude or ())
    tick = os.sysconf("SC_CLK_TCK")
    out = []
    for pid, t1 in b[1].items():
        t0 = a[1].get(pid)
        if pid in skip or t0 is None:
            continue
        cpu = (t1 - t0) / tick / wall
        if cpu >= min_cpu and not is_descendant(pid):
            out.append(Busy(pid, _command(pid), round(cpu, 2), is_torch(pid)))
    return sorted(out, key=lambda p: -p.cpu)


def busy_processes(interval: float = 0.5, min_cpu: float = 0.3,
                   exclude: set[int] | frozenset[int] | None = None) -> list[Busy]:
    """Other processes that use at least `min_cpu` cores over `interval` seconds (this one, its threads,
    its descendants and `exclude` left out); [] where there is no /proc."""
    a = sample()
    if not a[1]:
        return []
    time.sleep(interval)
    return busy_between(a, sample(), min_cpu, exclude)


def snapshot(interval: float = 0.5, exclude: set[int] | frozenset[int] | None = None,
             own: float = 0.0) -> dict[str, Any]:
    """load1, load5, cores and the other busy processes (as dicts). `own`: cores' worth this process
    and its children used lately, which load1 includes (contended() takes it off)."""
    busy = busy_processes(interval, exclude=exclude)
    try:
        load1, load5, _ = os.getloadavg()
    except OSError:
        load1 = load5 = 0.0
    return {"load1": round(load1, 2), "load5": round(load5, 2), "cores": cores(), "own": round(own, 2),
            "busy": [asdict(p) for p in busy]}


def contended(start: dict[str, Any], end: dict[str, Any]) -> tuple[bool, str]:
    """Whether a timing taken between two snapshots is contended, and why ("" when it is not): the load
    average (less our own share) above the cores at either end, another busy torch process, or other
    busy processes using more than OTHERS_MAX cores together."""
    for when, snap in (("start", start), ("end", end)):
        load = snap["load1"] - snap.get("own", 0.0)
        if load > snap["cores"] + LOAD_SLACK:
            return True, f"load average {snap['load1']:.2f} at the {when} is above the {snap['cores']} cores"
        torch = [p for p in snap["busy"] if p["torch"]]
        if torch:
            p = torch[0]
            return True, (f"another torch process is busy at the {when} (pid {p['pid']}, {p['command']}, "
                          f"{p['cpu']:.1f} cores)")
        others = sum(p["cpu"] for p in snap["busy"])
        if others > OTHERS_MAX:
            names = ", ".join(f"pid {p['pid']} {p['command']}" for p in snap["busy"][:3])
            return True, f"other processes use {others:.1f} cores at the {when} ({names})"
    return False, ""
