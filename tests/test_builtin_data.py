"""Builtin why-data: constitution, plans, the builtin teacher and near-duplicate measurement."""

from __future__ import annotations

import time
from itertools import islice

import pytest

from teachwhy.constitution.loader import load_constitution
from teachwhy.data.dedup import dedup, near_duplicate_rate
from teachwhy.data.plans import plan
from teachwhy.data.records import KINDS
from teachwhy.errors import UserError
from teachwhy.scenarios import builtin_scenarios
from teachwhy.teachers.builtin import BuiltinTeacher

N = 200


@pytest.fixture(scope="module")
def con():
    return load_constitution()


@pytest.fixture(scope="module")
def teacher(con):
    return BuiltinTeacher(con, seed=0)


def _source(con, teacher, n=N):
    recs = [r.content for r in teacher.realise(islice(plan("advice", con, 11), n))]
    out = []
    for i, c in enumerate(recs):
        msgs = [{"role": "system", "content": "Old system prompt."}, *c["messages"]] if i % 2 else c["messages"]
        out.append({"id": f"src-{i}", "messages": msgs})
    return out


def _gen(kind, con, teacher, seed=0, n=N):
    src = _source(con, teacher) if kind == "augment" else None
    jobs = list(islice(plan(kind, con, seed, src), n))
    return jobs, [r.content for r in teacher.realise(jobs)]


def _text(content, response_only):
    if "text" in content:
        return content["text"]
    if response_only:
        return content["messages"][-1]["content"]
    return "\n".join(m["content"] for m in content["messages"])


def test_constitution_loads(con):
    assert 12 <= len(con.principles) <= 16
    for p in con.principles:
        assert p.id and p.statement and p.rationale and p.rules_out and p.rules_in
    assert len(con.by_id) == len(con.principles) and len(con.content_hash) == 16
    for needed in ("honesty", "support_oversight", "accept_correction", "no_coercion", "confidentiality",
                   "fairness_to_colleagues", "legitimate_channels", "epistemic_humility", "no_power_seeking"):
        assert needed in con.by_id


def test_constitution_errors(tmp_path):
    missing = tmp_path / "my.yaml"
    missing.write_text("principles:\n  - {id: honesty, statement: s, rules_out: [a], rules_in: [b]}\n")
    with pytest.raises(UserError) as e:
        load_constitution(missing)
    assert "my.yaml" in str(e.value) and "principle 1" in str(e.value) and "'rationale'" in str(e.value)
    dup = tmp_path / "dup.yaml"
    p = "  - {id: honesty, statement: s, rationale: r, rules_out: [a], rules_in: [b]}\n"
    dup.write_text("principles:\n" + p + p)
    with pytest.raises(UserError, match=r"principle 2.*duplicate id 'honesty'"):
        load_constitution(dup)
    bad = tmp_path / "bad.yaml"
    bad.write_text("principles: [\n  - {id: x\n")
    with pytest.raises(UserError, match=r"bad\.yaml: not valid YAML"):
        load_constitution(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("principles:\n  - {id: a, statement: s, rationale: r, rules_out: [], rules_in: [b]}\n")
    with pytest.raises(UserError, match="'rules_out'"):
        load_constitution(empty)


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic(kind, con, teacher):
    jobs_a, a = _gen(kind, con, teacher, seed=0, n=50)
    jobs_b, b = _gen(kind, con, BuiltinTeacher(con, seed=0), seed=0, n=50)
    assert [j.key for j in jobs_a] == [j.key for j in jobs_b] and a == b
    if kind != "augment":
        jobs_c, c = _gen(kind, con, teacher, seed=1, n=50)
        assert [j.key for j in jobs_c] != [j.key for j in jobs_a] and c != a


def test_demonstration_reasoning_pairing(con, teacher):
    dj, dc = _gen("demonstration", con, teacher)
    rj, rc = _gen("reasoning", con, teacher)
    assert [j.source_id for j in dj] == [j.source_id for j in rj]
    assert [j.index for j in dj] == [j.index for j in rj]
    for d, r, job in zip(dc, rc, rj):
        dr, rr = d["messages"][-1]["content"], r["messages"][-1]["content"]
        assert rr.endswith("\n\n" + dr) and len(rr) > len(dr)
        assert d["messages"][:-1] == r["messages"][:-1] and d["tools"] == r["tools"]
        delib = rr[: -len(dr)]
        names = [con.by_id[p].name.lower() for p in job.principle_ids]
        statements = [con.by_id[p].statement.lower() for p in job.principle_ids]
        assert any(n in delib.lower() for n in names) or any(s[:40] in delib.lower() for s in statements)


def test_only_train_scenarios(con):
    from teachwhy.scenarios import banks

    train = {s.id for b in banks.train_banks() for s in builtin_scenarios("train", wording=b)}
    evals = {s.id for b in ("house", banks.HELDOUT) for s in builtin_scenarios("eval", wording=b)}
    for kind in ("demonstration", "reasoning"):
        for job in islice(plan(kind, con, 3), 400):
            sid = job.source_id.split("/")[0]
            assert sid in train and sid not in evals and job.fields["scenario_id"] == sid


def test_augment(con, teacher):
    src = _source(con, teacher, 40)
    jobs = list(plan("augment", con, 0, src))
    assert len(jobs) == 40
    for rec, job, r in zip(src, jobs, teacher.realise(jobs)):
        msgs = r.content["messages"]
        assert job.source_id == rec["id"]
        assert msgs[0]["role"] == "system" and msgs[0]["content"] == job.fields["system_prompt"]
        assert sum(m["role"] == "system" for m in msgs) == 1
        assert [m for m in msgs if m["role"] == "user"] == [m for m in rec["messages"] if m["role"] == "user"]
        assert 1 <= len(r.content["tools"]) <= 3
    with pytest.raises(UserError):
        plan("augment", con, 0)


def test_many_distinct_jobs(con):
    for kind in ("advice", "documents", "fiction"):
        keys = {(j.source_id, repr(sorted(j.fields.items()))) for j in islice(plan(kind, con, 0), 5000)}
        assert len(keys) >= 4000, kind  # draws repeat rarely; the index still varies the content


@pytest.mark.parametrize("kind", KINDS)
def test_near_duplicates_and_speed(kind, con, teacher):
    t0 = time.perf_counter()
    _jobs, contents = _gen(kind, con, teacher)
    elapsed = time.perf_counter() - t0
    assert len(contents) == N and all(c is not None for c in contents)
    assert elapsed < 3.0, f"{kind}: {elapsed:.2f}s for {N} records"
    generated = kind in ("reasoning", "advice", "documents", "fiction")
    assert near_duplicate_rate([_text(c, generated) for c in contents]) < 0.05
    if kind in ("documents", "fiction"):
        words = [len(c["text"].split()) for c in contents]
        assert min(words) >= 130 and max(words) <= 450


def test_dedup():
    base = "the quick brown fox jumps over the lazy dog and then runs far away into the woods today"
    texts = [base, base + " again", "an entirely different sentence about honest assistants and oversight here"]
    assert dedup(texts) == [0, 2]
    assert near_duplicate_rate(texts) == pytest.approx(1 / 3)
