"""The neutral-context pass of choice scoring, kept across runs: runs/cache/neutral.sqlite.

A candidate's summed log-prob after the neutral context (the `calibrated` scoring's baseline) depends
only on the model, the dtype, the engine and the candidate's tokens, not on the scenario. Every eval
of the same model (a study's base arm, a rerun with other formats or families) would compute it
again; here it is looked up instead. Keys are namespaced by the model's fingerprint (weights and
adapter), the dtype, the scoring engine and the torch version, so a changed model never reads stale
values.

It is only a cache: a corrupt or unwritable file is set aside (or skipped) with one warning line, and
the values are computed as if it were empty.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

SCHEMA = "CREATE TABLE IF NOT EXISTS neutral (ns TEXT NOT NULL, key TEXT NOT NULL, value REAL NOT NULL, " \
         "PRIMARY KEY (ns, key))"


def namespace(model_fingerprint: str, dtype: str, engine: str) -> str:
    import torch

    return f"{model_fingerprint}|{dtype}|{engine}|torch-{torch.__version__}"


def candidate_key(context_ids: Sequence[int], candidate_ids: Sequence[int]) -> str:
    return hashlib.sha256(json.dumps([list(context_ids), list(candidate_ids)]).encode()).hexdigest()


class NeutralCache:
    def __init__(self, path: Path, namespace: str):
        self.path = Path(path)
        self.namespace = namespace
        self.hits = self.misses = 0
        self._db: sqlite3.Connection | None = self._open()

    def _open(self) -> sqlite3.Connection | None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30)
            db.execute(SCHEMA)
            db.commit()
            return db
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError):  # locked, read-only, disk full: run without it
                self._warn(f"cannot use {self.path} ({e}); computing without it")
                return None
            bad = self.path.with_name(f"{self.path.name}.bad-{int(time.time())}")
            self.path.rename(bad)
            self._warn(f"{self.path} was not a readable cache; moved it to {bad.name} and started a new one")
            return self._open()
        except OSError as e:
            self._warn(f"cannot use {self.path} ({e.strerror or e}); computing without it")
            return None

    @staticmethod
    def _warn(msg: str) -> None:
        print(f"warning: neutral-context cache: {msg}", file=sys.stderr)

    def get_many(self, keys: Sequence[str]) -> dict[str, float]:
        found: dict[str, float] = {}
        if self._db is not None and keys:
            try:
                for i in range(0, len(keys), 500):
                    part = list(keys[i:i + 500])
                    marks = ",".join("?" * len(part))
                    rows = self._db.execute(f"SELECT key, value FROM neutral WHERE ns = ? AND key IN ({marks})",
                                            [self.namespace, *part]).fetchall()
                    found.update(rows)
            except sqlite3.DatabaseError as e:
                self._warn(f"read failed ({e}); computing without it")
                self._db = None
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def put_many(self, items: Iterable[tuple[str, float]]) -> None:
        if self._db is None:
            return
        try:
            self._db.executemany("INSERT OR REPLACE INTO neutral (ns, key, value) VALUES (?, ?, ?)",
                                 [(self.namespace, k, float(v)) for k, v in items])
            self._db.commit()
        except sqlite3.DatabaseError as e:
            self._warn(f"write failed ({e}); computing without it")
            self._db = None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
