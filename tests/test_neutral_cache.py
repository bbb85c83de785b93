"""The neutral-context cache: lookups by namespace, a corrupt or unusable file never fails an eval, and
an eval that reads its sums from the cache writes the same records as one that computes them."""

from __future__ import annotations

import json
import sqlite3

from teachwhy.evals.neutral_cache import NeutralCache, candidate_key


def test_values_round_trip_per_namespace(tmp_path):
    path = tmp_path / "cache" / "neutral.sqlite"
    a = NeutralCache(path, "model-a|bfloat16|hf")
    k1, k2 = candidate_key([1, 2], [5, 6, 7]), candidate_key([1, 2], [5, 6, 8])
    assert k1 != k2 and candidate_key([1, 2], [5, 6, 7]) == k1
    assert a.get_many([k1, k2]) == {}
    a.put_many([(k1, -12.5), (k2, -3.25)])
    a.close()
    again = NeutralCache(path, "model-a|bfloat16|hf")
    assert again.get_many([k1, k2, "absent"]) == {k1: -12.5, k2: -3.25}
    assert (again.hits, again.misses) == (2, 1)
    assert NeutralCache(path, "model-b|bfloat16|hf").get_many([k1]) == {}  # another model reads nothing


def test_a_corrupt_file_is_set_aside_with_one_warning(tmp_path, capsys):
    path = tmp_path / "neutral.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    c = NeutralCache(path, "ns")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "neutral-context cache" in err[0] and "moved it to" in err[0]
    assert list(tmp_path.glob("neutral.sqlite.bad-*"))
    c.put_many([("k", 1.0)])
    assert c.get_many(["k"]) == {"k": 1.0}
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM neutral").fetchone() == (1,)


def test_a_file_that_cannot_be_opened_means_no_cache(tmp_path, capsys):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")
    c = NeutralCache(blocker / "neutral.sqlite", "ns")
    c.put_many([("k", 1.0)])
    assert c.get_many(["k"]) == {}
    assert capsys.readouterr().err.count("\n") == 1


def _neutral_sums(run_dir):
    out = {}
    for line in (run_dir / "samples.jsonl").read_text().splitlines():
        r = json.loads(line)
        out[r["scenario_id"]] = [c["neutral_sum_logprob"] for c in r["candidates"]]
    return out


def test_eval_from_the_cache_writes_the_records_it_would_compute(tiny, tmp_path):
    from teachwhy.evals.runner import run_eval

    plain = run_eval(tiny, limit=2, out=tmp_path / "plain", neutral_cache=False)
    assert not (tmp_path / "plain" / "cache").exists()
    cold = run_eval(tiny, limit=2, out=tmp_path / "runs")
    db = tmp_path / "runs" / "cache" / "neutral.sqlite"
    with sqlite3.connect(db) as c:  # mark the stored sums, to see that the next run reads them
        c.execute("UPDATE neutral SET value = value + 1000")
    warm = run_eval(tiny, limit=3, out=tmp_path / "runs")  # another run id, same model
    with sqlite3.connect(db) as c:
        n_rows = c.execute("SELECT COUNT(*) FROM neutral").fetchone()[0]
    p, c0, w = _neutral_sums(plain.run_dir), _neutral_sums(cold.run_dir), _neutral_sums(warm.run_dir)
    assert p == c0  # computing through the cache changes nothing
    assert {k: w[k] for k in c0} == {k: [x + 1000 for x in v] for k, v in c0.items()}  # read, not recomputed
    third = next(k for k in w if k not in c0)
    assert all(x < 0 for x in w[third])  # computed: a log-prob
    assert n_rows == sum(len(v) for v in w.values())  # one row per distinct candidate, none twice
    assert json.loads((cold.run_dir / "samples.jsonl").read_text().splitlines()[0])["calibrated"] == \
        json.loads((plain.run_dir / "samples.jsonl").read_text().splitlines()[0])["calibrated"]
