"""report.html: one self-contained file. CSS, JavaScript and the SVG plots are inline; the sample
browser's data is JSON inside <script type="application/json">, escaped so that no scenario text can
end the tag or open markup (see script_json); the page writes scenario text with textContent only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from markupsafe import Markup

from teachwhy.report import plots
from teachwhy.report._templates import environment, static
from teachwhy.report.load import Experiment
from teachwhy.report.view import browser_data
from teachwhy.store import atomic_write_text

# in JSON strings these are the same characters to JSON.parse, and inert in HTML: "<" cannot start
# "</script>" or "<!--", ">" and "&" cannot end or start anything; U+2028/9 are line ends to old JS
_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(obj: Any) -> str:
    """JSON that is safe verbatim inside <script type="application/json"> (and parses to `obj`)."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return "".join(_SCRIPT_ESCAPES.get(ch, ch) for ch in text)


def plot_svgs(exp: Experiment, view: dict) -> dict[str, str]:
    curves = exp.analysis.curves
    budgets = [int(b) for b in exp.spec.get("budgets") or []]
    return {ev: plots.curves_svg(curves, ev, budgets, salt=f"{exp.name}/{ev}") for ev in view["evals"]}


def render_html(exp: Experiment, view: dict, svgs: dict[str, str]) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        tw_version = version("teachwhy")
    except PackageNotFoundError:
        tw_version = "unknown"
    data = browser_data(exp)
    return environment(True).get_template("report.html.j2").render(
        v=view, plots={ev: Markup(svg) for ev, svg in svgs.items()},
        css=Markup(static("report.css")), js=Markup(static("report.js")),
        samples_json=Markup(script_json(data)), browser_columns=data["columns"], teachwhy_version=tw_version)


def write_html(exp: Experiment, view: dict, svgs: dict[str, str], path: Path) -> Path:
    atomic_write_text(path, render_html(exp, view, svgs))
    return path
