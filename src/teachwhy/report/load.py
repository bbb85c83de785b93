"""Read an experiment directory (the layout the experiment runner writes) into one object.

    EXP_DIR/spec.json        the validated spec
    EXP_DIR/versions.json    package versions (and the git commit, where recorded)
    EXP_DIR/cells/*.json     one per finished cell
    EXP_DIR/samples.jsonl    one row per (cell, eval, scenario)
    EXP_DIR/analysis.json    efficiency.analyse()'s output plus eval, metric and diagnostics

spec.json and analysis.json are required (the report says what the analysis found); the others may be
missing or empty, and the report then says so instead of failing. analysis.json is read into its typed
model (results.ExperimentAnalysis); spec, versions, cells and samples stay plain data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from teachwhy.errors import UserError
from teachwhy.results import ExperimentAnalysis
from teachwhy.store import read_jsonl


@dataclass
class Experiment:
    dir: Path
    spec: dict[str, Any]
    analysis: ExperimentAnalysis
    versions: dict[str, Any] | None = None
    cells: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.spec.get("name") or self.dir.name)

    def arm_kinds(self) -> dict[str, str]:
        """Arm name -> base | sft | prompt, from the spec (cells fill in arms the spec lacks)."""
        kinds = {a["name"]: a.get("kind") or "sft" for a in self.spec.get("arms", [])}
        for c in self.cells:
            kinds.setdefault(c["arm"], c.get("kind") or "sft")
        return kinds


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON (line {e.lineno}: {e.msg}); rerun `teachwhy experiment "
                        f"analyse` to rewrite the {what}") from None


def _analysis(path: Path) -> ExperimentAnalysis:
    try:
        return ExperimentAnalysis.model_validate(_read_json(path, "analysis"))
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "the top level"
        raise UserError(f"{path}: not an analysis teachwhy writes ({where}: {err['msg']}); rerun `teachwhy "
                        "experiment analyse` to rewrite it") from None


def load_experiment_dir(exp_dir: Path) -> Experiment:
    exp_dir = Path(exp_dir)
    if not (exp_dir / "spec.json").is_file():
        raise UserError(f"{exp_dir} has no spec.json: give the directory of an experiment "
                        "(<out>/experiments/<name>) that `teachwhy experiment run` wrote")
    if not (exp_dir / "analysis.json").is_file():
        raise UserError(f"{exp_dir} has no analysis.json: run `teachwhy experiment analyse` on its spec first")
    spec = _read_json(exp_dir / "spec.json", "spec")
    analysis = _analysis(exp_dir / "analysis.json")
    versions = _read_json(exp_dir / "versions.json", "versions") if (exp_dir / "versions.json").is_file() else None
    cells = []
    if (exp_dir / "cells").is_dir():
        for p in sorted((exp_dir / "cells").glob("*.json")):
            rec = _read_json(p, "cell file")
            if rec.get("status", "done") == "done":
                cells.append(rec)
    samples = read_jsonl(exp_dir / "samples.jsonl")
    return Experiment(dir=exp_dir, spec=spec, analysis=analysis, versions=versions, cells=cells, samples=samples)
