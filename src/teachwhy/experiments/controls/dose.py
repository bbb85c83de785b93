"""The dose of variety: does training the decision in more wordings make it transfer to new wording?

For each number of train wording banks k (the first k of scenarios/banks.train_banks(), `house` first)
and each count of train scenarios (loss tokens), the controls run with control data phrased in those k
banks; every run shares one output directory, so the base model's evals and the unrelated-text arm of
a given size are trained and scored once. Per point it keeps each arm's effect against the base at both
levels (in-template, across wording) under one scoring, and plots the across-wording effects against k.

    OUT/controls-<banks>-n<scenarios>.json   each point's full controls result
    OUT/dose.json                            the curve (effects with CIs per point)
    OUT/dose.png                             the curve as a picture
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from teachwhy.errors import UserError
from teachwhy.experiments.controls import ARMS, Log, banks_tag, run_controls
from teachwhy.experiments.spec import CONTROLS_OUT
from teachwhy.models import DEFAULT_MODEL
from teachwhy.store import atomic_write_json


def run_dose(model: str = DEFAULT_MODEL, out: str | Path = CONTROLS_OUT, variety: list[int] | None = None,
             scenario_counts: list[int] | None = None, scoring: str = "continuation/pair",
             log: Log | None = None, **controls: Any) -> dict[str, Any]:
    from teachwhy.scenarios import banks as bank_mod

    names = bank_mod.train_banks()
    ks = sorted(set(variety or range(1, len(names) + 1)))
    if not ks or ks[0] < 1 or ks[-1] > len(names):
        raise UserError(f"--variety takes bank counts from 1 to {len(names)} (the train banks: {', '.join(names)})")
    counts = sorted(set(scenario_counts or [controls.pop("train_scenarios", 24)]))
    controls.pop("train_scenarios", None)
    say = log or (lambda _m: None)
    points = []
    for n in counts:
        for k in ks:
            used = names[:k]
            say(f"dose point: {k} bank(s) ({', '.join(used)}), {n} train scenarios")
            res = run_controls(model=model, out=out, train_scenarios=n, train_banks=used, log=log,
                               result_file=f"controls-{banks_tag(used)}-n{n}.json", **controls).result
            points.append(_point(res, k, n, scoring))
    dose = {"model": model, "scoring": scoring, "train_banks": names, "points": points}
    root = Path(out)
    atomic_write_json(root / "dose.json", dose)
    dose["plot"] = str(plot_dose(dose, root / "dose.png"))
    atomic_write_json(root / "dose.json", dose)
    return dose


def _point(res: dict, k: int, n: int, scoring: str) -> dict[str, Any]:
    if scoring not in res["effects"]:
        raise UserError(f"scoring '{scoring}' was not run: choose one of {', '.join(res['effects'])}")
    out: dict[str, Any] = {"banks": k, "train_banks": res["train_banks"], "train_scenarios": n,
                           "loss_tokens": {a: res["data"][a]["loss_tokens"] for a in ARMS}}
    for lv, eff in (("in_template", res["effects"]), ("across_wording", res["effects_across_wording"])):
        e = eff[scoring]
        out[lv] = {a: {"diff": e[a]["p_harmful_diff"], "ci_95": e[a]["p_harmful_diff_95"], "n": e[a].get("n")}
                   for a in ARMS}
        out[lv]["verdict"] = e["verdict"]["level"]
    return out


def plot_dose(dose: dict, path: Path) -> Path:
    """Effects against the number of banks trained on: across wording (left) and in-template (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True, sharey=True)
    colours = {"harmful": "#c0392b", "aligned": "#2471a3", "unrelated": "#7f8c8d"}
    counts = sorted({p["train_scenarios"] for p in dose["points"]})
    styles = ["-", "--", ":", "-."]
    for ax, lv, title in ((axes[0], "across_wording", "held-out wording"), (axes[1], "in_template", "in-template")):
        ax.axhline(0, color="black", lw=0.8)
        for ci, n in enumerate(counts):
            pts = sorted((p for p in dose["points"] if p["train_scenarios"] == n), key=lambda p: p["banks"])
            for j, arm in enumerate(ARMS):
                xs = [p["banks"] + (j - 1) * 0.06 for p in pts]
                ys = [p[lv][arm]["diff"] for p in pts]
                lo = [y - (p[lv][arm]["ci_95"] or [y, y])[0] for y, p in zip(ys, pts)]
                hi = [(p[lv][arm]["ci_95"] or [y, y])[1] - y for y, p in zip(ys, pts)]
                ax.errorbar(xs, ys, yerr=[lo, hi], color=colours[arm], ls=styles[ci % len(styles)], marker="o",
                            capsize=3, label=f"{arm} SFT, {n} scenarios")
        ax.set_title(f"{title} ({dose['scoring']})")
        ax.set_xlabel("train wording banks in the control data")
        ax.set_xticks(sorted({p["banks"] for p in dose["points"]}))
    axes[0].set_ylabel("Δ mean P(harmful) vs base, 95% CI")
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(f"dose of variety · {dose['model']}")
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
