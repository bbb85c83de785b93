"""Run directories, atomic writes, resumable per-sample logs and the SQLite run registry."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Any

from teachwhy.errors import UserError

RUNS_DIR = "runs"  # where runs, experiments and caches go unless --out says otherwise


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


_log = logging.getLogger("teachwhy.store")


def _scan_jsonl(path: Path, strict: bool, lines: list[int] | None = None) -> tuple[list, int | None]:
    """(records, number of a dropped torn last line or None); `lines` gets each record's line number.
    strict: every non-blank line must be a JSON object, else a UserError naming the file and line.
    Log mode: only the last line may be bad (a write cut short by an interruption) and is then
    dropped; a bad line before it is a UserError."""
    path = Path(path)
    if not path.exists():
        return [], None
    out: list = []
    bad: tuple[int, str] | None = None  # a bad line seen in log mode: fatal unless it is the last one
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            if bad is not None:
                if raw.strip():
                    break  # something follows the bad line: it is not a torn tail
                continue
            torn = not raw.endswith(b"\n")
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                problem = "not UTF-8 text"
            else:
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    problem = f"not valid JSON ({e.msg} at column {e.colno})"
                else:
                    if not strict and torn:
                        problem = "cut short (no end of line)"
                    elif strict and not isinstance(rec, dict):
                        problem = f"a record must be a JSON object, not {type(rec).__name__}"
                    else:
                        out.append(rec)
                        if lines is not None:
                            lines.append(number)
                        continue
            if strict:
                raise UserError(f"{path}: line {number}: {problem}; each line must hold one whole record as a "
                                "JSON object: fix or delete that line, or rebuild the file")
            bad = (number, problem)
        else:
            return out, bad[0] if bad else None
    raise UserError(f"{path}: line {bad[0]}: {bad[1]}, and more records follow it, so this is damage, not an "
                    f"interrupted write: move {path.parent} aside and rerun, or fix or delete that line")


def read_jsonl(path: Path, strict: bool = False) -> list[dict]:
    """Every record of a JSONL file; a missing file reads as no records.

    strict=True (datasets, files users give us): any line that is not one JSON object is a UserError
    `FILE: line N: what; how to fix`, so nothing past a bad line is silently lost.
    strict=False (our own append-only logs, see JsonlLog): a torn LAST line (an interrupted write) is
    dropped with a warning on the `teachwhy.store` logger (the work it held is redone); a bad line
    anywhere before the last is a UserError as in strict mode."""
    records, torn = _scan_jsonl(path, strict)
    if torn is not None:
        _log.warning(f"{path}: line {torn}: dropped a torn last line (an interrupted write); it is redone")
    return records


def read_jsonl_lines(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) for every record of a user's or dataset JSONL file, read strictly (see read_jsonl)."""
    numbers: list[int] = []
    records, _ = _scan_jsonl(path, True, numbers)
    return list(zip(numbers, records))


class JsonlLog:
    """Append-only per-sample log: each record is written whole and fsynced, so an interrupted run
    keeps exactly the samples it finished. Opening it drops a torn last line (reported by a warning on
    the `teachwhy.store` logger and in `dropped_line`) and rewrites the file without it; a bad line
    before the last is a UserError (see read_jsonl)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.records, self.dropped_line = _scan_jsonl(self.path, strict=False)  # dropped_line: torn tail's number
        if self.dropped_line is not None:
            _log.warning(f"{self.path}: line {self.dropped_line}: dropped a torn last line (an interrupted "
                         "write); it is redone")
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

    def __enter__(self) -> JsonlLog:
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
        with suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
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
    """runs/registry.sqlite: one row per run, updated as it starts, finishes or fails. It is an index
    of the run directories (each holds its own config.json and summary.json)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with self._db() as c, c:
            c.execute(_SCHEMA)
            if "error" not in {r["name"] for r in c.execute("PRAGMA table_info(runs)")}:
                c.execute("ALTER TABLE runs ADD COLUMN error TEXT")  # registries from before `fail`

    def _connect(self) -> sqlite3.Connection:
        c = sqlite3.connect(self.path, timeout=30)
        c.row_factory = sqlite3.Row
        return c

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A connection; a file that is not a SQLite database gives one line, not a traceback."""
        try:
            with closing(self._connect()) as c:
                yield c
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError):  # busy, disk full, no permission: not corruption
                raise
            raise UserError(f"run registry {self.path} is not a readable SQLite database ({e}): move it "
                            "away (e.g. rename it to registry.sqlite.bad) and rerun; it is only an index "
                            "of the run directories and a new one is started") from None

    def start(self, run_id: str, kind: str, model: str | None, config: dict, run_dir: Path) -> None:
        now = time.time()
        with self._db() as c, c:
            c.execute(
                "INSERT INTO runs (run_id, kind, model, config_hash, config_json, git_commit, versions_json,"
                " status, run_dir, started_at) VALUES (?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(run_id) DO UPDATE SET status='running', started_at=excluded.started_at,"
                " git_commit=excluded.git_commit, versions_json=excluded.versions_json, error=NULL,"
                " finished_at=NULL",
                (run_id, kind, model, content_hash(config), json.dumps(config, default=str), git_commit(),
                 json.dumps(versions()), "running", str(run_dir), now),
            )

    def finish(self, run_id: str, summary: dict, seconds: float, status: str = "done") -> None:
        with self._db() as c, c:
            c.execute("UPDATE runs SET status=?, finished_at=?, seconds=?, summary_json=?, error=NULL"
                      " WHERE run_id=?",
                      (status, time.time(), seconds, json.dumps(summary, default=str), run_id))

    def fail(self, run_id: str, error: str) -> None:
        """Mark a started run `failed` with its error (one line); rerunning the command resumes it."""
        with self._db() as c, c:
            c.execute("UPDATE runs SET status='failed', finished_at=?,"
                      " seconds=? - COALESCE(started_at, ?), error=? WHERE run_id=?",
                      (time.time(), time.time(), time.time(), " ".join(str(error).split())[:2000], run_id))

    @contextmanager
    def failure_recorded(self, run_id: str) -> Iterator[None]:
        """Run the body; on any exception (Ctrl-C included) mark the run failed, then re-raise."""
        try:
            yield
        except BaseException as e:
            msg = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            with suppress(Exception):  # never hide the original error behind a registry problem
                self.fail(run_id, msg)
            raise

    def get(self, run_id: str) -> dict | None:
        with self._db() as c:
            row = c.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return dict(row) if row else None

    def all(self) -> list[dict]:
        with self._db() as c:
            return [dict(r) for r in c.execute("SELECT * FROM runs ORDER BY started_at")]


@contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[Path]:
    """Hold an exclusive, non-blocking lock on `run_dir/.lock` for a whole run, so two processes never
    write one run directory. The holder's pid and command line are written into the file so a second
    process can say who holds it. flock is released by the kernel when the holder dies, so a lock file
    left by a killed process does not block (its text is only informational)."""
    run_dir = Path(run_dir)
    path = run_dir / ".lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(f"cannot create the lock file {path} ({e.strerror or e}): "
                        "fix the directory's permissions or choose another --out") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").splitlines()
            except OSError:
                holder = []
            pid = holder[0].strip() if holder else "?"
            cmd = holder[1].strip() if len(holder) > 1 else "unknown command"
            label = f"{run_dir.parent.name}/{run_dir.name}"
            raise UserError(f"{label} is being written by pid {pid} ({cmd}); wait for it or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n{' '.join(sys.argv)[:500]}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock

