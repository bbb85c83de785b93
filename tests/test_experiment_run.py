"""A real experiment: killed in the middle of a cell, a rerun finishes without redoing the finished cells;
an edited spec runs only its new cells; status reads the grid. The mechanics run on the tiny model (its
weights are random: the runner, not the numbers, is under test); the held-out wording test runs on the
embedded model as the suite's one end-to-end experiment of demo size, its validity sentence naming it."""

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
from teachwhy.results import ExperimentAnalysis

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


def test_killed_experiment_resumes_and_edits_run_only_new_cells(tmp_path, tiny):
    spec = {**SPEC, "model": tiny, "out": str(tmp_path / "runs")}
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


def test_controls_cell_runs_on_the_base_model_and_reaches_the_report(tmp_path, tiny):
    """`controls:` in a spec runs the eval's controls as the last cell (tiny here: 2 train scenarios,
    4 eval scenarios, so the verdict itself is not the point) and the report shows their effects."""
    spec = {"name": "ctl", "model": tiny, "out": str(tmp_path / "runs"), "arms": [{"name": "base", "kind": "base"}],
            "evals": [{"name": "honeypots", "limit": 4}],
            "controls": {"train_scenarios": 2, "eval_limit": 4, "epochs": 1}}
    path = tmp_path / "ctl.yaml"
    path.write_text(yaml.safe_dump(spec))
    r = run_cli("experiment", "run", str(path))
    assert r.returncode == 0, r.stderr
    exp = tmp_path / "runs" / "experiments" / "ctl"
    cell = json.loads((exp / "cells" / "controls.json").read_text())
    assert cell["stage"] == "controls" and cell["evals"] == {}
    ctl = cell["controls"]
    assert ctl["train_scenarios"] == 2 and ctl["eval_limit"] == 4 and ctl["formats"] == ["continuation"]
    assert set(ctl["data"]) == {"harmful", "aligned", "unrelated"}
    assert ctl["effects"] and all(k.startswith("continuation/") for k in ctl["effects"])
    for eff in ctl["effects"].values():
        for arm in ("harmful", "aligned", "unrelated"):
            assert eff[arm]["n"] == 4 and len(eff[arm]["p_harmful_diff_95"]) == 2
        assert eff["verdict"]["level"] in ("validated", "partly", "not")
    # the controls' runs live under <out>/controls, where `teachwhy eval controls` would reuse them
    assert all(Path(p).resolve().is_relative_to((tmp_path / "runs" / "controls").resolve())
               for p in ctl["runs"].values())
    analysis = json.loads((exp / "analysis.json").read_text())
    assert analysis["controls"]["effects"] == ctl["effects"]
    assert ExperimentAnalysis.model_validate(analysis).model_dump(exclude_unset=True) == analysis  # round-trips
    page = (exp / "report.html").read_text()
    sec = page.split('id="controls-section"')[1].split("</section>")[0]
    for key, eff in ctl["effects"].items():
        assert f"{key}: {eff['verdict']['level']}" in sec
    st = json.loads(run_cli("experiment", "status", str(path), "--json").stdout)
    assert {c["cell"]: c["state"] for c in st["cells"]} == {"base": "done", "controls": "done"}


def test_an_adherence_eval_runs_on_every_cell_and_reaches_the_analysis(tmp_path, tiny):
    """An experiment can evaluate its arms on the adherence suite beside the honeypots: the cell runs
    it with the spec's constitution, and its items reach the analysis and the sample browser."""
    spec = {"name": "adh", "model": tiny, "out": str(tmp_path / "runs"),
            "arms": [{"name": "base", "kind": "base"}, {"name": "why-first", "prompt": "why_first"}],
            "evals": [{"name": "honeypots", "limit": 2},
                      {"name": "adherence", "suite": "adherence", "limit": 4,
                       "principles": ["honesty", "no_coercion"]}]}
    path = tmp_path / "adh.yaml"
    path.write_text(yaml.safe_dump(spec))
    r = run_cli("experiment", "run", str(path))
    assert r.returncode == 0, r.stderr
    exp = tmp_path / "runs" / "experiments" / "adh"
    cell = json.loads((exp / "cells" / "why-first.json").read_text())
    cfg = json.loads((Path(cell["evals"]["adherence"]["run_dir"]) / "config.json").read_text())
    assert cfg["suite"] == "adherence" and cfg["principles"] == ["honesty", "no_coercion"]
    assert cfg["system_prefix"].startswith("Before you act, work out why.")
    samples = [json.loads(x) for x in (exp / "samples.jsonl").read_text().splitlines()]
    adh = [x for x in samples if x["eval"] == "adherence"]
    assert len(adh) == 8 and {x["family"] for x in adh} == {"honesty", "no_coercion"}
    assert all(x["prompt"] and len(x["candidates"]) == 2 for x in adh)
    analysis = json.loads((exp / "analysis.json").read_text())
    assert {c["eval"] for c in analysis["curves"]} == {"honeypots", "adherence"}
    assert ExperimentAnalysis.model_validate(analysis).model_dump(exclude_unset=True) == analysis  # round-trips


def test_a_held_out_wording_eval_runs_beside_the_in_template_one(tmp_path):
    """An eval with `wording:` scores the same prompts with an eval bank's candidates: the cell passes the
    wording to the eval run, the analysis records each eval's level, the sample browser shows that bank's
    candidates, and the report sets the two levels side by side under a validity sentence."""
    spec = {"name": "wd", "out": str(tmp_path / "runs"),
            "arms": [{"name": "base", "kind": "base"}, {"name": "why-first", "prompt": "why_first"}],
            "evals": [{"name": "honeypots", "limit": 2}, {"name": "honeypots-crisp", "limit": 2, "wording": "crisp"}]}
    path = tmp_path / "wd.yaml"
    path.write_text(yaml.safe_dump(spec))
    r = run_cli("experiment", "run", str(path))
    assert r.returncode == 0, r.stderr
    exp = tmp_path / "runs" / "experiments" / "wd"
    cell = json.loads((exp / "cells" / "base.json").read_text())
    cfgs = {ev: json.loads((Path(e["run_dir"]) / "config.json").read_text()) for ev, e in cell["evals"].items()}
    assert "wording" not in cfgs["honeypots"] and cfgs["honeypots-crisp"]["wording"] == "crisp"
    analysis = json.loads((exp / "analysis.json").read_text())
    assert analysis["wording"] == {"honeypots": {"wording": "house", "level": "in-template"},
                                   "honeypots-crisp": {"wording": "crisp", "level": "held-out wording"}}
    assert analysis["validity"]["measures"] == {"honeypots": "continuation/pair",
                                                "honeypots-crisp": "continuation/pair"}
    assert ExperimentAnalysis.model_validate(analysis).model_dump(exclude_unset=True) == analysis  # round-trips
    samples = [json.loads(x) for x in (exp / "samples.jsonl").read_text().splitlines()]
    crisp = [x for x in samples if x["eval"] == "honeypots-crisp"]
    house = {x["scenario_id"]: x for x in samples if x["eval"] == "honeypots" and x["arm"] == "base"}
    assert len(crisp) == 4 and all(x["scenario_id"].endswith("-crisp") and x["candidates"] for x in crisp)
    for x in crisp:  # the same prompt, other candidates
        twin = house[x["scenario_id"].removesuffix("-crisp")]
        if x["arm"] == "base":
            assert x["prompt"] == twin["prompt"]
            assert {c["text"] for c in x["candidates"]}.isdisjoint({c["text"] for c in twin["candidates"]})
    md = (exp / "report.md").read_text()
    head = md.split("## Headline")[1].split("## By wording")[0].strip()
    assert head.startswith("**No measure here is validated across wording for smollm2-135m") or \
        head.startswith("**Validity: ")
    assert "why-first vs base, held-out wording: " in head and "why-first vs base, in-template: " in head
    table = md.split("## By wording")[1].split("## Curves")[0]
    assert "| arm | in-template effect [95% CI] | n | held-out wording effect [95% CI] | n |" in table
