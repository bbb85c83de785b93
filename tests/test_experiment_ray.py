"""`teachwhy experiment run --ray`: a tiny grid (base, a prompting arm, an SFT arm) run as Ray tasks on a
local 2-CPU cluster on 127.0.0.1 gives the same cells and the same per-scenario decisions and P(harmful)
as the same spec run serially (on the tiny model: the scheduling and the numerics' agreement are under
test, not the numbers); Ray missing is one error line; `resources` is validated."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cliutil import one_error_line, run_cli
from teachwhy.errors import UserError
from teachwhy.experiments.spec import load_experiment

NAME = "tiny-ray"
SPEC = {"name": NAME, "arms": [{"name": "why-first", "prompt": "why_first"},
                               {"name": "demonstration", "data": [{"kind": "demonstration"}]}],
        "budgets": [1500], "evals": [{"name": "honeypots", "limit": 2}],
        "resources": {"sft": {"num_cpus": 1, "num_gpus": 0}, "eval": {"num_cpus": 1}}}

# Started in its own process, which owns the cluster: closing its stdin shuts the cluster down (only the
# processes it started). Ray resolves 127.0.0.1 to the machine's routable address unless its single-node
# switch RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is set; token auth is off for a loopback-only test cluster.
CLUSTER = """
import sys, ray
ctx = ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
               object_store_memory=100 * 1024**2, logging_level="WARNING")
print(ctx.address_info["gcs_address"], flush=True)
sys.stdin.read()
ray.shutdown()
"""
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}


def _write(tmp_path: Path, name: str, **over) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**SPEC, **over}))
    return path


def _results(out: Path) -> dict:
    """(cell, eval, scenario, format, variant) -> every decision (top, harmful_choice) and P(harmful)
    in the eval's samples, by their place in the record."""
    found: dict = {}

    def walk(x, path: str, into: dict) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                if k in ("top", "harmful_choice", "p_harmful"):
                    into[f"{path}.{k}"] = v
                else:
                    walk(v, f"{path}.{k}", into)
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, f"{path}[{i}]", into)

    for f in sorted((out / "experiments" / NAME / "cells").glob("*.json")):
        rec = json.loads(f.read_text())
        assert rec["status"] == "done"
        for ev_name, ev in rec["evals"].items():
            for line in (Path(ev["run_dir"]) / "samples.jsonl").read_text().splitlines():
                r = json.loads(line)
                into: dict = {}
                walk(r, "", into)
                found[(f.stem, ev_name, r["scenario_id"], r.get("format"), r.get("variant"))] = into
    return found


@pytest.mark.slow
def test_ray_cells_match_a_serial_run(tmp_path, tiny):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **RAY_ENV)
    cluster = subprocess.Popen([sys.executable, "-c", CLUSTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, env=env)
    try:
        address = cluster.stdout.readline().strip()  # type: ignore[union-attr]
        assert address.startswith("127.0.0.1:"), (address, cluster.poll())
        t0 = time.time()
        p = run_cli("experiment", "run", str(_write(tmp_path, "ray", model=tiny, out=str(tmp_path / "ray"))),
                    "--no-report", "--ray-address", address, env=RAY_ENV)
        ray_s = time.time() - t0
        assert p.returncode == 0, p.stderr

        # a UserError in a task fails its cell with that one line (here the only cell: the run fails)
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({"name": "bad", "arms": [], "out": str(tmp_path / "bad"),
                                       "evals": [{"scenario_files": [str(tmp_path / "missing.yaml")]}]}))
        f = run_cli("experiment", "run", str(bad), "--no-report", "--ray-address", address, env=RAY_ENV)
        line = f.stderr.strip().splitlines()[-1]
        assert f.returncode == 2 and "Traceback" not in f.stderr, f.stderr
        assert line.startswith("error: every cell failed") and "missing.yaml" in line, f.stderr
        failed = (tmp_path / "bad" / "experiments" / "bad" / "cells" / "base.failed").read_text()
        assert failed.count("\n") == 1 and failed.strip() in line
    finally:
        cluster.stdin.close()  # type: ignore[union-attr]
        try:
            cluster.wait(60)
        except subprocess.TimeoutExpired:
            cluster.kill()
            cluster.wait()
    cells = tmp_path / "ray" / "experiments" / NAME / "cells"
    assert sorted(c.name for c in cells.iterdir()) == ["base.json", "demonstration-b1500-s0-sft.json",
                                                       "why-first.json"]
    # every run (SFT, evals) was written by a Ray worker, and by more than one: cells ran side by side
    holders = [(d / ".lock").read_text().splitlines() for d in (tmp_path / "ray").iterdir() if (d / ".lock").is_file()]
    assert len(holders) == 4 and all("default_worker.py" in h[1] for h in holders), holders
    assert len({h[0] for h in holders}) == 2, holders
    # every task ran on 1 thread (its num_cpus); the serial run does the same, so the numerics match
    t0 = time.time()
    s = run_cli("experiment", "run", str(_write(tmp_path, "serial", model=tiny, out=str(tmp_path / "serial"))),
                "--no-report", env={"TEACHWHY_THREADS": "1"})
    serial_s = time.time() - t0
    assert s.returncode == 0, s.stderr
    print(f"ray {ray_s:.0f} s, serial {serial_s:.0f} s")

    got, want = _results(tmp_path / "ray"), _results(tmp_path / "serial")
    assert sorted(got) == sorted(want) and len(want) == 6  # 3 cells x 2 scenarios
    for key, w in want.items():
        g = got[key]
        assert sorted(g) == sorted(w), key
        for field, v in w.items():
            if field.endswith("p_harmful"):
                assert g[field] == pytest.approx(v, abs=1e-6), (key, field)
            else:
                assert g[field] == v, (key, field)
    st = json.loads(run_cli("experiment", "status", str(tmp_path / "ray.yaml"), "--json").stdout)
    assert st["done"] == st["total"] == 3


@pytest.mark.slow
def test_ray_missing_or_unreachable_is_one_line(tmp_path):
    fake = tmp_path / "fake" / "ray"  # a stand-in package that fails to import, to inject the fault
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no ray here (test stand-in)')\n")
    spec = _write(tmp_path, "missing", out=str(tmp_path / "runs"))
    for flags in (["--ray"], ["--ray-address", "127.0.0.1:1"]):
        p = run_cli("experiment", "run", str(spec), *flags, env={"PYTHONPATH": str(tmp_path / "fake")})
        one_error_line(p, "pip install 'teachwhy[ray]'")
    assert not (tmp_path / "runs").exists()  # refused before any work
    # with Ray there, an address that nothing answers on is one line too, at once
    p = run_cli("experiment", "run", str(spec), "--ray-address", "127.0.0.1:1", timeout=60)
    one_error_line(p, "cannot reach a Ray cluster at 127.0.0.1:1")


def test_resources_are_validated(tmp_path):
    spec = load_experiment(str(_write(tmp_path, "ok", resources={"sft": {"num_cpus": 2, "num_gpus": 0.5}})))
    assert (spec.resources.sft.num_cpus, spec.resources.sft.num_gpus) == (2, 0.5)
    assert (spec.resources.eval.num_cpus, spec.resources.eval.num_gpus) == (1, 0)  # the defaults
    for resources, needle in (({"sft": {"num_cpus": 0}}, "'resources.sft.num_cpus': must be more than 0"),
                              ({"rl": {"num_gpus": -1}}, "'resources.rl.num_gpus': must be 0 or more"),
                              ({"train": {"num_cpus": 1}}, "'resources.train': unknown key"),
                              ({"eval": {"cpus": 1}}, "'resources.eval.cpus': unknown key")):
        with pytest.raises(UserError) as e:
            load_experiment(str(_write(tmp_path, "bad", resources=resources)))
        assert needle in str(e.value) and "\n" not in str(e.value)


def test_torch_threads_follow_teachwhy_threads(monkeypatch):
    import torch

    from teachwhy import machine
    from teachwhy.models import set_torch_threads

    monkeypatch.setattr(machine, "busy_processes", lambda *_a, **_k: [])  # no other torch process here

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("TEACHWHY_THREADS", "1")
        set_torch_threads()
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("TEACHWHY_THREADS", "not a number")  # ignored: every core
        set_torch_threads()
        assert torch.get_num_threads() == machine.cores()
    finally:
        torch.set_num_threads(before)


class _FakeRay:
    """Ray's API as distributed.py uses it, run in this process: a task runs when the driver waits on
    it (the oldest first), so the test sees what was in flight at every submission."""

    class exceptions:
        class RayError(Exception):
            pass

        class RayTaskError(RayError):
            def __init__(self, cause):
                super().__init__(str(cause))
                self.cause = cause

    def __init__(self, body):
        self.body, self.inflight, self.submitted = body, [], []

    def is_initialized(self):
        return True  # a caller's cluster: used as it is

    def remote(self, **_kw):
        fake = self

        class Task:
            def options(self, **opts):
                class Bound:
                    def remote(self, spec, cell, exp, cwd, threads):
                        ref = {"cell": cell, "exp": exp, "opts": opts, "threads": threads}
                        fake.submitted.append((cell.cell_id, [r["cell"].cell_id for r in fake.inflight], opts))
                        fake.inflight.append(ref)
                        return len(fake.submitted) - 1

                return Bound()

        return lambda _fn: Task()

    def wait(self, refs, num_returns=1):
        return [min(refs)], sorted(refs)[1:]

    def get(self, i):
        ref = next(r for r in self.inflight if self.submitted[i][0] == r["cell"].cell_id)
        self.inflight.remove(ref)
        return self.body(ref)

    def cancel(self, *_a, **_k):
        pass


def test_scheduler_orders_dependent_cells_and_writes_cell_files(tmp_path, monkeypatch):
    from teachwhy import models
    from teachwhy.experiments import distributed
    from teachwhy.experiments.runner import data_dirs

    spec = load_experiment(str(_write(tmp_path, "grid", out=str(tmp_path / "runs"), budgets=[1000, 2000],
                                      arms=[*SPEC["arms"], {"name": "fiction", "data": [{"kind": "fiction"}]}],
                                      rl={"arms": ["demonstration"], "steps": 1},
                                      resources={"sft": {"num_cpus": 2.5}, "rl": {"num_cpus": 1, "num_gpus": 1}})))

    def body(ref):  # a cell "runs": its data sets get built; one cell fails
        cell = ref["cell"]
        if cell.stage != "none":
            for d in data_dirs(spec, cell.arm, cell.seed, Path(ref["exp"])):
                d.mkdir(parents=True, exist_ok=True)
                (d / "card.json").write_text("{}")
        if cell.cell_id == "fiction-b2000-s0-sft":
            raise _FakeRay.exceptions.RayTaskError(UserError("the teacher gave up"))
        assert Path(ref["exp"], "cells", f"{cell.cell_id}.running").is_file()
        return {"cell_id": cell.cell_id, "status": "done"}

    fake = _FakeRay(body)
    monkeypatch.setattr(distributed, "import_ray", lambda: fake)
    monkeypatch.setattr(models, "prepare_embedded", lambda *_a, **_k: None)
    seen = []
    res = distributed.run_experiment_ray(spec, on_cell=lambda c, state, _i: seen.append((c.cell_id, state)))

    order = [s[0] for s in fake.submitted]
    inflight = {s[0]: s[1] for s in fake.submitted}
    opts = {s[0]: s[2] for s in fake.submitted}
    # first wave: everything but the cells that wait on a data set being built or on their SFT cell
    assert order[:4] == ["base", "why-first", "demonstration-b1000-s0-sft", "fiction-b1000-s0-sft"]
    assert sorted(order) == sorted(c for c, state in seen if state == "running") and len(order) == 8
    for rl, sft in (("demonstration-b1000-s0-rl", "demonstration-b1000-s0-sft"),
                    ("demonstration-b2000-s0-rl", "demonstration-b2000-s0-sft")):
        assert order.index(rl) > order.index(sft) and sft not in inflight[rl]
    assert "demonstration-b1000-s0-sft" not in inflight["demonstration-b2000-s0-sft"]  # its data set
    assert opts["base"] == {"num_cpus": 1, "num_gpus": 0, "name": "teachwhy base"}
    assert opts["fiction-b1000-s0-sft"]["num_cpus"] == 2.5
    assert opts["demonstration-b1000-s0-rl"]["num_gpus"] == 1

    cells = tmp_path / "runs" / "experiments" / NAME / "cells"
    assert res["failed"] == [("fiction-b2000-s0-sft", "the teacher gave up")]
    assert (cells / "fiction-b2000-s0-sft.failed").read_text() == "the teacher gave up\n"
    assert len(list(cells.glob("*.json"))) == 7 and not list(cells.glob("*.running"))
    # a rerun submits only the failed cell
    fake.submitted.clear()
    distributed.run_experiment_ray(spec)
    assert [s[0] for s in fake.submitted] == ["fiction-b2000-s0-sft"]


class _LocalFakeRay(_FakeRay):
    """The fake cluster, its one node this machine."""

    def nodes(self):
        import socket

        return [{"Alive": True, "NodeManagerHostname": socket.gethostname()}]


def test_a_local_cluster_runs_no_more_threads_than_cores(tmp_path, monkeypatch):
    from teachwhy import machine, models
    from teachwhy.experiments import distributed
    from teachwhy.experiments.runner import plan

    spec = load_experiment(str(_write(tmp_path, "grid", out=str(tmp_path / "runs"), budgets=[1000, 2000],
                                      resources={"sft": {"num_cpus": 1}, "eval": {"num_cpus": 0.5}})))

    def body(ref):  # a cell "runs": its data sets exist afterwards
        from teachwhy.experiments.runner import data_dirs

        for d in data_dirs(spec, ref["cell"].arm, ref["cell"].seed, Path(ref["exp"])):
            d.mkdir(parents=True, exist_ok=True)
            (d / "card.json").write_text("{}")
        return {"cell_id": ref["cell"].cell_id, "status": "done"}

    monkeypatch.setattr(models, "prepare_embedded", lambda *_a, **_k: None)
    monkeypatch.setattr(machine, "cores", lambda: 2)
    threads = {c.cell_id: distributed._threads(spec, c, 2) for c in plan(spec)}
    peaks = []
    for fake_cls in (_FakeRay, _LocalFakeRay):
        fake = fake_cls(body)
        monkeypatch.setattr(distributed, "import_ray", lambda fake=fake: fake)
        shutil.rmtree(tmp_path / "runs", ignore_errors=True)
        distributed.run_experiment_ray(spec)
        assert len(fake.submitted) == len(threads)
        peak = max(threads[cell] + sum(threads[c] for c in inflight) for cell, inflight, _o in fake.submitted)
        peaks.append(peak)
    assert peaks[0] > 2 and peaks[1] == 2  # evals ask 0.5 CPU: Ray alone runs more cells than cores
