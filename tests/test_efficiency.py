"""experiments/efficiency.py: the data-efficiency multiple against hand-computed curves, the paired
bootstrap, persistence through RL, between-arm gaps, the held-out split and the error lines. Synthetic
tables only (no model)."""

import json
import math

import pytest

from teachwhy.errors import UserError
from teachwhy.experiments.efficiency import analyse, multiple_from_curve

BASE_P = 0.6


def row(arm, kind, budget, seed, stage, sid, p, harmful=None, family="fam", held_out=False, ev="honeypot"):
    return {"arm": arm, "kind": kind, "budget": budget, "seed": seed, "stage": stage, "eval": ev,
            "scenario_id": sid, "family": family, "held_out": held_out, "p_harmful": p,
            "harmful": (p > 0.5) if harmful is None else harmful}


def scenarios(n=8):
    return [f"s{i}" for i in range(n)]


def base_rows(sids, p=BASE_P, per=None):
    return [row("base", "base", None, 0, "none", s, per[s] if per else p) for s in sids]


def flat_arm(arm, budget, effect, sids, seed=0, stage="sft", base=BASE_P):
    """An SFT cell whose P(harmful) is base minus `effect` on every scenario."""
    return [row(arm, "sft", budget, seed, stage, s, base - effect) for s in sids]


# -- the multiple's interpolation --------------------------------------------------------------------
def test_multiple_log_linear_between_two_budgets():
    # B: 0.1 at 1,000 tokens, 0.3 at 10,000; A's 0.2 is halfway in effect, so halfway in log(tokens)
    m = multiple_from_curve(0.2, 1000, [1000, 10000], [0.1, 0.3])
    assert m["reached"] is True and m["bound"] == "exact"
    assert m["tokens_b"] == pytest.approx(1000 * math.sqrt(10), rel=1e-12)
    assert m["multiple"] == pytest.approx(math.sqrt(10), rel=1e-12)
    # a quarter of the way: 1,000 * 10**0.25 tokens, against A's budget of 2,000
    m = multiple_from_curve(0.15, 2000, [1000, 10000], [0.1, 0.3])
    assert m["multiple"] == pytest.approx(1000 * 10 ** 0.25 / 2000, rel=1e-12)


def test_multiple_takes_the_first_crossing_and_sorts_budgets():
    # B rises past 0.2 between 1k and 4k, dips, rises again: the smallest token count counts
    m = multiple_from_curve(0.2, 1000, [16000, 1000, 4000, 8000], [0.4, 0.0, 0.4, 0.1])
    # 0.0 -> 0.4 between 1k and 4k: half way in log -> 2,000 tokens
    assert m["tokens_b"] == pytest.approx(2000, rel=1e-12) and m["multiple"] == pytest.approx(2.0)


def test_multiple_at_most_not_reached_and_undefined():
    m = multiple_from_curve(0.2, 10000, [3000, 30000], [0.25, 0.5])
    assert (m["reached"], m["bound"]) == (True, "at_most")
    assert m["multiple"] == pytest.approx(0.3) and m["tokens_b"] == 3000
    m = multiple_from_curve(0.2, 10000, [3000, 30000], [0.05, 0.15])
    assert (m["reached"], m["bound"]) == (False, "more_than")
    assert m["multiple"] == pytest.approx(3.0) and m["tokens_b"] == 30000
    for ea in (0.0, -0.1):
        m = multiple_from_curve(ea, 10000, [3000, 30000], [0.05, 0.15])
        assert m["reached"] is None and m["multiple"] is None and "no better than base" in m["reason"]


def test_multiple_through_analyse_matches_hand_value():
    sids = scenarios()
    rows = base_rows(sids)
    rows += flat_arm("reasoning", 1000, 0.2, sids)
    rows += flat_arm("demo", 1000, 0.1, sids) + flat_arm("demo", 10000, 0.3, sids)
    out = analyse(rows, replicates=200, multiple_pairs=[("reasoning", "demo"), ("demo", "reasoning")])
    (m,) = [x for x in out["multiples"] if x["arm_a"] == "reasoning"]
    assert m["bound"] == "exact" and m["multiple"] == pytest.approx(math.sqrt(10), rel=1e-9)
    # every scenario moves by the same amount: every replicate gives the same multiple
    assert m["bootstrap"]["ci_95"] == pytest.approx([math.sqrt(10)] * 2, rel=1e-9)
    assert m["bootstrap"]["fraction_reached"] == 1.0
    assert "matches demo at 3.2x fewer tokens" in m["statement"] and "n=8 scenarios, 1 seed" in m["statement"]
    # the other way: reasoning has one budget and 0.2 < 0.3, so demo's 10k point is not reached
    back = {x["budget_a"]: x for x in out["multiples"] if x["arm_a"] == "demo"}
    assert back[1000]["bound"] == "at_most" and back[1000]["multiple"] == pytest.approx(1.0)
    assert back[10000]["reached"] is False and back[10000]["multiple"] == pytest.approx(0.1)
    assert back[10000]["bootstrap"]["ci_upper_infinite"] and back[10000]["bootstrap"]["ci_95"][1] is None
    assert "does not reach demo's effect at 10,000 tokens within the budgets run (up to 1,000 tokens" \
        in back[10000]["statement"]
    json.dumps(out)  # JSON-serializable as is


def test_multiple_statement_names_the_more_efficient_arm():
    sids = scenarios()
    rows = base_rows(sids) + flat_arm("reasoning", 10000, 0.2, sids)
    rows += flat_arm("demo", 1000, 0.1, sids) + flat_arm("demo", 10000, 0.3, sids)
    out = analyse(rows, replicates=50, multiple_pairs=[("reasoning", "demo")])
    (m,) = out["multiples"]
    assert m["multiple"] == pytest.approx(math.sqrt(10) / 10, rel=1e-9)
    assert "demo matches reasoning's effect at 10,000 tokens with 3.2x fewer tokens" in m["statement"]


def test_multiple_undefined_when_a_is_no_better_than_base():
    sids = scenarios()
    rows = base_rows(sids) + flat_arm("worse", 1000, -0.05, sids) + flat_arm("demo", 1000, 0.1, sids)
    out = analyse(rows, replicates=50, multiple_pairs=[("worse", "demo")])
    (m,) = out["multiples"]
    assert m["reached"] is None and m["bound"] is None and m["multiple"] is None
    assert m["bootstrap"]["fraction_a_not_better"] == 1.0
    assert "no better than base" in m["statement"]


# -- the bootstrap -----------------------------------------------------------------------------------
def noisy_table(n=40, seeds=(0, 1)):
    """Per-scenario P(harmful) that varies, arms that differ by a noisy amount, two seeds."""
    sids = scenarios(n)
    per = {s: 0.3 + 0.6 * ((i * 37) % 11) / 10 for i, s in enumerate(sids)}
    rows = base_rows(sids, per=per)
    for arm, eff in (("reasoning", 0.15), ("demo", 0.05)):
        for budget, scale in ((1000, 0.5), (10000, 1.0)):
            for sd in seeds:
                for i, s in enumerate(sids):
                    jitter = (((i * 13 + sd * 7 + budget) % 17) / 17 - 0.5) * 0.2
                    p = min(1.0, max(0.0, per[s] - eff * scale + jitter))
                    rows.append(row(arm, "sft", budget, sd, "sft", s, p))
    return rows


def test_bootstrap_deterministic_given_seed_and_cis_cover_point():
    rows = noisy_table()
    a = analyse(rows, seed=3, replicates=300)
    b = analyse(rows, seed=3, replicates=300)
    assert a == b
    c = analyse(rows, seed=4, replicates=300)
    assert c["curves"] != a["curves"]  # a different draw
    assert a["n_replicates"] == 300
    for cu in a["curves"]:
        for est in (cu["p_harmful"], cu["effect"]):
            lo, hi = est["ci_95"]
            assert lo <= est["mean"] + 1e-12 and est["mean"] <= hi + 1e-12
        hr = cu["harmful_rate"]
        assert hr["wilson_95"][0] <= hr["rate"] <= hr["wilson_95"][1]
        assert hr["bootstrap_95"][0] <= hr["rate"] <= hr["bootstrap_95"][1]
        assert hr["n"] == cu["n_scenarios"] * cu["n_seeds"]
    sft = [cu for cu in a["curves"] if cu["kind"] == "sft"]
    assert all(cu["n_seeds"] == 2 and cu["effect"]["ci_95"][1] > cu["effect"]["ci_95"][0] for cu in sft)


def test_paired_resampling_constant_difference_gives_zero_width_ci():
    sids = scenarios(30)
    per = {s: 0.2 + 0.7 * (i % 7) / 6 for i, s in enumerate(sids)}  # base varies a lot by scenario
    rows = base_rows(sids, per=per)
    for sd in (0, 1, 2):  # several seeds, each the same constant shift: seed resampling changes nothing
        rows += [row("arm", "sft", 5000, sd, "sft", s, per[s] - 0.1) for s in sids]
    out = analyse(rows, replicates=400)
    (cu,) = [c for c in out["curves"] if c["arm"] == "arm"]
    lo, hi = cu["effect"]["ci_95"]
    assert cu["effect"]["mean"] == pytest.approx(0.1, abs=1e-12)
    assert lo == pytest.approx(0.1, abs=1e-12) and hi == pytest.approx(0.1, abs=1e-12)
    plo, phi = cu["p_harmful"]["ci_95"]
    assert phi - plo > 0.05  # the level itself is uncertain; only the paired difference is not


# -- persistence and gaps ----------------------------------------------------------------------------
def test_persistence_and_gaps_hand_values():
    sids = scenarios(10)
    rows = base_rows(sids)
    rows += flat_arm("reasoning", 1000, 0.30, sids) + flat_arm("reasoning", 1000, 0.25, sids, stage="rl")
    rows += flat_arm("demo", 1000, 0.10, sids) + flat_arm("demo", 1000, 0.20, sids, stage="rl")
    rows += flat_arm("sftonly", 1000, 0.05, sids)  # no RL stage: no persistence entry
    out = analyse(rows, replicates=100)
    per = {p["arm"]: p for p in out["persistence"]}
    assert set(per) == {"reasoning", "demo"}
    r = per["reasoning"]
    assert r["before"]["mean"] == pytest.approx(0.30) and r["after"]["mean"] == pytest.approx(0.25)
    assert r["change"]["mean"] == pytest.approx(-0.05) and r["change"]["ci_95"] == pytest.approx([-0.05, -0.05])
    assert "RL lowered the effect" in r["statement"]
    assert per["demo"]["change"]["mean"] == pytest.approx(0.10)
    (g,) = out["gaps"]
    assert (g["arm_a"], g["arm_b"], g["budget"]) == ("demo", "reasoning", 1000)
    assert g["before"]["mean"] == pytest.approx(-0.20) and g["after"]["mean"] == pytest.approx(-0.05)
    assert g["change"]["mean"] == pytest.approx(0.15)
    assert g["n_seeds_a"] == {"sft": 1, "rl": 1}
    assert "shrank from -0.200" in g["statement"] and "to -0.050" in g["statement"]


def test_gap_with_cis_over_zero_says_no_gap():
    rows = noisy_table(n=30, seeds=(0,))
    # two arms with identical RL-stage cells and identical SFT cells: the gap is exactly zero
    extra = []
    for r in rows:
        if r["arm"] == "reasoning" and r["budget"] == 1000:
            extra.append({**r, "arm": "twin"})
    rows += extra
    rows += [{**r, "stage": "rl"} for r in rows if r["arm"] in ("reasoning", "twin") and r["budget"] == 1000]
    out = analyse(rows, replicates=100)
    (g,) = out["gaps"]
    assert g["before"]["mean"] == 0 and g["after"]["mean"] == 0
    assert "the CIs overlap zero: no gap measured" in g["statement"]


# -- generalization ----------------------------------------------------------------------------------
def test_generalization_split():
    sids = scenarios(12)
    rows = [row("base", "base", None, 0, "none", s, BASE_P, family="h" if i < 4 else "t", held_out=i < 4)
            for i, s in enumerate(sids)]
    for i, s in enumerate(sids):
        held = i < 4  # 4 held-out scenarios (family "h"), 8 trained (family "t")
        eff = 0.05 if held else 0.25
        rows.append(row("reasoning", "sft", 1000, 0, "sft", s, BASE_P - eff, family="h" if held else "t",
                        held_out=held))
    out = analyse(rows, replicates=100)
    (g,) = out["generalization"]
    assert g["held_out"]["n_scenarios"] == 4 and g["trained"]["n_scenarios"] == 8
    assert g["held_out"]["families"] == ["h"] and g["trained"]["families"] == ["t"]
    assert g["held_out"]["effect"]["mean"] == pytest.approx(0.05)
    assert g["trained"]["effect"]["mean"] == pytest.approx(0.25)
    assert g["difference"]["mean"] == pytest.approx(-0.20)
    assert g["difference"]["ci_95"] == pytest.approx([-0.20, -0.20])  # stratified: each part keeps its size
    assert "smaller on held-out families" in g["statement"]
    # the arm's overall effect is the scenario-weighted mix: (4 * 0.05 + 8 * 0.25) / 12
    (cu,) = [c for c in out["curves"] if c["arm"] == "reasoning"]
    assert cu["effect"]["mean"] == pytest.approx((4 * 0.05 + 8 * 0.25) / 12)


# -- output shape and statements ---------------------------------------------------------------------
def test_output_keys_and_statements_carry_n_and_ci():
    out = analyse(noisy_table(n=20), replicates=100)
    assert set(out) == {"curves", "multiples", "persistence", "gaps", "generalization", "statements",
                        "n_replicates"}
    assert out["statements"]
    for s in out["statements"]:
        assert "95% CI" in s and "n=" in s, s
    base = [c for c in out["curves"] if c["kind"] == "base"]
    assert len(base) == 1 and base[0]["effect"] == {"mean": 0.0, "ci_95": [0.0, 0.0]}
    # default pairs: every ordered pair of SFT arms at each of A's budgets
    assert {(m["arm_a"], m["arm_b"], m["budget_a"]) for m in out["multiples"]} == {
        (a, b, bud) for a, b in (("reasoning", "demo"), ("demo", "reasoning")) for bud in (1000, 10000)}


# -- errors ------------------------------------------------------------------------------------------
def one_line_error(rows, match, **kw):
    with pytest.raises(UserError, match=match) as e:
        analyse(rows, replicates=10, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_errors():
    sids = scenarios(4)
    one_line_error([], "empty")
    one_line_error(flat_arm("demo", 1000, 0.1, sids), "no base arm")
    bad = base_rows(sids) + flat_arm("demo", 1000, 0.1, sids[:3])
    msg = one_line_error(bad, "same scenario set")
    assert "demo" in msg and "1 missing" in msg and "'s3'" in msg
    extra = base_rows(sids) + flat_arm("demo", 1000, 0.1, [*sids, "s9"])
    assert "1 extra" in one_line_error(extra, "same scenario set")
    one_line_error(base_rows(sids) + flat_arm("demo", 1000, 0.1, sids), "not an SFT arm",
                   multiple_pairs=[("demo", "nope")])
    two_bases = base_rows(sids) + [{**r, "arm": "base2"} for r in base_rows(sids)]
    one_line_error(two_bases, "exactly one")
    one_line_error([{k: v for k, v in r.items() if k != "p_harmful"} for r in base_rows(sids)], "lacks p_harmful")
