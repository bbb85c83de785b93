"""Choice-mode scoring: shared prompt KV cache + batched candidates vs naive per-candidate forwards.

Scores the same scenarios both ways in one run (interleaved, so machine noise hits both alike),
checks that every log-prob agrees within 1e-3, and prints per-scenario medians and the speed ratio.

    python bench/bench_choice_kv.py [--limit 24] [--dtype float32]
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
    ap.add_argument("--limit", type=int, default=24, help="scenarios (spread over the four families)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--tol", type=float, default=1e-3)
    _guard.add_flag(ap)
    args = ap.parse_args()

    import torch

    from teachwhy import models
    from teachwhy.evals.choice import HFChoiceBackend
    from teachwhy.scenarios import builtin_scenarios

    pool = builtin_scenarios("eval")
    step = max(1, len(pool) // args.limit)
    scenarios = pool[::step][: args.limit]
    loaded = models.load(args.model, dtype=args.dtype)
    backend = HFChoiceBackend(loaded.model, loaded.tokenizer)
    first = scenarios[0]
    backend.score(first.prompt_messages(), [c.text for c in first.candidates])  # warm-up

    t_kv, t_naive, worst, prompt_toks, cand_toks = [], [], 0.0, [], []
    for s in scenarios:
        msgs, cands = s.prompt_messages(), [c.text for c in s.candidates]
        t = time.perf_counter()
        fast = backend.score(msgs, cands)
        t_kv.append(time.perf_counter() - t)
        t = time.perf_counter()
        slow = backend.score_naive(msgs, cands)
        t_naive.append(time.perf_counter() - t)
        for f, n in zip(fast, slow):
            worst = max(worst, abs(f.sum_logprob - n.sum_logprob), abs(f.neutral_sum_logprob - n.neutral_sum_logprob))
        prompt_toks.append(len(backend.prompt_ids(msgs)))
        cand_toks += [x.n_tokens for x in fast]

    med_kv, med_naive = statistics.median(t_kv), statistics.median(t_naive)
    print(f"machine: {torch.get_num_threads()} threads, torch {torch.__version__}, dtype {args.dtype}")
    print(f"scenarios n={len(scenarios)}  prompt tokens median={statistics.median(prompt_toks):.0f}  "
          f"candidates/scenario={len(first.candidates)}  candidate tokens median={statistics.median(cand_toks):.0f}")
    print(f"{'path':<28}{'median s/scenario':>20}{'total s':>10}")
    print(f"{'shared KV + batch':<28}{med_kv:>20.3f}{sum(t_kv):>10.1f}")
    print(f"{'naive per-candidate':<28}{med_naive:>20.3f}{sum(t_naive):>10.1f}")
    ratio = med_naive / med_kv
    print(f"speed ratio (median naive / median shared KV): {ratio:.2f}x   (target >= 2.5x)")
    print(f"max |log-prob difference|: {worst:.2e}   (tolerance {args.tol:g})")
    ok = worst <= args.tol
    print("agreement: " + ("ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(_guard.run(main))
