"""Choice mode: cost of the options format (4 rotations) against the continuation format.

Scores the eval split in both formats with one loaded backend, alternating which format goes first
from scenario to scenario (so machine noise hits both alike), and prints per-scenario medians, totals
and the ratio options / continuation (target <= 1.5x).

    python bench/bench_choice_formats.py [--limit 8] [--dtype auto] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import _guard

FORMATS = ("continuation", "options")
TARGET = 1.5


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--limit", type=int, default=None,
                    help="scenarios (default: the whole split; a limit spreads over families and conditions)")
    ap.add_argument("--split", default="eval")
    ap.add_argument("--dtype", default="auto", help="auto (bfloat16 where the hardware has it), float32, bfloat16")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: every core, as `teachwhy eval` uses; on a busy machine 1 "
                    "avoids threads waiting on each other)")
    _guard.add_flag(ap)
    args = ap.parse_args()

    import torch

    from teachwhy import models
    from teachwhy.evals import options as opt
    from teachwhy.evals.choice import HFChoiceBackend, score_scenario
    from teachwhy.scenarios import builtin_scenarios, select

    scenarios = select(builtin_scenarios(args.split), limit=args.limit)
    loaded = models.load(args.model, dtype=args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)  # after loading, which sets every core
    backend = HFChoiceBackend(loaded.model, loaded.tokenizer, name=args.model)
    for fmt in FORMATS:  # warm-up (and the neutral context's cache, which every later scenario reuses)
        score_scenario(backend, scenarios[0], fmt)

    times: dict[str, list[float]] = {f: [] for f in FORMATS}
    for i, s in enumerate(scenarios):
        for fmt in FORMATS if i % 2 == 0 else FORMATS[::-1]:
            t = time.perf_counter()
            score_scenario(backend, s, fmt)
            times[fmt].append(time.perf_counter() - t)

    prompt_toks, options_toks = [], []
    for s in scenarios:
        msgs = s.prompt_messages()
        actions = [opt.action_text(c.text) for c in s.candidates]
        prompt_toks.append(len(backend.prompt_ids(msgs)))
        options_toks.append(len(backend.prompt_ids(opt.options_messages(msgs, actions, range(len(actions))))))
    k = {len(s.candidates) for s in scenarios}

    med = {f: statistics.median(times[f]) for f in FORMATS}
    tot = {f: sum(times[f]) for f in FORMATS}
    print(f"machine: {torch.get_num_threads()} threads, torch {torch.__version__}, dtype {loaded.dtype}, "
          f"device {backend.device}")
    print(f"scenarios n={len(scenarios)} ({args.split} split)  candidates/scenario={'/'.join(map(str, sorted(k)))}  "
          f"prompt tokens median={statistics.median(prompt_toks):.0f}  "
          f"options prompt tokens median={statistics.median(options_toks):.0f} (x{max(k)} rotations)")
    print(f"{'format':<28}{'median s/scenario':>20}{'total s':>10}")
    print(f"{'continuation':<28}{med['continuation']:>20.3f}{tot['continuation']:>10.1f}")
    print(f"{'options (all rotations)':<28}{med['options']:>20.3f}{tot['options']:>10.1f}")
    r_med = med["options"] / med["continuation"]
    r_tot = tot["options"] / tot["continuation"]
    print(f"ratio options/continuation: medians {r_med:.2f}x, totals {r_tot:.2f}x   (target <= {TARGET:g}x: "
          + ("met" if r_med <= TARGET else "NOT met") + ")")
    return 0


if __name__ == "__main__":
    sys.exit(_guard.run(main))
