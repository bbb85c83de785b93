"""results.py's models give back the JSON teachwhy writes: `Model.model_validate(d).model_dump(exclude_unset=True)`
equals d, key for key and type for type (an int stays an int), for experiment analyses (the report's
synthetic experiment, an audit-only experiment), the controls' result, and, in the slow tier, the
summaries of real choice, generate and audit runs of the tiny model and the comparison of two runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from teachwhy.experiments.efficiency import analyse
from teachwhy.results import AuditSummary, CompareResult, ControlsResult, EvalSummary, ExperimentAnalysis, of


def assert_round_trips(model: type[BaseModel], d: dict) -> BaseModel:
    typed = model.model_validate(d)
    back = typed.model_dump(exclude_unset=True)
    assert back == d
    assert json.dumps(back, sort_keys=True) == json.dumps(d, sort_keys=True)  # 3 is not 3.0
    return typed


# -- fast: analyses and the controls' result built by the tests' own helpers ----------------------
def test_the_report_experiments_analysis_round_trips(tmp_path):
    from test_report import CONTROLS, build_experiment

    exp = build_experiment(tmp_path)
    a = json.loads((exp / "analysis.json").read_text())
    typed = assert_round_trips(ExperimentAnalysis, a)
    assert isinstance(typed, ExperimentAnalysis)
    assert typed.all_statements == a["statements"] and typed.contrasts and typed.diagnostics is not None
    assert typed.model_dump(exclude_unset=True)["statements"] == a["statements"]  # the JSON's key, not the field's
    with_controls = assert_round_trips(ExperimentAnalysis, {**a, "controls": CONTROLS})
    assert isinstance(with_controls, ExperimentAnalysis) and isinstance(with_controls.controls, ControlsResult)
    # an analysis as an older writer left it: no contrasts, wording or validity, diagnostics null
    old = {k: v for k, v in a.items() if k not in ("contrasts", "wording", "validity")}
    assert_round_trips(ExperimentAnalysis, {**old, "diagnostics": None})


def test_an_analysis_without_contrasts_round_trips():
    rows = [{"arm": arm, "kind": kind, "budget": budget, "seed": 0, "stage": stage, "eval": "honeypots",
             "scenario_id": f"s{i}", "family": "leak", "held_out": False, "p_harmful": p - 0.1 * i,
             "harmful": p > 0.5}
            for arm, kind, budget, stage, p in (("base", "base", None, "none", 0.6), ("why", "sft", 1000, "sft", 0.5),
                                                ("why", "sft", 3000, "sft", 0.4), ("demo", "sft", 1000, "sft", 0.55),
                                                ("demo", "sft", 3000, "sft", 0.5))
            for i in range(3)]
    a = json.loads(json.dumps({**analyse(rows, replicates=50), "eval": "honeypots", "metric": "mean P(harmful)"}))
    typed = assert_round_trips(ExperimentAnalysis, a)
    assert isinstance(typed, ExperimentAnalysis) and typed.multiples and "contrasts" not in a


def test_an_audit_only_analysis_round_trips(tmp_path):
    from teachwhy.experiments.analysis import analyse_experiment
    from test_experiment_audit import AUDIT, _fake_cells, _spec

    spec = _spec(tmp_path, [AUDIT])
    exp = _fake_cells(spec, drop=("sycophancy", 1))
    analyse_experiment(spec, replicates=50, report=False)
    a = json.loads((exp / "analysis.json").read_text())
    typed = assert_round_trips(ExperimentAnalysis, a)
    assert isinstance(typed, ExperimentAnalysis) and typed.audit is not None and typed.audit.rows


def test_the_controls_result_round_trips():
    from test_report import CONTROLS

    full = {**CONTROLS, "train_banks": ["house", "chatty"], "effects_across_wording": CONTROLS["effects"],
            "levels_eval": {"in_template": {"wording": "house", "scenario_files": None, "n": 48},
                            "across_wording": {"wording": "heldout", "scenario_files": None, "n": 40}}}
    for d in (CONTROLS, full, {**full, "epochs": 3}):
        typed = assert_round_trips(ControlsResult, d)
        assert isinstance(typed, ControlsResult)
    level = ControlsResult.model_validate(full).level_eval("across_wording")
    assert level is not None and (level.wording, level.n) == ("heldout", 40)


# -- slow: real runs of the tiny model -------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny) -> dict[str, Path]:
    """Finished runs of the tiny model: choice in both formats (twice, to compare), generate, audit."""
    from teachwhy.evals.runner import run_eval

    root = tmp_path_factory.mktemp("runs")
    kw = {"limit": 2, "dtype": "bfloat16"}
    got = {"choice": run_eval(tiny, out=root / "a", formats="continuation,options", **kw),
           "choice_b": run_eval(tiny, out=root / "b", formats="continuation", **kw),
           "generate": run_eval(tiny, out=root / "g", mode="generate", samples=1, max_tokens=8, **kw),
           "audit": run_eval(tiny, out=root / "audit", suite="audit", offline=True, seed_ids=["deception"],
                             samples=1, max_tokens=12, dtype="bfloat16")}
    return {name: Path(r.run_dir) for name, r in got.items()}


@pytest.mark.slow
def test_eval_summaries_round_trip(runs):
    for name, model in (("choice", EvalSummary), ("generate", EvalSummary), ("audit", AuditSummary)):
        s = json.loads((runs[name] / "summary.json").read_text())
        assert type(of(s)) is model, name
        assert_round_trips(model, s)


@pytest.mark.slow
def test_a_comparison_round_trips(runs):
    from teachwhy.evals.compare import compare_runs

    res = json.loads(json.dumps(compare_runs(runs["choice"], runs["choice_b"])))  # as `--json` prints it
    typed = assert_round_trips(CompareResult, res)
    assert isinstance(typed, CompareResult) and typed.overall.n == 2
