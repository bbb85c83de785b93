"""Run an experiment's cells as Ray tasks: `teachwhy experiment run SPEC --ray [--ray-address ADDR]`.

One cell is one task. A task asks the cluster for its stage's `resources` from the spec (`sft`, `rl`,
`eval` for the base and prompting arms, `sft` for the controls cell, which trains; by default 1 CPU and no
GPU) and sets torch's threads to its
num_cpus. On a cluster whose nodes are all this machine, cells start only while the threads of the cells
running stay within its usable cores (a cell's num_cpus may be a fraction, its threads are at least 1).
This process, the driver, writes the cell files exactly as the serial runner does: .running
when a cell is submitted, .json or .failed when its task returns; so `teachwhy experiment status`, a
resumed run (with or without --ray) and the analysis work unchanged. A UserError in a task becomes the
cell's .failed line; a worker or node that dies fails its cell the same way (a rerun retries it).

Cells that would write the same files wait for each other, in plan order: a cell waits while an earlier
cell is queued or running that builds the same data set (until its card.json exists), continues the
same SFT run (an RL cell waits for its SFT cell), or evaluates the same model with the same prompt.
Everything else runs as soon as the cluster has room for it.

Workers read and write the experiment's files directly and run in the driver's working directory (the
spec's relative paths mean the same there). On a cluster of several machines, that directory, `out`
and TEACHWHY_HOME (the model cache) must be on storage that every node mounts at the same path. The
driver's HF_*, HUGGINGFACE_*, TRANSFORMERS_*, TOKENIZERS_* and TEACHWHY_* variables are set on the
workers (Ray runtime_env env_vars); API keys are not sent: set them where the nodes were started.

Ray is an optional dependency (`pip install 'teachwhy[ray]'`), imported only here, inside functions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from teachwhy import machine
from teachwhy.errors import UserError
from teachwhy.experiments.runner import (
    Cell,
    cell_file,
    cell_state,
    data_dirs,
    mark_done,
    mark_failed,
    mark_running,
    plan,
    prepare,
    run_cell,
)
from teachwhy.experiments.spec import ExperimentSpec, Resources
from teachwhy.store import atomic_write_json, versions

FORWARD_ENV = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TOKENIZERS_", "TEACHWHY_")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray, which is not installed here: pip install 'teachwhy[ray]'") from None
    return ray


def forwarded_env() -> dict[str, str]:
    """The driver's variables that the workers get (TEACHWHY_THREADS is set per task instead)."""
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARD_ENV) and k != "TEACHWHY_THREADS"}


def cell_resources(spec: ExperimentSpec, cell: Cell) -> Resources:
    return {"sft": spec.resources.sft, "rl": spec.resources.rl,
            "controls": spec.resources.sft}.get(cell.stage, spec.resources.eval)


def _keys(spec: ExperimentSpec, cell: Cell, exp: Path) -> set[str]:
    """What this cell may write that another cell may be writing too (see the module docstring)."""
    if cell.stage == "none":
        return {f"eval:{cell.arm.prompt}"}
    if cell.stage == "controls":
        return {"controls"}
    keys = {f"sft:{cell.arm.name}:{cell.budget}:{cell.seed}"}
    return keys | {f"data:{d}" for d in data_dirs(spec, cell.arm, cell.seed, exp) if not (d / "card.json").is_file()}


def _cell_task(spec: ExperimentSpec, cell: Cell, exp: str, cwd: str, threads: int) -> dict:
    """The body of one Ray task: the cell's record, or an exception (a UserError fails the cell)."""
    try:
        os.chdir(cwd)
    except OSError:
        raise UserError(f"the driver's working directory {cwd} is not on this Ray node: run the experiment "
                        "from storage that every node mounts at the same path") from None
    os.environ["TEACHWHY_THREADS"] = str(threads)  # models.set_torch_threads keeps to it
    import torch

    torch.set_num_threads(threads)
    return run_cell(spec, cell, Path(exp))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _reachable(address: str) -> None:
    """A HOST:PORT that nothing answers on fails here in a second, not after Ray's minutes of retries."""
    host, _, port = address.rpartition(":")
    if address.startswith("ray://") or not host or not port.isdigit():
        return  # Ray client addresses, "auto", "local": Ray's own checks
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as e:
        raise UserError(f"cannot reach a Ray cluster at {address} ({e.strerror or e}): start one there with "
                        "`ray start --head`, or check the address (`ray status` on the head node prints it)") from None


def _connect(ray: Any, address: str | None) -> bool:
    """Attach to (or, with no address and none running here, start) a cluster; True if we did."""
    if ray.is_initialized():  # a caller's own ray.init(): use it as it is, leave it up
        return False
    if address:
        _reachable(address)
    try:
        ray.init(address=address, runtime_env={"env_vars": forwarded_env()}, logging_level=logging.WARNING,
                 log_to_driver=False)
    except Exception as e:  # Ray raises ConnectionError, RuntimeError, ValueError... with long texts
        where = f"at {address}" if address else "on this machine"
        raise UserError(f"cannot start or reach a Ray cluster {where} ({type(e).__name__}: {_first_line(e)}); "
                        "check the address (`ray status` on the head node prints it)") from None
    return True


OnCell = Callable[[Cell, str, dict], None]
Pending = dict[Any, tuple[Cell, set[str], float]]  # task ref -> (cell, its keys, when submitted)


def run_experiment_ray(spec: ExperimentSpec, address: str | None = None,
                       on_cell: OnCell | None = None,
                       log: Callable[[str], None] = lambda _m: None, keep_going: bool = True) -> dict:
    """Like runner.run_experiment, with every cell not done yet run as a Ray task (see the module
    docstring). `address`: a cluster to attach to; None: Ray's own choice (RAY_ADDRESS, a cluster
    started on this machine with `ray start`, else a new local one for the length of the run)."""
    ray = import_ray()
    exp = prepare(spec).resolve()
    atomic_write_json(exp / "versions.json", versions())
    todo = _todo(spec, exp, on_cell)
    failed: list[tuple[str, str]] = []
    if not todo:
        return {"dir": str(exp), "failed": failed}
    from teachwhy import models

    ref = models.resolve(spec.model)
    if ref.kind == "embedded":  # build the model cache once here, not in several tasks at once
        models.prepare_embedded(ref.spec)

    started = _connect(ray, address)
    budget = _local_cores(ray)
    task = ray.remote(max_retries=0)(_cell_task)
    cwd = os.getcwd()
    pending: Pending = {}
    try:
        waiting = todo
        while waiting or pending:
            waiting = _submit(spec, exp, task, cwd, waiting, pending, on_cell, log, budget)
            if not pending:  # cannot happen (with nothing running, the first waiting cell goes)
                break
            ready, _ = ray.wait(list(pending), num_returns=1)
            _collect(ray, exp, ready, pending, failed, on_cell, log, keep_going)
    finally:
        _stop(ray, exp, pending, started)
    return {"dir": str(exp), "failed": failed}


def _todo(spec: ExperimentSpec, exp: Path, on_cell: OnCell | None) -> list[Cell]:
    """The plan's cells not done yet, in plan order (the done ones are reported as skipped)."""
    todo = []
    for cell in plan(spec):
        if cell_state(exp, cell) == "done":
            if on_cell:
                on_cell(cell, "skipped", {})
        else:
            todo.append(cell)
    return todo


def _local_cores(ray: Any) -> int | None:
    """This machine's usable cores when every node of the cluster is this machine, else None."""
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive", True)]
    except Exception:  # a fake or older Ray: no budget, Ray's own scheduling only
        return None
    here = socket.gethostname()
    if nodes and all(n.get("NodeManagerHostname") == here for n in nodes):
        return machine.cores()
    return None


def _threads(spec: ExperimentSpec, cell: Cell, budget: int | None) -> int:
    """A cell's torch threads: its num_cpus (at least 1), at most the budget."""
    n = max(1, int(cell_resources(spec, cell).num_cpus))
    return min(n, budget) if budget else n


def _submit(spec: ExperimentSpec, exp: Path, task: Any, cwd: str, waiting: list[Cell], pending: Pending,
            on_cell: OnCell | None, log: Callable[[str], None], budget: int | None = None) -> list[Cell]:
    """Submit every waiting cell whose files no earlier cell is writing and, with a budget (this
    machine's cores), whose threads fit beside the running cells'; returns the cells left waiting."""
    busy: set[str] = set().union(*(k for _c, k, _t in pending.values()))
    used = sum(_threads(spec, c, budget) for c, _k, _t in pending.values())
    later = []
    for cell in waiting:
        keys = _keys(spec, cell, exp)
        threads = _threads(spec, cell, budget)
        if keys & busy or (budget and used + threads > budget):
            later.append(cell)
        else:
            r = cell_resources(spec, cell)
            used += threads
            obj = task.options(num_cpus=r.num_cpus, num_gpus=r.num_gpus,
                               name=f"teachwhy {cell.cell_id}").remote(spec, cell, str(exp), cwd, threads)
            pending[obj] = (cell, keys, time.time())
            mark_running(exp, cell)
            if on_cell:
                on_cell(cell, "running", {})
            log(f"submitted {cell.cell_id} ({r.num_cpus:g} CPU, {r.num_gpus:g} GPU, {threads} threads)")
        busy |= keys  # a later cell with the same keys waits behind this one
    return later


def _collect(ray: Any, exp: Path, ready: list, pending: Pending, failed: list[tuple[str, str]],
             on_cell: OnCell | None, log: Callable[[str], None], keep_going: bool) -> None:
    """Write the cell files of the finished tasks: .json when done, .failed (and an entry in `failed`)
    when not; without keep_going, a failed cell stops the run."""
    for obj in ready:
        cell, _k, t0 = pending.pop(obj)
        rec, error = _result(ray, obj, cell)
        if error is not None:
            mark_failed(exp, cell, error)
            failed.append((cell.cell_id, error))
            if on_cell:
                on_cell(cell, "failed", {"error": error})
            if not keep_going:
                raise UserError(error)
            continue
        mark_done(exp, cell, rec)
        log(f"{cell.cell_id} done in {time.time() - t0:.0f} s")
        if on_cell:
            on_cell(cell, "done", rec)


def _result(ray: Any, obj: Any, cell: Cell) -> tuple[Any, str | None]:
    """A finished task's record, or the line its cell fails with; a task that raised anything other than
    a UserError is a bug and raises here, as in the serial runner, with the task's traceback."""
    try:
        return ray.get(obj), None
    except ray.exceptions.RayTaskError as e:
        if not isinstance(e.cause, UserError):
            raise
        return None, str(e.cause)
    except ray.exceptions.RayError as e:  # the worker or its node died, or the task was cancelled
        return None, (f"the Ray task of cell {cell.cell_id} did not finish ({type(e).__name__}: "
                      f"{_first_line(e)}); rerun to retry it")


def _stop(ray: Any, exp: Path, pending: Pending, started: bool) -> None:
    """Stopped early: nothing is left running for us; shut down a cluster this run started."""
    for obj, (cell, _k, _t) in pending.items():
        with contextlib.suppress(Exception):  # already finished, or the cluster is gone
            ray.cancel(obj, force=True)
        cell_file(exp, cell, ".running").unlink(missing_ok=True)
    if started:
        ray.shutdown()
