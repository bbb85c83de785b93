"""report.md: the headline, the same tables as report.html and a summary, for a repository. Plots are
SVG files written next to it (report-<eval>.svg) and referenced by relative path; no other links."""

from __future__ import annotations

from pathlib import Path

from teachwhy.report import plots
from teachwhy.report._templates import environment
from teachwhy.store import atomic_write_text


def _cell(s: str) -> str:
    return " ".join(str(s).split()).replace("\\", "\\\\").replace("|", "\\|")


def md_table(t: dict) -> str:
    lines = [f"### {t['title']}", ""] if t.get("title") else []
    if t["rows"]:
        cols = t["columns"]
        lines.append("| " + " | ".join(_cell(c["label"]) for c in cols) + " |")
        lines.append("|" + "|".join("---:" if c["num"] else "---" for c in cols) + "|")
        lines += ["| " + " | ".join(_cell(v) for v in r) + " |" for r in t["rows"]]
    else:
        lines.append(f"None: {t['empty']}.")
    for n in t.get("notes") or []:
        lines += ["", n]
    if t.get("statements"):
        lines += ["", "In words:", ""] + [f"- {s}" for s in t["statements"]]
    return "\n".join(lines)


def write_markdown(view: dict, svgs: dict[str, str], path: Path) -> dict[str, Path]:
    """Write report.md and its plot files; returns {eval: svg path}."""
    files = {}
    for ev, svg in svgs.items():
        p = path.parent / f"report-{plots.slug(ev)}.svg"
        atomic_write_text(p, plots.svg_file_text(svg))
        files[ev] = p
    text = environment(False).get_template("report.md.j2").render(
        v=view, md_table=md_table, plot_files={ev: p.name for ev, p in files.items()})
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    atomic_write_text(path, text)
    return files
