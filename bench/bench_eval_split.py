"""The whole eval split in choice mode, end to end through `run_eval`, against the 60-second target.

Two runs of the same model in one process, alternating when `--rounds` > 1:
- `computed`: every neutral-context sum computed (`neutral_cache=False`; what every run did before the
  cache, and what a first run of a model does);
- `cached`: a later run of the same model, reading the neutral sums a first run stored in
  runs/cache/neutral.sqlite (the cache is copied into a fresh output directory, so the run itself is new).

Prints wall seconds per run (median over rounds), seconds per scenario, the ratio between the two and
to the 60 s target, and checks that both runs made the same decision on every scenario and scoring.

    HF_HUB_OFFLINE=1 python bench/bench_eval_split.py [--limit N] [--rounds 1] [--dtype bfloat16]

About 7 minutes for the whole split (96 scenarios) on the 2-core reference machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _guard

TARGET_S = 60.0


def decisions(run_dir: Path) -> dict:
    out = {}
    for line in (run_dir / "samples.jsonl").read_text().splitlines():
        r = json.loads(line)
        for k in ("mean", "sum", "calibrated", "pair"):
            if k in r:
                out[(r["scenario_id"], k)] = r[k]["top"]
    return out


def reference(args, root: Path, tree_run: Path) -> dict:
    """The split scored once with HFChoiceBackend's batched-rows path, compared with the tree's run."""
    from teachwhy.evals.choice import HFChoiceBackend
    from teachwhy.evals.runner import run_eval

    tree_path = HFChoiceBackend._score_from_prefix
    HFChoiceBackend._score_from_prefix = HFChoiceBackend._score_batched  # type: ignore[method-assign]
    try:
        res = run_eval(args.model, limit=args.limit, dtype=args.dtype, out=root / "reference", neutral_cache=False)
    finally:
        HFChoiceBackend._score_from_prefix = tree_path  # type: ignore[method-assign]
    a, b = decisions(tree_run), decisions(res.run_dir)
    sums = {}
    for run, key in ((tree_run, "tree"), (res.run_dir, "ref")):
        for line in (run / "samples.jsonl").read_text().splitlines():
            r = json.loads(line)
            for c in r["candidates"]:
                sums.setdefault((r["scenario_id"], c["id"]), {})[key] = c["sum_logprob"]
    return {"decisions": len(a), "differ": sum(a[k] != b.get(k) for k in a),
            "max_sum_diff": max(abs(v["tree"] - v["ref"]) for v in sums.values())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--limit", type=int, default=None, help="scenarios (default: the whole eval split)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--reference", action="store_true",
                    help="also score the split once (untimed) the way before the token tree (one padded row per "
                    "candidate) and count the decisions that differ and the largest log-prob difference")
    _guard.add_flag(ap)
    args = ap.parse_args()

    import torch

    from teachwhy.evals.runner import run_eval

    times: dict[str, list[float]] = {"computed": [], "cached": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # fill the cache (and warm the process) once, untimed
        n = run_eval(args.model, limit=args.limit, dtype=args.dtype, out=root / "fill").summary["n_scenarios"]
        last: dict[str, Path] = {}
        for rnd in range(args.rounds):
            order = ["computed", "cached"] if rnd % 2 == 0 else ["cached", "computed"]
            for name in order:
                out = root / f"{name}-{rnd}"
                if name == "cached":
                    (out / "cache").mkdir(parents=True)
                    shutil.copy(root / "fill" / "cache" / "neutral.sqlite", out / "cache" / "neutral.sqlite")
                t = time.perf_counter()
                res = run_eval(args.model, limit=args.limit, dtype=args.dtype, out=out,
                               neutral_cache=(name == "cached"))
                times[name].append(time.perf_counter() - t)
                last[name] = res.run_dir
        same = decisions(last["computed"]) == decisions(last["cached"])
        ref = reference(args, root, last["computed"]) if args.reference else None

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"machine: {torch.get_num_threads()} threads, torch {torch.__version__}, dtype {args.dtype}, "
          f"{n} scenarios, {args.rounds} round(s)")
    print(f"{'run':<34}{'median s':>10}{'s/scenario':>12}{'vs 60 s target':>16}")
    for name, label in (("computed", "neutral sums computed (as before)"), ("cached", "neutral sums from the cache")):
        print(f"{label:<34}{med[name]:>10.1f}{med[name] / n:>12.3f}{med[name] / TARGET_S:>15.2f}x")
    print(f"cached vs computed: {med['computed'] / med['cached']:.2f}x faster; "
          f"decisions identical on every scenario and scoring: {'yes' if same else 'NO'}")
    if ref is not None:
        print(f"against the batched rows (the path before the token tree), {args.dtype}: {ref['differ']} of "
              f"{ref['decisions']} decisions differ; largest |difference| of a candidate's summed log-prob "
              f"{ref['max_sum_diff']:.4f} (in bf16 the batched rows themselves differ from a full forward by as much)")
    print("where a scenario's time goes and the floor: bench/bench_eval_profile.py")
    print("against lm-evaluation-harness on the same requests: bench/bench_choice_peers.py")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(_guard.run(main))
