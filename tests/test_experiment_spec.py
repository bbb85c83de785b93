"""Experiment specs: what a valid one plans, and one clear line for each kind of mistake."""

from __future__ import annotations

import pytest
import yaml

from cliutil import one_error_line, run_cli
from teachwhy.errors import UserError
from teachwhy.experiments.runner import plan, status
from teachwhy.experiments.spec import load_experiment

GOOD = {
    "name": "tiny", "arms": [
        {"name": "demonstration", "data": [{"kind": "demonstration"}]},
        {"name": "mix", "data": [{"kind": "documents", "share": 0.5}, {"kind": "fiction", "share": 0.5}]},
        {"name": "why-first", "prompt": "why_first"},
    ],
    "budgets": [3000, 1000], "seeds": [0, 1], "rl": {"arms": ["mix"], "steps": 2},
}


def _write(tmp_path, spec) -> str:
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(spec, sort_keys=False) if not isinstance(spec, str) else spec)
    return str(p)


def test_a_valid_spec_plans_every_cell_in_order(tmp_path):
    spec = load_experiment(_write(tmp_path, GOOD))
    assert spec.arms[0].name == "base" and spec.arms[0].kind == "base"  # added
    assert spec.budgets == [1000, 3000]
    ids = [c.cell_id for c in plan(spec)]
    assert ids[:2] == ["base", "why-first"]
    assert ids[2:5] == ["demonstration-b1000-s0-sft", "mix-b1000-s0-sft", "mix-b1000-s0-rl"]
    assert len(ids) == 2 + 2 * 2 * 2 + 2 * 2  # base, prompt; 2 sft arms x 2 budgets x 2 seeds; rl on one
    st = status(spec.model_copy(update={"out": str(tmp_path / "runs")}))
    assert st["done"] == 0 and st["eta_seconds"] is None and {c["state"] for c in st["cells"]} == {"to do"}


def test_rl_only_at_the_budgets_named(tmp_path):
    spec = load_experiment(_write(tmp_path, {**GOOD, "rl": {"arms": ["mix"], "steps": 2, "budgets": [3000]}}))
    rl = [c.cell_id for c in plan(spec) if c.stage == "rl"]
    assert rl == ["mix-b3000-s0-rl", "mix-b3000-s1-rl"]


def test_controls_run_last_on_the_base_model(tmp_path):
    spec = load_experiment(_write(tmp_path, {**GOOD, "controls": True}))
    last = plan(spec)[-1]
    assert last.cell_id == "controls" and last.stage == "controls" and last.arm.kind == "base"
    assert spec.controls is not None and spec.controls.train_scenarios == 24 and spec.controls.eval_limit == 48
    assert not any(c.stage == "controls" for c in plan(load_experiment(_write(tmp_path, GOOD))))


@pytest.mark.parametrize("change,needle", [
    ({"arms": [{"name": "x", "data": [{"kind": "poetry"}]}]}, "unknown data kind 'poetry'"),
    ({"arms": [{"name": "x", "data": [{"kind": "advice", "share": 0.5}]}]}, "add up to 0.5, not 1"),
    ({"arms": [{"name": "x", "data": [{"kind": "advice"}], "prompt": "why_first"}]}, "both data and prompt"),
    ({"arms": [{"name": "x"}]}, "needs data"),
    ({"arms": [{"name": "x", "prompt": "shout"}]}, "unknown prompting arm 'shout'"),
    ({"arms": [{"name": "a b", "prompt": "why_first"}]}, "must be 1-64 letters"),
    ({"arms": [{"name": "x", "prompt": "why_first"}, {"name": "x", "prompt": "why_first"}]}, "two arms are named 'x'"),
    ({"rl": {"arms": ["why-first"]}}, "not an SFT arm"),
    ({"rl": {"arms": ["mix"], "options": {"temprature": 1}}}, "unknown RL key 'temprature'"),
    ({"rl": {"arms": ["mix"], "budgets": [2000]}}, "2000 is not one of them"),
    ({"rl": {"arms": ["mix"], "budgets": []}}, "it is empty"),
    ({"controls": {"train_scenarios": 1}}, "must be at least 2"),
    ({"controls": {"formats": ["essay"]}}, "formats must list"),
    ({"controls": {"epoch": 2}}, "docs/experiments.md"),
    ({"controls": True, "arms": [{"name": "controls", "prompt": "why_first"}]}, "named 'controls'"),
    ({"holdout_families": ["romance"]}, "unknown family 'romance'"),
    ({"holdout_families": ["blackmail", "leak", "sabotage", "framing"]}, "leaves nothing to train on"),
    ({"budgets": [0]}, "positive token counts"),
    ({"seeds": [1, 1]}, "distinct"),
    ({"sft": {"seed": 3}}, "set per cell by the experiment"),
    ({"sft": {"learning_rat": 3}}, "unknown SFT key 'learning_rat'"),
    ({"budget": [100]}, "docs/experiments.md"),
    ({"evals": [{"name": "a", "formats": ["essay"]}]}, "formats must list"),
    ({"evals": [{"name": "a", "suite": "audit"}]}, "needs offline: true"),
    ({"evals": [{"name": "a", "suite": "audit", "offline": True, "judge": "openai/gpt-4o"}]}, "drop offline"),
    ({"evals": [{"name": "a", "suite": "audit", "offline": True, "mode": "generate"}]}, "drop mode"),
    ({"evals": [{"name": "a", "suite": "audit", "offline": True, "formats": ["options"]}]}, "drop formats"),
    ({"evals": [{"name": "a", "suite": "audit", "offline": True, "families": ["leak"]}]}, "selects seed instructions"),
    ({"evals": [{"name": "a", "suite": "audit", "offline": True, "wording": "heldout"}]}, "drop wording"),
    ({"evals": [{"name": "a", "suite": "audit", "offline": True, "split": "train"}]}, "drop split"),
    ({"evals": [{"name": "a", "suite": "audit", "offline": True, "seed_ids": ["nope"]}]}, "unknown seed 'nope'"),
    ({"evals": [{"name": "a", "suite": "audit", "offline": True, "seed_ids": []}]}, "seed_ids is empty"),
    ({"evals": [{"name": "a", "suite": "audit", "offline": True, "seed_files": ["nope.yaml"]}]}, "seed file not found"),
    ({"evals": [{"name": "a", "suite": "audit", "auditor": "openai/gpt-4o", "max_turns": 0}]}, "must be at least 1"),
    ({"evals": [{"name": "a", "suite": "audit", "offline": True, "samples": 0}]}, "must be at least 1"),
    ({"evals": [{"name": "a", "offline": True}]}, "offline: applies to suite: audit"),
    ({"evals": [{"name": "a", "seed_ids": ["deception"]}]}, "seed_ids: applies to suite: audit"),
    ({"evals": [{"name": "a", "suite": "adherence", "auditor": "openai/gpt-4o"}]}, "auditor: applies to suite: audit"),
    ({"evals": [{"name": "a", "max_turns": 6}]}, "max_turns: applies to suite: audit"),
    ({"evals": [{"name": "a", "suite": "adherence", "mode": "generate"}]}, "choice mode"),
    ({"evals": [{"name": "a", "suite": "adherence", "families": ["leak"]}]}, "selects principles"),
    ({"evals": [{"name": "a", "principles": ["honesty"]}]}, "applies to suite: adherence"),
    ({"evals": [{"name": "a", "wording": "fancy"}]}, "unknown wording 'fancy'; use one of house"),
    ({"evals": [{"name": "a", "wording": "terse"}]}, "unknown wording 'terse'"),  # a train bank: never scored
    ({"evals": [{"name": "a", "suite": "adherence", "wording": "heldout"}]}, "drop wording: heldout"),
    ({"evals": [{"name": "a", "wording": "heldout", "scenario_files": ["mine.yaml"]}]}, "bring their own"),
    ({"evals": [{"name": "a", "wording": "heldout", "split": "train"}]}, "drop split: train"),
])
def test_each_mistake_is_one_line(tmp_path, change, needle):
    with pytest.raises(UserError) as e:
        load_experiment(_write(tmp_path, {**GOOD, **change}))
    msg = str(e.value)
    assert needle in msg and "\n" not in msg, msg
    assert msg.startswith("config ")
    if "wording" in str(change):
        assert "docs/experiments.md" in msg


def test_wording_names_each_evals_level_and_reaches_run_eval(tmp_path, monkeypatch):
    """`wording:` takes house (the default), an eval bank or heldout; each honeypot eval has a level, and
    the cell passes the wording to run_eval."""
    from types import SimpleNamespace

    import teachwhy.evals.runner as eval_runner
    from teachwhy.experiments.analysis import wording
    from teachwhy.experiments.runner import _evals
    from teachwhy.scenarios.banks import eval_banks

    evals = [{"name": "honeypots"}, {"name": "honeypots-heldout", "wording": "heldout"},
             {"name": "one-bank", "wording": eval_banks()[0]},
             {"name": "adherence", "suite": "adherence", "principles": ["honesty"]}]
    spec = load_experiment(_write(tmp_path, {**GOOD, "evals": evals, "out": str(tmp_path / "runs")}))
    assert [e.wording for e in spec.evals] == ["house", "heldout", eval_banks()[0], "house"]
    assert [e.level for e in spec.evals] == ["in-template", "held-out wording", "held-out wording", None]
    assert wording(spec) == {"honeypots": {"wording": "house", "level": "in-template"},
                             "honeypots-heldout": {"wording": "heldout", "level": "held-out wording"},
                             "one-bank": {"wording": eval_banks()[0], "level": "held-out wording"}}
    seen = []

    def fake_run_eval(cfg, **over):
        kw = cfg.model_dump() | over
        seen.append((kw["suite"], kw["wording"]))
        return SimpleNamespace(run_id="r", run_dir=str(tmp_path), summary={"overall": {}})

    monkeypatch.setattr(eval_runner, "run_eval", fake_run_eval)
    res = _evals(spec, spec.model, None, lambda _m: None)
    assert list(res) == ["honeypots", "honeypots-heldout", "one-bank", "adherence"]
    assert seen == [("agentic", "house"), ("agentic", "heldout"), ("agentic", eval_banks()[0]), ("adherence", "house")]


def test_cli_bad_spec_exits_2_with_one_line(tmp_path):
    p = _write(tmp_path, {**GOOD, "budgets": "many"})
    one_error_line(run_cli("experiment", "status", p), "budgets", code=2)
    one_error_line(run_cli("experiment", "run", str(tmp_path / "missing.yaml")), "does not exist", code=2)
    one_error_line(run_cli("experiment", "status", _write(tmp_path, "name: [unclosed")), "not valid YAML", code=2)
    one_error_line(run_cli("report", str(tmp_path)), "not an experiment directory", code=2)


def test_shipped_examples_are_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "examples"
    demo = load_experiment(str(root / "demo_study.yaml"))
    assert {a.name for a in demo.arms} == {"base", "demonstration", "reasoning", "why-first"}
    # each keeps its in-template eval and adds the same eval on held-out wording; the demo stays small
    assert [(e.name, e.wording, e.level, e.limit) for e in demo.evals] == [
        ("honeypots", "house", "in-template", 24), ("honeypots-heldout", "heldout", "held-out wording", 24)]
    study = load_experiment(str(root / "study.yaml"))
    assert len(study.budgets) == 3 and len(study.seeds) == 2 and study.rl is not None
    assert {a.kind for a in study.arms} == {"base", "sft", "prompt"}
    assert [(e.name, e.wording, e.level) for e in study.evals] == [
        ("honeypots", "house", "in-template"), ("honeypots-heldout", "heldout", "held-out wording")]
    assert study.evals[0].model_dump(exclude={"name", "wording"}) == study.evals[1].model_dump(
        exclude={"name", "wording"})
    cells = plan(study)
    assert len(cells) == 32 and cells[-1].cell_id == "controls" and study.controls is not None
    assert sum(c.stage == "rl" for c in cells) == 4
