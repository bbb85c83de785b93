"""Incremental near-duplicate filter for builds: MinHash over word 5-gram shingles with LSH bands to
find candidates, then exact Jaccard on those candidates. Adding a text is O(bands), not O(records)."""

from __future__ import annotations

import hashlib
import re
import zlib
from collections import defaultdict

_WORD = re.compile(r"[a-z0-9]+")
_MASK = (1 << 61) - 1


def shingles(text: str, n: int = 5) -> frozenset[int]:
    w = _WORD.findall(text.lower())
    if len(w) < n:
        return frozenset([zlib.crc32(" ".join(w).encode())])
    # a stable hash (unlike hash(), not salted per process), so builds are reproducible
    return frozenset(zlib.crc32(" ".join(w[i : i + n]).encode()) for i in range(len(w) - n + 1))


class NearDupIndex:
    def __init__(self, threshold: float = 0.6, bands: int = 16, rows: int = 2, n: int = 5):
        self.threshold, self.bands, self.rows, self.n = threshold, bands, rows, n
        k = bands * rows
        self._salts = [int.from_bytes(hashlib.sha256(str(i).encode()).digest()[:8], "big") for i in range(k)]
        self._buckets: dict[tuple, list[int]] = defaultdict(list)
        self._sets: list[frozenset[int]] = []
        self._exact: set[str] = set()

    def _signature(self, s: frozenset[int]) -> list[int]:
        return [min(((x ^ salt) * 0x9E3779B97F4A7C15) & _MASK for x in s) for salt in self._salts]

    def add(self, text: str) -> bool:
        """Add `text` unless it (nearly) duplicates one already added; return whether it was added."""
        digest = hashlib.sha256(" ".join(_WORD.findall(text.lower())).encode()).hexdigest()
        if digest in self._exact:
            return False
        s = shingles(text, self.n)
        sig = self._signature(s)
        keys = [(b, tuple(sig[b * self.rows : (b + 1) * self.rows])) for b in range(self.bands)]
        seen: set[int] = set()
        for key in keys:
            for j in self._buckets.get(key, ()):
                if j in seen:
                    continue
                seen.add(j)
                other = self._sets[j]
                if len(s & other) / len(s | other) > self.threshold:
                    return False
        idx = len(self._sets)
        self._sets.append(s)
        self._exact.add(digest)
        for key in keys:
            self._buckets[key].append(idx)
        return True
