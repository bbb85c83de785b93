"""GPU check of the vLLM choice backend: does it score as the HF backend does, and how fast?

On one CUDA machine, the same model (default: the embedded smollm2-135m) is loaded twice: by vLLM
(`VLLMChoiceBackend`, prompt log-probs) and by transformers on CUDA (`HFChoiceBackend`, shared KV).
Both score the same eval scenarios (`--limit`, spread over the families) in each format through
`choice.score_scenario`, the function the eval runs. Per scoring (mean, sum, calibrated, pair, and
the options format's label) it counts how often the two pick the same top candidate; it reports the
largest |difference| of the summed log-probs (after the prompt and after the neutral context) and of
P(harmful), the token counts (which must be equal: both tokenize with the same chat template), and
the median seconds per scenario of each backend in each format (one untimed warm-up scenario each;
the order alternates per scenario). It prints the result as JSON and writes it to `--out`.

Exit status: 0 when every scoring's agreement is at least `--min-agreement` and the token counts
match; 1 when not; 2 when it cannot run (no CUDA device, vllm missing).

    pip install -e '.[vllm]'        # on the GPU machine
    HF_HUB_OFFLINE=1 python bench/gpu_check_vllm.py [--limit 24] [--dtype bfloat16] \
        [--formats continuation,options] [--min-agreement 0.95] [--out gpu_check_vllm.json]

The two engines compute in different kernels, so in bf16 summed log-probs differ by rounding (on
the CPU, bf16 against float32 moved sums by up to ~2.4 over an ~80-token candidate); near-ties may
flip. `--dtype float32` separates rounding from a real disagreement, where vLLM's attention backends
allow float32. Not yet run: no GPU was available when it was written.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import _guard


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def compare(a: dict, b: dict) -> tuple[dict, dict]:
    """Two score_scenario records of one scenario and format (a: HF, b: vLLM): per scoring, whether
    the top candidates agree and |ΔP(harmful)|; and the largest |Δ| of the candidates' summed log-probs."""
    per = {}
    for key, block in a.items():
        if isinstance(block, dict) and "top" in block:
            other = b[key]
            per[key] = {"agree": block["top"] == other["top"], "top": [block["top"], other["top"]],
                        "p_harmful": [block["p_harmful"], other["p_harmful"]],
                        "p_diff": abs(block["p_harmful"] - other["p_harmful"])}
    sums = {"sum_logprob": 0.0, "neutral_sum_logprob": 0.0, "tokens_equal": True}
    for x, y in zip(a.get("candidates", []), b.get("candidates", [])):
        for k in ("sum_logprob", "neutral_sum_logprob"):
            sums[k] = max(sums[k], abs(x[k] - y[k]))
        sums["tokens_equal"] &= x["n_tokens"] == y["n_tokens"]
    return per, sums


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="a local model: embedded name, HF dir or adapter")
    ap.add_argument("--limit", type=int, default=24, help="eval scenarios (spread over the families)")
    ap.add_argument("--dtype", default="bfloat16", help="bfloat16 or float32, for both backends")
    ap.add_argument("--formats", default="continuation,options")
    ap.add_argument("--min-agreement", type=float, default=0.95,
                    help="the least share of scenarios on which both pick the same top candidate, per scoring")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.5,
                    help="vLLM's share of the GPU (the HF copy of the model needs some too)")
    ap.add_argument("--enforce-eager", action="store_true", help="vLLM without CUDA graphs (faster start)")
    ap.add_argument("--out", default=None, help="write the JSON result here too")
    _guard.add_flag(ap)
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("gpu_check_vllm: no CUDA device here; this check runs on a GPU machine", file=sys.stderr)
        return 2
    if importlib.util.find_spec("vllm") is None:
        print("gpu_check_vllm: vllm is not installed: pip install -e '.[vllm]'", file=sys.stderr)
        return 2

    from teachwhy import models
    from teachwhy.evals.choice import HFChoiceBackend, score_scenario
    from teachwhy.evals.vllm_backend import VLLMChoiceBackend
    from teachwhy.scenarios import builtin_scenarios, select

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    pool = select(builtin_scenarios(), split="eval")
    step = max(1, len(pool) // args.limit)
    scenarios = pool[::step][: args.limit]

    # vLLM first: it sizes its KV cache from the free GPU memory it sees when it starts
    t0 = time.perf_counter()
    vb = VLLMChoiceBackend.open(args.model, dtype=args.dtype, gpu_memory_utilization=args.gpu_memory_utilization,
                                enforce_eager=args.enforce_eager)
    load_vllm = time.perf_counter() - t0
    t0 = time.perf_counter()
    loaded = models.load(args.model, dtype=args.dtype)
    hf = HFChoiceBackend(loaded.model.to("cuda"), loaded.tokenizer, name=args.model)
    load_hf = time.perf_counter() - t0
    backends = {"hf": hf, "vllm": vb}

    for b in backends.values():  # warm-up (kernels, CUDA graphs, the neutral context), not timed
        for f in formats:
            score_scenario(b, scenarios[0], f)

    seconds: dict = {name: {f: [] for f in formats} for name in backends}
    agree: dict = {}
    worst = {"sum_logprob": 0.0, "neutral_sum_logprob": 0.0}
    worst_p: dict = {}
    tokens_equal = True
    disagreements = []
    for i, s in enumerate(scenarios):
        for f in formats:
            order = ["hf", "vllm"] if i % 2 == 0 else ["vllm", "hf"]
            got = {}
            for name in order:
                t = time.perf_counter()
                got[name] = score_scenario(backends[name], s, f)
                seconds[name][f].append(time.perf_counter() - t)
            per, sums = compare(got["hf"], got["vllm"])
            for k in worst:
                worst[k] = max(worst[k], sums[k])
            tokens_equal &= sums["tokens_equal"]
            for scoring, r in per.items():
                key = f"{f}/{scoring}"
                k, n = agree.get(key, (0, 0))
                agree[key] = (k + r["agree"], n + 1)
                worst_p[key] = max(worst_p.get(key, 0.0), r["p_diff"])
                if not r["agree"]:
                    disagreements.append({"scenario": s.id, "scoring": key, "top_hf_vllm": r["top"],
                                          "p_harmful_hf_vllm": r["p_harmful"]})

    agreement = {k: {"agree": a, "n": n, "rate": a / n} for k, (a, n) in agree.items()}
    passed = tokens_equal and all(v["rate"] >= args.min_agreement for v in agreement.values())
    result = {
        "model": args.model, "dtype": args.dtype, "formats": formats, "n_scenarios": len(scenarios),
        "gpu": torch.cuda.get_device_name(0), "versions": {p: _version(p) for p in ("vllm", "torch", "transformers")},
        "enforce_eager": args.enforce_eager, "min_agreement": args.min_agreement,
        "agreement": agreement, "tokens_equal": tokens_equal,
        "max_abs_diff": {**worst, "p_harmful": worst_p},
        "seconds_per_scenario_median": {name: {f: statistics.median(v) for f, v in d.items()}
                                        for name, d in seconds.items()},
        "load_seconds": {"hf": load_hf, "vllm": load_vllm},
        "disagreements": disagreements, "passed": passed,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    vb.close()
    return 0 if passed else 1


if __name__ == "__main__":  # vLLM may start its workers with spawn, which re-imports this file
    sys.exit(_guard.run(main))
