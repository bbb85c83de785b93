"""The benches' guard (bench/_guard.py) and the machine snapshots it judges (teachwhy.machine): a timing
taken while other work is busy is refused with a CONTENDED line and a non-zero exit, unless
--allow-contended."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from busy import busy
from teachwhy import machine

ROOT = Path(__file__).resolve().parents[1]
GUARD = ROOT / "bench" / "_guard.py"


def snap(load1=0.5, cores=2, own=0.0, busy=()):
    return {"load1": load1, "load5": load1, "cores": cores, "own": own,
            "busy": [{"pid": pid, "command": cmd, "cpu": cpu, "torch": torch} for pid, cmd, cpu, torch in busy]}


def test_a_quiet_machine_is_not_contended():
    assert machine.contended(snap(), snap(busy=[(7, "editor", 0.3, False)])) == (False, "")


@pytest.mark.parametrize("start, end, needle", [
    (snap(load1=2.5), snap(), "load average 2.50 at the start is above the 2 cores"),
    (snap(), snap(load1=4.1, own=2.0), "load average 4.10 at the end"),
    (snap(busy=[(42, "python train.py", 0.4, True)]), snap(), "another torch process is busy at the start (pid 42"),
    (snap(), snap(busy=[(5, "gcc", 0.3, False), (6, "ld", 0.3, False)]), "other processes use 0.6 cores at the end"),
], ids=["load-start", "load-end", "torch", "others"])
def test_contended_says_why(start, end, needle):
    bad, why = machine.contended(start, end)
    assert bad and needle in why, why


def test_our_own_load_is_not_counted():
    # a bench that kept both cores busy leaves load1 near 2 (plus a little) behind it
    assert machine.contended(snap(), snap(load1=2.4, own=1.9)) == (False, "")


def test_busy_between_leaves_out_this_process_and_excluded_ones():
    tick = os.sysconf("SC_CLK_TCK")
    parent = os.getppid()
    a = (0.0, {os.getpid(): 0, parent: 0, 1: 0})
    b = (1.0, {os.getpid(): tick, parent: tick, 1: tick // 10})
    seen = machine.busy_between(a, b)
    assert [p.pid for p in seen] == [parent] and seen[0].cpu == 1.0 and seen[0].command
    assert machine.busy_between(a, b, exclude={parent}) == []


def check(*flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(GUARD), "--check", *flags], capture_output=True, text=True,
                          env=env, timeout=120)


def _refused_then_allowed(pid: int, torch: bool) -> None:
    p = check()
    assert p.returncode != 0 and "\nCONTENDED: " in "\n" + p.stdout, p.stdout + p.stderr
    start = next(ln for ln in p.stdout.splitlines() if ln.startswith("machine at start"))
    seen = [part for part in start.split("; ") if f"pid {pid} " in part]
    assert seen and ("(torch)" in seen[0]) == torch, p.stdout
    p = check("--allow-contended")
    assert p.returncode == 0 and "CONTENDED" not in p.stdout and "indicative only" in p.stdout, p.stdout


def test_the_guard_refuses_a_busy_machine():
    with busy("plain") as loop:
        _refused_then_allowed(loop.pid, torch=False)


@pytest.mark.slow
def test_the_guard_names_a_busy_torch_process():
    with busy("torch") as loop:
        _refused_then_allowed(loop.pid, torch=True)
