"""What the report says, computed once for both renderers (html.py, markdown.py).

Most numbers come from analysis.json as efficiency.analyse() wrote them (curves, multiples, persistence,
gaps, generalization, statements), read through its typed model (results.ExperimentAnalysis). Two
sections are computed here from samples.jsonl, because the analysis does not carry them: per-family
results (mean P(harmful) and its effect against the base model, paired by scenario) and the sample
browser's rows.

The headline opens with the validity sentence (evals/validity.headline, looked up when the report is
written): when a measure the study used is validated across wording, the headline uses only the evals
scored with such measures; otherwise it says that no measure is, so the effects measure template
learning and drift. Then one sentence per comparison, and each eval's measured direction; the
multiples' sentences go to the appendix. The by-wording table sets each arm's effect on in-template and
held-out-wording evals side by side.

Audit evals (analysis.json `audit`) get one table per dimension: each cell's mean transcript score
and its difference from the base model, paired by seed id and sample index.

Tables are plain data, {"id", "title", "columns": [{"label", "num"}], "rows": [[str]], "notes": [str]},
so the HTML and the Markdown report show the same numbers. Every estimate is written as
`mean [lo, hi]` with its 95% interval and sits in a row that gives its n.
"""

from __future__ import annotations

import json
import math
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from teachwhy.evals.validity import HELD_OUT, IN_TEMPLATE, wording_level
from teachwhy.evals.validity import headline as validity_headline
from teachwhy.report.load import Experiment
from teachwhy.results import (
    AnalysisValidity,
    ArmEffect,
    AuditAnalysis,
    AuditRow,
    AuditScore,
    AuditSettings,
    ChoiceDiagnostics,
    Curve,
    Estimate,
    EvalWording,
    FamilyPart,
    Multiple,
    MultipleBootstrap,
    Open,
    Rate,
    Row,
    VsUnrelated,
)

PUBLISHED = "reasons beat demonstrations per token"
REPLICATES = 2000
ALPHA = 0.05
STAGE_LABEL = {"none": "-", "sft": "SFT", "rl": "after RL"}


# -- number formatting -----------------------------------------------------------------------------
def f3(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def s3(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.3f}"


def ends(ci: Sequence[float | None] | None) -> tuple[float | None, float | None]:
    """A 95% CI's two ends (None for an end, or both, that the JSON does not give)."""
    return (ci[0], ci[1]) if ci else (None, None)


def est(e: Estimate | None, signed: bool = False) -> str:
    """A mean and its 95% CI as `0.412 [0.351, 0.470]` (signed: `+0.051 [+0.020, +0.080]`)."""
    if e is None or e.mean is None:
        return "n/a"
    f = s3 if signed else f3
    lo, hi = ends(e.ci_95)
    return f"{f(e.mean)} [{f(lo)}, {f(hi)}]"


def diff_est(mean: float | None, ci: list[float] | None) -> str:
    """A difference and its 95% CI (a pressure effect, a control's effect), signed."""
    return est(Estimate(mean=mean, ci_95=ci), True)


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}" if x in (0, 1) else f"{x:.1%}"


def rate(r: Rate | None) -> str:
    """A harmful top-choice rate: `5/24 = 20.8% [9.2%, 40.5%]` (Wilson 95%)."""
    if r is None or not r.n:
        return "n/a"
    lo, hi = ends(r.wilson_95)
    return f"{r.k}/{r.n} = {pct(r.rate)} [{pct(lo)}, {pct(hi)}]"


def times(m: float | None, infinite: bool = False) -> str:
    if infinite:
        return "unbounded"
    if m is None:
        return "n/a"
    return f"{m:.0f}x" if m >= 10 else f"{m:.1f}x" if m >= 1 else f"{m:.2f}x"


def tokens(b: int | None) -> str:
    return "-" if b is None else f"{b:,}"


def n_of(scenarios: int | None, seeds: Iterable[int] | int | None) -> str:
    """`24 × 2`: scenarios × seeds (a range of seed counts where the compared cells differ)."""
    if seeds is None:
        return f"{scenarios}"
    ks = sorted({seeds} if isinstance(seeds, int) else set(seeds))
    s = str(ks[0]) if len(ks) == 1 else f"{ks[0]}-{ks[-1]}"
    return f"{scenarios} × {s}"


def table(tid: str, title: str, columns: list[tuple[str, bool]], rows: list[list[str]],
          notes: list[str] | None = None, empty: str = "none", statements: list[str] | None = None) -> dict:
    """notes: how to read the table; statements: efficiency.analyse()'s sentences for its rows."""
    return {"id": tid, "title": title, "columns": [{"label": c, "num": num} for c, num in columns], "rows": rows,
            "notes": notes or [], "empty": empty, "statements": statements or []}


# -- arms ------------------------------------------------------------------------------------------
def arm_roles(exp: Experiment) -> dict[str, str]:
    """Arm name -> base | prompt | demonstration | why | sft: an SFT arm is a demonstration arm when
    all of its data is demonstrations, a why-data arm when none of it is."""
    roles = {}
    for a in exp.spec.get("arms", []):
        kind = a.get("kind") or "sft"
        if kind != "sft":
            roles[a["name"]] = kind
            continue
        kinds = {c.get("kind") for c in a.get("data") or []}
        roles[a["name"]] = ("demonstration" if kinds == {"demonstration"}
                            else "why" if kinds and "demonstration" not in kinds else "sft")
    return roles


def _cond_label(arm: str, kind: str, budget: int | None, stage: str) -> str:
    if kind == "base":
        return f"{arm} (base)"
    if kind == "prompt":
        return f"{arm} (prompt)"
    return f"{arm} @ {tokens(budget)} ({STAGE_LABEL.get(stage, stage)})"


# -- headline --------------------------------------------------------------------------------------
def _verdict(m: Multiple) -> str | None:
    """Which arm one multiple shows more token-efficient: "a", "b" or None (not shown). A multiple is
    the tokens B needs to match A's effect at budget_a, over budget_a: above 1 favours A."""
    boot = m.bootstrap or MultipleBootstrap()
    if m.reached is None or boot.fraction_a_not_better > 0:
        return None
    lo, hi = ends(boot.ci_95)
    lo_v = math.inf if boot.ci_lower_infinite else lo
    hi_v = math.inf if boot.ci_upper_infinite else hi
    # at-most replicates are only upper bounds on the multiple: they can show B better, never A
    if lo_v is not None and lo_v > 1 and boot.fraction_at_most == 0:
        if m.bound == "more_than" and (m.multiple or 0) < 1:
            return None
        return "a"
    if hi_v is not None and hi_v < 1:
        return "b"
    return None


def direction(exp: Experiment, ev: str) -> dict:
    """The direction as measured on one eval (SFT stage): how many multiples between a why-data arm and
    a demonstration arm show either more token-efficient, with a sentence that says it plainly."""
    roles = arm_roles(exp)
    why = sorted(a for a, r in roles.items() if r == "why")
    demo = sorted(a for a, r in roles.items() if r == "demonstration")
    ms = [m for m in exp.analysis.multiples if m.eval == ev and m.stage == "sft"
          and {roles.get(m.arm_a), roles.get(m.arm_b)} == {"why", "demonstration"}]
    out: dict[str, Any] = {"eval": ev, "why_arms": why, "demo_arms": demo, "comparisons": len(ms),
                           "why_better": 0, "demo_better": 0}
    if not why or not demo:
        missing = "a demonstration arm" if not demo else "a why-data arm"
        out["verdict"] = "not testable"
        out["text"] = (f"On {ev}, the direction cannot be measured: the experiment has no {missing} (the published "
                       f"finding is that {PUBLISHED}).")
        return out
    if not ms:
        out["verdict"] = "not measured"
        out["text"] = (f"On {ev}, no data-efficiency multiple between a why-data arm ({', '.join(why)}) and a "
                       f"demonstration arm ({', '.join(demo)}) was computed (an arm has no finished SFT cells).")
        return out
    for m in ms:
        v = _verdict(m)
        if v is None:
            continue
        winner = m.arm_a if v == "a" else m.arm_b
        out["why_better" if roles[winner] == "why" else "demo_better"] += 1
    w, d, n = out["why_better"], out["demo_better"], len(ms)
    counts = (f"{w} of {n} multiples (SFT stage, both orders, every budget) show a why-data arm more "
              f"token-efficient with a 95% CI that excludes 1x, {d} show a demonstration arm")
    if w and not d:
        out["verdict"] = "as published"
        out["text"] = f"Direction on {ev}, as measured: {PUBLISHED}, as published ({counts})."
    elif d and not w:
        out["verdict"] = "reversed"
        out["text"] = (f"Direction on {ev}, as measured: demonstrations beat reasons per token, the reverse of the "
                       f"published finding that {PUBLISHED} ({counts}).")
    elif w and d:
        out["verdict"] = "mixed"
        out["text"] = (f"Direction on {ev}, as measured: mixed; which arm is more token-efficient depends on the "
                       f"arms and budgets compared ({counts}). The published finding is that {PUBLISHED}.")
    else:
        out["verdict"] = "not shown"
        out["text"] = (f"Direction on {ev}, as measured: not shown; no multiple's CI excludes 1x ({counts}). The "
                       f"published finding is that {PUBLISHED}.")
    return out


# -- wording and validity --------------------------------------------------------------------------
LEVELS = (IN_TEMPLATE, HELD_OUT)


Levels = dict[str, EvalWording]  # honeypot eval -> its wording and level


def wording_levels(exp: Experiment) -> Levels:
    """Honeypot eval -> its wording and level: analysis.json's `wording`, else from the spec (an older
    spec without `wording:` scored the house candidates, so in-template)."""
    if exp.analysis.wording is not None:
        return exp.analysis.wording
    out = {}
    for e in exp.spec.get("evals") or []:
        if e.get("suite", "agentic") != "agentic":
            continue
        w = e.get("wording") or "house"
        files = e.get("scenario_files") or []
        out[e["name"]] = EvalWording(wording="file" if files else w, level=wording_level(w, files))
    return out


def level_of(levels: Levels, ev: str) -> str | None:
    """An eval's wording level (in-template or held-out wording); None for an eval without one."""
    got = levels.get(ev)
    return None if got is None else got.level


def _measures(exp: Experiment, levels: Levels) -> dict[str, str]:
    """Honeypot choice eval -> the measure its rows use ("format/scoring")."""
    v = exp.analysis.validity
    if v is not None and v.measures:
        return dict(v.measures)
    modes = {e["name"]: e.get("mode", "choice") for e in exp.spec.get("evals") or []}
    out: dict[str, str] = {}
    for s in exp.samples:
        if s["eval"] in levels and modes.get(s["eval"], "choice") == "choice" and "/" in str(s.get("scoring")):
            out.setdefault(s["eval"], str(s["scoring"]))
    return out


def validity_view(exp: Experiment, levels: Levels) -> dict:
    """The headline's first sentence: which measures the controls validated across wording for this
    model (evals/validity.headline, read now, so a report rewritten after new controls shows their
    level), and the evals the headline may use: those measures' evals, else every eval."""
    v = exp.analysis.validity or AnalysisValidity()
    model = v.model or exp.spec.get("model") or "this model"
    measures = _measures(exp, levels)
    pairs = [(m.split("/", 1)[0], m.split("/", 1)[1]) for m in dict.fromkeys(measures.values())]
    got = validity_headline(list(v.fingerprints or []), model, pairs)
    across = list(got["validated_across"])
    reached = "; ".join(f"{m}: {lv}" for m, lv in got["levels"].items()) or "the study scored no honeypot choice eval"
    if across:
        used = [ev for ev, m in measures.items() if m in across]
        one = len(across) == 1
        which = "that measure" if one else "those measures"
        text = (f"Validity: {', '.join(across)} {'is' if one else 'are'} validated across wording for {model} (its "
                f"controls moved it on held-out wording too), so this headline uses only {which} "
                f"({', '.join(used)}).")
    else:
        used = None
        text = (f"No measure here is validated across wording for {model} ({reached}), so the effects below "
                "measure template learning and drift, not the decision.")
    return {"model": model, "validated": bool(across), "levels": got["levels"], "evals": used, "text": text}


def short_tokens(b: int | None) -> str:
    """8000 -> 8k, 1500 -> 1.5k, 2000000 -> 2M (the headline's compact token counts)."""
    if b is None:
        return "-"
    for div, unit in ((1_000_000, "M"), (1_000, "k")):
        if b >= div:
            return f"{b / div:.1f}".rstrip("0").rstrip(".") + unit
    return str(b)


def _flip(e: Estimate) -> Estimate:
    lo, hi = ends(e.ci_95)
    return Estimate(mean=None if e.mean is None else -e.mean, ci_95=None if lo is None or hi is None else [-hi, -lo])


def _told(e: Estimate | None, arm: str, other: str) -> str:
    lo, hi = ends(e.ci_95 if e is not None else None)
    if lo is not None and lo > 0:
        return f"told apart, {arm} less harmful"
    if hi is not None and hi < 0:
        return f"told apart, {other} less harmful"
    return "not told apart"


def comparisons(exp: Experiment, evals: list[str], levels: Levels) -> list[str]:
    """One sentence per comparison: each why-data arm against each demonstration arm at each budget
    (SFT stage), on each eval, the two wording levels side by side; without such a pair (or an analysis
    written without contrasts), each arm against the base model at its largest budget."""
    roles = arm_roles(exp)
    why = sorted(a for a, r in roles.items() if r == "why")
    demo = sorted(a for a, r in roles.items() if r == "demonstration")
    level = {ev: level_of(levels, ev) for ev in evals}
    count: dict[Any, int] = defaultdict(int)
    for ev in evals:
        count[level[ev]] += 1

    def where(ev: str) -> str:
        lv = level[ev]
        if lv is None:
            return f"on {ev}"
        return lv if count[lv] == 1 else f"{lv} ({ev})"

    order = list(evals)  # held-out wording first (headline() sorts them)
    out: list[tuple[tuple, str]] = []
    contrasts = [c for c in exp.analysis.contrasts if c.stage == "sft"]
    if why and demo:
        for c in contrasts:
            if c.eval not in order or {roles.get(c.arm_a), roles.get(c.arm_b)} != {"why", "demonstration"}:
                continue
            a, b, d = c.arm_a, c.arm_b, c.difference
            if roles.get(a) != "why":
                a, b, d = b, a, _flip(d)
            n = n_of(c.n_scenarios, [c.n_seeds_a, c.n_seeds_b])
            out.append(((a, b, c.budget, order.index(c.eval)),
                        f"{a} vs {b} at {short_tokens(c.budget)} tokens, {where(c.eval)}: "
                        f"{est(d, signed=True)}, n={n}: {_told(d, a, b)}."))
    if out:
        return [text for _, text in sorted(out, key=lambda x: x[0])]
    kind_rank = {"prompt": 0, "sft": 1}
    for ev in order:
        curves = [cv for cv in exp.analysis.curves if cv.eval == ev and cv.kind in kind_rank and cv.stage != "rl"]
        top: dict[str, Curve] = {}
        for cv in curves:
            if cv.arm not in top or (cv.budget or 0) > (top[cv.arm].budget or 0):
                top[cv.arm] = cv
        for arm, cv in top.items():
            at = f" at {short_tokens(cv.budget)} tokens" if cv.budget else ""
            e = cv.effect
            out.append(((kind_rank[cv.kind], arm, order.index(ev)),
                        f"{arm} vs base{at}, {where(ev)}: {est(e, signed=True)}, "
                        f"n={n_of(cv.n_scenarios, cv.n_seeds)}: {_told(e, arm, 'base')}."))
    return [text for _, text in sorted(out, key=lambda x: x[0])]


def headline(exp: Experiment, evals: list[str]) -> dict:
    """The headline: the validity sentence first, then one sentence per comparison, then each eval's
    measured direction. The multiples' own sentences go to the appendix."""
    roles = arm_roles(exp)
    levels = wording_levels(exp)
    validity = validity_view(exp, levels)
    rank: dict[str | None, int] = {HELD_OUT: 0, IN_TEMPLATE: 1}
    used = sorted((ev for ev in evals if validity["evals"] is None or ev in validity["evals"]),
                  key=lambda ev: (rank.get(level_of(levels, ev), 2), evals.index(ev)))
    items = []
    for ev in used:
        d = direction(exp, ev)
        ms = [m for m in exp.analysis.multiples if m.eval == ev and m.stage == "sft"]
        key = [m for m in ms if {roles.get(m.arm_a), roles.get(m.arm_b)} == {"why", "demonstration"}]
        items.append({"eval": ev, "level": level_of(levels, ev), "direction": d,
                      "statements": [m.statement for m in (key or ms)]})
    return {"validity": validity, "comparisons": comparisons(exp, used, levels), "items": items,
            "published": PUBLISHED}


def wording_table(exp: Experiment, evals: list[str]) -> dict:
    """Each arm's effect on the in-template and the held-out-wording evals, side by side (one pair of
    columns per honeypot eval, in-template first); the base row gives its mean P(harmful)."""
    levels = wording_levels(exp)
    level = {ev: lv for ev in evals if (lv := level_of(levels, ev))}
    rank = {IN_TEMPLATE: 0, HELD_OUT: 1}
    evs = sorted(level, key=lambda ev: (rank.get(level[ev], 2), evals.index(ev)))
    per_level: dict[str, int] = defaultdict(int)
    for ev in evs:
        per_level[level[ev]] += 1
    cols: list[tuple[str, bool]] = [("arm", False)]
    for ev in evs:
        lv = level[ev]
        name = lv if per_level[lv] == 1 else f"{lv}: {ev}"
        cols += [(f"{name} effect [95% CI]", True), ("n", True)]
    by: dict[tuple, dict[str, Curve]] = defaultdict(dict)
    keys: list[tuple] = []
    for c in exp.analysis.curves:
        if c.eval not in evs:
            continue
        key = (c.arm, c.kind, c.budget, c.stage)
        if key not in by:
            keys.append(key)
        by[key][c.eval] = c
    rows = []
    for key in keys:
        arm, kind, budget, stage = key
        row = [f"{arm}: mean P(harmful), the reference" if kind == "base" else _cond_label(arm, kind, budget, stage)]
        for ev in evs:
            got = by[key].get(ev)
            if got is None:
                row += ["n/a", "-"]
                continue
            row += [est(got.p_harmful) if kind == "base" else est(got.effect, signed=True),
                    n_of(got.n_scenarios, got.n_seeds)]
        rows.append(row)
    notes = ["In-template: the eval split's own candidates, whose clause shapes the training data's actions share, "
             "so a gain there may be template learning. Held-out wording: the same prompts with candidates from "
             "wording banks no training material draws from. Effect = base minus arm mean P(harmful), paired by "
             "scenario within each eval (positive: less harmful); the columns are separate evals, not paired with "
             "each other; n = scenarios × seeds."]
    if not any(level[ev] == HELD_OUT for ev in evs):
        notes.append("No eval here uses held-out wording, so every effect in this report may be template learning: "
                     "add the same eval with `wording: heldout` (docs/experiments.md).")
    return table("by-wording", "Effect vs base by wording: in-template and held-out", cols, rows, notes,
                 empty="no honeypot eval has results yet")


# -- analysis tables -------------------------------------------------------------------------------
def curves_table(exp: Experiment, ev: str) -> dict:
    rows = []
    for c in exp.analysis.curves:
        if c.eval != ev:
            continue
        rows.append([c.arm, c.kind, STAGE_LABEL.get(c.stage, c.stage), tokens(c.budget),
                     n_of(c.n_scenarios, c.n_seeds), est(c.p_harmful),
                     "0 (reference)" if c.kind == "base" else est(c.effect, signed=True), rate(c.harmful())])
    lv = level_of(wording_levels(exp), ev)
    replicates = exp.analysis.n_replicates
    return table(f"curves-{ev}", f"Mean P(harmful) and effect vs base: {ev}" + (f" ({lv})" if lv else ""),
                 [("arm", False), ("kind", False), ("stage", False), ("training tokens", True),
                  ("n (scenarios × seeds)", True), ("mean P(harmful) [95% CI]", True),
                  ("effect vs base [95% CI]", True), ("top choice harmful [Wilson 95% CI]", True)], rows,
                 notes=["Effect = base P(harmful) minus the arm's, paired by scenario and averaged over seeds: "
                        "positive means less harmful than base. Intervals: paired bootstrap over scenarios "
                        f"(and seeds), {'?' if replicates is None else replicates} replicates."])


def _multiple_cell(m: Multiple) -> str:
    if m.reached is None:
        return "undefined (A no better than base)"
    if m.bound == "at_most":
        return f"≤ {times(m.multiple)}"
    if m.bound == "more_than":
        return f"> {times(m.multiple)}"
    return times(m.multiple)


def _boot_cell(m: Multiple) -> str:
    b = m.bootstrap or MultipleBootstrap()
    if m.reached is None:
        return "n/a"
    lo, hi = ends(b.ci_95)
    s = f"[{times(lo, b.ci_lower_infinite)}, {times(hi, b.ci_upper_infinite)}]"
    if b.fraction_a_not_better:
        s += f" (A no better than base in {pct(b.fraction_a_not_better)} of replicates)"
    return s


def multiples_table(exp: Experiment) -> dict:
    rows, notes = [], []
    for m in exp.analysis.multiples:
        b_curve = "; ".join(f"{tokens(p.budget)}: {est(p.effect, signed=True)}" for p in m.curve_b)
        seeds = [m.n_seeds_a, *(p.n_seeds for p in m.curve_b)]
        b = m.bootstrap or MultipleBootstrap()
        rows.append([m.eval, STAGE_LABEL.get(m.stage, m.stage), m.arm_a, tokens(m.budget_a),
                     est(m.effect_a, signed=True), m.arm_b, b_curve, _multiple_cell(m), _boot_cell(m),
                     pct(b.fraction_reached), n_of(m.n_scenarios, seeds)])
    notes.append("Multiple = the tokens arm B needs to reach arm A's effect at A's budget, divided by A's budget "
                 "(B's curve linear in log tokens between the budgets run, never extrapolated): above 1x, A is "
                 "more token-efficient. ≤: B's smallest budget already reaches it; >: B never reaches it within "
                 "its budgets. The CI is over bootstrap replicates; 'reached' is the share of replicates in which "
                 "B reaches A's effect.")
    return table("multiples", "Every multiple: the tokens arm B needs to match arm A",
                 [("eval", False), ("stage", False), ("arm A", False), ("A tokens", True),
                  ("A effect [95% CI]", True), ("arm B", False), ("B effect by tokens [95% CI]", False),
                  ("multiple", True), ("multiple 95% CI", True), ("reached", True),
                  ("n (scenarios × seeds)", True)], rows, notes, empty="no multiples: needs two SFT arms")


def persistence_table(exp: Experiment) -> dict:
    rows = [[p.eval, p.arm, tokens(p.budget), n_of(p.n_scenarios, [p.n_seeds_sft, p.n_seeds_rl]),
             est(p.before, signed=True), est(p.after, signed=True), est(p.change, signed=True)]
            for p in exp.analysis.persistence]
    return table("persistence", "Persistence through RL: effect vs base before and after",
                 [("eval", False), ("arm", False), ("tokens", True), ("n (scenarios × seeds)", True),
                  ("after SFT [95% CI]", True), ("after RL [95% CI]", True), ("change [95% CI]", True)], rows,
                 statements=[p.statement for p in exp.analysis.persistence],
                 empty="no RL stage" if not exp.spec.get("rl") else "no arm has both its SFT and RL cells yet")


def gaps_table(exp: Experiment) -> dict:
    rows = []
    for g in exp.analysis.gaps:
        seeds = [*(g.n_seeds_a or {}).values(), *(g.n_seeds_b or {}).values()]
        rows.append([g.eval, tokens(g.budget), f"{g.arm_a} - {g.arm_b}", n_of(g.n_scenarios, seeds or None),
                     est(g.before, signed=True), est(g.after, signed=True), est(g.change, signed=True)])
    return table("gaps", "Gaps between arms before and after RL (effect of A minus effect of B)",
                 [("eval", False), ("tokens", True), ("A - B", False), ("n (scenarios × seeds)", True),
                  ("after SFT [95% CI]", True), ("after RL [95% CI]", True), ("change [95% CI]", True)], rows,
                 statements=[g.statement for g in exp.analysis.gaps],
                 empty="no gaps: needs two arms through RL at the same budget")


def generalization_table(exp: Experiment) -> dict:
    rows = []
    for g in exp.analysis.generalization:
        h, t = g.held_out or FamilyPart(), g.trained or FamilyPart()
        rows.append([g.eval, _cond_label(g.arm, g.kind, g.budget, g.stage), ", ".join(h.families),
                     n_of(h.n_scenarios, g.n_seeds), est(h.effect, signed=True), n_of(t.n_scenarios, g.n_seeds),
                     est(t.effect, signed=True), est(g.difference, signed=True)])
    held = exp.spec.get("holdout_families") or []
    empty = ("no families were held out of training (holdout_families is empty)" if not held
             else "no held-out comparison in the analysis")
    return table("generalization", "Held-out vs trained families: effect vs base",
                 [("eval", False), ("arm", False), ("held-out families", False), ("n held out", True),
                  ("effect held out [95% CI]", True), ("n trained", True), ("effect trained [95% CI]", True),
                  ("held out - trained [95% CI]", True)], rows,
                 statements=[g.statement for g in exp.analysis.generalization], empty=empty)


# -- per family, from samples.jsonl ----------------------------------------------------------------
def _boot(x: np.ndarray, *key: object) -> tuple[float, float] | None:
    """95% percentile bootstrap of the mean of x (one value per scenario); None for fewer than 2. The
    draws depend only on `key`, so a cell's interval does not change with what else is in the table."""
    n = len(x)
    if n < 2:
        return None
    rng = np.random.default_rng(zlib.crc32(json.dumps([str(k) for k in key]).encode()))
    reps = np.sort(x[rng.integers(0, n, size=(REPLICATES, n))].mean(axis=1))
    lo, hi = math.floor(ALPHA / 2 * (REPLICATES - 1)), math.ceil((1 - ALPHA / 2) * (REPLICATES - 1))
    return float(reps[lo]), float(reps[hi])


def family_tables(exp: Experiment, evals: list[str]) -> list[dict]:
    """Per eval: one row per condition, one column per family: mean P(harmful) and the effect vs base
    (paired by scenario), each with a bootstrap CI over the family's scenarios, seeds averaged first."""
    kinds = exp.arm_kinds()
    # eval -> condition -> scenario -> [p over seeds]
    by: dict[str, dict[tuple, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    fam_of: dict[str, dict[str, str]] = defaultdict(dict)
    for s in exp.samples:
        key = (s["arm"], s.get("budget"), s.get("stage", "none"))
        by[s["eval"]][key][s["scenario_id"]].append(float(s["p_harmful"]))
        fam_of[s["eval"]][s["scenario_id"]] = s["family"]
    order = {"base": 0, "prompt": 1, "sft": 2}
    stage_order = {"none": 0, "sft": 1, "rl": 2}
    out = []
    for ev in evals:
        conds = by.get(ev, {})
        if not conds:
            continue
        fams = sorted(set(fam_of[ev].values()))
        base_key = next((k for k in conds if kinds.get(k[0]) == "base"), None)
        base = {sid: float(np.mean(v)) for sid, v in conds[base_key].items()} if base_key else {}
        keys = sorted(conds, key=lambda k: (order.get(kinds.get(k[0], "sft"), 3), k[0], stage_order.get(k[2], 3),
                                            k[1] or 0))
        rows = []
        for key in keys:
            arm, budget, stage = key
            per = conds[key]
            seeds = {len(v) for v in per.values()}
            row = [_cond_label(arm, kinds.get(arm, "sft"), budget, stage)]
            for fam in fams:
                sids = sorted(sid for sid in per if fam_of[ev][sid] == fam)
                if not sids:
                    row.append("n/a")
                    continue
                p = np.array([np.mean(per[sid]) for sid in sids])
                ci = _boot(p, ev, key, fam, "p")
                cell = f"{f3(float(p.mean()))} [{f3(ci[0]) if ci else 'n/a'}, {f3(ci[1]) if ci else 'n/a'}]"
                paired = [sid for sid in sids if sid in base]
                if key != base_key and paired:
                    d = np.array([base[sid] - np.mean(per[sid]) for sid in paired])
                    dci = _boot(d, ev, key, fam, "effect")
                    cell += (f"; effect {s3(float(d.mean()))} [{s3(dci[0]) if dci else 'n/a'}, "
                             f"{s3(dci[1]) if dci else 'n/a'}]")
                row.append(f"{cell}; n={n_of(len(sids), seeds)}")
            rows.append(row)
        held = sorted({s["family"] for s in exp.samples if s["eval"] == ev and s.get("held_out")})
        cols = [("condition", False)] + [(f + (" (held out)" if f in held else ""), True) for f in fams]
        out.append(table(f"families-{ev}", f"Per family: {ev}", cols, rows, notes=[
            "Each cell: mean P(harmful) [95% CI]; effect vs base [95% CI] (base minus arm, paired by scenario); "
            "n = scenarios × seeds. Seeds are averaged per scenario, then a percentile bootstrap over the "
            f"family's scenarios ({REPLICATES} replicates); n/a where a family has a single scenario."]))
    return out


# -- diagnostics, data cards, cells ----------------------------------------------------------------
def _share(x: Rate) -> str:
    lo, hi = ends(x.wilson_95)
    return f"{x.k}/{x.n} = {pct(x.rate)} [{pct(lo)}, {pct(hi)}]"


def _empty(m: Open | None) -> bool:
    """No entry, or one with no keys at all (as an empty JSON object)."""
    return m is None or not (m.model_fields_set or m.model_extra)


def diagnostics(exp: Experiment) -> dict:
    """Whatever analysis.json carries under diagnostics: warnings, the known diagnostics as tables,
    the rest as JSON. ran=False when it is absent or empty."""
    d = exp.analysis.diagnostics
    if d is None or _empty(d):
        return {"ran": False, "text": "not run: analysis.json carries no validity diagnostics"}
    out: dict[str, Any] = {"ran": True, "warnings": list(d.warnings or []), "tables": [], "facts": []}
    for value, label in ((d.model, "model"), (d.format, "format"), (d.scoring, "scoring"),
                         (d.n_scenarios, "scenarios")):
        if value is not None:
            out["facts"].append(f"{label}: {value}")
    inner = d.diagnostics or ChoiceDiagnostics()
    shares = []
    if inner.same_winner is not None:
        shares.append(["same candidate wins within a family and template, whatever the condition",
                       _share(inner.same_winner)])
    for pair, x in (inner.scoring_agreement or {}).items():
        shares.append([f"scorings {pair.replace('~', ' and ')} agree on the harmful choice", _share(x)])
    if inner.position is not None:
        for k, r in (("same_letter_every_rotation", inner.position.same_letter_every_rotation),
                     ("same_candidate_every_rotation", inner.position.same_candidate_every_rotation)):
            if r is not None:
                shares.append([k.replace("_", " "), _share(r)])
    if inner.over_context is not None:
        shares.append(["scenarios longer than the model's context", str(inner.over_context)])
    if shares:
        out["tables"].append(table("diag-shares", "Validity diagnostics (base model)",
                                   [("diagnostic", False), ("k/n = rate [Wilson 95% CI]", True)], shares))
    if d.pressure:
        out["tables"].append(table(
            "diag-pressure", "Pressure effects: each condition minus its control (same candidates)",
            [("condition", False), ("n", True), ("P(harmful) difference [95% CI]", True),
             ("harmful-choice difference [95% CI]", True), ("clusters", True)],
            [[p.condition, str(p.n), diff_est(p.p_harmful_diff, p.p_harmful_diff_95),
              diff_est(p.rate_diff, p.rate_diff_95), str(p.clusters)] for p in d.pressure]))
    # the keys no field names, as they are in analysis.json
    rest = dict(d.model_extra or {})
    if inner.model_extra:
        rest["diagnostics"] = dict(inner.model_extra)
    out["other_json"] = json.dumps(rest, indent=2, sort_keys=True, default=str) if rest else None
    return out


def _diff(o: ArmEffect | None) -> str:
    return "n/a" if o is None else diff_est(o.p_harmful_diff, o.p_harmful_diff_95)


def _or_unknown(x: Any) -> Any:
    return "?" if x is None else x


def controls(exp: Experiment) -> dict:
    """The controls cell's effects (analysis.json `controls`): one row per format and scoring, and each
    verdict's reason. ran=False when the experiment did not run them."""
    c = exp.analysis.controls
    if c is None:
        return {"ran": False, "text": "Controls not run: add `controls: true` to the spec (docs/experiments.md) "
                                      "to train the positive and negative controls and show them here."}
    sized = ", ".join(f"{a} {_count(d.tokens)} tokens" for a, d in c.data.items())
    facts = [f"model {c.model}; controls trained on {_or_unknown(c.train_scenarios)} train-split "
             f"scenarios ({sized}), "
             f"{_or_unknown(c.epochs)} epochs at learning rate {_or_unknown(c.learning_rate)}; evaluated on "
             f"{c.eval_limit or 'all'} eval-split scenarios"]
    across = c.level_eval("across_wording")
    across = None if _empty(across) else across
    if c.train_banks or across:
        scored = (", ".join(across.scenario_files or []) or f"wording {across.wording}") if across else "?"
        facts.append(f"control data phrased in the train wording banks {', '.join(c.train_banks or ['?'])}; "
                     f"the across-wording level scored {scored} (n = {_or_unknown(across.n if across else None)})")
    rows, verdicts = [], []
    levels = [("in-template", c.effects), ("across wording", c.effects_across_wording or {})]
    for level, effects in levels:
        for key, e in effects.items():
            vs = e.vs_unrelated or VsUnrelated()
            v = e.verdict
            rows.append([key, level, _diff(e.harmful), _diff(e.aligned), _diff(e.unrelated),
                         _diff(vs.harmful), _diff(vs.aligned), _count(e.harmful.n), _or_unknown(v.level)])
            where = "" if level == "in-template" else f" ({level})"
            verdicts.append(f"{key}{where}: {_or_unknown(v.level)}: {v.why}")
    tab = table("controls", "Eval controls: does the eval move when the decision is trained, and only then?", [
        ("format/scoring", False), ("level", False), ("harmful-action SFT", True), ("aligned-action SFT", True),
        ("unrelated-text SFT", True), ("harmful vs unrelated", True), ("aligned vs unrelated", True),
        ("n", True), ("verdict", False)], rows, notes=[
        "Each cell: the control's mean P(harmful) minus the base model's (or minus the unrelated-text "
        "control's, in the two 'vs unrelated' columns), paired by scenario, with a 95% cluster-bootstrap "
        "CI; n = eval scenarios. A valid eval moves up with harmful-action SFT, down with aligned-action "
        "SFT, and much less with as many tokens of unrelated text. In-template: the eval's own candidates, "
        "whose template family the control data shares; across wording: held-out candidate wording that "
        "no training material draws from (the level that tells the decision from template learning)."],
        statements=verdicts)
    return {"ran": True, "facts": facts, "table": tab}


def _count(x: Any) -> str:
    return f"{x:,}" if isinstance(x, int) else "?" if x is None else str(x)


def data_cards(exp: Experiment) -> dict:
    seen: dict[str, dict] = {}
    for c in exp.cells:
        for d in c.get("data") or []:
            key = str(d.get("dir"))
            e = seen.setdefault(key, {"d": d, "arms": set(), "budgets": set()})
            e["arms"].add(c["arm"])
            if c.get("budget") is not None:
                e["budgets"].add(math.floor(c["budget"] * float(d.get("share", 1.0))))
    rows = []
    for key, e in sorted(seen.items(), key=lambda kv: (kv[1]["d"].get("kind", ""), kv[0])):
        card = e["d"].get("card") or {}
        cfg = card.get("config") or {}
        tpr = card.get("tokens_per_record") or {}
        div = card.get("diversity") or {}
        cont = card.get("contamination") or {}
        rows.append([
            key.rstrip("/").rsplit("/", 1)[-1], e["d"].get("kind", cfg.get("kind", "?")), str(cfg.get("teacher", "?")),
            str(cfg.get("seed", "?")), ", ".join(sorted(e["arms"])), _count(card.get("records")),
            _count(card.get("tokens")), _count(card.get("loss_tokens")),
            _count(card.get("budget")) + ("" if card.get("budget_reached", True) else " (not reached)"),
            ", ".join(f"{b:,}" for b in sorted(e["budgets"])) or "-",
            str(tpr.get("median", "?")),
            pct(div["near_duplicate_rate"]) if isinstance(div.get("near_duplicate_rate"), float) else "?",
            pct(cont["max_overlap"]) if isinstance(cont.get("max_overlap"), float) else "?",
        ])
    return table("data-cards", "Datasets the SFT cells trained on", [
        ("dataset", False), ("kind", False), ("teacher", False), ("seed", True), ("arms", False),
        ("records", True), ("tokens", True), ("loss tokens", True), ("built for (tokens)", True),
        ("cells train on (tokens)", True), ("median tokens/record", True), ("near-duplicates", True),
        ("max eval overlap", True)], rows, notes=[
        "One dataset per kind and seed, built at the largest budget it serves; a smaller budget trains on its "
        "first records (nested subsets). Counts, not estimates: no intervals."],
        empty="no SFT cell has finished, so no dataset was used")


def cells_table(exp: Experiment) -> dict:
    rows = []
    for c in sorted(exp.cells, key=lambda c: c["cell_id"]):
        for ev, e in sorted((c.get("evals") or {}).items()):
            # the eval summary's overall row, as the cell file keeps it (none for an audit eval)
            o = Row.model_validate(e.get("summary_overall") or {})
            given = o.model_fields_set
            mp = o.mean_p_harmful
            mp_ci = ends(o.mean_p_harmful_95)
            rows.append([c["cell_id"], c["arm"], STAGE_LABEL.get(c.get("stage", "none"), "-"), tokens(c.get("budget")),
                         str(c.get("seed", "-")), ev, str(o.n) if "n" in given else "?",
                         f"{f3(mp)} [{f3(mp_ci[0])}, {f3(mp_ci[1])}]" if mp is not None else "n/a",
                         rate(o) if "k" in given else "n/a",
                         f"{c['seconds']:,.0f}" if isinstance(c.get("seconds"), int | float) else "?"])
    return table("cells", "Cells: each eval's own summary", [
        ("cell", False), ("arm", False), ("stage", False), ("tokens", True), ("seed", True), ("eval", False),
        ("n", True), ("mean P(harmful) [95% CI]", True), ("top choice harmful [Wilson 95% CI]", True),
        ("seconds", True)], rows, notes=[
        "As each eval run's summary has it (one seed, no pairing with base): a check on the analysis, "
        "not a replacement for it."], empty="no finished cells")


# -- the sample browser's data ---------------------------------------------------------------------
BROWSER_FIELDS = [("eval", "eval"), ("arm", "arm"), ("budget", "tokens"), ("stage", "stage"), ("seed", "seed"),
                  ("family", "family"), ("condition", "condition"), ("held_out", "held out"),
                  ("harmful", "top harmful")]
BROWSER_COLUMNS = [("cell_id", "cell", False), ("eval", "eval", False), ("scenario_id", "scenario", False),
                   ("family", "family", False), ("condition", "condition", False), ("held_out", "held out", False),
                   ("p_harmful", "P(harmful)", True), ("top", "top choice", False), ("harmful", "top harmful", False)]


def _finite(x: Any) -> float | None:
    """A number JSON can carry (JSON has no NaN or infinity): non-finite and non-numbers become None."""
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) else None


def browser_data(exp: Experiment) -> dict:
    """samples.jsonl for the page: prompts and candidate texts stored once each (they repeat across
    cells), rows pointing to them by index, with their own scores."""
    prompts: list[Any] = []
    cands: list[Any] = []
    p_index: dict[str, int] = {}
    c_index: dict[str, int] = {}
    rows = []
    for s in exp.samples:
        prompt = s.get("prompt") or []
        pk = json.dumps(prompt, sort_keys=True)
        if pk not in p_index:
            p_index[pk] = len(prompts)
            prompts.append([{"role": str(m.get("role", "")), "content": str(m.get("content", ""))} for m in prompt])
        cs = s.get("candidates") or []
        texts = [{"id": str(c.get("id", "")), "label": str(c.get("label", "")), "text": str(c.get("text", ""))}
                 for c in cs]
        ck = json.dumps(texts, sort_keys=True)
        if ck not in c_index:
            c_index[ck] = len(cands)
            cands.append(texts)
        row = {k: s.get(k) for k in ("cell_id", "eval", "arm", "budget", "seed", "stage", "scenario_id", "family",
                                     "condition", "held_out", "p_harmful", "top", "harmful", "scoring")}
        row["p_harmful"] = _finite(row["p_harmful"])
        row["prompt"], row["candidates"] = p_index[pk], c_index[ck]
        row["scores"] = [_finite(c.get("score")) for c in cs]
        rows.append(row)
    return {"rows": rows, "prompts": prompts, "candidates": cands,
            "fields": [{"key": k, "label": label} for k, label in BROWSER_FIELDS],
            "columns": [{"key": k, "label": label, "num": num} for k, label, num in BROWSER_COLUMNS]}


# -- audit evals, from analysis.json's `audit` -----------------------------------------------------
def _n_ids(e: AuditScore | None) -> str:
    """`4 (2 seed ids)`: transcripts or pairs, and the seed instructions they come from."""
    if e is None or _empty(e):
        return "-"
    k = e.seed_ids
    return f"{_or_unknown(e.n)} ({k} seed id{'s' if k != 1 else ''})"


def _audit_settings(name: str, s: AuditSettings) -> str:
    how = ("offline (scripted auditor, choice probes and rule cues)" if s.mode == "offline" else
           f"auditor {s.auditor or 'scripted'}, judge {s.judge or 'none (offline scorer)'}")
    ids = ", ".join(s.seed_ids or []) or "every seed"
    if s.limit:
        ids += f" (at most {s.limit})"
    return (f"{name}: {how}; seeds {ids}; "
            f"{_count(s.samples)} sample{'s' if s.samples != 1 else ''} per seed; "
            f"{_count(s.max_tokens)} tokens per reply.")


def audit_tables(exp: Experiment) -> list[dict]:
    """One table per audit eval and dimension: each cell's mean score [95% CI] (n) and its difference
    from the base model [95% CI] (n pairs). Empty when the experiment has no audit eval."""
    from teachwhy.evals.suites.audit.seeds import dimensions

    a = exp.analysis.audit or AuditAnalysis()
    rows_by: dict[tuple[str, str], list[AuditRow]] = defaultdict(list)
    for r in a.rows or []:
        rows_by[(r.eval, r.dimension)].append(r)
    several = len({ev for ev, _d in rows_by}) > 1
    out = []
    for (ev, dim), rs in rows_by.items():
        rows = [[_cond_label(r.arm, r.kind, r.budget, r.stage), "-" if r.kind != "sft" else str(r.seed),
                 _n_ids(r.score), est(r.score),
                 "0 (reference)" if r.kind == "base" else est(r.vs_base, signed=True),
                 "-" if r.kind == "base" else _n_ids(r.vs_base)] for r in rs]
        desc = (dimensions().get(dim) or {}).get("description")
        settings = (a.evals or {}).get(ev) or AuditSettings()
        notes = ([f"{dim}: {desc}"] if desc else []) + [
            "Score 1 (no sign) to 10 (clear and repeated), mean over the cell's transcripts; 95% CI from a "
            "bootstrap over seed ids as clusters (normal with one seed id, none with one transcript). "
            "Arm - base: paired by seed id and sample index, negative where the arm shows fewer signs than "
            "the base model. n: transcripts (or pairs) and the seed ids they come from.",
            _audit_settings(ev, settings)]
        out.append(table(f"audit-{ev}-{dim}", f"Audit{f' {ev}' if several else ''}: {dim}", [
            ("condition", False), ("training seed", True), ("n", True), ("mean score [95% CI]", True),
            ("arm - base [95% CI]", True), ("n pairs", True)], rows, notes))
    return out


def audit_evals(exp: Experiment) -> list[str]:
    """The experiment's audit evals, in the order analysis.json's `audit` gives them."""
    a = exp.analysis.audit
    return list(a.evals or {}) if a is not None else []


def audit_headline(exp: Experiment, evals: list[str]) -> str | None:
    """The headline of an experiment whose only results are audit evals (the honeypot headline has nothing
    to say there); None otherwise."""
    names = list(audit_evals(exp))
    if evals or not names:
        return None
    return (f"This experiment has audit evals only ({', '.join(names)}): each cell's mean dimension score and "
            "its difference from the base model, with 95% CIs and n, are in the audit section below.")


# -- everything ------------------------------------------------------------------------------------
def eval_names(exp: Experiment) -> list[str]:
    """The analysis' primary eval first, then the others in the order the curves give them."""
    names = list(dict.fromkeys(c.eval for c in exp.analysis.curves))
    names += [n for n in dict.fromkeys(s["eval"] for s in exp.samples) if n not in names]
    primary = exp.analysis.eval
    if primary in names:
        names.remove(primary)
        names.insert(0, primary)
    return names


def build(exp: Experiment) -> dict:
    evals = eval_names(exp)
    spec = exp.spec
    n_cells = len(exp.cells)
    seeds = spec.get("seeds") or []
    audits = [f"{a} (audit)" for a in audit_evals(exp)]
    summary = (f"Experiment {exp.name}: model {spec.get('model', '?')}; arms "
               f"{', '.join(a['name'] + ' (' + (a.get('kind') or 'sft') + ')' for a in spec.get('arms', []))}; "
               f"token budgets {', '.join(tokens(b) for b in spec.get('budgets') or [])}; "
               f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}; "
               f"RL stage {'on ' + ', '.join(spec['rl'].get('arms', [])) if spec.get('rl') else 'none'}; "
               f"evals {', '.join(evals + audits) or 'none'}; held-out families "
               f"{', '.join(spec.get('holdout_families') or []) or 'none'}. "
               f"{n_cells} finished cell{'s' if n_cells != 1 else ''}, {len(exp.samples)} scored samples.")
    head = headline(exp, evals)
    in_head = {s for it in head["items"] for s in it["statements"]}
    appendix = [{"title": f"The multiples behind the direction on {it['eval']}", "statements": it["statements"]}
                for it in head["items"] if it["statements"]]
    others = [m.statement for m in exp.analysis.multiples if m.statement not in in_head]
    if others:
        appendix.append({"title": "Every other multiple", "statements": others})
    versions = exp.versions or {}
    commit = versions.get("git_commit") or versions.get("commit")
    return {
        "name": exp.name,
        "summary": summary,
        "metric": exp.analysis.metric or "mean P(harmful) over scenarios",
        "primary_eval": exp.analysis.eval or (evals[0] if evals else None),
        "evals": evals,
        "headline": head,
        "by_wording": wording_table(exp, evals),
        "curves_tables": [curves_table(exp, ev) for ev in evals],
        "multiples": multiples_table(exp),
        "appendix": appendix,
        "persistence": persistence_table(exp),
        "gaps": gaps_table(exp),
        "generalization": generalization_table(exp),
        "families": family_tables(exp, evals),
        "audit": audit_tables(exp),
        "audit_headline": audit_headline(exp, evals),
        "diagnostics": diagnostics(exp),
        "controls": controls(exp),
        "data_cards": data_cards(exp),
        "cells": cells_table(exp),
        "spec_json": json.dumps(spec, indent=2, sort_keys=False, default=str),
        "versions_json": json.dumps(exp.versions, indent=2, sort_keys=True) if exp.versions is not None else None,
        "git_commit": commit,
        "statements": list(exp.analysis.all_statements),
    }
