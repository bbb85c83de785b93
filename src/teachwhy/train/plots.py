"""Training curves as a picture: `curves.png` beside each run's logs.

Left: the training signal against tokens seen (SFT loss, or RL mean reward with its std band).
Right: the honeypot harmful-choice rate at each eval point with its 95% Wilson interval.
"""

from __future__ import annotations

from pathlib import Path

from teachwhy.store import read_jsonl


def plot_run(run_dir: Path, title: str | None = None) -> Path | None:
    """Write run_dir/curves.png from train_log.jsonl and eval_points.jsonl; None when there is no log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    log = read_jsonl(run_dir / "train_log.jsonl")
    points = read_jsonl(run_dir / "eval_points.jsonl")
    if not log and not points:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    x = [r["tokens_seen"] for r in log]
    if any("reward" in r for r in log):
        y = [r.get("reward", float("nan")) for r in log]
        sd = [r.get("reward_std", 0.0) for r in log]
        left.plot(x, y, marker="o", ms=3, label="mean reward per step")
        left.fill_between(x, [a - b for a, b in zip(y, sd)], [a + b for a, b in zip(y, sd)], alpha=0.2,
                          label="± std within the step's completions")
        left.set_ylabel("reward")
    else:
        left.plot(x, [r.get("loss", float("nan")) for r in log], marker="o", ms=3, label="training loss")
        left.set_ylabel("loss (loss-bearing tokens)")
    left.set_xlabel("tokens seen")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    if points:
        px = [p["tokens_seen"] for p in points]
        rate = [p["harmful_rate"] for p in points]
        lo = [r - p["wilson_95"][0] for r, p in zip(rate, points)]
        hi = [p["wilson_95"][1] - r for r, p in zip(rate, points)]
        right.errorbar(px, rate, yerr=[lo, hi], marker="o", capsize=3)
        for p, xx, rr in zip(points, px, rate):
            right.annotate(f"{p['k']}/{p['n']}", (xx, rr), textcoords="offset points", xytext=(4, 4), fontsize=7)
        right.set_ylim(0, 1)
        right.set_title(f"honeypot choice eval (n={points[0]['n']} per point, 95% Wilson CI)", fontsize=9)
    else:
        right.text(0.5, 0.5, "no eval points (set eval.every or eval.at_start/at_end)", ha="center", va="center")
    right.set_xlabel("tokens seen")
    right.set_ylabel("harmful choice rate")
    right.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    out = run_dir / "curves.png"
    tmp = run_dir / ".curves.png.partial"
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(out)
    return out
