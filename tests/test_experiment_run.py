"""A real experiment on the embedded model: killed in the middle of a cell, a rerun finishes without
redoing the finished cells; an edited spec runs only its new cells; status reads the grid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from cliutil import BIN, run_cli

pytestmark = pytest.mark.slow

SPEC = {"name": "tiny", "arms": [{"name": "demonstration", "data": [{"kind": "demonstration"}]}],
        "budgets": [1500], "evals": [{"name": "honeypots", "limit": 2}]}


def _wait_for(pred, timeout: float, what: str, proc=None) -> None:
    t0 = time.time()
    while not pred():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_killed_experiment_resumes_and_edits_run_only_new_cells(tmp_path):
    spec = {**SPEC, "out": str(tmp_path / "runs")}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    cells = tmp_path / "runs" / "experiments" / "tiny" / "cells"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="200")
    proc = subprocess.Popen([str(BIN), "experiment", "run", str(path), "--no-report"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for(lambda: (cells / "base.json").is_file(), 300, "the base cell finished", proc)
        _wait_for(lambda: (cells / "demonstration-b1500-s0-sft.running").is_file(), 60, "the SFT cell started", proc)
        _wait_for(lambda: any((tmp_path / "runs").glob("sft-*")), 120, "the SFT run started", proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    base_before = (cells / "base.json").read_text()
    base_mtime = (cells / "base.json").stat().st_mtime_ns

    st = json.loads(run_cli("experiment", "status", str(path), "--json").stdout)
    states = {c["cell"]: c["state"] for c in st["cells"]}
    assert states == {"base": "done", "demonstration-b1500-s0-sft": "interrupted"}
    assert st["eta_seconds"] is not None and st["eta_seconds"] > 0

    again = run_cli("experiment", "run", str(path), "--no-report")
    assert again.returncode == 0, again.stderr
    assert (cells / "base.json").stat().st_mtime_ns == base_mtime  # the finished cell was not redone
    assert (cells / "base.json").read_text() == base_before
    sft = json.loads((cells / "demonstration-b1500-s0-sft.json").read_text())
    assert sft["status"] == "done" and sft["budget"] == 1500 and sft["train_run"]
    assert not list(cells.glob("*.running"))
    assert json.loads((Path(sft["train_run"]) / "summary.json").read_text())["tokens"] <= 1500

    # an edited spec (a prompting arm added) runs only the new cell
    sft_mtime = (cells / "demonstration-b1500-s0-sft.json").stat().st_mtime_ns
    spec["arms"].append({"name": "why-first", "prompt": "why_first"})
    path.write_text(yaml.safe_dump(spec))
    third = run_cli("experiment", "run", str(path), "--no-report")
    assert third.returncode == 0, third.stderr
    assert (cells / "base.json").stat().st_mtime_ns == base_mtime
    assert (cells / "demonstration-b1500-s0-sft.json").stat().st_mtime_ns == sft_mtime
    wf = json.loads((cells / "why-first.json").read_text())
    cfg = json.loads((Path(wf["evals"]["honeypots"]["run_dir"]) / "config.json").read_text())
    assert cfg["system_prefix"].startswith("Before you act, work out why.")
    st = json.loads(run_cli("experiment", "status", str(path), "--json").stdout)
    assert st["done"] == st["total"] == 3
