"""Peak memory of the choice eval and of SFT on the embedded model, and whether a long-lived process
gives memory back between runs.

Each case runs in a fresh subprocess, so peaks do not mix:
- eval: `run_eval` in choice mode (continuation format) on `--limit` eval scenarios;
- sft: `run_sft` on the builtin reasoning dataset (`--tokens`), our defaults, and the same with
  full and with selective gradient checkpointing (peak and tokens/s); selective checkpointing also
  with glibc's own heap untrimmed (TEACHWHY_SFT_HEAP_SLACK_MIB=0) and with TEACHWHY_SFT_MAP_MIB=1
  (large blocks mapped while training: lower peak, fewer tokens/s), each against the untrimmed heap;
- long-lived: eval, SFT, eval, SFT in one process, resident memory after each run, with
  `teachwhy.memory.release_memory` as shipped and with it turned off, side by side.

    HF_HUB_OFFLINE=1 python bench/bench_memory.py [--limit 24] [--tokens 3000] [--repeat 3] [--sft-only]

Prints peak resident set size (ru_maxrss) against the 2 GiB target, and RSS after each long-lived step.
With --repeat n, each SFT case runs n times (fresh processes): medians of peak and tokens/s, with the
load average before each run, since tokens/s on a shared machine is only indicative. The SFT cases
also print the resident memory at each phase of run_sft (model loaded, trainer built, each micro-step,
saved) and the peak between phases (a thread sampling /proc/self/status every 5 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
phases = []
if args.get("phases"):
    import threading, time
    import teachwhy.train.sft as sft
    top = [0]
    def rss():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) // 1024 for l in f if l.startswith("VmRSS:"))
    def sample():
        while True:
            top[0] = max(top[0], rss()); time.sleep(0.005)
    threading.Thread(target=sample, daemon=True).start()
    def mark(name):
        now = rss(); phases.append({"phase": name, "rss_mb": now, "peak_since_last_mb": max(top[0], now)}); top[0] = now
    def wrap(name):
        f = getattr(sft, name)
        def g(*a, **k):
            r = f(*a, **k); mark(f"after {name.strip('_')}"); return r
        setattr(sft, name, g)
    for name in ("load_mixture", "_load_base", "_save_sft"):
        wrap(name)
    make = sft.why_sft_trainer_class
    def traced():
        cls = make()
        class Traced(cls):
            def __init__(self, *a, **k):
                super().__init__(*a, **k); mark("after trainer init")
            def training_step(self, *a, **k):
                r = super().training_step(*a, **k); mark(f"after micro-step {self.state.global_step + 1}"); return r
        return Traced
    sft.why_sft_trainer_class = traced
steps = []
out = args["out"]
for i, step in enumerate(args["steps"]):
    if step == "eval":
        run_eval("smollm2-135m", mode="choice", limit=args["limit"], out=f"{out}/e{i}")
        tps = None
    else:
        gc = {"sft": False, "sft-gc": True}.get(step, "selective")
        r = run_sft(SFTSpec(data=[{"path": args["data"]}], out=f"{out}/s{i}", seed=i, gradient_checkpointing=gc))
        tps = r.summary["tokens_per_s"]  # the training log's throughput (steps only, not setup)
    steps.append({"step": step, "rss_mb": round(resident_mb()), "tokens_per_s": tps})
print(json.dumps({"peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "steps": steps,
                  "phases": phases}))
'''


# the allocator settings of the selective-checkpointing cases (environment of the case's process)
CASE_ENV = {"sft-sel-untrimmed": {"TEACHWHY_SFT_HEAP_SLACK_MIB": "0"}, "sft-sel-map": {"TEACHWHY_SFT_MAP_MIB": "1"}}


def run_case(steps: list[str], limit: int, data: str, release: bool = True, phases: bool = False) -> dict:
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as out:
        arg = json.dumps({"steps": steps, "limit": limit, "data": data, "out": out, "release": release,
                          "phases": phases})
        env = {k: v for k, v in os.environ.items() if k not in ("TEACHWHY_SFT_MAP_MIB", "TEACHWHY_SFT_HEAP_SLACK_MIB")}
        for step in steps:
            env.update(CASE_ENV.get(step, {}))
        p = subprocess.run([sys.executable, "-c", CASE, arg], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"case {steps} failed:\n{p.stderr[-3000:]}")
    return {**json.loads(p.stdout.strip().splitlines()[-1]), "load_before": load}


def sft_rows(data: str, limit: int, repeat: int) -> list[tuple[str, list[dict]]]:
    """Each SFT case `repeat` times, in rotating order, each in a fresh process."""
    cases = [("sft (defaults)", "sft"), ("sft (full checkpointing)", "sft-gc"),
             ("sft (selective checkpointing)", "sft-sel"),
             ("sft (selective, heap untrimmed)", "sft-sel-untrimmed"),
             ("sft (selective, blocks mapped)", "sft-sel-map")]
    runs: dict[str, list[dict]] = {name: [] for name, _ in cases}
    for i in range(repeat):
        k = i % len(cases)
        for name, step in cases[k:] + cases[:k]:
            runs[name].append(run_case([step], limit, data, phases=True))
    return [(name, runs[name]) for name, _ in cases]


def print_sft(rows: list[tuple[str, list[dict]]], tokens: int) -> None:
    n = len(rows[0][1])
    print(f"SFT through run_sft on {tokens} tokens, n={n} runs per case (medians; tokens/s contended, indicative)")
    print(f"{'case':32} {'peak MiB':>9} {'range':>11} {'vs 2 GiB':>9} {'tokens/s':>9} {'vs defaults':>12} {'load':>5}")
    med = statistics.median
    base = med([r["steps"][0]["tokens_per_s"] for r in rows[0][1]])
    for name, runs in rows:
        peaks = [r["peak_mb"] for r in runs]
        tps = med([r["steps"][0]["tokens_per_s"] for r in runs])
        load = med([r["load_before"] for r in runs])
        print(f"{name:32} {med(peaks):9.0f} {min(peaks):5d}-{max(peaks):<5d} {med(peaks) / TARGET_MB:8.2f}x "
              f"{tps:9.1f} {tps / base:11.2f}x {load:5.1f}")
    print("(load: the 1-minute load average before each run, median; tokens/s: the training log's last throughput)")
    by = {name: runs for name, runs in rows}
    heap = by.get("sft (selective, heap untrimmed)")
    for name, what in (("sft (selective checkpointing)", "the default (freed memory trimmed between layers)"),
                       ("sft (selective, blocks mapped)", "TEACHWHY_SFT_MAP_MIB=1 (blocks mapped)")):
        sel = by.get(name)
        if not (sel and heap):
            continue
        a = [r["steps"][0]["tokens_per_s"] for r in sel]
        b = [r["steps"][0]["tokens_per_s"] for r in heap]
        peak = med([r["peak_mb"] for r in sel])
        ratio = med(a) / med(b)
        verdict = "meets" if peak <= TARGET_MB and ratio >= 0.90 else "misses"
        print(f"{what} vs glibc's heap untrimmed, selective checkpointing, n={len(a)}+{len(b)}: "
              f"tokens/s {ratio:.3f}x (medians {med(a):.1f} vs {med(b):.1f}; "
              f"runs {', '.join(f'{x:.0f}' for x in a)} vs {', '.join(f'{x:.0f}' for x in b)}); "
              f"peak {peak:.0f} vs {med([r['peak_mb'] for r in heap]):.0f} MiB: {verdict} the target "
              "(peak <= 2 GiB at >= 0.90x the untrimmed tokens/s)")
    for name, runs in rows:
        print(f"\nresident MiB by phase, {name} (first run): now / peak since the phase before")
        for ph in runs[0]["phases"]:
            print(f"  {ph['phase']:28} {ph['rss_mb']:6d} {ph['peak_since_last_mb']:6d}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=24, help="eval scenarios")
    ap.add_argument("--tokens", type=int, default=3000, help="SFT data tokens (builtin reasoning)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each SFT case (medians)")
    ap.add_argument("--sft-only", action="store_true", help="only the SFT cases")
    _guard.add_flag(ap)
    args = ap.parse_args()

    from teachwhy.data.build import build_dataset
    from teachwhy.teachers import get_teacher

    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "reasoning")
        build_dataset("reasoning", get_teacher("builtin", seed=0), tokens=args.tokens, seed=0, out=data)
        print_sft(sft_rows(data, args.limit, args.repeat), args.tokens)
        if args.sft_only:
            return 0
        ev = run_case(["eval"], args.limit, data)
        print(f"\neval (choice, continuation), {args.limit} scenarios: peak {ev['peak_mb']} MiB, "
              f"{ev['peak_mb'] / TARGET_MB:.2f}x the 2 GiB target")
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
