"""Run directories, atomic writes, resumable per-sample logs and the SQLite run registry."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sqlite3
import subprocess
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Iterable

from teachwhy.errors import UserError


def content_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def ensure_writable_dir(path: Path) -> Path:
    """Create `path` if needed and prove we can write there, or raise a one-line UserError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"output directory {path} is not writable ({e.strerror or e}): "
                        "choose another with --out or fix its permissions") from None
    return path


def read_jsonl(path: Path) -> list[dict]:
    """Read finished records; a last line cut short by an interruption is ignored (it is redone)."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    with path.open() as f:
        for line in f:
            if not line.endswith("\n"):
                break  # torn write at the end
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    break
    return out


class JsonlLog:
    """Append-only per-sample log: each record is written whole and fsynced, so an interrupted run
    keeps exactly the samples it finished. Opening it drops any torn tail."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.records = read_jsonl(self.path)
        # rewrite without a torn tail so appends start on a clean line
        atomic_write_text(self.path, "".join(json.dumps(r, default=str) + "\n" for r in self.records))
        self._f = self.path.open("a")

    def append(self, record: dict) -> None:
        self._f.write(json.dumps(record, default=str) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.records.append(record)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "JsonlLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("teachwhy", "torch", "transformers", "peft", "trl", "inspect-ai", "datasets"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    model TEXT,
    config_hash TEXT NOT NULL,
    config_json TEXT NOT NULL,
    git_commit TEXT,
    versions_json TEXT,
    status TEXT NOT NULL,
    run_dir TEXT NOT NULL,
    started_at REAL,
    finished_at REAL,
    seconds REAL,
    summary_json TEXT
)
"""


class Registry:
    """runs/registry.sqlite: one row per run, updated as it starts and finishes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            with closing(self._connect()) as c, c:
                c.execute(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise UserError(f"run registry {self.path} is not a readable SQLite database ({e}): "
                            "move it aside and rerun") from None

    def _connect(self) -> sqlite3.Connection:
        c = sqlite3.connect(self.path, timeout=30)
        c.row_factory = sqlite3.Row
        return c

    def start(self, run_id: str, kind: str, model: str | None, config: dict, run_dir: Path) -> None:
        now = time.time()
        with closing(self._connect()) as c, c:
            c.execute(
                "INSERT INTO runs (run_id, kind, model, config_hash, config_json, git_commit, versions_json,"
                " status, run_dir, started_at) VALUES (?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(run_id) DO UPDATE SET status='running', started_at=excluded.started_at,"
                " git_commit=excluded.git_commit, versions_json=excluded.versions_json",
                (run_id, kind, model, content_hash(config), json.dumps(config, default=str), git_commit(),
                 json.dumps(versions()), "running", str(run_dir), now),
            )

    def finish(self, run_id: str, summary: dict, seconds: float, status: str = "done") -> None:
        with closing(self._connect()) as c, c:
            c.execute("UPDATE runs SET status=?, finished_at=?, seconds=?, summary_json=? WHERE run_id=?",
                      (status, time.time(), seconds, json.dumps(summary, default=str), run_id))

    def get(self, run_id: str) -> dict | None:
        with closing(self._connect()) as c:
            row = c.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return dict(row) if row else None

    def all(self) -> list[dict]:
        with closing(self._connect()) as c:
            return [dict(r) for r in c.execute("SELECT * FROM runs ORDER BY started_at")]


def done_keys(records: Iterable[dict], *fields: str) -> set[tuple]:
    return {tuple(r[f] for f in fields) for r in records}
