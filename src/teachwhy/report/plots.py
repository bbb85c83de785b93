"""Curves of mean P(harmful) and of the effect vs base against training tokens (log x), one figure per
eval, rendered by matplotlib to SVG text (no pyplot, no global backend switch: safe in any process).

SFT arms are lines with their 95% CI as a band, the same arm after RL dashed; the base model and the
prompting arms (no training tokens) are horizontal reference lines with their CI as a band.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from teachwhy.results import Curve, Estimate

SFT_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
PROMPT_COLOURS = ["#7f7f7f", "#b07aa1", "#9c755f", "#59a14f"]


def _k(b: float) -> str:
    if b >= 1_000_000:
        return f"{b / 1_000_000:g}M"
    if b >= 1000:
        return f"{b / 1000:g}k"
    return f"{b:g}"


def _num(x: float | None) -> float:
    return math.nan if x is None else x


def _point(e: Estimate | None) -> tuple[float, float, float]:
    """An estimate's mean and 95% CI ends; NaN (nothing drawn) where the analysis has none."""
    if e is None:
        return math.nan, math.nan, math.nan
    lo, hi = e.ci_95 if e.ci_95 else (math.nan, math.nan)
    return _num(e.mean), lo, hi


def curves_svg(curves: list[Curve], ev: str, budgets: list[int], salt: str) -> str:
    """The figure for one eval from analysis.json's curves (entries of that eval), as <svg> text."""
    rows = [c for c in curves if c.eval == ev]
    sft: dict[tuple[str, str], list[tuple[int, Curve]]] = {}  # (arm, stage) -> (budget, curve)
    refs = []
    for c in rows:
        if c.kind == "sft" and c.budget:
            sft.setdefault((c.arm, c.stage), []).append((c.budget, c))
        elif c.kind in ("base", "prompt"):
            refs.append(c)
    arms = list(dict.fromkeys(a for a, _ in sft))
    colour = {a: SFT_COLOURS[i % len(SFT_COLOURS)] for i, a in enumerate(arms)}
    xs = sorted({b for v in sft.values() for b, _c in v} | set(budgets or []))
    lo_x, hi_x = (min(xs) / 1.6, max(xs) * 1.6) if xs else (1e3, 1e5)

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt, "font.size": 10,
                                "axes.spines.top": False, "axes.spines.right": False}):
        fig = Figure(figsize=(11, 4.6), layout="constrained")
        ax_p, ax_e = fig.subplots(1, 2)
        # each panel: its axes, the estimate it plots, title, y label, and whether base gets a CI band
        panels: list[tuple[Axes, Callable[[Curve], Estimate | None], str, str, bool]] = [
            (ax_p, lambda c: c.p_harmful, "Mean P(harmful)", "mean P(harmful)", True),
            (ax_e, lambda c: c.effect, "Effect vs base (base minus arm: higher is better)", "effect vs base", False)]
        for ax, pick, title, ylab, base_band in panels:
            prompt_i = 0
            for c in refs:
                mean, lo_c, hi_c = _point(pick(c))
                if c.kind == "base":
                    col, ls, label = "#000000", "--", f"{c.arm} (base)"
                else:
                    col, ls, label = PROMPT_COLOURS[prompt_i % len(PROMPT_COLOURS)], ":", f"{c.arm} (prompt)"
                    prompt_i += 1
                ax.axhline(mean, color=col, ls=ls, lw=1.4, label=label)
                if c.kind != "base" or base_band:
                    ax.axhspan(lo_c, hi_c, color=col, alpha=0.08, lw=0)
            for (arm, stage), pts in sft.items():
                pts = sorted(pts, key=lambda bc: bc[0])
                x = [b for b, _c in pts]
                points = [_point(pick(c)) for _b, c in pts]
                m = [p[0] for p in points]
                lo = [p[1] for p in points]
                hi = [p[2] for p in points]
                rl = stage == "rl"
                ax.plot(x, m, marker="s" if rl else "o", ms=4, lw=1.8, ls="--" if rl else "-", color=colour[arm],
                        label=f"{arm} after RL" if rl else arm)
                ax.fill_between(x, lo, hi, color=colour[arm], alpha=0.10 if rl else 0.18, lw=0)
            ax.set_xscale("log")
            ax.set_xlim(lo_x, hi_x)
            if xs:
                ax.set_xticks(xs, [_k(b) for b in xs])
                ax.minorticks_off()
            ax.set_xlabel("training tokens (log scale)")
            ax.set_ylabel(ylab)
            ax.set_title(title, fontsize=10)
            ax.grid(True, axis="y", alpha=0.3)
        handles, labels = ax_p.get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 5) or 1, frameon=False,
                   fontsize=9)
        fig.suptitle(f"{ev}: mean over scenarios and seeds, 95% CI bands", fontsize=11)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    # the RDF metadata block (creator, format) is noise inline; its namespaces are all it links to
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.S)
    return scope_ids(text[text.index("<svg"):], f"plot-{slug(ev)}")


def scope_ids(svg: str, prefix: str) -> str:
    """Every id in the SVG, and every reference to one (url(#x), href="#x"), prefixed, so that
    several figures inline in one page do not share ids (matplotlib numbers its elements per figure:
    patch_1, axes_1, ...) and a reference never resolves into another figure."""
    ids = set(re.findall(r'\bid="([^"]+)"', svg))

    def ref(m: re.Match) -> str:
        return m.group(1) + (f"{prefix}-{m.group(2)}" if m.group(2) in ids else m.group(2)) + m.group(3)

    svg = re.sub(r'(\bid=")([^"]+)(")', ref, svg)
    svg = re.sub(r'((?:xlink:)?href="#)([^"]+)(")', ref, svg)
    return re.sub(r"(url\(#)([^)]+)(\))", ref, svg)


def svg_file_text(svg: str) -> str:
    """An inline <svg> made a standalone .svg file again."""
    return '<?xml version="1.0" encoding="utf-8" standalone="no"?>\n' + svg


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", name).strip("-") or "eval"
