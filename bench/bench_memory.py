"""Peak memory of the choice eval and of SFT on the embedded model, and whether a long-lived process
gives memory back between runs.

Each case runs in a fresh subprocess, so peaks do not mix:
- eval: `run_eval` in choice mode (continuation format) on `--limit` eval scenarios;
- sft: `run_sft` on the builtin reasoning dataset (`--tokens`), our defaults, and the same with
  full and with selective gradient checkpointing (peak and tokens/s);
- long-lived: eval, SFT, eval, SFT in one process, resident memory after each run, with
  `teachwhy.memory.release_memory` as shipped and with it turned off, side by side.

    HF_HUB_OFFLINE=1 python bench/bench_memory.py [--limit 24] [--tokens 3000]

Prints peak resident set size (ru_maxrss) against the 2 GiB target, and RSS after each long-lived step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import _guard

TARGET_MB = 2048

CASE = r'''
import json, resource, sys
args = json.loads(sys.argv[1])
from teachwhy.memory import resident_mb
import teachwhy.memory, teachwhy.train.runs, teachwhy.evals.runner
if not args.get("release", True):  # the same code with the release turned off
    for mod in (teachwhy.memory, teachwhy.train.runs, teachwhy.evals.runner):
        mod.release_memory = lambda: None
from teachwhy.evals.runner import run_eval
from teachwhy.train import SFTSpec, run_sft
steps = []
out = args["out"]
for i, step in enumerate(args["steps"]):
    if step == "eval":
        run_eval("smollm2-135m", mode="choice", limit=args["limit"], out=f"{out}/e{i}")
        tps = None
    else:
        gc = {"sft": False, "sft-gc": True, "sft-sel": "selective"}[step]
        r = run_sft(SFTSpec(data=[{"path": args["data"]}], out=f"{out}/s{i}", seed=i, gradient_checkpointing=gc))
        tps = r.summary["tokens_per_s"]  # the training log's throughput (steps only, not setup)
    steps.append({"step": step, "rss_mb": round(resident_mb()), "tokens_per_s": tps})
print(json.dumps({"peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "steps": steps}))
'''


def run_case(steps: list[str], limit: int, data: str, release: bool = True) -> dict:
    with tempfile.TemporaryDirectory() as out:
        arg = json.dumps({"steps": steps, "limit": limit, "data": data, "out": out, "release": release})
        p = subprocess.run([sys.executable, "-c", CASE, arg], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"case {steps} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=24, help="eval scenarios")
    ap.add_argument("--tokens", type=int, default=3000, help="SFT data tokens (builtin reasoning)")
    _guard.add_flag(ap)
    args = ap.parse_args()

    from teachwhy.data.build import build_dataset
    from teachwhy.teachers import get_teacher

    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "reasoning")
        build_dataset("reasoning", get_teacher("builtin", seed=0), tokens=args.tokens, seed=0, out=data)
        rows = [
            ("eval (choice, continuation)", run_case(["eval"], args.limit, data)),
            ("sft (defaults)", run_case(["sft"], args.limit, data)),
            ("sft (full checkpointing)", run_case(["sft-gc"], args.limit, data)),
            ("sft (selective checkpointing)", run_case(["sft-sel"], args.limit, data)),
        ]
        print(f"peak resident memory, embedded model ({args.limit} eval scenarios; SFT on {args.tokens} tokens)")
        print(f"{'case':32} {'peak MiB':>9} {'vs 2 GiB target':>16} {'tokens/s':>9} {'vs defaults':>12}")
        base_tps = rows[1][1]["steps"][0]["tokens_per_s"]
        for name, r in rows:
            tps = r["steps"][0]["tokens_per_s"]
            speed = f"{tps:9.0f} {tps / base_tps:11.2f}x" if tps else f"{'':9} {'':12}"
            print(f"{name:32} {r['peak_mb']:9d} {r['peak_mb'] / TARGET_MB:15.2f}x {speed}")
        print("(tokens/s: the training log's last throughput, all tokens; one run each, so noisy)")
        steps = ["eval", "sft", "eval", "sft"]
        on = run_case(steps, args.limit, data, release=True)
        off = run_case(steps, args.limit, data, release=False)
        print("\nlong-lived process: resident MiB after each run (release_memory on / off)")
        print(f"{'after':8} {'on':>7} {'off':>7} {'off/on':>7}")
        for a, b in zip(on["steps"], off["steps"], strict=True):
            print(f"{a['step']:8} {a['rss_mb']:7d} {b['rss_mb']:7d} {b['rss_mb'] / a['rss_mb']:7.2f}")
        print(f"{'peak':8} {on['peak_mb']:7d} {off['peak_mb']:7d}")
    return 0


if __name__ == "__main__":
    sys.exit(_guard.run(main))
