"""Headless Chromium for the report: find the binary, dump a page's DOM after its scripts ran (with the
console messages it logged), take a screenshot. Standard library only; nothing here touches the
network (the report is a file:// page that loads nothing)."""

from __future__ import annotations

import html
import json
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


def dump_dom(path: Path, fragment: str | None = None, timeout: float = 60, width: int | None = None,
             height: int = 900) -> Page:
    """Load a local HTML file (with an optional URL fragment) and return the DOM after its scripts ran,
    with the console lines Chromium logged for it; `width`: the viewport's width in px."""
    size = [f"--window-size={width},{height}"] if width else []
    res = _run(["--enable-logging=stderr", "--v=0", *size, "--dump-dom", file_url(path, fragment)], timeout)
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


# measures the page once its own scripts ran; the result goes into an attribute that --dump-dom shows
_LAYOUT_JS = """<script>(function () {
  var doc = document.documentElement, over = [];
  function id(e) { var p = e; while (p && !p.id) p = p.parentElement; return p ? p.id : e.tagName; }
  document.querySelectorAll("table").forEach(function (t) {
    var box = t.parentElement, w = t.getBoundingClientRect().width;
    if (t.scrollWidth > t.clientWidth + 1 || w > box.clientWidth + 1)
      over.push({what: "table", id: id(t), scroll_width: t.scrollWidth, client_width: t.clientWidth,
                 width: Math.round(w), container_width: box.clientWidth});
  });
  document.querySelectorAll("main, section, .scroll, .sb-wrap, .headline, #sb-detail").forEach(function (e) {
    if (e.scrollWidth > e.clientWidth + 1)
      over.push({what: e.tagName.toLowerCase(), id: id(e), scroll_width: e.scrollWidth, client_width: e.clientWidth});
  });
  var tight = Array.prototype.map.call(document.querySelectorAll("table.tight"), id);
  document.body.setAttribute("data-layout", JSON.stringify({viewport: doc.clientWidth,
    page_width: doc.scrollWidth, tables: document.querySelectorAll("table").length, overflows: over,
    tight: tight}));
})();</script>"""


def layout(path: Path, width: int = 1280, height: int = 900, fragment: str | None = None,
           timeout: float = 60) -> dict:
    """Lay a page out at a viewport `width` px wide and say what does not fit: {"viewport": px,
    "page_width": the document's scroll width, "tables": how many, "overflows": [every table wider than it
    shows or than its container, and every section or scroll box wider than itself], "tight": [the tables
    whose words had to break anywhere to fit (report.js)]}. The page is copied
    into a temporary directory with a measuring script added after its own; the file is not changed."""
    text = Path(path).read_text(encoding="utf-8")
    at = text.rfind("</body>")
    if at < 0:
        raise UserError(f"{path} has no </body>: not a report page")
    with tempfile.TemporaryDirectory(prefix="teachwhy-layout-") as tmp:
        probe = Path(tmp) / Path(path).name
        probe.write_text(text[:at] + _LAYOUT_JS + text[at:], encoding="utf-8")
        page = dump_dom(probe, fragment, timeout, width=width, height=height)
    m = re.search(r'<body[^>]*\bdata-layout="([^"]*)"', page.dom)
    if m is None:
        raise UserError(f"the layout probe did not run on {path}: {' '.join(page.console[-3:])}")
    return json.loads(html.unescape(m.group(1)))
