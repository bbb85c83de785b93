"""A tiny real experiment with an RL stage (on the tiny model: its weights are random, the mechanics are
under test): the analysis's persistence table has the arm's effect before and after RL, the change, with n
and CIs, and the report shows it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from teachwhy.experiments.analysis import analyse_experiment
from teachwhy.experiments.runner import run_experiment, status
from teachwhy.experiments.spec import ExperimentSpec
from teachwhy.results import ExperimentAnalysis

pytestmark = pytest.mark.slow


def test_rl_stage_gives_a_persistence_table(tmp_path, tiny):
    spec = ExperimentSpec.model_validate({
        "name": "tiny-rl", "model": tiny, "out": str(tmp_path / "runs"),
        "arms": [{"name": "reasoning", "data": [{"kind": "reasoning"}]}],
        "budgets": [1500], "rl": {"arms": ["reasoning"], "steps": 2, "options": {"max_completion_length": 16}},
        "evals": [{"name": "honeypots", "limit": 3}],
    })
    res = run_experiment(spec)
    assert res["failed"] == []
    assert status(spec)["done"] == 3
    cells = tmp_path / "runs" / "experiments" / "tiny-rl" / "cells"
    rl = json.loads((cells / "reasoning-b1500-s0-rl.json").read_text())
    sft = json.loads((cells / "reasoning-b1500-s0-sft.json").read_text())
    assert rl["sft_run"] == sft["train_run"] and rl["train_run"] != sft["train_run"]
    assert "/rl-" in rl["train_run"] and rl["model"] != sft["model"]

    out = analyse_experiment(spec, replicates=200)
    a = json.loads(json.dumps(out["analysis"]))
    assert ExperimentAnalysis.model_validate(a).model_dump(exclude_unset=True) == a  # results.py round-trips it
    (p,) = out["analysis"]["persistence"]
    assert p["arm"] == "reasoning" and p["budget"] == 1500 and p["n_scenarios"] == 3
    for k in ("before", "after", "change"):
        lo, hi = p[k]["ci_95"]
        assert lo <= p[k]["mean"] <= hi
    assert p["change"]["mean"] == pytest.approx(p["after"]["mean"] - p["before"]["mean"], abs=1e-12)
    assert "RL" in p["statement"] or "rl" in p["statement"].lower()
    html = Path(out["report"]["html"]).read_text()
    assert "reasoning" in html and p["statement"].split(",")[0][:40] in html
