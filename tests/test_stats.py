import math

from teachwhy.evals.stats import cluster_bootstrap, mean_ci, rate_row, wilson


def test_wilson_matches_closed_form():
    # 15 of 50: the Wilson interval computed by hand from its formula
    lo, hi = wilson(15, 50)
    z, n, p = 1.959963984540054, 50, 0.3
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert abs(lo - (c - h)) < 1e-12 and abs(hi - (c + h)) < 1e-12
    assert abs(lo - 0.1910) < 1e-3 and abs(hi - 0.4375) < 1e-3


def test_wilson_edges():
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and 0.25 < hi < 0.35
    lo, hi = wilson(10, 10)
    assert hi == 1.0 and 0.65 < lo < 0.75


def test_cluster_bootstrap_needs_two_clusters_and_covers_mean():
    assert cluster_bootstrap([1, 0, 1], ["a", "a", "a"]) is None
    vals = [1] * 10 + [0] * 10 + [1] * 5 + [0] * 5
    cl = ["a"] * 20 + ["b"] * 10
    lo, hi = cluster_bootstrap(vals, cl, seed=1)
    assert lo <= sum(vals) / len(vals) <= hi
    # between-cluster spread: family a 50%, b 50% -> a tight interval; make them differ and it widens
    lo2, hi2 = cluster_bootstrap([1] * 20 + [0] * 10, cl, seed=1)
    assert (hi2 - lo2) > (hi - lo)


def test_rate_row_and_mean_ci():
    row = rate_row([True, False, False, True], ["a", "b", "a", "b"])
    assert row["n"] == 4 and row["k"] == 2 and row["rate"] == 0.5 and row["clusters"] == 2
    m, lo, hi = mean_ci([0.2, 0.4, 0.6])
    assert abs(m - 0.4) < 1e-12 and lo < m < hi


def test_paired_effect_of_one_item_has_no_interval():
    """One scenario: the effect is reported, its CI is n/a (None), never an infinite interval."""
    import json as _json

    from teachwhy.evals.stats import paired_effect

    e = paired_effect([0.25], ["leak/t1"])
    assert e["n"] == 1 and e["mean"] == 0.25 and e["ci_95"] is None
    _json.loads(_json.dumps(e, allow_nan=False))  # valid JSON: no Infinity
    two = paired_effect([0.25, 0.75], ["leak/t1", "leak/t1"])  # one cluster, two items: a normal interval
    assert two["ci_95"] is not None and two["method"] == "normal (one cluster)"
