"""Two evals at once against one: the eval split in choice mode through `teachwhy eval`, serially in one
process, and as two concurrent processes each on half of it, against the 1.15x target.

    serial      one `teachwhy eval` over the split (continuation format, neutral sums computed: a fresh
                --out each run, so nothing is read from a cache)
    concurrent  two `teachwhy eval` processes started together, one on blackmail + leak, one on
                sabotage + framing (--families), each with half of --limit; timed until both end

Each child follows teachwhy's thread policy (docs/performance.md, "Shared machines"): the two concurrent
ones see each other as busy torch processes and use 1 thread each; `--child-threads N` sets
TEACHWHY_THREADS=N in every child instead (e.g. to time two processes that each take every core).
Rounds alternate the order. Prints wall seconds per round and their medians, the ratio
concurrent / serial against the 1.15x target, n, whether both ways scored the same scenarios and made
the same decision on each, the lines the children printed about their threads, and the guard's
snapshots of the machine (its own children are not counted as other work).

    HF_HUB_OFFLINE=1 python bench/bench_concurrent.py [--limit N] [--rounds 1] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _guard
from bench_eval_split import decisions

TARGET = 1.15  # concurrent wall time at most this multiple of the serial one
HALVES = ("blackmail,leak", "sabotage,framing")
TEACHWHY = Path(sys.executable).parent / "teachwhy"


def eval_cmd(args: argparse.Namespace, out: Path, families: str | None, limit: int | None) -> list[str]:
    cmd = [str(TEACHWHY), "eval", "--model", args.model, "--format", "continuation", "--dtype", args.dtype,
           "--out", str(out)]
    if families:
        cmd += ["--families", families]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    return cmd


def child_env(args: argparse.Namespace) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TEACHWHY_THREADS"}
    if args.child_threads:
        env["TEACHWHY_THREADS"] = str(args.child_threads)
    return env


def run_together(cmds: list[list[str]], env: dict[str, str]) -> tuple[float, list[str]]:
    """Start the commands at once; wall seconds until the last ends, and their stderr lines about threads."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
             for c in cmds]
    _guard.exclude(*(p.pid for p in procs))  # our own workers are not other work
    errs = [p.communicate()[1] for p in procs]
    wall = time.perf_counter() - t0
    for p, err in zip(procs, errs):
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(p.args)} failed ({p.returncode}):\n{err}")
    notes = [f"pid {p.pid}: {ln}" for p, err in zip(procs, errs) for ln in err.splitlines() if " thread" in ln]
    return wall, notes


def scored(out: Path) -> dict:
    """Every scenario's decisions in the run(s) under `out`."""
    found: dict = {}
    for samples in out.glob("*/samples.jsonl"):
        found.update(decisions(samples.parent))
    return found


def one_round(args: argparse.Namespace, root: Path, rnd: int, order: list[str]) -> dict:
    half = None if args.limit is None else max(1, args.limit // 2)
    res: dict = {}
    for name in order:
        out = root / f"{name}-{rnd}"
        if name == "serial":
            cmds = [eval_cmd(args, out, None, args.limit)]
        else:
            cmds = [eval_cmd(args, out / str(i), fams, half) for i, fams in enumerate(HALVES)]
        wall, notes = run_together(cmds, child_env(args))
        res[name] = {"wall": wall, "notes": notes, "decisions": scored(out) if name == "serial"
                     else {**scored(out / "0"), **scored(out / "1")}}
        print(f"round {rnd + 1} {name}: {wall:.1f} s", flush=True)
    return res


def report(rounds: list[dict], args: argparse.Namespace) -> int:
    med = {k: statistics.median(r[k]["wall"] for r in rounds) for k in ("serial", "concurrent")}
    last = rounds[-1]
    ids = {k: {sid for sid, _scoring in last[k]["decisions"]} for k in ("serial", "concurrent")}
    same_set = ids["serial"] == ids["concurrent"]
    same = same_set and last["serial"]["decisions"] == last["concurrent"]["decisions"]
    ratio = med["concurrent"] / med["serial"]
    policy = f"TEACHWHY_THREADS={args.child_threads}" if args.child_threads else "teachwhy's thread policy"
    print(f"model {args.model}, dtype {args.dtype}, {len(ids['serial'])} scenarios serially, "
          f"{len(ids['concurrent'])} concurrently ({' | '.join(HALVES)}), {len(rounds)} round(s), children: {policy}")
    print(f"{'run':<34}{'median s':>10}")
    print(f"{'serial (one process)':<34}{med['serial']:>10.1f}")
    print(f"{'concurrent (two processes)':<34}{med['concurrent']:>10.1f}")
    met = "met" if ratio <= TARGET else "NOT met"
    print(f"concurrent / serial: {ratio:.2f}x (target at most {TARGET:.2f}x: {met})")
    print(f"same scenarios both ways: {'yes' if same_set else 'NO'}; same decision on every scenario and "
          f"scoring: {'yes' if same else 'NO'}")
    for name in ("serial", "concurrent"):
        for note in last[name]["notes"]:
            print(f"{name} child {note}")
    print(json.dumps({"median_s": med, "ratio": round(ratio, 3), "rounds": [
        {k: round(r[k]["wall"], 2) for k in ("serial", "concurrent")} for r in rounds]}))
    return 0 if same_set else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--limit", type=int, default=None,
                    help="scenarios in the serial run, half of them in each concurrent one (default: the whole split)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--child-threads", type=int, default=None,
                    help="TEACHWHY_THREADS for every child (default: unset, so the thread policy decides)")
    _guard.add_flag(ap)
    args = ap.parse_args()
    if args.limit is not None and (args.limit < 4 or args.limit % 4):
        print(f"--limit: give a multiple of 4 (got {args.limit}), so that the two halves pick the same scenarios "
              "as the serial run (each half takes limit/2 from its two families)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        rounds = [one_round(args, Path(tmp), rnd, ["serial", "concurrent"] if rnd % 2 == 0
                            else ["concurrent", "serial"]) for rnd in range(args.rounds)]
    return report(rounds, args)


if __name__ == "__main__":
    sys.exit(_guard.run(main))
