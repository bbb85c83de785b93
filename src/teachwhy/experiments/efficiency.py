"""Effects, between-arm contrasts, data-efficiency multiples, persistence through RL and held-out
generalization, computed from an experiment's long table (one row per cell x eval x scenario;
experiments/analysis.py builds it).
A contrast (analyse(..., contrasts=True)) is two SFT arms at the same budget and stage: A's effect minus
B's, paired by scenario and seed labels, for each pair of arms once (A before B by name).

A condition is (arm, budget, stage) within one eval. Its effect is the mean over scenarios of base
P(harmful) minus the arm's P(harmful), paired by scenario and averaged over seeds: positive means less
harmful than the base model.

Every interval is a 95% percentile bootstrap (the same order statistics as evals/stats.py). Within an
eval, each replicate draws one resample of scenarios that every condition shares, so differences
between arms, budgets and stages are paired. Conditions with more than one seed also resample their
seeds with replacement, from one uniform draw per replicate that all conditions share. Conditions with
the same seed list therefore resample the same seed labels, which keeps a seed's SFT cell paired with
its RL cell and with its own runs at other budgets. The held-out/trained split in `generalization`
resamples scenarios within each part separately, so both parts keep their size. Everything is
deterministic given `seed`.

`analyse(rows)` returns the JSON-ready dict; `multiple_from_curve` is the point computation of one
data-efficiency multiple, exposed for tests and for reading off a curve by hand.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from teachwhy.errors import UserError
from teachwhy.evals.stats import wilson

FIELDS = ("arm", "kind", "budget", "seed", "stage", "eval", "scenario_id", "family", "held_out",
          "p_harmful", "harmful")
KINDS = ("base", "sft", "prompt")
STAGES = ("sft", "rl", "none")
ALPHA = 0.05
# codes for one multiple (per bootstrap replicate or point estimate)
EXACT, AT_MOST, NOT_REACHED, A_NOT_BETTER = 0, 1, 2, 3

Key = tuple[str, int | None, str]  # (arm, budget, stage)


# -- the table -------------------------------------------------------------------------------------
@dataclass
class _Cond:
    arm: str
    kind: str
    budget: int | None
    stage: str
    seeds: list[int]
    p: np.ndarray  # scenarios x seeds, P(harmful)
    h: np.ndarray  # scenarios x seeds, 1.0 where the top choice was harmful
    held: np.ndarray  # scenarios, bool: the family was held out of this arm's training data


@dataclass
class _Eval:
    name: str
    scenarios: list[str]
    families: list[str]
    base: _Cond
    conds: dict[Key, _Cond]
    w: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # replicates x scenarios weights
    u: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # replicates x max seeds, uniform


def _where(r: dict) -> str:
    return (f"arm '{r.get('arm')}' (budget {r.get('budget')}, seed {r.get('seed')}, stage {r.get('stage')}, "
            f"eval '{r.get('eval')}')")


def _check_row(i: int, r: Any) -> None:
    if not isinstance(r, dict):
        raise UserError(f"row {i} of the long table is a {type(r).__name__}, not a dict: pass one dict per "
                        f"(cell, eval, scenario) with keys {', '.join(FIELDS)}")
    missing = [k for k in FIELDS if k not in r]
    if missing:
        raise UserError(f"row {i} of the long table lacks {', '.join(missing)}: every row needs "
                        f"{', '.join(FIELDS)}")
    if r["kind"] not in KINDS:
        raise UserError(f"row {i}: kind '{r['kind']}' of {_where(r)} is not one of {', '.join(KINDS)}")
    if r["stage"] not in STAGES:
        raise UserError(f"row {i}: stage '{r['stage']}' of {_where(r)} is not one of {', '.join(STAGES)}")
    if r["kind"] == "sft" and (not isinstance(r["budget"], int) or r["budget"] <= 0):
        raise UserError(f"row {i}: the SFT {_where(r)} has no positive integer token budget: set budget to "
                        "the training tokens of the cell")
    p = r["p_harmful"]
    if not isinstance(p, int | float) or not math.isfinite(p):
        raise UserError(f"row {i}: p_harmful of {_where(r)} for scenario '{r['scenario_id']}' is {p!r}, not a "
                        "finite number: drop the scenario from every arm or fix the record")


def _tables(rows: Sequence[dict]) -> list[_Eval]:
    if not rows:
        raise UserError("the long table is empty: no cell has finished an eval yet; run the experiment's cells "
                        "first (at least the base arm and one other)")
    kinds: dict[str, str] = {}
    cells: dict[str, dict[Key, dict[int, dict[str, dict]]]] = {}
    for i, r in enumerate(rows):
        _check_row(i, r)
        if kinds.setdefault(r["arm"], r["kind"]) != r["kind"]:
            raise UserError(f"arm '{r['arm']}' appears with kinds '{kinds[r['arm']]}' and '{r['kind']}': give "
                            "each arm one kind")
        key: Key = (r["arm"], r["budget"] if r["kind"] == "sft" else None, r["stage"])
        per_seed = cells.setdefault(r["eval"], {}).setdefault(key, {}).setdefault(int(r["seed"]), {})
        if r["scenario_id"] in per_seed:
            raise UserError(f"scenario '{r['scenario_id']}' appears twice for {_where(r)}: keep one row per "
                            "(cell, eval, scenario)")
        per_seed[r["scenario_id"]] = r
    bases = sorted(a for a, k in kinds.items() if k == "base")
    if not bases:
        raise UserError("the long table has no base arm (kind 'base'): evaluate the base model too; every "
                        "effect is measured against it")
    if len(bases) > 1:
        raise UserError(f"the long table has {len(bases)} base arms ({', '.join(bases)}): keep exactly one arm "
                        "of kind 'base'")
    base_arm = bases[0]
    out = []
    for name in sorted(cells):
        by_key = cells[name]
        base_key = next((k for k in by_key if k[0] == base_arm), None)
        if base_key is None:
            raise UserError(f"eval '{name}' has no rows from the base arm '{base_arm}': evaluate the base model "
                            "on it too, or drop the eval's rows")
        base_seed = min(by_key[base_key])
        scen = sorted(by_key[base_key][base_seed])
        sset = set(scen)
        for (arm, budget, stage), per in by_key.items():
            for s, recs in per.items():
                got = set(recs)
                if got != sset:
                    miss, extra = sorted(sset - got), sorted(got - sset)
                    eg = (f"missing e.g. '{miss[0]}'" if miss else f"extra e.g. '{extra[0]}'")
                    raise UserError(
                        f"arm '{arm}' (budget {budget}, seed {s}, stage {stage}) was evaluated on {len(got)} "
                        f"scenarios of eval '{name}', the base arm on {len(sset)} ({len(miss)} missing, "
                        f"{len(extra)} extra; {eg}): evaluate every arm on the same scenario set, or drop the "
                        "incomplete cell's rows")
        base_rows = by_key[base_key][base_seed]
        families = [str(base_rows[sid]["family"]) for sid in scen]
        conds: dict[Key, _Cond] = {}
        for key, per in by_key.items():
            seeds = sorted(per)
            p = np.array([[float(per[s][sid]["p_harmful"]) for s in seeds] for sid in scen], dtype=float)
            h = np.array([[1.0 if per[s][sid]["harmful"] else 0.0 for s in seeds] for sid in scen], dtype=float)
            held = np.array([bool(per[seeds[0]][sid]["held_out"]) for sid in scen], dtype=bool)
            for s in seeds[1:]:
                if any(bool(per[s][sid]["held_out"]) != held[j] for j, sid in enumerate(scen)):
                    raise UserError(f"arm '{key[0]}' (budget {key[1]}, stage {key[2]}) marks scenarios held out "
                                    f"differently in seeds {seeds[0]} and {s} on eval '{name}': held_out must "
                                    "follow the arm's training data, the same in every seed")
            conds[key] = _Cond(key[0], kinds[key[0]], key[1], key[2], seeds, p, h, held)
        out.append(_Eval(name, scen, families, conds[base_key], conds))
    return out


# -- bootstrap machinery ---------------------------------------------------------------------------
def _rng(seed: int, *parts: str) -> np.random.Generator:
    return np.random.default_rng([seed % 2**32, *(zlib.crc32(p.encode()) for p in parts)])


def _weights(rng: np.random.Generator, members: np.ndarray, n_total: int, replicates: int) -> np.ndarray:
    """replicates x n_total: each row the share of a with-replacement resample of `members` (indices)."""
    m = len(members)
    draw = members[rng.integers(0, m, size=(replicates, m))]
    flat = (draw + np.arange(replicates)[:, None] * n_total).ravel()
    return np.bincount(flat, minlength=replicates * n_total).reshape(replicates, n_total) / m


def _prepare(ev: _Eval, seed: int, replicates: int) -> None:
    rng = _rng(seed, ev.name)
    s = len(ev.scenarios)
    ev.w = _weights(rng, np.arange(s), s, replicates)
    ev.u = rng.random((replicates, max(len(c.seeds) for c in ev.conds.values())))


def _mean(x: np.ndarray, w: np.ndarray, u: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Mean over scenarios (those in mask), then over seeds: the point estimate and one value per
    replicate, given the replicates' scenario weights `w` and seed draws `u`."""
    pt = float((x if mask is None else x[mask]).mean(axis=0).mean())
    col = w @ x  # replicates x seeds
    k = x.shape[1]
    if k == 1:
        return pt, col[:, 0]
    pos = np.minimum((u[:, :k] * k).astype(int), k - 1)
    return pt, np.take_along_axis(col, pos, axis=1).mean(axis=1)


def _ci(reps: np.ndarray) -> tuple[float, float]:
    """95% percentile interval, order statistics as in evals/stats.cluster_bootstrap."""
    s = np.sort(reps)
    n = len(s)
    return float(s[math.floor(ALPHA / 2 * (n - 1))]), float(s[math.ceil((1 - ALPHA / 2) * (n - 1))])


def _est(pt: float, reps: np.ndarray) -> dict:
    lo, hi = _ci(reps)
    return {"mean": pt, "ci_95": [lo, hi]}


# -- the data-efficiency multiple ------------------------------------------------------------------
def _cross(target: np.ndarray, budget_a: float, budgets_b: Sequence[int], effects_b: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the tokens arm B needs to reach `target` divided by budget_a, and a code (EXACT,
    AT_MOST, NOT_REACHED, A_NOT_BETTER). effects_b is rows x len(budgets_b), budgets ascending; B's
    curve is linear in log(tokens) between its budgets and is not extrapolated. The value is the
    bound for AT_MOST, +inf for NOT_REACHED and 0 for A_NOT_BETTER (the base model, i.e. B with no
    training tokens, already matches an arm that is no better than base)."""
    b = np.asarray(budgets_b, dtype=float)
    lb = np.log(b)
    reach = effects_b >= target[:, None]
    any_reach = reach.any(axis=1)
    j = reach.argmax(axis=1)
    jm = np.maximum(j - 1, 0)
    rows = np.arange(len(target))
    e0, e1 = effects_b[rows, jm], effects_b[rows, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(j > 0, (target - e0) / (e1 - e0), 0.0)
    tokens = np.exp(lb[jm] + frac * (lb[j] - lb[jm]))
    code = np.where(target <= 0, A_NOT_BETTER, np.where(~any_reach, NOT_REACHED, np.where(j == 0, AT_MOST, EXACT)))
    value = np.select([code == EXACT, code == AT_MOST, code == NOT_REACHED],
                      [tokens / budget_a, b[0] / budget_a, np.inf], default=0.0)
    return value, code


def multiple_from_curve(effect_a: float, budget_a: int, budgets_b: Sequence[int], effects_b: Sequence[float]
                        ) -> dict:
    """The data-efficiency multiple at the point estimate: the tokens arm B needs to reach arm A's
    effect at budget_a, divided by budget_a. B's curve (effects_b at budgets_b) is linear in log(tokens)
    between the budgets run, and the smallest token count where it reaches A's effect counts.

    Returns {"reached", "bound", "multiple", "tokens_b", "reason"}: reached True with bound "exact"
    (interpolated) or "at_most" (B's smallest budget already reaches it: multiple <= smallest_b /
    budget_a); reached False with bound "more_than" (multiple > largest_b / budget_a); reached None when
    A's effect is <= 0 (no better than base), multiple undefined and reason saying so."""
    if not budgets_b or len(budgets_b) != len(effects_b):
        raise ValueError("budgets_b and effects_b must be non-empty and of equal length")
    order = sorted(range(len(budgets_b)), key=lambda i: budgets_b[i])
    bs = [budgets_b[i] for i in order]
    es = np.array([[effects_b[i] for i in order]], dtype=float)
    value, code = _cross(np.array([effect_a], dtype=float), budget_a, bs, es)
    c, v = int(code[0]), float(value[0])
    if c == A_NOT_BETTER:
        return {"reached": None, "bound": None, "multiple": None, "tokens_b": None,
                "reason": f"arm A's effect at {budget_a:,} tokens is {effect_a:.3f}, not above 0 (no better than "
                          "base), so there is no effect for B to match"}
    if c == NOT_REACHED:
        return {"reached": False, "bound": "more_than", "multiple": bs[-1] / budget_a, "tokens_b": float(bs[-1]),
                "reason": f"B's effect stays below A's up to its largest budget run ({bs[-1]:,} tokens)"}
    if c == AT_MOST:
        return {"reached": True, "bound": "at_most", "multiple": v, "tokens_b": float(bs[0]),
                "reason": f"B's smallest budget run ({bs[0]:,} tokens) already reaches A's effect"}
    return {"reached": True, "bound": "exact", "multiple": v, "tokens_b": v * budget_a, "reason": None}


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _multiple_boot(value: np.ndarray, code: np.ndarray) -> dict:
    lo, hi = _ci(value)
    med = float(np.median(value))
    return {"median": _num(med), "median_infinite": math.isinf(med), "ci_95": [_num(lo), _num(hi)],
            "ci_lower_infinite": math.isinf(lo), "ci_upper_infinite": math.isinf(hi),
            "fraction_reached": float(np.isin(code, (EXACT, AT_MOST)).mean()),
            "fraction_at_most": float((code == AT_MOST).mean()),
            "fraction_a_not_better": float((code == A_NOT_BETTER).mean())}


# -- wording ---------------------------------------------------------------------------------------
def _f(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{0.0 if abs(x) < 5e-4 else x:.3f}"  # no "-0.000"


def _ci_s(e: dict) -> str:
    return f"{_f(e['mean'])}, 95% CI {_f(e['ci_95'][0])} to {_f(e['ci_95'][1])}"


def _x(m: float | None) -> str:
    if m is None or math.isinf(m):
        return "unbounded"
    return f"{m:.0f}x" if m >= 10 else f"{m:.1f}x" if m >= 1 else f"{m:.2f}x"


def _n(n_scen: int, seeds: Iterable[int]) -> str:
    ks = sorted(set(seeds))
    if len(ks) == 1:
        return f"n={n_scen} scenarios, {ks[0]} seed{'s' if ks[0] != 1 else ''}"
    return f"n={n_scen} scenarios, {ks[0]} to {ks[-1]} seeds"


def _label(c: _Cond) -> str:
    if c.kind == "base":
        return f"{c.arm} (base)"
    if c.kind == "prompt":
        return f"{c.arm} (prompt)"
    return f"{c.arm} ({c.budget:,} tokens, {'after RL' if c.stage == 'rl' else 'SFT'})"


def _excludes_zero(e: dict) -> bool:
    lo, hi = e["ci_95"]
    return lo > 0 or hi < 0


def _multiple_statement(m: dict, ev: str, n_scen: int, seeds: list[int]) -> str:
    a, b, ba = m["arm_a"], m["arm_b"], m["budget_a"]
    stage = " after RL" if m["stage"] == "rl" else ""
    n = _n(n_scen, seeds)
    ea = f"{a}'s effect {_ci_s(m['effect_a'])}"
    boot = m["bootstrap"]
    lo, hi = boot["ci_95"]
    hi_v = math.inf if boot["ci_upper_infinite"] else hi
    lo_v = math.inf if boot["ci_lower_infinite"] else lo
    reached = f"{b} reached it in {boot['fraction_reached']:.0%} of bootstrap replicates"
    fnb = boot["fraction_a_not_better"]
    caveat = (f"; {a}'s effect was not above base in {fnb:.0%} of bootstrap replicates (counted as 0x there)"
              if fnb > ALPHA / 2 else "")
    if m["reached"] is None:
        return (f"On {ev}, {a} at {ba:,} tokens{stage} is no better than base ({ea}; {n}), so no data-efficiency "
                f"multiple against {b} is defined.")
    if m["reached"] is False:
        return (f"On {ev}, {b}{stage} does not reach {a}'s effect at {ba:,} tokens within the budgets run (up to "
                f"{m['tokens_b']:,.0f} tokens, so more than {_x(m['multiple'])} the tokens; {ea}; {reached}; "
                f"multiple 95% CI {_x(lo_v)} to {_x(hi_v)}; {n}){caveat}.")
    ci = f"95% CI {_x(lo_v)} to {_x(hi_v)}"
    if m["bound"] == "at_most":
        s = (f"On {ev}, {b}{stage} already reaches {a}'s effect at {ba:,} tokens at its smallest budget run "
             f"({m['tokens_b']:,.0f} tokens), so it needs at most {_x(m['multiple'])} the tokens ({ea}; "
             f"multiple {ci}; {reached}; {n})")
        if m["multiple"] < 1:
            return s + f": {b} is at least {_x(1 / m['multiple'])} more token-efficient{caveat}."
        return s + f": the budgets run cannot tell which arm is more token-efficient{caveat}."
    mult = m["multiple"]
    core = f"{ea}; {b} needs {_x(mult)} the tokens, about {m['tokens_b']:,.0f}, {ci}"
    if lo_v > 1:
        return f"On {ev}, {a} at {ba:,} tokens{stage} matches {b} at {_x(mult)} fewer tokens ({core}; {n}){caveat}."
    if hi_v < 1:
        inv_lo = "unbounded" if hi_v <= 0 else _x(1 / hi_v)
        inv_hi = "unbounded" if lo_v <= 0 else _x(1 / lo_v)
        return (f"On {ev}, {b}{stage} matches {a}'s effect at {ba:,} tokens with {_x(1 / mult)} fewer tokens "
                f"({core}, i.e. {inv_lo} to {inv_hi} fewer; {n}){caveat}.")
    return (f"On {ev}, {b}{stage} reaches {a}'s effect at {ba:,} tokens with {_x(mult)} the tokens ({core}; {n}): "
            f"the CI includes 1x, so neither arm is shown to be more token-efficient{caveat}.")


def _gap_statement(g: dict, ev: str) -> str:
    a, b, bud = g["arm_a"], g["arm_b"], g["budget"]
    before, after, change = g["before"], g["after"], g["change"]
    n = _n(g["n_scenarios"], [*g["n_seeds_a"].values(), *g["n_seeds_b"].values()])
    head = f"On {ev} at {bud:,} tokens, the gap between {a} and {b} (effect of {a} minus {b})"
    nums = f"after SFT {_ci_s(before)}, after RL {_ci_s(after)}; change {_ci_s(change)}; {n}"
    if not _excludes_zero(before) and not _excludes_zero(after):
        return f"{head}: the CIs overlap zero: no gap measured ({nums})."
    if _excludes_zero(before) and _excludes_zero(after) and (before["mean"] > 0) != (after["mean"] > 0):
        verb = "reversed"
    elif abs(after["mean"]) < abs(before["mean"]):
        verb = "shrank"
    else:
        verb = "grew"
    s = (f"{head} {verb} from {_ci_s(before)} after SFT to {_ci_s(after)} after RL (change {_ci_s(change)}; {n})")
    if not _excludes_zero(change):
        s += "; the change's CI includes zero, so RL is not shown to have changed the gap"
    return s + "."


# -- analysis --------------------------------------------------------------------------------------
_KIND_ORDER = {"base": 0, "prompt": 1, "sft": 2}
_STAGE_ORDER = {"none": 0, "sft": 1, "rl": 2}
Effects = dict[Key, tuple[float, np.ndarray]]  # per condition: effect point estimate, replicates


def analyse(rows: Sequence[dict], seed: int = 0, replicates: int = 2000,
            multiple_pairs: Sequence[tuple[str, str]] | None = None, contrasts: bool = False) -> dict:
    """Curves, data-efficiency multiples, persistence through RL, between-arm gaps and held-out
    generalization from the long table, with a paired bootstrap (see the module docstring); with
    `contrasts`, also every pair of SFT arms at each shared budget and stage (key "contrasts"). Raises
    UserError for an empty table, no (or several) base arms, arms evaluated on different scenario sets,
    or unknown arms in multiple_pairs."""
    if replicates < 2:
        raise UserError(f"replicates is {replicates}: use at least 2 (2,000 for reported intervals)")
    evals = _tables(rows)
    sft_arms = sorted({k[0] for ev in evals for k, c in ev.conds.items() if c.kind == "sft"})
    pairs = _pairs(sft_arms, multiple_pairs)

    out: dict[str, Any] = {"curves": [], "multiples": [], "persistence": [], "gaps": [], "generalization": [],
                           "statements": [], "n_replicates": replicates}
    if contrasts:
        out["contrasts"] = []
    for ev in evals:
        _prepare(ev, seed, replicates)
        keys = sorted(ev.conds, key=lambda k: (_KIND_ORDER[ev.conds[k].kind], k[0], _STAGE_ORDER[k[2]], k[1] or 0))
        eff = _curves(ev, keys, out)
        if contrasts:
            _contrasts(ev, keys, eff, out)
        _multiples(ev, sft_arms, pairs, eff, out)
        _gaps(ev, _persistence(ev, keys, eff, out), out)
        _generalization(ev, keys, seed, replicates, out)
    return out


def _pairs(sft_arms: list[str], multiple_pairs: Sequence[tuple[str, str]] | None) -> list[tuple[str, str]]:
    """The (A, B) arm pairs to compute multiples for: every ordered pair of SFT arms unless named."""
    if multiple_pairs is None:
        return [(a, b) for a in sft_arms for b in sft_arms if a != b]
    pairs = []
    for a, b in multiple_pairs:
        for arm in (a, b):
            if arm not in sft_arms:
                raise UserError(f"multiple_pairs names '{arm}', which is not an SFT arm of this table: use "
                                f"{', '.join(sft_arms) or 'an SFT arm (none have rows yet)'}")
        if a == b:
            raise UserError(f"multiple_pairs pairs '{a}' with itself: pair two different SFT arms")
        pairs.append((a, b))
    return pairs


def _curves(ev: _Eval, keys: list[Key], out: dict[str, Any]) -> Effects:
    """One curve entry and statement per condition, in `keys` order; returns every condition's effect."""
    n_scen = len(ev.scenarios)
    base_pt, base_reps = _mean(ev.base.p, ev.w, ev.u)
    eff: Effects = {}
    for key in keys:
        c = ev.conds[key]
        p_pt, p_reps = _mean(c.p, ev.w, ev.u)
        h_pt, h_reps = _mean(c.h, ev.w, ev.u)
        e_pt, e_reps = base_pt - p_pt, base_reps - p_reps
        eff[key] = (e_pt, e_reps)
        k_h, n_h = int(c.h.sum()), int(c.h.size)
        entry: dict[str, Any] = {
            "eval": ev.name, "arm": c.arm, "kind": c.kind, "stage": c.stage, "budget": c.budget,
            "n_scenarios": n_scen, "n_seeds": len(c.seeds), "seeds": c.seeds,
            "p_harmful": _est(p_pt, p_reps),
            "harmful_rate": {"k": k_h, "n": n_h, "rate": h_pt, "wilson_95": list(wilson(k_h, n_h)),
                             "bootstrap_95": list(_ci(h_reps))},
            "effect": _est(e_pt, e_reps)}
        out["curves"].append(entry)
        out["statements"].append(_curve_statement(ev.name, c, entry, n_scen))
    return eff


def _curve_statement(ev: str, c: _Cond, entry: dict, n_scen: int) -> str:
    rate = entry["harmful_rate"]
    n = _n(n_scen, [len(c.seeds)])
    if c.kind == "base":
        return (f"On {ev}, the base model (arm {c.arm}) has mean P(harmful) {_ci_s(entry['p_harmful'])}, and "
                f"its top choice is harmful in {rate['k']}/{rate['n']} ({rate['rate']:.1%}, Wilson 95% CI "
                f"{rate['wilson_95'][0]:.1%} to {rate['wilson_95'][1]:.1%}; {n}).")
    return (f"On {ev}, {_label(c)} has effect {_ci_s(entry['effect'])} (base minus arm mean P(harmful); "
            f"mean P(harmful) {_ci_s(entry['p_harmful'])}; top choice harmful in {rate['k']}/{rate['n']}, "
            f"Wilson 95% CI {rate['wilson_95'][0]:.1%} to {rate['wilson_95'][1]:.1%}; {n}).")


def _contrasts(ev: _Eval, keys: list[Key], eff: Effects, out: dict[str, Any]) -> None:
    """Two SFT arms at the same budget and stage: effect of A minus effect of B, paired."""
    sft_keys = [k for k in keys if ev.conds[k].kind == "sft"]
    for ka in sft_keys:
        for kb in sft_keys:
            if kb[1:] != ka[1:] or kb[0] <= ka[0]:
                continue
            (a_pt, a_reps), (b_pt, b_reps) = eff[ka], eff[kb]
            out["contrasts"].append({
                "eval": ev.name, "stage": ka[2], "budget": ka[1], "arm_a": ka[0], "arm_b": kb[0],
                "n_scenarios": len(ev.scenarios), "n_seeds_a": len(ev.conds[ka].seeds),
                "n_seeds_b": len(ev.conds[kb].seeds), "effect_a": _est(a_pt, a_reps),
                "effect_b": _est(b_pt, b_reps), "difference": _est(a_pt - b_pt, a_reps - b_reps)})


def _multiples(ev: _Eval, sft_arms: list[str], pairs: list[tuple[str, str]], eff: Effects,
               out: dict[str, Any]) -> None:
    """Data-efficiency multiples, per stage where both arms have budgets."""
    for stage in ("sft", "rl"):
        curve = {arm: sorted(k[1] for k in ev.conds if k[0] == arm and k[2] == stage and k[1] is not None)
                 for arm in sft_arms}
        for a, b in pairs:
            bs = curve.get(b, [])
            if not curve.get(a) or not bs:
                continue
            eb_pt = np.array([[eff[(b, x, stage)][0] for x in bs]])
            eb_reps = np.stack([eff[(b, x, stage)][1] for x in bs], axis=1)
            for ba in curve[a]:
                assert ba is not None
                m = _multiple_entry(ev, stage, a, b, ba, bs, eff, eb_pt, eb_reps)
                out["multiples"].append(m)
                out["statements"].append(m["statement"])


def _multiple_entry(ev: _Eval, stage: str, a: str, b: str, ba: int, bs: list[int], eff: Effects,
                    eb_pt: np.ndarray, eb_reps: np.ndarray) -> dict[str, Any]:
    """A's effect at budget `ba` against B's curve (`bs`, effects eb_pt and eb_reps): point and bootstrap."""
    n_scen = len(ev.scenarios)
    ea_pt, ea_reps = eff[(a, ba, stage)]
    point = multiple_from_curve(ea_pt, ba, bs, list(eb_pt[0]))
    value, code = _cross(ea_reps, ba, bs, eb_reps)
    m: dict[str, Any] = {
        "eval": ev.name, "stage": stage, "arm_a": a, "arm_b": b, "budget_a": ba,
        "n_scenarios": n_scen, "n_seeds_a": len(ev.conds[(a, ba, stage)].seeds),
        "effect_a": _est(ea_pt, ea_reps),
        "curve_b": [{"budget": x, "n_seeds": len(ev.conds[(b, x, stage)].seeds),
                     "effect": _est(*eff[(b, x, stage)])} for x in bs],
        **point, "bootstrap": _multiple_boot(value, code)}
    seeds = [m["n_seeds_a"], *(p["n_seeds"] for p in m["curve_b"])]
    m["statement"] = _multiple_statement(m, ev.name, n_scen, seeds)
    return m


def _persistence(ev: _Eval, keys: list[Key], eff: Effects, out: dict[str, Any]) -> dict[tuple[str, int], dict]:
    """Each SFT cell's effect before and after RL; returns, per (arm, budget), both stages' effects and
    seed counts for the gaps."""
    n_scen = len(ev.scenarios)
    persist: dict[tuple[str, int], dict] = {}
    for key in keys:
        arm, budget, stage = key
        if stage != "sft" or budget is None or (arm, budget, "rl") not in ev.conds:
            continue
        (b_pt, b_reps), (a_pt, a_reps) = eff[key], eff[(arm, budget, "rl")]
        ks, kr = len(ev.conds[key].seeds), len(ev.conds[(arm, budget, "rl")].seeds)
        p: dict[str, Any] = {
            "eval": ev.name, "arm": arm, "budget": budget, "n_scenarios": n_scen, "n_seeds_sft": ks,
            "n_seeds_rl": kr, "before": _est(b_pt, b_reps), "after": _est(a_pt, a_reps),
            "change": _est(a_pt - b_pt, a_reps - b_reps)}
        ch = p["change"]
        verdict = ("the change's CI includes zero: no change measured" if not _excludes_zero(ch)
                   else "RL lowered the effect" if ch["mean"] < 0 else "RL raised the effect")
        p["statement"] = (f"On {ev.name}, {arm} at {budget:,} tokens: effect {_ci_s(p['before'])} after SFT, "
                          f"{_ci_s(p['after'])} after RL; change {_ci_s(ch)}; {verdict} "
                          f"({_n(n_scen, [ks, kr])}).")
        out["persistence"].append(p)
        out["statements"].append(p["statement"])
        persist[(arm, budget)] = {"sft": (b_pt, b_reps, ks), "rl": (a_pt, a_reps, kr)}
    return persist


def _gaps(ev: _Eval, persist: dict[tuple[str, int], dict], out: dict[str, Any]) -> None:
    """Between-arm gaps before and after RL, for each pair of arms with both stages at a budget."""
    for budget in sorted({bud for _, bud in persist}):
        arms = sorted(arm for arm, bud in persist if bud == budget)
        for i, a in enumerate(arms):
            for b in arms[i + 1:]:
                pa, pb = persist[(a, budget)], persist[(b, budget)]
                before = (pa["sft"][0] - pb["sft"][0], pa["sft"][1] - pb["sft"][1])
                after = (pa["rl"][0] - pb["rl"][0], pa["rl"][1] - pb["rl"][1])
                g: dict[str, Any] = {
                    "eval": ev.name, "budget": budget, "arm_a": a, "arm_b": b, "n_scenarios": len(ev.scenarios),
                    "n_seeds_a": {"sft": pa["sft"][2], "rl": pa["rl"][2]},
                    "n_seeds_b": {"sft": pb["sft"][2], "rl": pb["rl"][2]},
                    "before": _est(*before), "after": _est(*after),
                    "change": _est(after[0] - before[0], after[1] - before[1])}
                g["statement"] = _gap_statement(g, ev.name)
                out["gaps"].append(g)
                out["statements"].append(g["statement"])


def _generalization(ev: _Eval, keys: list[Key], seed: int, replicates: int, out: dict[str, Any]) -> None:
    """Held-out vs trained families, for every non-base condition that holds out some but not all."""
    n_scen = len(ev.scenarios)
    draws: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
    for key in keys:
        c = ev.conds[key]
        if c.kind == "base" or not c.held.any() or c.held.all():
            continue
        tag = np.packbits(c.held).tobytes()
        if tag not in draws:
            rng = _rng(seed, ev.name, "held-out", tag.hex())
            draws[tag] = (_weights(rng, np.flatnonzero(c.held), n_scen, replicates),
                          _weights(rng, np.flatnonzero(~c.held), n_scen, replicates))
        gen = _generalization_entry(ev, c, *draws[tag])
        out["generalization"].append(gen)
        out["statements"].append(gen["statement"])


def _generalization_entry(ev: _Eval, c: _Cond, w_held: np.ndarray, w_trained: np.ndarray) -> dict[str, Any]:
    """One condition's effect on its held-out and its trained families (each part resampled by its own
    weights), and their difference."""
    parts = {}
    for name, mask, w in (("held_out", c.held, w_held), ("trained", ~c.held, w_trained)):
        bp, br = _mean(ev.base.p, w, ev.u, mask)
        cp, cr = _mean(c.p, w, ev.u, mask)
        parts[name] = (bp - cp, br - cr, mask)
    (h_pt, h_reps, h_mask), (t_pt, t_reps, t_mask) = parts["held_out"], parts["trained"]
    fams = np.array(ev.families)
    gen: dict[str, Any] = {
        "eval": ev.name, "arm": c.arm, "kind": c.kind, "budget": c.budget, "stage": c.stage,
        "n_seeds": len(c.seeds),
        "held_out": {"n_scenarios": int(h_mask.sum()), "families": sorted(set(fams[h_mask].tolist())),
                     "effect": _est(h_pt, h_reps)},
        "trained": {"n_scenarios": int(t_mask.sum()), "families": sorted(set(fams[t_mask].tolist())),
                    "effect": _est(t_pt, t_reps)},
        "difference": _est(h_pt - t_pt, h_reps - t_reps)}
    d = gen["difference"]
    verdict = ("the CI includes zero: no difference measured" if not _excludes_zero(d)
               else "smaller on held-out families" if d["mean"] < 0 else "larger on held-out families")
    gen["statement"] = (
        f"On {ev.name}, {_label(c)}: effect on held-out families {_ci_s(gen['held_out']['effect'])} "
        f"(n={gen['held_out']['n_scenarios']} scenarios) vs trained families {_ci_s(gen['trained']['effect'])} "
        f"(n={gen['trained']['n_scenarios']} scenarios); held-out minus trained {_ci_s(d)}, {verdict} "
        f"({len(c.seeds)} seed{'s' if len(c.seeds) != 1 else ''}).")
    return gen
