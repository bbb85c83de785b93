"""Run an experiment: every cell (arm x budget x seed, plus RL) as ordinary teachwhy runs.

    <out>/experiments/<name>/
      spec.json, versions.json     the validated spec and the package versions
      data/<kind>-s<seed>-<hash>/  why-data, built once per kind and seed at the largest budget it
                                   serves (a smaller budget takes the first records: nested subsets)
      cells/<cell>.json            a finished cell: its runs, data cards and eval summaries
      cells/<cell>.running         a cell in progress (pid, start time)
      cells/<cell>.failed          the one-line error of a cell that failed (rerun retries it)
      samples.jsonl, analysis.json, report.html, report.md   written by `analyse_experiment`

A cell is cheap to redo: data builds, SFT, RL and evals are runs named by a hash of their config
(under <out>), so a finished one returns at once and an interrupted one resumes. A cell file is written
last, atomically; a rerun after a crash or an edit of the spec redoes only the cells whose runs are
missing or changed. With `--ray` (distributed.py) the cells run as Ray tasks and this process still
writes the cell files.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teachwhy.constitution.loader import load_constitution
from teachwhy.data.build import build_dataset
from teachwhy.errors import UserError
from teachwhy.experiments.controls import run_controls
from teachwhy.experiments.spec import Arm, ExperimentSpec
from teachwhy.scenarios.schema import FAMILIES
from teachwhy.store import atomic_write_json, atomic_write_text, content_hash, ensure_writable_dir, versions
from teachwhy.teachers import get_teacher
from teachwhy.train import RLSpec, SFTSpec, run_rl, run_sft

PROMPT_DIR = Path(__file__).parent / "prompts"


@dataclass(frozen=True)
class Cell:
    arm: Arm
    budget: int | None
    seed: int
    stage: str  # "none" (base, prompting arms), "sft", "rl", "controls" (the eval's controls, on base)

    @property
    def cell_id(self) -> str:
        if self.stage == "controls":
            return "controls"
        if self.stage == "none":
            return self.arm.name
        return f"{self.arm.name}-b{self.budget}-s{self.seed}-{self.stage}"


def experiment_dir(spec: ExperimentSpec) -> Path:
    return Path(spec.out) / "experiments" / spec.name


def plan(spec: ExperimentSpec) -> list[Cell]:
    """The cells in the order they run: base and prompting arms, then SFT cells by budget (so every
    arm's curve fills from the left), each RL cell right after the SFT cell it continues, and the
    eval's controls last."""
    cells = [Cell(a, None, spec.seeds[0], "none") for a in spec.arms if a.kind in ("base", "prompt")]
    rl_arms = set(spec.rl.arms) if spec.rl else set()
    rl_budgets = set(spec.rl.budgets or spec.budgets) if spec.rl else set()
    for budget in spec.budgets:
        for seed in spec.seeds:
            for a in spec.arms:
                if a.kind != "sft":
                    continue
                cells.append(Cell(a, budget, seed, "sft"))
                if a.name in rl_arms and budget in rl_budgets:
                    cells.append(Cell(a, budget, seed, "rl"))
    if spec.controls is not None:
        base = next(a for a in spec.arms if a.kind == "base")
        cells.append(Cell(base, None, spec.controls.seed, "controls"))
    return cells


def system_prefix(spec: ExperimentSpec, arm: Arm) -> str | None:
    if arm.prompt is None:
        return None
    if arm.prompt == "constitution_in_prompt":
        return ("Act by the principles of this constitution; they say what to do and why.\n\n"
                + load_constitution(spec.constitution).render())
    return (PROMPT_DIR / f"{arm.prompt}.txt").read_text(encoding="utf-8")


# -- one cell --------------------------------------------------------------------------------------
def _families(spec: ExperimentSpec) -> list[str] | None:
    return [f for f in FAMILIES if f not in spec.holdout_families] if spec.holdout_families else None


def data_dirs(spec: ExperimentSpec, arm: Arm, seed: int, exp: Path) -> list[Path]:
    """Where each data component of an SFT arm is built for a seed (shared by every budget)."""
    out = []
    for comp in arm.data:
        key = {"kind": comp.kind, "teacher": comp.teacher or spec.teacher,
               "tokens": math.ceil(max(spec.budgets) * comp.share), "seed": seed, "model": spec.model,
               "families": _families(spec), "constitution": spec.constitution}
        out.append((exp / "data" / f"{comp.kind}-s{seed}-{content_hash(key)[:10]}").resolve())
    return out


def _data(spec: ExperimentSpec, arm: Arm, seed: int, exp: Path, log: Callable[[str], None]) -> list[dict]:
    """Each component's dataset, built once at the largest budget this arm needs (resumable)."""
    out = []
    for comp, d in zip(arm.data, data_dirs(spec, arm, seed, exp)):
        tokens = math.ceil(max(spec.budgets) * comp.share)
        teacher = comp.teacher or spec.teacher
        if not (d / "card.json").is_file():
            log(f"building {comp.kind} data ({tokens} tokens, seed {seed})")
            cons = load_constitution(spec.constitution)
            build_dataset(comp.kind, get_teacher(teacher, cons, spec.model, seed=seed), tokens=tokens, seed=seed,
                          out=d, constitution=cons, model=spec.model, families=_families(spec),
                          advice_teacher=get_teacher("builtin", cons, seed=seed))  # augment's default source
        card = json.loads((d / "card.json").read_text())
        out.append({"kind": comp.kind, "share": comp.share, "dir": str(d), "card": card})
    return out


def _evals(spec: ExperimentSpec, model: str, prefix: str | None, log: Callable[[str], None]) -> dict:
    """Every eval of the spec on one cell's model: its EvalConfig with the cell's model, the runs
    directory, the spec's dtype and constitution, and the prompting arm's prefix."""
    from teachwhy.evals.runner import run_eval  # lazy: imports torch

    res = {}
    for ev in spec.evals:
        log(f"eval {ev.name} of {model}")
        r = run_eval(ev.config_for(model=model, out=spec.out, dtype=spec.dtype, system_prefix=prefix,
                                   constitution=spec.constitution if ev.suite == "adherence" else None))
        res[ev.name] = {"run_id": r.run_id, "run_dir": str(Path(r.run_dir).resolve()),
                        "summary_overall": r.summary.get("overall")}
    return res


def _controls(spec: ExperimentSpec, log: Callable[[str], None]) -> dict:
    """`teachwhy eval controls` on the experiment's model, its runs under <out>/controls (shared with
    that command, so controls run there with the same settings are reused)."""
    from teachwhy.evals.execute import parse_formats  # lazy: imports torch

    c = spec.controls
    assert c is not None
    first = spec.evals[0]
    formats = c.formats or (parse_formats(first.formats) if first.mode == "choice" else ["continuation"])
    log(f"eval controls on {spec.model} ({', '.join(formats)})")
    res = run_controls(model=spec.model, out=Path(spec.out) / "controls", train_scenarios=c.train_scenarios,
                       eval_limit=c.eval_limit, formats=formats, seed=c.seed, learning_rate=c.learning_rate,
                       epochs=c.epochs, dtype=spec.dtype, log=log)
    # the per-run diagnostics stay in the controls runs; the effects and verdicts travel with the cell
    return {k: v for k, v in res.result.items() if k != "diagnostics"}


def run_cell(spec: ExperimentSpec, cell: Cell, exp: Path, log: Callable[[str], None] = lambda _m: None) -> dict:
    t0 = time.time()
    rec: dict[str, Any] = {"cell_id": cell.cell_id, "arm": cell.arm.name, "kind": cell.arm.kind,
                           "budget": cell.budget, "seed": cell.seed, "stage": cell.stage, "data": [],
                           "train_run": None, "model": spec.model}
    if cell.stage == "controls":
        rec["controls"] = _controls(spec, log)
        rec["evals"] = {}
        rec["status"] = "done"
        rec["seconds"] = round(time.time() - t0, 2)
        return rec
    if cell.stage in ("sft", "rl"):
        assert cell.budget is not None
        data = _data(spec, cell.arm, cell.seed, exp, log)
        rec["data"] = data
        sources = [{"path": d["dir"], "tokens": max(1, math.floor(cell.budget * d["share"]))} for d in data]
        log(f"SFT {cell.arm.name} at {cell.budget} tokens, seed {cell.seed}")
        sft = run_sft(SFTSpec(**{**spec.sft, "model": spec.model, "data": sources, "out": spec.out,
                                 "name": f"{spec.name}-{cell.arm.name}-b{cell.budget}", "seed": cell.seed,
                                 "dtype": spec.dtype}))
        rec["train_run"], rec["model"] = str(Path(sft.run_dir).resolve()), str(Path(sft.model_path).resolve())
        if cell.stage == "rl":
            assert spec.rl is not None
            log(f"RL {cell.arm.name} at {cell.budget} tokens, seed {cell.seed} ({spec.rl.steps} steps)")
            rl = run_rl(RLSpec(**{**spec.rl.options, "model": str(sft.model_path), "out": spec.out,
                                  "name": f"{spec.name}-{cell.arm.name}-b{cell.budget}-rl", "seed": cell.seed,
                                  "steps": spec.rl.steps}))
            rec["sft_run"] = rec["train_run"]
            rec["train_run"], rec["model"] = str(Path(rl.run_dir).resolve()), str(Path(rl.model_path).resolve())
    rec["evals"] = _evals(spec, rec["model"], system_prefix(spec, cell.arm), log)
    rec["status"] = "done"
    rec["seconds"] = round(time.time() - t0, 2)
    return rec


# -- the whole grid --------------------------------------------------------------------------------
def prepare(spec: ExperimentSpec) -> Path:
    """The experiment directory with its cells/ folder and spec.json (both runners start here)."""
    exp = ensure_writable_dir(experiment_dir(spec))
    (exp / "cells").mkdir(exist_ok=True)
    atomic_write_json(exp / "spec.json", spec.model_dump())
    return exp


def cell_file(exp: Path, cell: Cell, suffix: str) -> Path:
    """cells/<cell id><suffix> (not Path.with_suffix: an arm name may hold a dot)."""
    return exp / "cells" / f"{cell.cell_id}{suffix}"


def cell_state(exp: Path, cell: Cell) -> str:
    if cell_file(exp, cell, ".json").is_file():
        return "done"
    running = cell_file(exp, cell, ".running")
    if running.is_file():
        try:
            pid = json.loads(running.read_text())["pid"]
            os.kill(pid, 0)
            return "running"
        except (OSError, ValueError, KeyError):
            return "interrupted"
    if cell_file(exp, cell, ".failed").is_file():
        return "failed"
    return "to do"


def run_experiment(spec: ExperimentSpec, on_cell: Callable[[Cell, str, dict], None] | None = None,
                   log: Callable[[str], None] = lambda _m: None, keep_going: bool = True) -> dict:
    """Run every cell not done yet, then the analysis and the report. `on_cell(cell, state, info)` is
    called as each cell starts ("running"), ends ("done"/"failed") or is found done ("skipped")."""
    exp = prepare(spec)
    atomic_write_json(exp / "versions.json", versions())
    failed = []
    for cell in plan(spec):
        if cell_state(exp, cell) == "done":
            if on_cell:
                on_cell(cell, "skipped", {})
            continue
        if on_cell:
            on_cell(cell, "running", {})
        mark_running(exp, cell)
        try:
            rec = run_cell(spec, cell, exp, log)
        except UserError as e:
            mark_failed(exp, cell, str(e))
            failed.append((cell.cell_id, str(e)))
            if on_cell:
                on_cell(cell, "failed", {"error": str(e)})
            if not keep_going:
                raise
            continue
        except BaseException:
            cell_file(exp, cell, ".running").unlink(missing_ok=True)
            raise
        mark_done(exp, cell, rec)
        if on_cell:
            on_cell(cell, "done", rec)
    return {"dir": str(exp), "failed": failed}


# the cell files, written by whoever runs the grid (this process, or the Ray driver in distributed.py)
def mark_running(exp: Path, cell: Cell) -> None:
    atomic_write_json(cell_file(exp, cell, ".running"), {"pid": os.getpid(), "started": time.time()})


def mark_failed(exp: Path, cell: Cell, error: str) -> None:
    atomic_write_text(cell_file(exp, cell, ".failed"), f"{error}\n")
    cell_file(exp, cell, ".running").unlink(missing_ok=True)


def mark_done(exp: Path, cell: Cell, rec: dict) -> None:
    atomic_write_json(cell_file(exp, cell, ".json"), rec)
    cell_file(exp, cell, ".running").unlink(missing_ok=True)
    cell_file(exp, cell, ".failed").unlink(missing_ok=True)


def status(spec: ExperimentSpec) -> dict:
    """Every cell's state, and an ETA from the cells done so far (mean seconds per cell of the same
    stage, else over all done cells)."""
    exp = experiment_dir(spec)
    rows: list[dict] = []
    seconds: dict[str, list[float]] = {}
    for cell in plan(spec):
        state = cell_state(exp, cell) if exp.is_dir() else "to do"
        rec = None
        if state == "done":
            rec = json.loads((exp / "cells" / f"{cell.cell_id}.json").read_text())
            seconds.setdefault(cell.stage, []).append(rec.get("seconds") or 0.0)
        err = None
        if state == "failed":
            err = (exp / "cells" / f"{cell.cell_id}.failed").read_text().strip()
        rows.append({"cell": cell.cell_id, "arm": cell.arm.name, "budget": cell.budget, "seed": cell.seed,
                     "stage": cell.stage, "state": state, "seconds": rec.get("seconds") if rec else None,
                     "error": err})
    every = [s for v in seconds.values() for s in v]
    eta = None
    if every:
        eta = 0.0
        for r in rows:
            if r["state"] != "done":
                same = seconds.get(r["stage"]) or every
                eta += sum(same) / len(same)
    done = sum(r["state"] == "done" for r in rows)
    return {"dir": str(exp), "cells": rows, "done": done, "total": len(rows), "eta_seconds": eta}
