"""A pytest plugin (loaded by conftest.py): under CI=true a skipped test fails instead, with the skip's
reason, which names what is missing. CI must run every test; a test that passes by being skipped on a
fresh machine hides a missing install step."""

from __future__ import annotations

import os

import pytest


def ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not ci() or not rep.skipped or hasattr(rep, "wasxfail"):
        return
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    reason = reason.removeprefix("Skipped: ")
    rep.outcome = "failed"
    rep.longrepr = (f"{item.nodeid} would be skipped ({reason}), and CI=true runs every test: install what it "
                    "names (make test installs what it can) or run without CI=true")
