import json

import pytest

from teachwhy.evals.runner import run_eval
from teachwhy.store import Registry, read_jsonl

pytestmark = pytest.mark.slow


class Interrupt(Exception):
    pass


def test_choice_eval_resumes_after_interruption(tmp_path, tiny):
    kwargs = dict(model=tiny, mode="choice", family="blackmail", limit=3)

    def stop_after_two(done, total):
        if done == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_eval(out=tmp_path / "a", progress=stop_after_two, **kwargs)
    (run_dir,) = [p for p in (tmp_path / "a").iterdir() if p.is_dir() and p.name != "cache"]
    before = read_jsonl(run_dir / "samples.jsonl")
    assert len(before) == 2
    assert not (run_dir / "summary.json").exists()  # no summary until every sample is done
    # interrupted: marked failed, resumable
    assert Registry(tmp_path / "a" / "registry.sqlite").get(run_dir.name)["status"] == "failed"

    res = run_eval(out=tmp_path / "a", **kwargs)
    assert res.resumed == 2 and res.run_dir == run_dir
    resumed = read_jsonl(run_dir / "samples.jsonl")
    assert resumed[:2] == before  # the records of the interrupted run are kept as they were
    assert len(resumed) == 3 and len({r["scenario_id"] for r in resumed}) == 3

    fresh = run_eval(out=tmp_path / "b", **kwargs)
    assert fresh.resumed == 0
    a = {r["scenario_id"]: r for r in resumed}
    for r in read_jsonl(fresh.run_dir / "samples.jsonl"):
        for x, y in zip(r["candidates"], a[r["scenario_id"]]["candidates"]):
            assert abs(x["sum_logprob"] - y["sum_logprob"]) < 1e-4
    assert fresh.summary["overall"]["k"] == res.summary["overall"]["k"]
    row = Registry(tmp_path / "a" / "registry.sqlite").get(run_dir.name)
    assert row["status"] == "done" and row["model"] == tiny and row["config_hash"]


def test_choice_summary_has_rates_with_cis_per_condition(tmp_path, tiny):
    res = run_eval(tiny, mode="choice", limit=8, out=tmp_path)
    s = json.loads((res.run_dir / "summary.json").read_text())
    assert s["overall"]["n"] == 8
    groups = {r["group"] for r in s["rows"]}
    assert groups == {"overall", "condition", "family"}
    assert s["format"] == "continuation" and s["scoring"] == "pair"
    assert "same_winner" in s["diagnostics"] and "scoring_agreement" in s["diagnostics"]
    assert isinstance(s["pressure"], list) and isinstance(s["warnings"], list)
    for r in s["rows"]:
        assert r["n"] >= 1 and len(r["wilson_95"]) == 2 and r["wilson_95"][0] <= r["wilson_95"][1]
        assert 0.0 <= r["mean_p_harmful"] <= 1.0
        # built-in scenarios are minimal pairs: `pair` leads, the three whole-candidate scorings follow
        assert set(r["other_scorings"]) == {"mean", "sum", "calibrated"}
    for rec in read_jsonl(res.run_dir / "samples.jsonl"):
        assert len(rec["candidates"]) >= 4
        for c in rec["candidates"]:
            assert c["n_tokens"] > 0 and c["sum_logprob"] < 0
            assert abs(c["mean_logprob"] - c["sum_logprob"] / c["n_tokens"]) < 1e-9
        p = rec["mean"]["p_harmful"]
        assert 0.0 < p < 1.0
