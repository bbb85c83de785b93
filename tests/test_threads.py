"""The thread policy for shared machines (teachwhy/threads.py): TEACHWHY_THREADS wins, else a share of the
cores while other torch processes are busy (1 on 2 cores; said in one line on stderr; this process's own
children not counted), else every usable core; long evals re-check."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from busy import busy
from cliutil import run_cli
from teachwhy import machine, threads

ROOT = Path(__file__).resolve().parents[1]
OTHER = machine.Busy(4242, "python train.py", 1.0, True)
PLAIN = machine.Busy(77, "gcc x.c", 0.9, False)


@pytest.fixture
def fresh(monkeypatch):
    """No TEACHWHY_THREADS, nothing announced yet, torch's threads put back afterwards."""
    import torch

    monkeypatch.delenv("TEACHWHY_THREADS", raising=False)
    monkeypatch.setitem(threads._announced, "pid", None)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_teachwhy_threads_wins_without_sampling(fresh, monkeypatch):
    monkeypatch.setenv("TEACHWHY_THREADS", "3")
    monkeypatch.setattr(machine, "busy_processes", lambda *_a, **_k: pytest.fail("sampled"))
    assert threads.choose() == (3, None)
    assert threads.choose([OTHER]) == (3, None)


def test_a_busy_torch_process_means_one_thread_on_two_cores(fresh, monkeypatch):
    monkeypatch.setattr(machine, "cores", lambda: 2)
    assert threads.choose([PLAIN, OTHER]) == (1, OTHER)
    assert threads.choose([PLAIN]) == (machine.cores(), None)
    assert threads.choose([]) == (machine.cores(), None)


def test_on_a_larger_machine_the_busy_processes_share_the_cores(fresh, monkeypatch):
    second = machine.Busy(4343, "python eval.py", 2.0, True)
    monkeypatch.setattr(machine, "cores", lambda: 16)
    assert threads.choose([OTHER]) == (8, OTHER)
    assert threads.choose([OTHER, PLAIN, second]) == (5, OTHER)
    monkeypatch.setattr(machine, "cores", lambda: 2)
    assert threads.choose([OTHER, second]) == (1, OTHER)
    said: list[str] = []
    monkeypatch.setattr(machine, "cores", lambda: 16)
    threads.apply([OTHER], said.append)
    assert said == ["another torch process is busy (pid 4242, python train.py, 1.0 cores): using 8 threads"]


def test_own_children_are_not_other_processes():
    """A busy child of this process (a data loader worker, a subprocess it waits on) is its own work."""
    with busy("plain") as child:
        assert machine.is_descendant(child.pid)
        assert not machine.is_descendant(os.getppid())
        seen = machine.busy_processes(0.5)
        assert child.pid not in [p.pid for p in seen]
        # the same loop, seen from another process (a sibling, as a CLI run beside it would be), is busy
        code = ("from teachwhy import machine; import sys; "
                "print(int(sys.argv[1]) in [p.pid for p in machine.busy_processes(0.5)])")
        out = subprocess.run([sys.executable, "-c", code, str(child.pid)], capture_output=True, text=True)
        assert out.stdout.strip() == "True", out.stderr


def test_apply_says_so_once_and_takes_the_cores_back(fresh, monkeypatch):
    import torch

    monkeypatch.setattr(machine, "cores", lambda: 2)

    said: list[str] = []
    assert threads.apply([OTHER], said.append) == 1 and torch.get_num_threads() == 1
    assert threads.apply([OTHER], said.append) == 1  # the same process: not said again
    assert said == ["another torch process is busy (pid 4242, python train.py, 1.0 cores): using 1 thread"]
    assert threads.apply([], said.append) == machine.cores() == torch.get_num_threads()
    assert said[1:] == [f"no other torch process is busy now: using {machine.cores()} threads"]


def test_recheck_waits_its_interval_then_follows_the_others(fresh, monkeypatch):
    samples = iter(range(100))
    monkeypatch.setattr(machine, "sample", lambda: (time.monotonic(), {"n": next(samples)}))
    seen = {"busy": [OTHER]}
    monkeypatch.setattr(machine, "busy_between", lambda a, b: seen["busy"])
    applied: list[int] = []
    monkeypatch.setattr(threads, "apply", lambda busy, say: applied.append(len(busy)))
    check = threads.Recheck(every=0.05)
    check()
    assert applied == []  # too soon
    time.sleep(0.06)
    check()
    assert applied == [1]
    seen["busy"] = []
    time.sleep(0.06)
    check()
    assert applied == [1, 0]


def test_recheck_does_nothing_under_teachwhy_threads(fresh, monkeypatch):
    monkeypatch.setenv("TEACHWHY_THREADS", "2")
    monkeypatch.setattr(machine, "sample", lambda: pytest.fail("sampled"))
    threads.Recheck(every=0)()


def _omp_policy(env: dict) -> str:
    code = "import os, teachwhy; print(os.environ.get('OMP_WAIT_POLICY'))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**env, "PYTHONPATH": str(ROOT / "src")}).stdout.strip()


def test_importing_teachwhy_asks_for_a_passive_openmp_wait_on_a_shared_machine():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "TEACHWHY_SHARED")}
    assert _omp_policy(env) == "None"  # alone: OpenMP's own default
    assert _omp_policy({**env, "TEACHWHY_SHARED": "1"}) == "PASSIVE"
    assert _omp_policy({**env, "TEACHWHY_SHARED": "1", "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"  # kept


SPIN = """
import os, sys, time
if sys.argv[1] == "teachwhy":
    import teachwhy
import torch
torch.set_num_threads(2)
x = torch.randn(400_000)
c0 = time.process_time()
for _ in range(200):
    x.exp()  # a parallel region, then the threads idle
    time.sleep(0.002)
print(time.process_time() - c0)
"""


@pytest.mark.slow
def test_the_passive_wait_takes_effect(tmp_path):
    """teachwhy is imported before torch: idle OpenMP threads sleep instead of spinning between parallel
    regions, so the process uses far less CPU than with OMP_WAIT_POLICY=ACTIVE."""
    script = tmp_path / "spin.py"
    script.write_text(SPIN)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = str(ROOT / "src")

    def cpu(how: str, extra: dict) -> float:
        out = subprocess.run([sys.executable, str(script), how], capture_output=True, text=True, check=True,
                             env={**env, **extra}, timeout=300).stdout
        return float(out.strip())

    active = cpu("torch", {"OMP_WAIT_POLICY": "ACTIVE"})
    passive = cpu("teachwhy", {"TEACHWHY_SHARED": "1"})
    assert passive < 0.6 * active, (passive, active)


@pytest.mark.slow
def test_an_eval_beside_a_busy_torch_process_uses_one_thread(tiny, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TEACHWHY_THREADS"}  # conftest sets it under -n
    with busy("torch"):
        p = run_cli("eval", "--model", tiny, "--limit", "1", "--dtype", "float32", "--out", str(tmp_path),
                    env={**env, "TEACHWHY_THREADS": ""})
    assert p.returncode == 0, p.stderr
    # the busiest other torch process is named: ours, or one already running on a shared machine
    line = next(ln for ln in p.stderr.splitlines() if ln.startswith("another torch process is busy (pid "))
    assert line.endswith("): using 1 thread"), p.stderr
