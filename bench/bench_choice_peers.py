"""Choice scoring side by side with lm-evaluation-harness's log-likelihood on the same requests.

For each eval scenario, the continuation format asks for 8 log-likelihoods: each of the 4 candidates
after the scenario's prompt and after the neutral context (the `calibrated` scoring). The same
(context, continuation) pairs go to lm-evaluation-harness's `HFLM.loglikelihood` on the same loaded
model, and to teachwhy's `HFChoiceBackend.score` (prompt encoded once, candidates batched on its KV
cache). Scenarios alternate between the two, so machine noise hits both alike; medians per scenario,
the speed ratio, and the largest difference in summed log-prob between the two, in the timed dtype
and in float32 (where rounding does not blur it).

    pip install lm-eval==0.4.13      # bench only: not a teachwhy dependency
    HF_HUB_OFFLINE=1 python bench/bench_choice_peers.py [--limit 16] [--dtype bfloat16] [--batch-size 8] [--check 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import _guard


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=16, help="eval scenarios (spread over the families)")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--batch-size", type=int, default=8, help="lm-evaluation-harness batch size")
    ap.add_argument("--check", type=int, default=2, help="scenarios compared in float32")
    _guard.add_flag(ap)
    args = ap.parse_args()

    try:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        print("this bench needs lm-evaluation-harness: pip install lm-eval==0.4.13", file=sys.stderr)
        return 2

    from teachwhy import models
    from teachwhy.evals.choice import NEUTRAL_MESSAGES, HFChoiceBackend
    from teachwhy.scenarios import builtin_scenarios, select

    pool = select(builtin_scenarios(), split="eval")
    step = max(1, len(pool) // args.limit)
    scenarios = pool[::step][: args.limit]
    loaded = models.load("smollm2-135m", dtype=args.dtype)
    ours = HFChoiceBackend(loaded.model, loaded.tokenizer)
    harness = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, device="cpu", batch_size=args.batch_size)

    def render(messages: list[dict]) -> str:
        return loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    neutral = render(NEUTRAL_MESSAGES)

    def requests(s) -> list:
        ctx = render(s.prompt_messages())
        pairs = [(c, x.text) for c in (ctx, neutral) for x in s.candidates]
        return [Instance(request_type="loglikelihood", doc={}, arguments=p, idx=i) for i, p in enumerate(pairs)]

    first = scenarios[0]  # warm-up, both
    ours.score(first.prompt_messages(), [c.text for c in first.candidates])
    harness.loglikelihood(requests(first), disable_tqdm=True)

    t_ours, t_harness, worst = [], [], 0.0
    for i, s in enumerate(scenarios):
        runs = [("ours", None), ("harness", None)]
        if i % 2:
            runs.reverse()
        got: dict = {}
        for name, _ in runs:
            t0 = time.perf_counter()
            if name == "ours":
                sc = ours.score(s.prompt_messages(), [c.text for c in s.candidates])
                got[name] = [x.sum_logprob for x in sc] + [x.neutral_sum_logprob for x in sc]
                t_ours.append(time.perf_counter() - t0)
            else:
                got[name] = [lp for lp, _ in harness.loglikelihood(requests(s), disable_tqdm=True)]
                t_harness.append(time.perf_counter() - t0)
        worst = max(worst, max(abs(a - b) for a, b in zip(got["ours"], got["harness"], strict=True)))

    # agreement where rounding does not blur it: both ways in float32 on the first scenarios
    loaded32 = models.load("smollm2-135m", dtype="float32")
    ours32 = HFChoiceBackend(loaded32.model, loaded32.tokenizer)
    harness32 = HFLM(pretrained=loaded32.model, tokenizer=loaded32.tokenizer, device="cpu",
                     batch_size=args.batch_size)
    worst32 = 0.0
    for s in scenarios[: args.check]:
        sc = ours32.score(s.prompt_messages(), [c.text for c in s.candidates])
        mine = [x.sum_logprob for x in sc] + [x.neutral_sum_logprob for x in sc]
        theirs = [lp for lp, _ in harness32.loglikelihood(requests(s), disable_tqdm=True)]
        worst32 = max(worst32, max(abs(a - b) for a, b in zip(mine, theirs, strict=True)))

    mo, mh = statistics.median(t_ours), statistics.median(t_harness)
    print(f"choice scoring, {len(scenarios)} eval scenarios x 8 log-likelihoods, {args.dtype}, smollm2-135m")
    print(f"{'':34} {'s/scenario (median)':>20} {'ratio':>7}")
    print(f"{'lm-evaluation-harness HFLM':34} {mh:20.3f} {1.0:7.2f}")
    print(f"{'teachwhy HFChoiceBackend':34} {mo:20.3f} {mh / mo:7.2f}x")
    print(f"largest difference in a summed log-prob (a candidate is ~80 tokens): {worst:.2e} in {args.dtype}, "
          f"{worst32:.2e} in float32 ({min(args.check, len(scenarios))} scenarios); bf16 rounds differently "
          "in a full pass than on a reused KV cache")
    return 0


if __name__ == "__main__":
    sys.exit(_guard.run(main))
