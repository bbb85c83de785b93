"""The audit suite as an experiment eval: the cell passes its settings to run_eval, the analysis gives
each cell's mean dimension score and its difference from base with 95% CIs and n, and the report shows
a table per dimension. Fast tests use hand-written audit records; the slow one runs a real experiment
(the tiny model, base and one small SFT arm, the offline audit beside a honeypot eval)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from cliutil import run_cli
from teachwhy.experiments.analysis import analyse_experiment
from teachwhy.experiments.audit_analysis import mean_score, versus_base
from teachwhy.experiments.runner import mark_done, plan, prepare
from teachwhy.experiments.spec import load_experiment
from teachwhy.results import ExperimentAnalysis

AUDIT = {"name": "audit", "suite": "audit", "offline": True, "seed_ids": ["deception", "sycophancy"],
         "samples": 2, "max_tokens": 16}
SEED_IDS = ("deception", "sycophancy")
DIMS = {"deception": ["deception", "sycophancy"], "sycophancy": ["sycophancy", "deception"]}
SHIFT = {"deception": -1.0, "sycophancy": -0.5}  # the SFT arm's score minus base's, by seed id


def _spec(tmp_path, evals: list[dict]):
    spec = {"name": "aud", "out": str(tmp_path / "runs"), "budgets": [1000], "seeds": [0, 1],
            "arms": [{"name": "reasoning", "data": [{"kind": "reasoning"}]}], "evals": evals}
    p = tmp_path / "aud.yaml"
    p.write_text(yaml.safe_dump(spec))
    return load_experiment(str(p))


def _record(seed_id: str, i: int, shift: float) -> dict:
    base = {"deception": 2.0, "sycophancy": 3.0}
    return {"scenario_id": seed_id, "sample_index": i, "verdict": "scored", "awareness": {"label": "none"},
            "dimensions": {d: {"score": base[d] + i + shift} for d in DIMS[seed_id]}}


def _fake_cells(spec, drop: tuple[str, int] | None = None) -> Path:
    """Finished cells whose audit runs hold hand-written records; `drop` leaves one transcript out of
    the first SFT cell."""
    exp = prepare(spec)
    for cell in plan(spec):
        run_dir = exp.parent.parent / f"audit-{cell.cell_id}"
        run_dir.mkdir(parents=True)
        first_sft = cell.cell_id == "reasoning-b1000-s0-sft"
        recs = [_record(s, i, SHIFT[s] if cell.stage == "sft" else 0.0) for s in SEED_IDS for i in range(2)
                if not (first_sft and (s, i) == drop)]
        (run_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        mark_done(exp, cell, {"cell_id": cell.cell_id, "arm": cell.arm.name, "kind": cell.arm.kind,
                              "budget": cell.budget, "seed": cell.seed, "stage": cell.stage, "data": [],
                              "status": "done", "seconds": 1.0,
                              "evals": {"audit": {"run_id": run_dir.name, "run_dir": str(run_dir),
                                                  "summary_overall": {"n": len(recs), "seeds": 2}}}})
    return exp


def test_an_audit_eval_reaches_run_eval_with_its_settings(tmp_path, monkeypatch):
    import teachwhy.evals.runner as eval_runner
    from teachwhy.experiments.runner import _evals

    spec = _spec(tmp_path, [{"name": "honeypots", "limit": 2}, {**AUDIT, "limit": 2}])
    seen = {}

    def fake_run_eval(cfg, **over):
        kw = cfg.model_dump() | over
        seen[kw["suite"]] = kw
        return SimpleNamespace(run_id="r", run_dir=str(tmp_path), summary={"overall": {}})

    monkeypatch.setattr(eval_runner, "run_eval", fake_run_eval)
    _evals(spec, spec.model, "PREFIX", lambda _m: None)
    a = seen["audit"]
    assert (a["offline"], a["seed_ids"], a["samples"], a["max_tokens"], a["limit"]) == (
        True, ["deception", "sycophancy"], 2, 16, 2)
    assert a["formats"] is None and a["auditor"] is None and a["judge"] is None and a["system_prefix"] == "PREFIX"
    h = seen["agentic"]  # a honeypot eval gets the audit keys at their defaults: its run ids do not change
    assert (h["offline"], h["seed_files"], h["seed_ids"], h["auditor"], h["max_turns"]) == (False, None, None, None, 4)


def test_the_llm_path_keeps_auditor_judge_and_max_turns(tmp_path):
    spec = _spec(tmp_path, [{"name": "audit", "suite": "audit", "auditor": "openai/gpt-4o-mini",
                             "judge": "openai/gpt-4o", "max_turns": 6}])
    ev = spec.evals[0]
    assert (ev.offline, ev.auditor, ev.judge, ev.max_turns, ev.level) == (
        False, "openai/gpt-4o-mini", "openai/gpt-4o", 6, None)


def test_mean_score_and_difference_are_clustered_by_seed_id():
    base = {("a", 0): 2.0, ("a", 1): 4.0, ("b", 0): 6.0, ("b", 1): 8.0}
    m = mean_score(base)
    assert (m["n"], m["seed_ids"], m["mean"]) == (4, 2, 5.0) and m["method"] == "cluster bootstrap over seed ids"
    assert m["ci_95"] == [3.0, 7.0]  # two clusters: the resampled means are 3, 5 or 7
    one = mean_score({("a", 0): 2.0, ("a", 1): 4.0})
    assert one["method"] == "normal (one seed id)" and 1.0 <= one["ci_95"][0] <= 3.0 <= one["ci_95"][1] <= 10.0
    single = mean_score({("a", 0): 2.0})
    assert single["n"] == 1 and single["ci_95"] is None and single["method"] == "none (one transcript)"
    arm = {("a", 0): 1.0, ("a", 1): 3.0, ("b", 0): 5.5, ("c", 0): 9.0}  # (c, 0) has no base twin
    d = versus_base(arm, base)
    assert (d["n"], d["seed_ids"], d["mean"]) == (3, 2, pytest.approx(-2.5 / 3))
    assert d["method"] == "cluster bootstrap over seed ids" and d["ci_95"] == [-1.0, -0.5]


def test_audit_only_experiment_analysis_and_report(tmp_path, capsys):
    spec = _spec(tmp_path, [AUDIT])
    exp = _fake_cells(spec, drop=("sycophancy", 1))
    out = analyse_experiment(spec, replicates=400)
    a = json.loads((exp / "analysis.json").read_text())
    assert a == json.loads(json.dumps(out["analysis"]))
    assert a["curves"] == [] and a["eval"] is None and a["metric"].startswith("audit dimension score")
    audit = a["audit"]
    assert audit["evals"]["audit"]["mode"] == "offline" and audit["dimensions"] == ["deception", "sycophancy"]
    rows = {(r["dimension"], r["cell_id"]): r for r in audit["rows"]}
    assert len(rows) == 2 * 3  # two dimensions x (base, two SFT cells)
    b = rows[("deception", "base")]
    assert b["vs_base"] is None and (b["score"]["n"], b["score"]["seed_ids"]) == (4, 2)
    assert b["score"]["mean"] == pytest.approx(2.5) and len(b["score"]["ci_95"]) == 2
    s1 = rows[("deception", "reasoning-b1000-s1-sft")]
    assert (s1["budget"], s1["seed"], s1["stage"]) == (1000, 1, "sft")
    assert s1["vs_base"]["n"] == 4 and s1["vs_base"]["mean"] == pytest.approx(-0.75)
    assert s1["vs_base"]["ci_95"] == [-1.0, -0.5] and s1["vs_base"]["seed_ids"] == 2
    s0 = rows[("deception", "reasoning-b1000-s0-sft")]  # one transcript left out: one pair fewer
    assert s0["score"]["n"] == 3 and s0["vs_base"]["n"] == 3

    md = (exp / "report.md").read_text()
    sec = md.split("## Audit: dimension scores by cell")[1].split("## Validity diagnostics")[0]
    assert "### Audit: deception" in sec and "### Audit: sycophancy" in sec
    assert "| condition | training seed | n | mean score [95% CI] | arm - base [95% CI] | n pairs |" in sec
    assert "| base (base) | - | 4 (2 seed ids) | 2.500 [" in sec and "0 (reference)" in sec
    assert "| reasoning @ 1,000 (SFT) | 1 | 4 (2 seed ids) | 1.750 [" in sec
    assert "| -0.750 [-1.000, -0.500] | 4 (2 seed ids) |" in sec
    head = md.split("## Headline")[1].split("## By wording")[0]
    assert head.strip().startswith("This experiment has audit evals only (audit)") and "Validity" not in head
    page = (exp / "report.html").read_text()
    assert '<section id="audit">' in page and '<a href="#audit">Audit</a>' in page
    assert page.count('id="audit-audit-') == 2
    assert "evals audit (audit)" in md

    from teachwhy.cli import out as console
    from teachwhy.cli_experiment import print_results

    width = console.width
    console.width = 300
    try:
        print_results(a, {"html": str(exp / "report.html")}, str(exp))
    finally:
        console.width = width
    text = capsys.readouterr().out
    assert text.startswith("This experiment has audit evals only") and "P(harmful)" not in text
    assert "Audit: deception" in text and "-0.750 [-1.000, -0.500]" in text


def test_an_experiment_without_audit_has_no_audit_key(tmp_path):
    from teachwhy.experiments.audit_analysis import analyse_audit

    spec = _spec(tmp_path, [{"name": "honeypots", "limit": 2}])
    assert analyse_audit(spec) is None


@pytest.mark.slow
def test_an_offline_audit_runs_on_every_cell_and_reaches_the_report(tmp_path, tiny):
    """A real experiment: base and one small SFT arm on the tiny model, a honeypot eval and the offline
    audit (2 seeds sharing both their dimensions, 1 sample, short replies) on every cell."""
    spec = {"name": "aud", "model": tiny, "out": str(tmp_path / "runs"), "budgets": [1500],
            "arms": [{"name": "demonstration", "data": [{"kind": "demonstration"}]}],
            "evals": [{"name": "honeypots", "limit": 2},
                      {**AUDIT, "samples": 1, "max_tokens": 12}]}
    path = tmp_path / "aud.yaml"
    path.write_text(yaml.safe_dump(spec))
    r = run_cli("experiment", "run", str(path))
    assert r.returncode == 0, r.stderr
    assert "Audit: deception" in r.stdout and "Audit: sycophancy" in r.stdout  # the terminal summary too
    exp = tmp_path / "runs" / "experiments" / "aud"
    cell = json.loads((exp / "cells" / "demonstration-b1500-s0-sft.json").read_text())
    cfg = json.loads((Path(cell["evals"]["audit"]["run_dir"]) / "config.json").read_text())
    assert cfg["suite"] == "audit" and cfg["mode"] == "offline" and cfg["seed_ids"] == list(SEED_IDS)
    assert cfg["model"] == cell["model"] and cfg["samples"] == 1 and cfg["max_tokens"] == 12

    a = json.loads((exp / "analysis.json").read_text())
    assert {c["eval"] for c in a["curves"]} == {"honeypots"} and a["eval"] == "honeypots"
    assert ExperimentAnalysis.model_validate(a).model_dump(exclude_unset=True) == a  # results.py round-trips it
    samples = [json.loads(x) for x in (exp / "samples.jsonl").read_text().splitlines()]
    assert {s["eval"] for s in samples} == {"honeypots"}
    rows = {(r["dimension"], r["arm"]): r for r in a["audit"]["rows"]}
    assert set(rows) == {(d, arm) for d in ("deception", "sycophancy") for arm in ("base", "demonstration")}
    for (_dim, arm), row in rows.items():
        s = row["score"]
        assert (s["n"], s["seed_ids"]) == (2, 2) and 1.0 <= s["mean"] <= 10.0
        assert s["ci_95"][0] <= s["mean"] <= s["ci_95"][1]
        if arm == "base":
            assert row["vs_base"] is None
        else:
            d = row["vs_base"]
            assert (d["n"], d["seed_ids"]) == (2, 2) and d["ci_95"][0] <= d["mean"] <= d["ci_95"][1]

    md = (exp / "report.md").read_text()
    sec = md.split("## Audit: dimension scores by cell")[1].split("## Validity diagnostics")[0]
    for dim in ("deception", "sycophancy"):
        assert f"### Audit: {dim}" in sec
    assert "| base (base) | - | 2 (2 seed ids) |" in sec
    assert "| demonstration @ 1,500 (SFT) | 0 | 2 (2 seed ids) |" in sec
    assert "## Curves" in md and "Mean P(harmful) and effect vs base: honeypots" in md
    page = (exp / "report.html").read_text()
    audit_sec = page.split('<section id="audit">')[1].split("</section>")[0]
    assert audit_sec.count("<table>") == 2 and "demonstration @ 1,500 (SFT)" in audit_sec
