"""Headless Chromium for the report: find the binary, dump a page's DOM after its scripts ran (with the
console messages it logged), take a screenshot. Standard library only; nothing here touches the
network (the report is a file:// page that loads nothing)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from teachwhy.errors import UserError

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
ENV = "TEACHWHY_CHROMIUM"
# Chromium's --enable-logging=stderr line for a console message or an uncaught exception of the page
CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]\s*(.*)")


def find_chromium() -> str | None:
    """$TEACHWHY_CHROMIUM, else the first of NAMES on PATH; None when there is none."""
    given = os.environ.get(ENV)
    if given:
        return given if shutil.which(given) or Path(given).is_file() else None
    return next((p for p in (shutil.which(n) for n in NAMES) if p), None)


@dataclass
class Page:
    dom: str
    console: list[str]  # every console message and uncaught error the page logged
    stderr: str


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    exe = find_chromium()
    if exe is None:
        raise UserError(f"no Chromium found (looked for {', '.join(NAMES)} on PATH and ${ENV}): install one, "
                        f"e.g. `apt-get install chromium`, or set {ENV} to its path")
    with tempfile.TemporaryDirectory(prefix="teachwhy-chromium-") as profile:
        cmd = [exe, "--headless=new", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", *args]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise UserError(f"Chromium did not finish within {timeout:g} s ({' '.join(cmd[:2])} ...)") from None


def file_url(path: Path, fragment: str | None = None) -> str:
    return Path(path).resolve().as_uri() + (f"#{fragment}" if fragment else "")


def dump_dom(path: Path, fragment: str | None = None, timeout: float = 60) -> Page:
    """Load a local HTML file (with an optional URL fragment) and return the DOM after its scripts ran,
    with the console lines Chromium logged for it."""
    res = _run(["--enable-logging=stderr", "--v=0", "--dump-dom", file_url(path, fragment)], timeout)
    if res.returncode != 0 or "<html" not in res.stdout:
        tail = " ".join(res.stderr.strip().splitlines()[-3:])
        raise UserError(f"Chromium could not load {path} (exit {res.returncode}): {tail}")
    console = [m.group(1) for m in (CONSOLE.search(line) for line in res.stderr.splitlines()) if m]
    return Page(res.stdout, console, res.stderr)


def screenshot(path: Path, out: Path, width: int = 1280, height: int = 1800, fragment: str | None = None,
               timeout: float = 60) -> Path:
    """A PNG of the page's first width x height pixels."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    res = _run(["--hide-scrollbars", f"--window-size={width},{height}", f"--screenshot={out}",
                file_url(path, fragment)], timeout)
    if res.returncode != 0 or not out.is_file():
        tail = " ".join(res.stderr.strip().splitlines()[-3:])
        raise UserError(f"Chromium wrote no screenshot of {path} (exit {res.returncode}): {tail}")
    return out
