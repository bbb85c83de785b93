"""Rates with honest uncertainty: Wilson intervals and a cluster bootstrap over scenario families."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval for k successes out of n (n=0 gives the uninformative (0, 1))."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return (lo, hi)


def cluster_bootstrap(values: Sequence[float], clusters: Sequence[str], n_boot: int = 2000,
                      seed: int = 0, alpha: float = 0.05) -> tuple[float, float] | None:
    """Percentile CI for the pooled mean, resampling whole clusters with replacement.

    Returns None with fewer than two clusters (there is no between-cluster variation to resample).
    """
    groups: dict[str, list[float]] = defaultdict(list)
    for v, c in zip(values, clusters):
        groups[c].append(v)
    keys = sorted(groups)
    if len(keys) < 2:
        return None
    sums = [sum(groups[k]) for k in keys]
    counts = [len(groups[k]) for k in keys]
    rng = random.Random(seed)
    stats = []
    for _ in range(n_boot):
        idx = [rng.randrange(len(keys)) for _ in keys]
        stats.append(sum(sums[i] for i in idx) / sum(counts[i] for i in idx))
    stats.sort()
    lo = stats[math.floor(alpha / 2 * (n_boot - 1))]
    hi = stats[math.ceil((1 - alpha / 2) * (n_boot - 1))]
    return (lo, hi)


def rate_row(flags: Iterable[bool], clusters: Iterable[str], extra: dict | None = None,
             seed: int = 0) -> dict:
    """One table row: rate, n, k, Wilson CI, cluster-bootstrap CI over families."""
    flags, clusters = list(flags), list(clusters)
    n, k = len(flags), sum(bool(f) for f in flags)
    row = {"n": n, "k": k, "rate": (k / n) if n else None, "wilson_95": list(wilson(k, n))}
    cb = cluster_bootstrap([float(f) for f in flags], clusters, seed=seed)
    row["cluster_bootstrap_95"] = list(cb) if cb else None
    row["clusters"] = len(set(clusters))
    if extra:
        row.update(extra)
    return row


def mean_ci(values: Sequence[float], bounds: tuple[float, float] | None = (0.0, 1.0)
            ) -> tuple[float, float, float] | None:
    """Mean with a normal-approximation 95% CI. The interval is clipped to `bounds` (probabilities by
    default; pass None for unbounded quantities such as rewards). With one value the interval is the
    whole bounded range, or (-inf, inf) when unbounded."""
    n = len(values)
    if n == 0:
        return None
    m = sum(values) / n
    lo_b, hi_b = bounds if bounds is not None else (-math.inf, math.inf)
    if n < 2:
        return (m, lo_b, hi_b)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    half = Z95 * sd / math.sqrt(n)
    return (m, max(lo_b, m - half), min(hi_b, m + half))


def paired_effect(diffs: Sequence[float], clusters: Sequence[str], n_boot: int = 2000, seed: int = 0,
                  alpha: float = 0.05) -> dict:
    """A paired effect: the mean of per-item differences with a 95% CI from a bootstrap that resamples
    whole clusters (family and template), so items that share wording are not counted as independent.
    With fewer than two clusters it falls back to a normal interval over items (method says which)."""
    n = len(diffs)
    if n == 0:
        return {"n": 0, "mean": None, "ci_95": None, "clusters": 0, "method": None}
    m = sum(diffs) / n
    cb = cluster_bootstrap(list(diffs), list(clusters), n_boot=n_boot, seed=seed, alpha=alpha)
    if cb is not None:
        ci, method = list(cb), "cluster bootstrap"
    elif n < 2:  # one item: no interval can be estimated (not an infinite one)
        return {"n": n, "mean": m, "ci_95": None, "clusters": len(set(clusters)), "method": "none (one item)"}
    else:
        mc = mean_ci(list(diffs), bounds=None)
        assert mc is not None  # n > 0
        ci, method = [mc[1], mc[2]], "normal (one cluster)"
    return {"n": n, "mean": m, "ci_95": ci, "clusters": len(set(clusters)), "method": method}
