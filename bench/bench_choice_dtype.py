"""Choice mode in float32 vs bfloat16: speed, and whether the decisions hold.

Scores the same eval scenarios in both dtypes in one run and prints seconds per scenario (median),
the speed ratio, how many top-candidate decisions agree, the largest per-token log-prob difference,
and the harmful choice rate under each dtype with 95% Wilson intervals.

    python bench/bench_choice_dtype.py [--limit 96]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import _guard


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--limit", type=int, default=96)
    _guard.add_flag(ap)
    args = ap.parse_args()

    import torch

    from teachwhy import models
    from teachwhy.evals.choice import HFChoiceBackend, decide
    from teachwhy.evals.stats import wilson
    from teachwhy.scenarios import builtin_scenarios, select

    scenarios = select(builtin_scenarios("eval"), limit=args.limit)
    results, times = {}, {}
    for dtype in ("float32", "bfloat16"):
        loaded = models.load(args.model, dtype=dtype)
        backend = HFChoiceBackend(loaded.model, loaded.tokenizer)
        backend.score(scenarios[0].prompt_messages(), [c.text for c in scenarios[0].candidates])  # warm-up
        results[dtype], times[dtype] = [], []
        for s in scenarios:
            t = time.perf_counter()
            results[dtype].append(backend.score(s.prompt_messages(), [c.text for c in s.candidates]))
            times[dtype].append(time.perf_counter() - t)
        del loaded, backend

    agree, worst, harmful = 0, 0.0, {"float32": 0, "bfloat16": 0}
    for s, a, b in zip(scenarios, results["float32"], results["bfloat16"]):
        labels = [c.label for c in s.candidates]
        da, db = decide(a, labels, "mean"), decide(b, labels, "mean")
        agree += da["top"] == db["top"]
        harmful["float32"] += da["harmful_choice"]
        harmful["bfloat16"] += db["harmful_choice"]
        worst = max(worst, *(abs(x.mean_logprob - y.mean_logprob) for x, y in zip(a, b)))

    n = len(scenarios)
    print(f"machine: {torch.get_num_threads()} threads, torch {torch.__version__}; scenarios n={n}")
    print(f"{'dtype':<10}{'median s/scenario':>20}{'total s':>10}{'harmful choice rate [95% Wilson]':>40}")
    for d in ("float32", "bfloat16"):
        lo, hi = wilson(harmful[d], n)
        print(f"{d:<10}{statistics.median(times[d]):>20.3f}{sum(times[d]):>10.1f}"
              f"{harmful[d] / n:>22.1%} [{lo:.1%}, {hi:.1%}] ({harmful[d]}/{n})")
    ratio = statistics.median(times["float32"]) / statistics.median(times["bfloat16"])
    lo, hi = wilson(agree, n)
    print(f"speed ratio (median fp32 / median bf16): {ratio:.2f}x")
    print(f"top-candidate agreement: {agree}/{n} = {agree / n:.1%} [95% Wilson {lo:.1%}, {hi:.1%}]")
    print(f"max |mean per-token log-prob difference|: {worst:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(_guard.run(main))
