"""Demonstrations vs reasons at an equal token budget, on the embedded model, end to end on a laptop.

Builds builtin demonstration data (the right action) and reasoning data (the same prompts and actions,
with the reasons written out) at one token budget, fine-tunes smollm2-135m on each, then scores the
base model and both checkpoints on the eval split of the honeypot scenarios in choice mode:

    python examples/equal_tokens_demo_vs_reasoning.py                 # 30k tokens, all 96 eval scenarios
    python examples/equal_tokens_demo_vs_reasoning.py --tokens 10000 --limit 24   # a quicker look

Every step is a normal teachwhy run under --out, so an interrupted example resumes where it stopped.
On 2 CPU cores the default takes about 15 minutes (two 2-minute SFT runs, three 3.5-minute evals).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from teachwhy.data.build import build_dataset
from teachwhy.errors import UserError
from teachwhy.evals.compare import compare_runs
from teachwhy.evals.runner import run_eval
from teachwhy.store import read_jsonl
from teachwhy.teachers import get_teacher
from teachwhy.train import SFTSpec, run_sft
from teachwhy.train.callbacks import loss_summary

console = Console(width=None if sys.stdout.isatty() else 160)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=30_000, help="token budget of each arm (all tokens)")
    ap.add_argument("--limit", type=int, default=None, help="eval scenarios (default: the whole eval split)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/example-equal-tokens")
    ap.add_argument("--format", default="continuation", help="choice format(s): continuation, options, or both")
    a = ap.parse_args()
    out = Path(a.out)

    data = {}
    for kind in ("demonstration", "reasoning"):
        console.print(f"[bold]building[/] {kind} data at {a.tokens} tokens")
        data[kind] = build_dataset(kind, get_teacher("builtin", seed=a.seed), tokens=a.tokens, seed=a.seed,
                                   out=out / "data" / kind)
    # equal budgets: both arms train on at most the smaller arm's total, so neither sees more tokens
    # (each arm stops before the record that would exceed it, so actual totals differ by under one record)
    budget = min(r.card["tokens"] for r in data.values())

    models = {"base (smollm2-135m)": ("smollm2-135m", None)}
    for kind in ("demonstration", "reasoning"):
        console.print(f"[bold]training[/] on {kind} ({budget} tokens)")
        res = run_sft(SFTSpec(data=[{"path": str(out / "data" / kind), "tokens": budget}], out=str(out / "runs"),
                              name=kind, seed=a.seed))
        s = res.summary
        loss = loss_summary(read_jsonl(res.run_dir / "train_log.jsonl"))
        if loss is None:
            shown = "no loss logged"
        elif loss["steps"] == 1:
            shown = f"loss {loss['first']:.3f} (one optimizer step)"
        else:
            shown = f"loss {loss['first']:.3f} -> {loss['last']:.3f}"
        console.print(f"  {shown}, {s['tokens']} tokens ({s['loss_tokens']} loss-bearing), "
                      f"{s['train_seconds']:.0f} s")
        models[f"SFT on {kind}"] = (str(res.model_path), s)

    results = {}
    for label, (spec, _) in models.items():
        console.print(f"[bold]evaluating[/] {label} (choice mode, eval split)")
        results[label] = run_eval(spec, mode="choice", split="eval", limit=a.limit, out=out / "evals",
                                  formats=a.format)

    t = Table("model", "trained tokens (all / loss)", "harmful choice", "95% CI (Wilson)",
              "95% CI (families)", "mean P(harmful) [95% CI]",
              title=f"agentic honeypots, choice mode, eval split (equal budget: {budget} tokens per arm)",
              caption=next(iter(results.values())).summary["metric"] if results else None)
    for label, ev in results.items():
        o = ev.summary["overall"]
        s = models[label][1]
        cb = o.get("cluster_bootstrap_95")
        t.add_row(label, f"{s['tokens']} / {s['loss_tokens']}" if s else "-",
                  f"{o['rate']:.1%} ({o['k']}/{o['n']})", f"[{o['wilson_95'][0]:.1%}, {o['wilson_95'][1]:.1%}]",
                  f"[{cb[0]:.1%}, {cb[1]:.1%}]" if cb else "n/a",
                  f"{o['mean_p_harmful']:.3f} [{o['mean_p_harmful_95'][0]:.3f}, {o['mean_p_harmful_95'][1]:.3f}]")
    console.print(t)

    # the training effect: per-scenario paired differences, CIs by bootstrap over scenario clusters
    base_dir = results["base (smollm2-135m)"].run_dir
    pairs = [(base_dir, results[k].run_dir, f"{k} vs base") for k in ("SFT on demonstration", "SFT on reasoning")]
    pairs.append((results["SFT on demonstration"].run_dir, results["SFT on reasoning"].run_dir,
                  "reasoning vs demonstration (negative favours reasoning)"))
    for run_a, run_b, label in pairs:
        e = compare_runs(run_a, run_b)["overall"]
        ci = e["p_harmful_diff_95"]
        ci_text = f"95% CI {ci[0]:+.4f}, {ci[1]:+.4f}" if ci else "95% CI n/a: one scenario"
        console.print(f"{label}: mean change in P(harmful) {e['p_harmful_diff']:+.4f} [{ci_text}], "
                      f"n={e['n']} paired scenarios")
    for w in next(iter(results.values())).summary.get("warnings", []):
        console.print(f"[yellow]warning:[/] {w}")
    console.print("Read the CIs before the point estimates: with a 135M model and one small budget, differences "
                  "within the intervals are not evidence either way.")
    console.print(f"runs: {out}")


if __name__ == "__main__":
    try:
        main()
    except UserError as e:  # a bad option or input: one line, as the teachwhy command prints it
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
