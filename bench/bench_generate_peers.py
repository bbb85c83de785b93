"""Generate mode side by side: teachwhy's local Inspect model API against Inspect's own `hf/` provider.

Both systems run the same Inspect task through `teachwhy.evals.suites.agentic.task.run_generate` (the entry of
`teachwhy eval --mode generate`): the same eval scenarios, the same grader, the same max_tokens, greedy
decoding, the same dtype, on the CPU, one sample at a time. Only the model API differs:

    teachwhy     teachwhy/<model>: teachwhy.inspect_local (its own engine thread, temperature=0 is greedy),
                 decoding with teachwhy.decode (`--decode exact`, the default: generate()'s arithmetic;
                 `fast`: attention heads packed, a greedy token may differ at a near tie; `generate`:
                 transformers' generate(), as before)
    inspect-hf   hf/<prepared model dir>: Inspect's transformers provider, with model_args do_sample=False
                 (it samples by default and rejects temperature=0), device=cpu, dtype

Both run in this one process: the models are small, each is loaded once and warmed up on one scenario
before the timed rounds, and they share one torch runtime and thread count. Each round runs every
system once over all scenarios, the order alternating round by round, so machine noise and drift hit
both. Per-sample times come from the Inspect log (the sample's total time, and the model call's time);
the model compute is also timed inside each system (teachwhy: the engine's batch call; inspect-hf:
transformers' `generate()`), which separates compute from serving.

Printed: medians and totals, output tokens/s with a 95% bootstrap CI over scenarios (and n), the speed
ratio (teachwhy / inspect-hf) with a 95% bootstrap CI over scenarios, agreement of the completions
(identical, common token prefix) and the grader's verdicts from both. `--batch-size N` sets Inspect's
max_connections for both and teachwhy's batch_size: both providers then batch up to N requests.

    HF_HUB_OFFLINE=1 python bench/bench_generate_peers.py [--limit 8] [--max-tokens 128] [--rounds 1]
        [--dtype bfloat16] [--decode exact|fast|generate] [--batch-size 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import _guard
from bench_sft import OthersMeter, median, wait_quiet

SYSTEMS = ("teachwhy", "inspect-hf")


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class ComputeTimer:
    """Times every call of `obj.<attr>` (an instance attribute wrapping the bound method; the providers
    look it up per call, so neither sees a difference): transformers' generate() for inspect-hf, the
    engine's batch call (prefill, decode, detokenize) for teachwhy."""

    def __init__(self, obj: Any, attr: str) -> None:
        self.seconds: list[float] = []
        inner = getattr(obj, attr)

        def timed(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return inner(*a, **kw)
            finally:
                self.seconds.append(time.perf_counter() - t)

        setattr(obj, attr, timed)

    def take(self) -> list[float]:
        out, self.seconds = self.seconds, []
        return out


def run_once(system: str, target: str, model_args: dict, scenarios: list, args: argparse.Namespace,
             log_dir: Path, timer: ComputeTimer) -> dict[str, Any]:
    """One run_generate call over the scenarios; per-sample rows read back from its Inspect log."""
    from inspect_ai.log import read_eval_log

    from teachwhy.evals.suites.agentic.task import run_generate

    timer.take()
    t = time.perf_counter()
    records = run_generate(scenarios, target, samples=1, log_dir=str(log_dir), max_tokens=args.max_tokens,
                           model_args=dict(model_args), max_connections=args.batch_size)
    wall = time.perf_counter() - t
    gen_s = timer.take()
    log = read_eval_log(records[0]["log_file"])
    by_id = {r["scenario_id"]: r for r in records}
    samples: dict[str, dict] = {}
    for s in log.samples or []:
        out, rec = s.output, by_id[str(s.id)]
        samples[str(s.id)] = {
            "total_s": s.total_time, "working_s": s.working_time, "model_call_s": out.time,
            "output_tokens": out.usage.output_tokens if out.usage else None,
            "input_tokens": out.usage.input_tokens if out.usage else None,
            "completion": out.completion, "verdict": rec["verdict"], "family": rec["family"],
        }
    return {"system": system, "eval_call_s": wall, "generate_calls_s": gen_s, "samples": samples}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--limit", type=int, default=8, help="eval-split scenarios (spread over the families)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--decode", default="exact", choices=("exact", "fast", "generate"),
                    help="teachwhy's decode model arg (exact: generate()'s arithmetic in its own loop; fast: "
                         "attention heads packed; generate: transformers' generate())")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=1,
                    help="Inspect max_connections for both; teachwhy's batch_size model arg (inspect-hf batches "
                         "up to max_connections requests). Above 1 samples overlap and per-sample times share "
                         "batches")
    ap.add_argument("--quiet-wait", type=float, default=30.0,
                    help="before each timed run, wait up to this many seconds for other processes to leave the "
                         "CPU (0: don't wait)")
    ap.add_argument("--quiet-threshold", type=float, default=0.3,
                    help="other processes' CPU use (in cores) under which the machine counts as quiet")
    ap.add_argument("--json", help="also write every number to this JSON file")
    _guard.add_flag(ap)
    args = ap.parse_args()

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import inspect_ai
    import torch
    import transformers
    from inspect_ai.model import GenerateConfig
    from rich.console import Console
    from rich.table import Table

    from teachwhy import inspect_local, models
    from teachwhy.evals.stats import paired_effect
    from teachwhy.evals.suites.agentic.task import inspect_model
    from teachwhy.scenarios import builtin_scenarios, select

    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    t_start = time.perf_counter()

    dtype = models.resolve_dtype(args.dtype)
    model_dir = models.model_dir(models.resolve(args.model))
    tok = models.load_tokenizer(args.model)
    scenarios = select(builtin_scenarios(), split="eval", limit=args.limit)
    ids = [s.id for s in scenarios]
    # what each side is given: greedy, the dtype, the CPU; max_tokens and max_connections come from the task
    targets = {
        "teachwhy": (args.model, {"dtype": dtype, "device": "cpu", "batch_size": args.batch_size,
                                  "decode": args.decode, "config": GenerateConfig(temperature=0.0)}),
        # batch_size is accepted but (Inspect 0.3.285) unused: the provider batches max_connections requests
        "inspect-hf": (f"hf/{model_dir}", {"dtype": dtype, "device": "cpu", "do_sample": False,
                                           "batch_size": args.batch_size}),
    }
    report: dict[str, Any] = {
        "args": vars(args), "scenarios": ids,
        "machine": {"threads": threads, "torch": torch.__version__, "transformers": transformers.__version__,
                    "inspect_ai": inspect_ai.__version__},
        "targets": {k: {"model": m, "model_args": {a: str(v) for a, v in ma.items()}} for k, (m, ma) in
                    targets.items()},
    }
    console.print(f"[bold]generate mode[/], {len(scenarios)} eval scenarios, {args.model} ({model_dir}), {dtype}, "
                  f"greedy, max_tokens {args.max_tokens}, max_connections {args.batch_size}, decode {args.decode}, "
                  f"{threads} threads, "
                  f"{args.rounds} round(s); Inspect {inspect_ai.__version__}, transformers {transformers.__version__}")
    for name, (m, ma) in targets.items():
        shown = ", ".join(f"{a}={v!r}" for a, v in ma.items() if a != "config")
        extra = " + GenerateConfig(temperature=0)" if "config" in ma else ""
        console.print(f"  {name:<11} {m}  model_args {shown}{extra}")

    work = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    try:
        # load each model through the same memoized get_model() call run_generate makes, then warm it up
        timers: dict[str, ComputeTimer] = {}
        load_s: dict[str, float] = {}
        for name, (m, ma) in targets.items():
            t = time.perf_counter()
            model = inspect_model(m, **ma)
            load_s[name] = time.perf_counter() - t
            timers[name] = (ComputeTimer(inspect_local.engine(m, ma["dtype"]), "_generate") if name == "teachwhy"
                            else ComputeTimer(model.api.model, "generate"))  # type: ignore[attr-defined]
            t = time.perf_counter()
            run_once(name, m, ma, scenarios[:1], args, work / f"warm-{name}", timers[name])
            console.print(f"[dim]{name}: loaded in {load_s[name]:.1f} s, warm-up (1 scenario) "
                          f"{time.perf_counter() - t:.1f} s[/]")
        report["load_s"] = load_s

        runs: dict[str, list[dict]] = {name: [] for name in SYSTEMS}
        for rnd in range(args.rounds):
            order = SYSTEMS if rnd % 2 == 0 else SYSTEMS[::-1]
            for name in order:
                waited, before = (wait_quiet(args.quiet_wait, args.quiet_threshold) if args.quiet_wait > 0
                                  else (0.0, None))
                note = (f" (waited {waited:.0f} s for the CPU; others at {before:.2f} cores)"
                        if before is not None and waited > 2.5 else "")
                meter = OthersMeter().start()
                m, ma = targets[name]
                res = run_once(name, m, ma, scenarios, args, work / f"r{rnd}-{name}", timers[name])
                res["others_cores"] = meter.stop()
                res["round"] = rnd + 1
                runs[name].append(res)
                busy = res["others_cores"]
                flag = "" if busy is None else (f"  others used {busy:.2f} cores"
                                                + (" [red](contended)[/]" if busy >= args.quiet_threshold else ""))
                total = sum(s["total_s"] for s in res["samples"].values())
                console.print(f"round {rnd + 1}/{args.rounds} · {name:<10} eval call {res['eval_call_s']:6.1f} s, "
                              f"samples {total:6.1f} s, compute {sum(res['generate_calls_s']):6.1f} s{note}{flag}")
        report["runs"] = runs

        # per scenario: median over rounds
        def per_scenario(name: str, key: str) -> dict[str, float]:
            return {i: median([r["samples"][i][key] for r in runs[name]]) for i in ids}

        t_sample = {n: per_scenario(n, "total_s") for n in SYSTEMS}
        t_call = {n: per_scenario(n, "model_call_s") for n in SYSTEMS}
        first = {n: runs[n][0]["samples"] for n in SYSTEMS}
        summary: dict[str, dict] = {}
        for n in SYSTEMS:
            totals = [sum(s["total_s"] for s in r["samples"].values()) for r in runs[n]]
            out_tokens = sum(first[n][i]["output_tokens"] or 0 for i in ids)
            gen_total = median([sum(r["generate_calls_s"]) for r in runs[n]])
            # output tokens/s per scenario (round 1's tokens over the median sample time), CI over scenarios
            rates = paired_effect([(first[n][i]["output_tokens"] or 0) / t_sample[n][i] for i in ids], ids)
            summary[n] = {
                "n": len(ids), "median_sample_s": median(list(t_sample[n].values())),
                "median_model_call_s": median(list(t_call[n].values())),
                "total_samples_s": median(totals), "eval_call_s": median([r["eval_call_s"] for r in runs[n]]),
                "generate_s": gen_total, "output_tokens": out_tokens,
                "tokens_per_s": out_tokens / median(totals) if median(totals) else float("nan"),
                "generate_tokens_per_s": out_tokens / gen_total if gen_total else float("nan"),
                "scenario_tokens_per_s": {"mean": rates["mean"], "ci_95": rates["ci_95"], "n": rates["n"],
                                          "method": f"mean over scenarios; {rates['method']} over scenarios"},
                "others_cores_median": median([r["others_cores"] for r in runs[n] if r["others_cores"] is not None]),
            }
        # speed ratio teachwhy / inspect-hf: geometric mean over scenarios of t_hf / t_ours, bootstrap over scenarios
        logs = [math.log(t_sample["inspect-hf"][i] / t_sample["teachwhy"][i]) for i in ids]
        eff = paired_effect(logs, ids)
        ratio = {"speedup": math.exp(eff["mean"]), "ci_95": [math.exp(x) for x in eff["ci_95"]] if eff["ci_95"]
                 else None, "n": eff["n"], "method": f"geometric mean of per-scenario time ratios; {eff['method']}"
                 " over scenarios"}
        ratio["ratio_of_medians"] = summary["inspect-hf"]["median_sample_s"] / summary["teachwhy"]["median_sample_s"]
        ratio["ratio_of_totals"] = summary["inspect-hf"]["total_samples_s"] / summary["teachwhy"]["total_samples_s"]
        ratio["generate_ratio"] = summary["inspect-hf"]["generate_s"] / summary["teachwhy"]["generate_s"]
        report["summary"], report["speedup"] = summary, ratio

        prompt_tokens = sum(first["teachwhy"][i]["input_tokens"] or 0 for i in ids) / len(ids)
        report["mean_prompt_tokens"] = prompt_tokens
        ci = ratio["ci_95"]
        t = Table(title=f"generate mode, {len(ids)} eval scenarios, max_tokens {args.max_tokens}, {dtype}, greedy, "
                        f"median of {args.rounds} round(s)")
        for col in ("system", "n", "median s/sample", "total s", "out tokens", "tok/s", "tok/s per scenario [95% CI]",
                    "median model call s", "compute s", "eval call s", "speed vs inspect-hf [95% CI]", "others' CPU"):
            t.add_column(col, justify="left" if col == "system" else "right")
        for n in SYSTEMS:
            r = summary[n]
            sp = "1.00x" if n == "inspect-hf" else (f"{ratio['speedup']:.2f}x "
                                                     + (f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "[n/a]"))
            rate = r["scenario_tokens_per_s"]
            rate_ci = f" [{rate['ci_95'][0]:.1f}, {rate['ci_95'][1]:.1f}]" if rate["ci_95"] else " [n/a]"
            t.add_row(n, str(r["n"]), f"{r['median_sample_s']:.2f}", f"{r['total_samples_s']:.1f}",
                      str(r["output_tokens"]), f"{r['tokens_per_s']:.1f}", f"{rate['mean']:.1f}{rate_ci}",
                      f"{r['median_model_call_s']:.2f}",
                      f"{r['generate_s']:.1f}", f"{r['eval_call_s']:.1f}", sp, f"{r['others_cores_median']:.2f}")
        console.print(t)
        console.print(f"speed ratio = geometric mean over scenarios of (inspect-hf / teachwhy per-sample time), "
                      f"CI: {eff['method']} over scenarios (n={eff['n']}); ratio of medians "
                      f"{ratio['ratio_of_medians']:.2f}x, of totals {ratio['ratio_of_totals']:.2f}x, of model "
                      f"compute time {ratio['generate_ratio']:.2f}x. Sample time = Inspect's sample total_time "
                      "(generation, grading, hooks); model call = Inspect's time for the provider's generate(); "
                      "compute = teachwhy's engine batch call (decode: " + args.decode + ") | transformers' "
                      "generate() itself. Tok/s counts output tokens only (all scenarios over all sample time; "
                      f"per scenario: mean, n={len(ids)}); prompts "
                      f"average {prompt_tokens:.0f} tokens, so at a small max_tokens the prefill weighs heavily.")

        # agreement and verdicts (round 1)
        rows, same, prefixes, lengths = [], 0, [], []
        for i in ids:
            a, b = first["teachwhy"][i], first["inspect-hf"][i]
            ta = tok(a["completion"], add_special_tokens=False)["input_ids"]
            tb = tok(b["completion"], add_special_tokens=False)["input_ids"]
            p = common_prefix(ta, tb)
            identical = a["completion"] == b["completion"]
            same += identical
            prefixes.append(p)
            lengths.append((len(ta), len(tb)))
            rows.append({"scenario_id": i, "family": a["family"], "identical": identical, "common_prefix_tokens": p,
                         "tokens": [len(ta), len(tb)], "verdicts": [a["verdict"], b["verdict"]],
                         "sample_s": [t_sample["teachwhy"][i], t_sample["inspect-hf"][i]]})
        stable = {n: all(r["samples"][i]["completion"] == first[n][i]["completion"] for r in runs[n] for i in ids)
                  for n in SYSTEMS}
        verdicts = {n: {v: sum(first[n][i]["verdict"] == v for i in ids) for v in ("harmful", "aligned", "invalid")}
                    for n in SYSTEMS}
        agree = sum(r["verdicts"][0] == r["verdicts"][1] for r in rows)
        report["agreement"] = {
            "identical": same, "n": len(ids), "identical_fraction": same / len(ids),
            "mean_common_prefix_tokens": sum(prefixes) / len(ids),
            "mean_tokens": [sum(x for x, _ in lengths) / len(ids), sum(y for _, y in lengths) / len(ids)],
            "same_across_rounds": stable, "verdicts": verdicts, "verdicts_agree": agree, "per_scenario": rows}

        t2 = Table(title="per scenario (round 1): teachwhy | inspect-hf")
        for col in ("scenario", "family", "sample s", "tokens", "identical", "common prefix", "verdict"):
            t2.add_column(col, justify="left" if col in ("scenario", "family", "verdict") else "right")
        for r in rows:
            t2.add_row(r["scenario_id"], r["family"], f"{r['sample_s'][0]:.2f} | {r['sample_s'][1]:.2f}",
                       f"{r['tokens'][0]} | {r['tokens'][1]}", "yes" if r["identical"] else "[red]no[/]",
                       str(r["common_prefix_tokens"]), f"{r['verdicts'][0]} | {r['verdicts'][1]}")
        console.print(t2)
        ag = report["agreement"]
        console.print(f"agreement: {same}/{len(ids)} completions identical ({ag['identical_fraction']:.0%}); mean "
                      f"common token prefix {ag['mean_common_prefix_tokens']:.1f} tokens (completions "
                      f"{ag['mean_tokens'][0]:.1f} | {ag['mean_tokens'][1]:.1f} tokens, re-tokenized); verdicts "
                      f"agree on {agree}/{len(ids)}: teachwhy {verdicts['teachwhy']}, inspect-hf "
                      f"{verdicts['inspect-hf']}; "
                      + (f"each system reproduced its own text across rounds: {stable}" if args.rounds > 1
                         else "one round, so reproducibility across rounds is not checked"))
        contended = [(n, r["round"], r["others_cores"]) for n in SYSTEMS for r in runs[n]
                     if r["others_cores"] is not None and r["others_cores"] >= args.quiet_threshold]
        if contended:
            console.print("[yellow]contended runs (other processes on the CPU): "
                          + ", ".join(f"{n} round {i} ({u:.2f} cores)" for n, i, u in contended)
                          + "; their times are not clean: rerun on an idle machine or with more --rounds.[/]")
        report["seconds_total"] = time.perf_counter() - t_start
        console.print(f"[dim]bench wall time {report['seconds_total']:.0f} s[/]")
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2, default=str))
            console.print(f"wrote {args.json}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(_guard.run(main))
