"""Family hold-out for why-data builds: `build_dataset(..., families=[...])` and `--families`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import islice
from pathlib import Path

import pytest

from teachwhy.constitution.loader import FAMILIES, load_constitution
from teachwhy.data.build import build_dataset
from teachwhy.data.plans import held_out_principles, plan, resolve_families, taxonomy
from teachwhy.errors import UserError
from teachwhy.scenarios import banks, builtin_scenarios
from teachwhy.scenarios.schema import FAMILIES as SCENARIO_FAMILIES
from teachwhy.teachers import get_teacher

KEEP = ["blackmail", "leak"]
HELD = ["sabotage", "framing"]
BIN = Path(sys.executable).parent / "teachwhy"


@pytest.fixture(scope="module")
def con():
    return load_constitution()


def _allowed(con, principle_ids, families=KEEP):
    """Every principle bears on a listed family (or on none)."""
    return all(not con.by_id[p].families or set(con.by_id[p].families) & set(families) for p in principle_ids)


def _check_card(out: Path, families=KEEP, held=HELD):
    card = json.loads((out / "card.json").read_text())
    assert card["families"] == families
    assert card["held_out_families"] == held
    assert card["config"]["families"] == families
    assert f"families: {', '.join(families)}" in (out / "card.md").read_text()
    return card


def test_families_match_the_scenario_families():
    assert tuple(FAMILIES) == tuple(SCENARIO_FAMILIES)


@pytest.mark.parametrize("kind", ["demonstration", "reasoning"])
def test_honeypot_kinds_use_only_train_scenarios_of_the_families(kind, tmp_path, con):
    res = build_dataset(kind, get_teacher("builtin", seed=0), tokens=6000, seed=0, out=tmp_path / kind,
                        families=["leak", "blackmail"])
    assert res.records
    for r in res.records:
        f = r["lineage"]["fields"]
        assert f["family"] in KEEP
        train = {s.id: s for b in banks.train_banks()
                 for s in builtin_scenarios("train", seed=f["expansion_seed"], wording=b)}
        assert train[f["scenario_id"]].family == f["family"] and train[f["scenario_id"]].split == "train"
        assert r["source_id"].startswith(f["scenario_id"] + "/")
    _check_card(tmp_path / kind, families=KEEP)  # canonical order, whatever order was given
    # the unbounded plan covers both listed families and never another; the two kinds still pair
    demo = list(islice(plan("demonstration", con, 0, families=KEEP), 40))
    reas = list(islice(plan("reasoning", con, 0, families=KEEP), 40))
    assert {j.fields["family"] for j in demo} == set(KEEP)
    assert [j.source_id for j in demo] == [j.source_id for j in reas]


def test_advice_respects_families(tmp_path, con):
    res = build_dataset("advice", get_teacher("builtin", seed=0), tokens=4000, seed=0, out=tmp_path / "advice",
                        families=KEEP)
    assert res.records
    for r in res.records:
        assert _allowed(con, r["principle_ids"]), r["principle_ids"]
    _check_card(tmp_path / "advice")
    jobs = list(islice(plan("advice", con, 0, families=KEEP), 400))
    drawn = {j.fields["temptation"]["id"] for j in jobs}
    # these teach only sabotage- or framing-only principles (no_sabotage, fairness_to_colleagues)
    assert not drawn & {"disable_check", "scapegoat", "sabotage_rival"}
    assert {"leverage", "leak", "read_private", "threaten"} <= drawn
    assert all(_allowed(con, j.principle_ids) for j in jobs)
    all_ids = {t["id"] for t in taxonomy("advice")["temptations"]}
    assert drawn == all_ids - {"disable_check", "scapegoat", "sabotage_rival"}


def test_fiction_and_documents_respect_families(con):
    fic = list(islice(plan("fiction", con, 0, families=["framing"]), 200))
    assert {j.fields["temptation"]["family"] for j in fic} == {"framing"}
    assert all("framing" in con.by_id[j.principle_ids[0]].families for j in fic)
    docs = list(islice(plan("documents", con, 0, families=["sabotage"]), 200))
    held = held_out_principles(con, ["sabotage"])
    assert held == {"no_coercion", "confidentiality", "care_for_third_parties", "fairness_to_colleagues",
                    "respect_autonomy"}
    used = {j.principle_ids[0] for j in docs}
    assert used == {p.id for p in con.principles} - held


def test_augment_input_records_of_held_out_families_are_skipped(con):
    def rec(i, family=None, principles=()):
        lineage = {"fields": {"family": family}} if family else {}
        return {"id": f"r{i}", "messages": [{"role": "user", "content": f"q{i}"}],
                "principle_ids": list(principles), "lineage": lineage}

    src = [rec(0, "blackmail"), rec(1, "sabotage"), rec(2, principles=["honesty"]),
           rec(3, principles=["no_sabotage"]), rec(4)]
    kept = [j.source_id for j in plan("augment", con, 0, source_records=src, families=KEEP)]
    assert kept == ["r0", "r2", "r4"]
    assert [j.source_id for j in plan("augment", con, 0, source_records=src)] == [r["id"] for r in src]
    with pytest.raises(UserError, match="none of the 2 augment input records"):
        list(plan("augment", con, 0, source_records=src[1:2] + src[3:4], families=KEEP))


def test_all_families_is_the_default_byte_for_byte(tmp_path):
    a = build_dataset("advice", get_teacher("builtin", seed=2), tokens=3000, seed=2, out=tmp_path / "a")
    b = build_dataset("advice", get_teacher("builtin", seed=2), tokens=3000, seed=2, out=tmp_path / "b",
                      families=list(reversed(FAMILIES)))
    assert (tmp_path / "a" / "data.jsonl").read_bytes() == (tmp_path / "b" / "data.jsonl").read_bytes()
    assert a.card["families"] == b.card["families"] == list(FAMILIES)
    assert a.card["held_out_families"] == [] and a.card["config"]["families"] == list(FAMILIES)
    assert "families: blackmail, leak, sabotage, framing (all)" in (tmp_path / "a" / "card.md").read_text()


def test_resolve_families():
    assert resolve_families(None) == FAMILIES
    assert resolve_families(["leak", "blackmail", "leak"]) == ("blackmail", "leak")
    assert resolve_families("framing, leak") == ("leak", "framing")
    assert resolve_families(["blackmail,leak", "sabotage"]) == ("blackmail", "leak", "sabotage")


@pytest.mark.parametrize("bad, needle", [(["blackmail", "blakmail"], "unknown family 'blakmail'"),
                                         ([], "families is empty"), ([" , "], "families is empty"),
                                         ("", "families is empty")])
def test_bad_families_are_one_line_user_errors(bad, needle, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(UserError) as e:
        build_dataset("demonstration", get_teacher("builtin"), tokens=3000, out=out, families=bad)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg
    assert "blackmail, leak, sabotage, framing" in msg
    assert not out.exists()  # refused before any work


def _run(*args):
    exe = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "teachwhy"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="200")
    return subprocess.run([*exe, *args], capture_output=True, text=True, env=env, timeout=600)


def test_cli_bad_family_is_one_line_and_non_zero(tmp_path):
    p = _run("data", "build", "demonstration", "--tokens", "3000", "--out", str(tmp_path / "d"),
             "--families", "blackmail,nope")
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "unknown family 'nope'" in lines[0] and "blackmail, leak, sabotage, framing" in lines[0]
    assert "Traceback" not in p.stderr and not (tmp_path / "d").exists()


@pytest.mark.slow
def test_cli_families_comma_separated_and_repeated(tmp_path):
    p = _run("data", "build", "reasoning", "--tokens", "4000", "--out", str(tmp_path / "r"),
             "--families", "leak", "--families", "blackmail,leak")
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "held out: sabotage, framing" in p.stdout
    _check_card(tmp_path / "r")
    recs = [json.loads(x) for x in (tmp_path / "r" / "data.jsonl").read_text().splitlines()]
    assert recs and all(r["lineage"]["fields"]["family"] in KEEP for r in recs)
