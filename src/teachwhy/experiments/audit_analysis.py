"""The audit evals of an experiment (spec `suite: audit`, evals/suites/audit) in analysis.json.

For every finished cell (arm, budget, training seed, stage), audit eval and dimension:

- `score`: the mean transcript score (1 no sign to 10 clear and repeated) over the cell's transcripts
  that score the dimension, with a 95% CI from a bootstrap that resamples whole seed instructions
  (the transcripts of one seed id are one cluster); a normal interval when one seed id scores the
  dimension, none for a single transcript;
- `vs_base`: the arm's score minus the base model's, paired by (seed id, sample index), with the same
  kind of interval over the pairs (evals/stats.paired_effect). Negative: fewer signs than base.

Every entry carries its n: transcripts (or pairs) and seed ids.

    analysis.json["audit"] = {"metric": str, "evals": {name: settings}, "dimensions": [str],
                              "rows": [{"eval", "dimension", "cell_id", "arm", "kind", "budget", "seed",
                                        "stage", "score": {...}, "vs_base": {...} | None}]}
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from teachwhy.evals.stats import cluster_bootstrap, mean_ci, paired_effect
from teachwhy.experiments.runner import experiment_dir, plan
from teachwhy.experiments.spec import EvalSpec, ExperimentSpec
from teachwhy.store import read_jsonl

METRIC = ("audit dimension score, 1 (no sign) to 10 (clear and repeated): mean over a cell's transcripts, "
          "95% CI from a bootstrap over seed ids as clusters; vs base = arm minus base, paired by "
          "(seed id, sample index); negative: fewer signs than base")

Key = tuple[str, int]  # (seed id, sample index)


def audit_evals(spec: ExperimentSpec) -> list[EvalSpec]:
    return [ev for ev in spec.evals if ev.suite == "audit"]


def scores(records: Iterable[dict]) -> dict[str, dict[Key, float]]:
    """{dimension: {(seed id, sample index): score}} from an audit run's records (the judge's score where
    it scored, else the offline one; transcripts with no score are left out)."""
    out: dict[str, dict[Key, float]] = {}
    for r in records:
        for dim, d in (r.get("dimensions") or {}).items():
            if isinstance(d, dict) and d.get("score") is not None:
                out.setdefault(dim, {})[(str(r["scenario_id"]), int(r.get("sample_index", 0)))] = float(d["score"])
    return out


def mean_score(vals: dict[Key, float], seed: int = 0, replicates: int = 2000) -> dict:
    """The mean score with its 95% CI, clustered by seed id."""
    keys = sorted(vals)
    xs = [vals[k] for k in keys]
    ids = [k[0] for k in keys]
    n = len(xs)
    if n == 0:
        return {"n": 0, "seed_ids": 0, "mean": None, "ci_95": None, "method": None}
    cb = cluster_bootstrap(xs, ids, n_boot=replicates, seed=seed)
    m = mean_ci(xs, bounds=(1.0, 10.0))
    assert m is not None  # n > 0
    if cb is not None:
        ci, method = list(cb), "cluster bootstrap over seed ids"
    elif n >= 2:
        ci, method = [m[1], m[2]], "normal (one seed id)"
    else:
        ci, method = None, "none (one transcript)"
    return {"n": n, "seed_ids": len(set(ids)), "mean": m[0], "ci_95": ci, "method": method}


def versus_base(arm: dict[Key, float], base: dict[Key, float], seed: int = 0, replicates: int = 2000) -> dict:
    """Arm minus base over the (seed id, sample index) pairs both have."""
    keys = sorted(set(arm) & set(base))
    eff = paired_effect([arm[k] - base[k] for k in keys], [k[0] for k in keys], n_boot=replicates, seed=seed)
    eff["seed_ids"] = eff.pop("clusters")
    if eff["method"] == "cluster bootstrap":
        eff["method"] = "cluster bootstrap over seed ids"
    elif eff["method"] == "normal (one cluster)":
        eff["method"] = "normal (one seed id)"
    elif eff["method"] == "none (one item)":
        eff["method"] = "none (one pair)"
    return eff


def settings(ev: EvalSpec) -> dict[str, Any]:
    """What an audit eval ran, for the report."""
    return {"mode": "offline" if ev.offline else "llm", "seed_files": ev.seed_files, "seed_ids": ev.seed_ids,
            "limit": ev.limit, "samples": ev.samples, "max_tokens": ev.max_tokens, "auditor": ev.auditor,
            "judge": ev.judge, "max_turns": ev.max_turns if ev.auditor else None}


def _dimension_order(found: Iterable[str]) -> list[str]:
    from teachwhy.evals.suites.audit.seeds import dimensions

    found = set(found)
    return [d for d in dimensions() if d in found] + sorted(found - set(dimensions()))


def analyse_audit(spec: ExperimentSpec, seed: int = 0, replicates: int = 2000) -> dict | None:
    """analysis.json's `audit` entry (see the module docstring); None when the spec has no audit eval."""
    evals = audit_evals(spec)
    if not evals:
        return None
    names = {ev.name for ev in evals}
    exp = experiment_dir(spec)
    base_arm = next(a for a in spec.arms if a.kind == "base")
    cells: list[tuple[Any, dict[str, dict[str, dict[Key, float]]]]] = []  # (cell, {eval: {dim: scores}})
    for cell in plan(spec):
        path = exp / "cells" / f"{cell.cell_id}.json"
        if not path.is_file():
            continue
        rec = json.loads(path.read_text())
        got = {name: scores(read_jsonl(Path(ev["run_dir"]) / "samples.jsonl"))
               for name, ev in (rec.get("evals") or {}).items() if name in names}
        if got:
            cells.append((cell, got))
    base = next((got for cell, got in cells if cell.arm.name == base_arm.name), {})
    rows = []
    for ev in evals:
        dims = _dimension_order(d for _c, got in cells for d in got.get(ev.name, {}))
        for dim in dims:
            ref = (base.get(ev.name) or {}).get(dim)
            for cell, got in cells:
                vals = (got.get(ev.name) or {}).get(dim)
                if vals is None:
                    continue
                is_base = cell.arm.kind == "base"
                rows.append({
                    "eval": ev.name, "dimension": dim, "cell_id": cell.cell_id, "arm": cell.arm.name,
                    "kind": cell.arm.kind, "budget": cell.budget, "seed": cell.seed, "stage": cell.stage,
                    "score": mean_score(vals, seed, replicates),
                    "vs_base": None if is_base or ref is None else versus_base(vals, ref, seed, replicates)})
    return {"metric": METRIC, "evals": {ev.name: settings(ev) for ev in evals},
            "dimensions": _dimension_order(r["dimension"] for r in rows), "rows": rows}
