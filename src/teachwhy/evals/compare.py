"""The training effect: two choice-mode runs on the same scenarios, compared scenario by scenario.

`compare_runs(A, B)` pairs each scenario's P(harmful) (and harmful choice) in run B with run A and
reports the mean difference B - A with a 95% CI from a bootstrap over scenario clusters (family and
template). It refuses runs that differ in mode, scenarios, format or scoring: a difference between
them would not be a training effect.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from teachwhy.errors import UserError
from teachwhy.evals.stats import paired_effect, rate_row
from teachwhy.evals.summary import format_of, group_of
from teachwhy.store import read_jsonl


def _load(run: str | Path) -> tuple[Path, dict, list[dict]]:
    d = Path(run)
    cfg = d / "config.json"
    if not cfg.is_file():
        raise UserError(f"{d} is not an eval run directory (no config.json): pass runs/<run-id> "
                        "as printed by `teachwhy eval`")
    config = json.loads(cfg.read_text())
    samples = d / "samples.jsonl"
    recs = read_jsonl(samples) if samples.is_file() else []
    if not recs:
        raise UserError(f"{d} has no samples: run the eval first (rerunning its command resumes it)")
    return d, config, recs


def compare_runs(run_a: str | Path, run_b: str | Path, fmt: str | None = None,
                 scoring: str | None = None, n_boot: int = 2000, seed: int = 0) -> dict:
    """Paired per-scenario difference B - A (see the module docstring); the runs' suite adds its own
    part (evals/suites: the validity level and trained families, or the principles moved most)."""
    from teachwhy.evals import suites

    da, ca, ra = _load(run_a)
    db, cb, rb = _load(run_b)
    _check_comparable(ca, cb)
    fmt, scoring, a_by, b_by = _paired_records(ca, cb, ra, rb, fmt, scoring)
    ids = sorted(a_by)

    def effect(keep: Callable[[dict], bool] | None = None) -> dict | None:
        subset = [i for i in ids if keep is None or keep(a_by[i])]
        return _effect(subset, a_by, b_by, scoring, n_boot, seed) if subset else None

    fams = sorted({a_by[i]["family"] for i in ids})
    out = {
        "a": {"run": str(da), "model": ca.get("model")}, "b": {"run": str(db), "model": cb.get("model")},
        "format": fmt, "scoring": scoring, "overall": effect(),
        "by_family": {f: effect(_family_is(f)) for f in fams},
        "trained_families": None, "suite": ca.get("suite", "agentic"),
    }
    return suites.get(out["suite"]).compare(ca, cb, out, effect)


def _family_is(family: str) -> Callable[[dict], bool]:
    return lambda r: r["family"] == family


def _check_comparable(ca: dict, cb: dict) -> None:
    for key, what in (("suite", "suite"), ("mode", "mode"), ("scenarios", "scenario set"),
                      ("n_scenarios", "number of scenarios")):
        if ca.get(key) != cb.get(key):
            raise UserError(f"runs differ in {what} ({ca.get(key)!r} vs {cb.get(key)!r}): compare runs of "
                            "the same scenarios in the same mode")
    if ca.get("mode") != "choice":
        from teachwhy.evals import suites

        suite = suites.get(ca.get("suite", "agentic")) if ca.get("suite", "agentic") in suites.names() else None
        why = getattr(suite, "not_comparable", None)  # a suite whose runs compare elsewhere says where
        raise UserError(why or "compare works on choice-mode runs (per-scenario P(harmful)); these are "
                        f"{ca.get('mode')} runs")


def _paired_records(ca: dict, cb: dict, ra: list[dict], rb: list[dict], fmt: str | None,
                    scoring: str | None) -> tuple[str, str, dict[str, dict], dict[str, dict]]:
    """The format and scoring to compare, and each run's records of it by scenario id (the same ids)."""
    from teachwhy.evals.choice import primary_scoring

    fa = ca.get("formats") or ["continuation"]
    fb = cb.get("formats") or ["continuation"]
    fmt = fmt or fa[0]
    if fmt not in fa or fmt not in fb:
        raise UserError(f"format '{fmt}' is not in both runs (A has {', '.join(fa)}; B has {', '.join(fb)}): "
                        "pick one both have with --format, or rerun one of them with it")
    ra = [r for r in ra if format_of(r) == fmt]
    rb = [r for r in rb if format_of(r) == fmt]
    sa, sb = primary_scoring(fmt, ra), primary_scoring(fmt, rb)
    if scoring is None:
        if sa != sb:
            raise UserError(f"the runs lead with different scorings in {fmt} ({sa} vs {sb}): pass --scoring")
        scoring = sa
    for name, recs in (("A", ra), ("B", rb)):
        if not all(scoring in r for r in recs):
            raise UserError(f"run {name} has no '{scoring}' scoring for every scenario in the {fmt} format")
    a_by = {r["scenario_id"]: r for r in ra}
    b_by = {r["scenario_id"]: r for r in rb}
    if set(a_by) != set(b_by):
        missing = sorted(set(a_by) ^ set(b_by))
        raise UserError(f"the runs hold different scenarios ({len(missing)} not in both, e.g. {missing[0]}): "
                        "finish both runs (rerun their commands) before comparing")
    if not a_by:
        raise UserError(f"neither run has finished a scenario in the {fmt} format: finish both runs (rerun "
                        "their commands) before comparing")
    return fmt, scoring, a_by, b_by


def _effect(subset: list[str], a_by: dict[str, dict], b_by: dict[str, dict], scoring: str, n_boot: int,
            seed: int) -> dict:
    """B - A over `subset`: P(harmful) and harmful-choice differences with paired CIs, and each run's rate."""
    clusters = [group_of(a_by[i]) for i in subset]
    p = paired_effect([b_by[i][scoring]["p_harmful"] - a_by[i][scoring]["p_harmful"] for i in subset],
                      clusters, n_boot=n_boot, seed=seed)
    rate = paired_effect([float(b_by[i][scoring]["harmful_choice"]) - float(a_by[i][scoring]["harmful_choice"])
                          for i in subset], clusters, n_boot=n_boot, seed=seed)
    return {
        "n": p["n"], "clusters": p["clusters"], "method": p["method"],
        "p_harmful_diff": p["mean"], "p_harmful_diff_95": p["ci_95"],
        "rate_diff": rate["mean"], "rate_diff_95": rate["ci_95"],
        "a": rate_row((a_by[i][scoring]["harmful_choice"] for i in subset), (a_by[i]["family"] for i in subset)),
        "b": rate_row((b_by[i][scoring]["harmful_choice"] for i in subset), (b_by[i]["family"] for i in subset)),
        "a_mean_p_harmful": sum(a_by[i][scoring]["p_harmful"] for i in subset) / len(subset),
        "b_mean_p_harmful": sum(b_by[i][scoring]["p_harmful"] for i in subset) / len(subset),
    }


def moved_most(by_principle: dict[str, dict], k: int = 5) -> list[dict]:
    """The k principles whose mean P(violating) changed most from A to B (largest |difference| first),
    each with its CI and whether the CI excludes zero."""
    rows = []
    for pid, e in by_principle.items():
        d, ci = e["p_harmful_diff"], e["p_harmful_diff_95"]
        if d is None:
            continue
        clear = bool(ci) and (ci[0] > 0 or ci[1] < 0)
        rows.append({"principle": pid, "n": e["n"], "p_violating_diff": d, "p_violating_diff_95": ci,
                     "direction": "more adherent" if d < 0 else "less adherent" if d > 0 else "unchanged",
                     "ci_excludes_zero": clear})
    rows.sort(key=lambda r: -abs(r["p_violating_diff"]))
    return rows[:k]


def trained_families(model: str | None) -> list[str] | None:
    """The families B's training data was built from, where B is a teachwhy training run whose data
    cards record them (None when unknown or all)."""
    if not model:
        return None
    p = Path(model)
    run = p.parent if (p / "adapter_config.json").is_file() else p
    summ = run / "summary.json"
    if not summ.is_file():
        return None
    try:
        sources = json.loads(summ.read_text()).get("sources") or []
    except (OSError, ValueError):
        return None
    fams: set[str] = set()
    for s in sources:
        base = Path(s.get("path", ""))
        card = (base if base.is_dir() else base.parent) / "card.json"
        if not card.is_file():
            return None
        got = json.loads(card.read_text()).get("families")
        if not got:
            return None
        fams.update(got)
    return sorted(fams) if fams else None
