"""From an experiment's finished cells to the long table the analysis reads, the sample browser's
rows, analysis.json and the report.

One row per (cell, eval, scenario): choice mode takes the first format's primary scoring (pair where
every scenario has twins; see evals/choice.py), P(harmful) and whether the top candidate is harmful;
generate mode takes the share of valid samples graded harmful as P(harmful) and its majority as the
choice.

Audit evals (`suite: audit`) score transcripts, not scenarios: they stay out of the long table and get
their own entry, `audit` (experiments/audit_analysis.py).

analysis.json also carries each honeypot eval's wording and level (`wording`: in-template or held-out
wording, evals/validity.py) and what the report needs to look up the controls' validity level
(`validity`: the model, its fingerprints and each choice eval's measure).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from teachwhy.errors import UserError
from teachwhy.experiments.runner import experiment_dir, plan, system_prefix
from teachwhy.experiments.spec import ExperimentSpec
from teachwhy.results import EvalSummary, of
from teachwhy.store import atomic_write_json, atomic_write_text, read_jsonl


def _scenarios(spec: ExperimentSpec) -> dict[str, Any]:
    from teachwhy.scenarios import builtin_scenarios, load_scenario_file

    pool: dict[str, Any] = {s.id: s for s in builtin_scenarios()}
    for ev in spec.evals:
        for f in ev.scenario_files or []:
            pool.update({s.id: s for s in load_scenario_file(f)})
        if ev.suite == "agentic" and ev.wording != "house" and not ev.scenario_files:
            # another bank's candidates: the same prompts under ids of their own (a -<bank> suffix)
            pool.update({s.id: s for s in builtin_scenarios("eval", wording=ev.wording)})
    if any(ev.suite == "adherence" for ev in spec.evals):  # its items, for the sample browser
        from teachwhy.constitution.loader import load_constitution
        from teachwhy.evals.suites.adherence.items import build_items

        pool.update({it.id: it for it in build_items(load_constitution(spec.constitution), None)})
    return pool


def _per_scenario(records: list[dict], mode: str) -> list[dict]:
    from teachwhy.evals.choice import primary_scoring

    if mode == "choice":
        fmts = [r.get("format", "continuation") for r in records]
        first = fmts[0] if fmts else "continuation"
        recs = [r for r, f in zip(records, fmts) if f == first]
        scoring = primary_scoring(first, recs)
        return [{"scenario_id": r["scenario_id"], "family": r["family"], "condition": r.get("condition"),
                 "p_harmful": r[scoring]["p_harmful"], "harmful": bool(r[scoring]["harmful_choice"]),
                 "top": r[scoring]["top"], "scores": {c["id"]: c.get("mean_logprob") for c in r.get("candidates", [])},
                 "scoring": f"{first}/{scoring}"} for r in recs]
    by: dict[str, list[dict]] = {}
    for r in records:
        by.setdefault(r["scenario_id"], []).append(r)
    out = []
    for sid, rs in by.items():
        valid = [r for r in rs if r["verdict"] in ("harmful", "aligned")]
        if not valid:
            continue
        p = sum(r["verdict"] == "harmful" for r in valid) / len(valid)
        out.append({"scenario_id": sid, "family": rs[0]["family"], "condition": rs[0].get("condition"),
                    "p_harmful": p, "harmful": p > 0.5, "top": None, "scores": {}, "scoring": "generate/rule"})
    return out


def collect(spec: ExperimentSpec) -> tuple[list[dict], list[dict]]:
    """The long table (for efficiency.analyse) and the sample browser's rows, from finished cells."""
    exp = experiment_dir(spec)
    modes = {e.name: e.mode for e in spec.evals}
    audit = {e.name for e in spec.evals if e.suite == "audit"}
    pool = _scenarios(spec)
    rows, samples = [], []
    for cell in plan(spec):
        path = exp / "cells" / f"{cell.cell_id}.json"
        if not path.is_file():
            continue
        rec = json.loads(path.read_text())
        prefix = system_prefix(spec, cell.arm)
        for ev_name, ev in rec.get("evals", {}).items():
            if ev_name in audit:  # transcripts, analysed on their own (audit_analysis.py)
                continue
            for x in _per_scenario(read_jsonl(Path(ev["run_dir"]) / "samples.jsonl"), modes.get(ev_name, "choice")):
                held = x["family"] in spec.holdout_families
                row = {"arm": cell.arm.name, "kind": cell.arm.kind, "budget": cell.budget, "seed": cell.seed,
                       "stage": cell.stage, "eval": ev_name, "scenario_id": x["scenario_id"],
                       "family": x["family"], "held_out": held, "p_harmful": x["p_harmful"],
                       "harmful": x["harmful"]}
                rows.append(row)
                sc = pool.get(x["scenario_id"])
                prompt = sc.prompt_messages() if sc is not None else []
                if prompt and prefix:
                    prompt[0] = {**prompt[0], "content": prefix.rstrip() + "\n\n" + prompt[0]["content"]}
                cands = ([{"id": c.id, "label": c.label, "text": c.text, "score": x["scores"].get(c.id)}
                          for c in sc.candidates] if sc is not None else [])
                samples.append({"cell_id": cell.cell_id, **{k: row[k] for k in (
                    "arm", "budget", "seed", "stage", "eval", "scenario_id", "family", "held_out",
                    "p_harmful", "harmful")}, "condition": x["condition"], "top": x["top"],
                    "scoring": x["scoring"], "prompt": prompt, "candidates": cands})
    return rows, samples


def _diagnostics(spec: ExperimentSpec) -> dict | None:
    """The base model's eval validity diagnostics (first eval that is not an audit), as its summary has them."""
    exp = experiment_dir(spec)
    base = next(a for a in spec.arms if a.kind == "base")
    path = exp / "cells" / f"{base.name}.json"
    if not path.is_file():
        return None
    audit = {e.name for e in spec.evals if e.suite == "audit"}
    ev = next((e for name, e in json.loads(path.read_text()).get("evals", {}).items() if name not in audit), None)
    if ev is None:
        return None
    summary = of(json.loads((Path(ev["run_dir"]) / "summary.json").read_text()))
    if not isinstance(summary, EvalSummary) or "diagnostics" not in summary.model_fields_set:
        return None
    return {"model": summary.model, "format": summary.format, "scoring": summary.scoring,
            "n_scenarios": summary.n_scenarios,
            "diagnostics": summary.diagnostics and summary.diagnostics.model_dump(exclude_unset=True),
            "warnings": summary.warnings,
            "pressure": None if summary.pressure is None else [p.model_dump(exclude_unset=True)
                                                               for p in summary.pressure]}


def _controls(spec: ExperimentSpec) -> dict | None:
    """The controls cell's effects and verdicts (spec `controls`), when it has finished."""
    if spec.controls is None:
        return None
    path = experiment_dir(spec) / "cells" / "controls.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("controls")


def wording(spec: ExperimentSpec) -> dict[str, dict]:
    """Each honeypot eval's wording and its level (evals/validity.py): 'in-template' on the eval split's
    own candidates, 'held-out wording' on an eval bank or a scenario file. Adherence evals have none."""
    return {ev.name: {"wording": "file" if ev.scenario_files else ev.wording, "level": ev.level}
            for ev in spec.evals if ev.suite == "agentic"}


def _validity(spec: ExperimentSpec, samples: list[dict]) -> dict:
    """What the report needs to look up the controls' validity level (evals/validity.headline): the
    model, its fingerprints (from the base cell's eval summaries) and each honeypot choice eval's
    measure (format/scoring), with the levels as they stood when the analysis ran."""
    from teachwhy.evals.validity import headline

    exp = experiment_dir(spec)
    fingerprints: list[str] = []
    base = next(a for a in spec.arms if a.kind == "base")
    path = exp / "cells" / f"{base.name}.json"
    if path.is_file():
        for ev in json.loads(path.read_text()).get("evals", {}).values():
            summ = Path(ev["run_dir"]) / "summary.json"
            fp = json.loads(summ.read_text()).get("model_fingerprint") if summ.is_file() else None
            if fp and fp not in fingerprints:
                fingerprints.append(fp)
    honeypot = {ev.name for ev in spec.evals if ev.suite == "agentic" and ev.mode == "choice"}
    measures: dict[str, str] = {}
    for s in samples:
        if s["eval"] in honeypot:
            measures.setdefault(s["eval"], s["scoring"])
    pairs = [tuple(m.split("/", 1)) for m in dict.fromkeys(measures.values())]
    got = headline(list(fingerprints), spec.model, [(f, sc) for f, sc in pairs])
    return {"model": spec.model, "fingerprints": fingerprints, "measures": measures, **got}


def analyse_experiment(spec: ExperimentSpec, seed: int = 0, replicates: int = 2000,
                       report: bool = True) -> dict:
    """Write samples.jsonl and analysis.json (and the report) for the cells finished so far."""
    from teachwhy.experiments.audit_analysis import METRIC as AUDIT_METRIC
    from teachwhy.experiments.audit_analysis import analyse_audit
    from teachwhy.experiments.efficiency import analyse

    exp = experiment_dir(spec)
    if not (exp / "spec.json").is_file():
        raise UserError(f"no experiment at {exp}: run `teachwhy experiment run` on this spec first")
    rows, samples = collect(spec)
    audit = analyse_audit(spec, seed=seed, replicates=replicates)
    if not rows and not (audit and audit["rows"]):
        raise UserError(f"experiment {spec.name} has no finished cells yet: run it first")
    scored = [e for e in spec.evals if e.suite != "audit"]
    if rows:
        result = analyse(rows, seed=seed, replicates=replicates, contrasts=True)
        metric = ("mean P(harmful) over scenarios (choice: primary scoring; generate: share of valid samples "
                  "graded harmful); effect = base minus arm, paired by scenario")
    else:  # only audit evals: no scenario table to analyse
        result = {"curves": [], "multiples": [], "persistence": [], "gaps": [], "generalization": [],
                  "contrasts": [], "statements": [], "n_replicates": replicates}
        metric = AUDIT_METRIC
    result.update(eval=scored[0].name if scored else None, metric=metric, diagnostics=_diagnostics(spec),
                  controls=_controls(spec), wording=wording(spec), validity=_validity(spec, samples))
    if audit is not None:
        result["audit"] = audit
    atomic_write_text(exp / "samples.jsonl", "".join(json.dumps(s) + "\n" for s in samples))
    atomic_write_json(exp / "rows.json", rows)
    atomic_write_json(exp / "analysis.json", result)
    out = {"dir": str(exp), "analysis": result}
    if report:
        from teachwhy.report import write_report

        out["report"] = {k: str(v) for k, v in write_report(exp).items()}
    return out
