"""The experiment report: report.html (self-contained: plots, tables, a sample browser) and report.md
(the same headline and tables, plots as SVG files beside it), from an experiment directory.

    write_report(exp_dir) -> {"html": exp_dir/report.html, "md": exp_dir/report.md}

Inputs (see load.py): spec.json and analysis.json (required), versions.json, cells/*.json and
samples.jsonl (optional: the report says what is missing)."""

from __future__ import annotations

from pathlib import Path

from teachwhy.report.load import Experiment, load_experiment_dir

__all__ = ["Experiment", "load_experiment_dir", "write_report"]


def write_report(exp_dir: Path, out_dir: Path | None = None) -> dict[str, Path]:
    """Write report.html and report.md (and report-<eval>.svg for the Markdown) into out_dir, by
    default the experiment directory itself. Returns {"html": path, "md": path}."""
    from teachwhy.report import view as view_mod
    from teachwhy.report.html import plot_svgs, write_html
    from teachwhy.report.markdown import write_markdown
    from teachwhy.store import ensure_writable_dir

    exp = load_experiment_dir(Path(exp_dir))
    out = ensure_writable_dir(Path(out_dir) if out_dir is not None else exp.dir)
    v = view_mod.build(exp)
    svgs = plot_svgs(exp, v)
    html_path = write_html(exp, v, svgs, out / "report.html")
    md_path = out / "report.md"
    write_markdown(v, svgs, md_path)
    return {"html": html_path, "md": md_path}
