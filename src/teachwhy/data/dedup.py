"""Near-duplicate measurement and removal by word n-gram Jaccard similarity (exact sets, no MinHash).

Two texts are near-duplicates when the Jaccard similarity of their sets of word `n`-grams exceeds
`threshold`. Fast enough for a few hundred records: n-grams are hashed to ints, and pairs whose set
sizes alone bound the similarity below the threshold are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_WORD = re.compile(r"\w+")


def shingles(text: str, n: int = 5) -> frozenset[int]:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return frozenset([hash(tuple(words))]) if words else frozenset()
    return frozenset(hash(tuple(words[i:i + n])) for i in range(len(words) - n + 1))


def jaccard(a: frozenset[int], b: frozenset[int]) -> float:
    if not a and not b:
        return 1.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def _near_pairs(texts: Sequence[str], n: int, threshold: float) -> list[tuple[int, int]]:
    sets = [shingles(t, n) for t in texts]
    order = sorted(range(len(sets)), key=lambda i: len(sets[i]))
    pairs = []
    for a_pos, i in enumerate(order):
        si = sets[i]
        for j in order[a_pos + 1:]:
            sj = sets[j]
            # Jaccard <= |small| / |large|: once that bound fails, every later (larger) set fails too
            if sj and len(si) / len(sj) <= threshold:
                break
            if jaccard(si, sj) > threshold:
                pairs.append((min(i, j), max(i, j)))
    return pairs


def near_duplicate_rate(texts: Sequence[str], n: int = 5, threshold: float = 0.6) -> float:
    """The fraction of all pairs of `texts` whose word n-gram Jaccard similarity exceeds `threshold`."""
    k = len(texts)
    if k < 2:
        return 0.0
    return len(_near_pairs(texts, n, threshold)) / (k * (k - 1) / 2)


def dedup(texts: Sequence[str], n: int = 5, threshold: float = 0.6) -> list[int]:
    """Indices of the texts to keep, in order: each text is dropped when it is a near-duplicate of an
    earlier text that was kept."""
    partners: dict[int, list[int]] = {}
    for i, j in _near_pairs(texts, n, threshold):
        partners.setdefault(j, []).append(i)
    keep: list[int] = []
    kept: set[int] = set()
    for j in range(len(texts)):
        if not any(i in kept for i in partners.get(j, ())):
            keep.append(j)
            kept.add(j)
    return keep
