"""tests/ci_skips.py: under CI=true a test that would skip fails, with the skip's reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

SUITE = '''
import pytest

def test_runs():
    assert True

def test_needs_a_tool():
    pytest.skip("no frobnicator binary found (apt-get install frobnicator)")

@pytest.mark.skipif(True, reason="libfoo is not installed here")
def test_marked():
    pass

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False
'''


def _run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "test_suite.py").write_text(SUITE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(HERE) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "ci_skips", "-p", "no:cacheprovider",
                           "-rA", str(tmp_path / "test_suite.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_skip_fails_under_ci_naming_what_is_missing(tmp_path):
    r = _run(tmp_path, "true")
    assert r.returncode == 1, r.stdout
    # the run-time skip fails, the skipif (decided at setup) errors; nothing is counted as skipped
    assert r.stdout.strip().splitlines()[-1].startswith("1 failed, 1 passed, 1 xfailed, 1 error in ")
    assert "no frobnicator binary found (apt-get install frobnicator)" in r.stdout
    assert "libfoo is not installed here" in r.stdout
    assert "and CI=true runs every test" in r.stdout


def test_without_ci_a_skip_stays_a_skip(tmp_path):
    r = _run(tmp_path, None)
    assert r.returncode == 0, r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith("1 passed, 2 skipped, 1 xfailed in ")
