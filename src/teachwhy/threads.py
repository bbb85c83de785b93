"""How many threads torch uses here, on a machine that other work may share.

- TEACHWHY_THREADS, when set to a positive number, wins (an experiment's Ray task sets it to its cell's
  num_cpus; set it yourself to opt out of the rest).
- Else, while k other torch processes are busy on this machine (this process's own children not
  counted), an equal share of the usable cores: cores // (k + 1), at least 1 (1 on a 2-core machine).
  Two torch processes that each take every core make both far slower than sharing the cores would
  (their threads wait on each other). One line on stderr says so.
- Else every usable core (machine.cores()).

A long eval calls a Recheck between scenarios: at most every RECHECK_S seconds it compares two cheap
/proc samples (no waiting) and moves to its share when another torch process got busy, back to every
core when it is gone.

With TEACHWHY_SHARED=1, idle OpenMP threads wait passively (teachwhy/__init__.py then sets
OMP_WAIT_POLICY=PASSIVE unless it is set; opt-in, as alone it cost a choice eval ~15%): torch's
OpenMP reads it once, when torch is first imported, so it has to be in the environment before that.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from teachwhy import machine

ENV = "TEACHWHY_THREADS"
RECHECK_S = 30.0
SAMPLE_S = 0.3  # how long a model load samples the other processes' CPU use

_announced: dict[str, int | None] = {"pid": None}  # the busy torch process last reported


def requested() -> int | None:
    """TEACHWHY_THREADS as a positive number, else None (unset or not a number: ignored)."""
    env = os.environ.get(ENV, "").strip()
    return int(env) if env.isdigit() and int(env) > 0 else None


def share(cores: int, others: int) -> int:
    """An equal share of `cores` among this process and `others` busy torch processes (at least 1)."""
    return max(1, cores // (others + 1))


def choose(busy: list[machine.Busy] | None = None) -> tuple[int, machine.Busy | None]:
    """(threads, the busiest other torch process that made it a share, if any). `busy`: the other
    processes seen (sampled now when None; not sampled at all when TEACHWHY_THREADS is set)."""
    n = requested()
    if n is not None:
        return n, None
    if busy is None:
        busy = machine.busy_processes(SAMPLE_S)
    others = [p for p in busy if p.torch]
    if not others:
        return machine.cores(), None
    return share(machine.cores(), len(others)), others[0]


def busy_line(p: machine.Busy, n: int = 1) -> str:
    return f"another torch process is busy ({p.describe()}): using {n} thread{'s' if n != 1 else ''}"


def _announce(n: int, other: machine.Busy | None, say: Callable[[str], None]) -> None:
    """One line when a busy torch process is first seen, and one when the cores are taken back."""
    if other is not None and _announced["pid"] != other.pid:
        say(busy_line(other, n))
    elif other is None and _announced["pid"] is not None and requested() is None:
        say(f"no other torch process is busy now: using {n} threads")
    _announced["pid"] = other.pid if other is not None else None


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def apply(busy: list[machine.Busy] | None = None, say: Callable[[str], None] = _stderr) -> int:
    """Set torch's threads by the policy above; returns the number."""
    import torch

    n, other = choose(busy)
    _announce(n, other, say)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


class Recheck:
    """Call between the scenarios of a long eval: every `every` seconds, applies the policy to what the
    other processes did since the last check (two /proc samples; nothing sleeps)."""

    def __init__(self, every: float = RECHECK_S, say: Callable[[str], None] = _stderr):
        self.every, self.say = every, say
        self.last = machine.sample() if requested() is None else None

    def __call__(self) -> None:
        if self.last is None or time.monotonic() - self.last[0] < self.every:
            return
        now = machine.sample()
        busy = machine.busy_between(self.last, now)
        self.last = now
        apply(busy, self.say)
