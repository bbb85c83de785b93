"""SFT throughput: teachwhy's SFT (bf16 and fp32) against TRL's SFTTrainer defaults, and the CPU's peak.

Builds the builtin reasoning dataset once, then trains on it in one process, round by round, each round
running every config once (the order rotates each round, so machine noise and one-time warm-up costs
hit all configs alike); tables quote medians over rounds.

    trl-defaults   plain trl.SFTTrainer + SFTConfig: full fine-tuning, gradient checkpointing, bf16
                   autocast, batch 8 with padding, TRL's own loss (fused LM head); only what this CPU and
                   data need is changed (printed)
    ours-bf16      teachwhy.train.sft.run_sft, dtype bfloat16 (LoRA on a bf16 base, one record per
                   micro-batch, loss-bearing positions only through the LM head)
    ours-fp32      the same with dtype float32

Also: per-step loss of ours bf16 vs fp32 (same data order and seed), the machine's torch.mm peak in
bf16 and fp32, and the model FLOP utilisation (MFU) of each config, with the FLOP formulas printed.

    python bench/bench_sft.py [--tokens 6000] [--rounds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from itertools import pairwise
from pathlib import Path
from typing import Any

import _guard

CONFIGS = ("trl-defaults", "ours-bf16", "ours-fp32")

# what the TRL baseline changes from SFTConfig's defaults, and why (printed and written to --json)
TRL_CHANGES = {
    "use_cpu": (True, "no GPU here"),
    "report_to": ([], "no experiment trackers offline"),
    "save_strategy": ("no", "checkpoints are not part of the measured work"),
    "output_dir": ("<temp dir>", "required"),
    "num_train_epochs": (1, "one pass over the data, like ours (TRL's default is 3)"),
    "max_length": (2048, "TRL's 1024 would truncate every record (see the check below)"),
    "disable_tqdm": (True, "output only"),
}


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# -- other processes' CPU use (the machine is shared; 2 cores oversubscribed slow torch down ~10x) ----

def _busy_and_self() -> tuple[float, float] | None:
    """(CPU-seconds busy machine-wide, CPU-seconds of this process) from /proc; None off Linux."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:9]]
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    busy = sum(vals) - vals[3] - vals[4]  # all but idle and iowait
    return busy / tick, (int(fields[11]) + int(fields[12])) / tick  # utime + stime


class OthersMeter:
    """Cores' worth of CPU that other processes used between start() and stop()."""

    def start(self) -> OthersMeter:
        self.t0, self.s0 = time.perf_counter(), _busy_and_self()
        return self

    def stop(self) -> float | None:
        s1 = _busy_and_self()
        wall = time.perf_counter() - self.t0
        if self.s0 is None or s1 is None or wall <= 0:
            return None
        return max(0.0, (s1[0] - self.s0[0]) - (s1[1] - self.s0[1])) / wall


def wait_quiet(max_wait: float, threshold: float, sample: float = 2.0) -> tuple[float, float | None]:
    """Wait (at most max_wait seconds) until other processes use under `threshold` cores.
    Returns (seconds waited, their last measured use)."""
    t0 = time.perf_counter()
    while True:
        m = OthersMeter().start()
        time.sleep(sample)
        use = m.stop()
        waited = time.perf_counter() - t0
        if use is None or use < threshold or waited >= max_wait:
            return waited, use
        time.sleep(min(3.0, max(0.0, max_wait - waited)))


# -- FLOPs -----------------------------------------------------------------------------------------

def model_shape(model: Any, lora_r: int) -> dict[str, Any]:
    """Parameter counts the FLOP formulas use, read off the loaded model."""
    import torch

    cfg = model.config
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    p_dec = p_lora = 0
    for mod in decoder.layers.modules():
        if isinstance(mod, torch.nn.Linear):
            p_dec += mod.weight.numel()
            p_lora += lora_r * (mod.in_features + mod.out_features)  # A: r x in, B: out x r
    head = model.get_output_embeddings()
    n_heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    return {"layers": cfg.num_hidden_layers, "d_model": cfg.hidden_size, "d_attn": n_heads * head_dim,
            "vocab": cfg.vocab_size, "P_dec": p_dec, "P_head": head.weight.numel(), "P_lora": p_lora,
            "lora_r": lora_r, "P_total": sum(p.numel() for p in model.parameters())}


def attn_fwd(shape: dict, length: int) -> float:
    """Causal attention forward FLOPs of one sequence, all layers: scores QK^T and the value product
    AV are 2*d_attn FLOPs each per (query, key) pair, over L(L+1)/2 causal pairs."""
    return shape["layers"] * 4 * shape["d_attn"] * length * (length + 1) / 2


def flops_ours(shape: dict, lengths: list[int], loss_positions: list[int]) -> float:
    """LoRA on a frozen base: 2P forward + 2P activation gradients per token for the decoder linears,
    6 P_lora for the adapters (forward, activation and weight gradients), the LM head (frozen, tied)
    4 P_head only at loss-bearing positions, attention 3x its forward (forward + 2x backward)."""
    total = 0.0
    for n, k in zip(lengths, loss_positions):
        total += n * (4 * shape["P_dec"] + 6 * shape["P_lora"]) + 4 * shape["P_head"] * k + 3 * attn_fwd(shape, n)
    return total


def flops_trl(shape: dict, lengths: list[int], recompute: bool) -> float:
    """Full fine-tuning: 6P per token for the decoder linears and the LM head (TRL's default loss covers
    every position), attention 3x its forward; with `recompute`, plus the forward of the decoder layers
    again (gradient checkpointing): hardware FLOPs rather than model FLOPs. Padding is not counted."""
    total = 0.0
    for n in lengths:
        total += n * 6 * (shape["P_dec"] + shape["P_head"]) + 3 * attn_fwd(shape, n)
        if recompute:
            total += n * 2 * shape["P_dec"] + attn_fwd(shape, n)
    return total


def matmul_peak(dtype_name: str, n: int, reps: int) -> dict[str, float]:
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(3):
        torch.mm(a, b)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    gflops = [2 * n ** 3 / t / 1e9 for t in times]
    return {"n": n, "reps": reps, "median_gflops": median(gflops), "max_gflops": max(gflops)}


def warm_up(model_dir: Path, length: int) -> float:
    """One forward and backward per compute path (bf16 weights, fp32 weights under bf16 autocast, fp32),
    so one-time kernel set-up costs don't land on whichever config happens to run first."""
    import torch
    from transformers import AutoModelForCausalLM

    t = time.perf_counter()
    ids = torch.randint(0, 1000, (1, length))
    for weights, autocast in ((torch.bfloat16, False), (torch.float32, True), (torch.float32, False)):
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=weights)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(input_ids=ids, labels=ids, use_cache=False)
        out.loss.backward()
        del model, out
    return time.perf_counter() - t


# -- the runs ---------------------------------------------------------------------------------------

def run_trl(model_dir: Path, tok: Any, records: list[dict], work: Path, threads: int) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from teachwhy.train.runs import drop_printer

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.t0: float | None = None
            self.t_end: float | None = None
            self.steps = 0
            self.losses: list[float] = []

        def on_train_begin(self, args, state, control, **kw):
            self.t0, self.losses = time.perf_counter(), []

        def on_step_end(self, args, state, control, **kw):
            self.t_end, self.steps = time.perf_counter(), self.steps + 1

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    positions = [0]  # sequence positions the model computes, padding included
    model.get_input_embeddings().register_forward_pre_hook(
        lambda _m, inp: positions.__setitem__(0, positions[0] + inp[0].numel()))
    ds = Dataset.from_list([{"messages": r["messages"], "tools": r["tools"]} for r in records])
    out = work / "trl"
    args = SFTConfig(output_dir=str(out), use_cpu=True, report_to=[], save_strategy="no", num_train_epochs=1,
                     max_length=2048, disable_tqdm=True)
    timer = Timer()
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[timer])
    drop_printer(trainer)
    lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
    loss_positions = [sum(v != -100 for v in x[1:]) for x in trainer.train_dataset["labels"]]
    t = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - t
    tokens = int(trainer._metrics["train"]["num_tokens"][-1]) if trainer._metrics["train"].get("num_tokens") \
        else sum(lengths)
    seconds = timer.t_end - timer.t0
    res = {
        "seconds": seconds, "train_call_seconds": wall, "tokens": tokens, "dataset_tokens": sum(lengths),
        "positions_incl_padding": positions[0], "loss_positions": sum(loss_positions),
        "steps": trainer.state.global_step, "tokens_per_s": tokens / seconds,
        "losses": timer.losses or [float(result.training_loss)],
        "loss_source": "logged per step" if timer.losses else "train() training_loss (no step reached logging_steps)",
        "lengths": lengths,
    }
    del trainer, model
    shutil.rmtree(out, ignore_errors=True)
    return res


def run_ours(ds_dir: Path, dtype: str, out: Path) -> dict[str, Any]:
    from teachwhy.store import read_jsonl
    from teachwhy.train.config import SFTSpec
    from teachwhy.train.sft import run_sft

    t = time.perf_counter()
    result = run_sft(SFTSpec(data=[{"path": str(ds_dir)}], out=str(out), dtype=dtype))
    wall = time.perf_counter() - t
    assert not result.resumed, "a fresh out dir must train, not return a finished run"
    log = read_jsonl(result.run_dir / "train_log.jsonl")
    s = result.summary
    step_s = [b["train_s"] - a for a, b in zip([0.0] + [r["train_s"] for r in log[:-1]], log)]
    seconds = sum(step_s)  # = the last record's train_s: on_train_begin to the last step's log
    res = {
        "seconds": seconds, "summary_train_seconds": s["train_seconds"], "run_sft_seconds": wall,
        "tokens": int(s["tokens_seen"]), "loss_tokens": int(s["loss_tokens_seen"]), "steps": s["steps"],
        "tokens_per_s": s["tokens_seen"] / seconds, "losses": [float(r["loss"]) for r in log],
        "step_seconds": step_s, "dtype": s["dtype"], "packing": s["packing"],
    }
    shutil.rmtree(out, ignore_errors=True)
    return res


# -- main -------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=6000, help="token budget of the builtin reasoning dataset")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="dataset build seed")
    ap.add_argument("--peak-n", type=int, default=2048, help="matrix size for the torch.mm peak")
    ap.add_argument("--peak-reps", type=int, default=10)
    ap.add_argument("--quiet-wait", type=float, default=30.0,
                    help="before each run, wait up to this many seconds for other processes to leave the CPU "
                         "(0: don't wait)")
    ap.add_argument("--quiet-threshold", type=float, default=0.3,
                    help="other processes' CPU use (in cores) under which the machine counts as quiet")
    ap.add_argument("--json", help="also write every number to this JSON file")
    _guard.add_flag(ap)
    args = ap.parse_args()

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch
    import transformers
    import trl
    from rich.console import Console
    from rich.table import Table

    from teachwhy import models
    from teachwhy.data.build import build_dataset
    from teachwhy.teachers import get_teacher
    from teachwhy.train.config import DataSource, LoraSpec
    from teachwhy.train.mixture import load_mixture
    from teachwhy.train.runs import quiet_hf

    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    quiet_hf()
    transformers.logging.set_verbosity_error()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    t_start = time.perf_counter()

    ref = models.resolve(args.model)
    model_dir = models.model_dir(ref)
    tok = models.load_tokenizer(args.model)
    work = Path(tempfile.mkdtemp(prefix="bench-sft-"))
    report: dict[str, Any] = {"args": vars(args), "machine": {
        "threads": threads, "torch": torch.__version__, "transformers": transformers.__version__,
        "trl": trl.__version__,
        "cpu_bf16": getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)(),
        "cpu_amx_tile": getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()}}
    try:
        # 1. the dataset
        ds_dir = work / "data"
        built = build_dataset("reasoning", get_teacher("builtin", seed=args.seed), tokens=args.tokens,
                              seed=args.seed, out=ds_dir)
        records = [json.loads(line) for line in (ds_dir / "data.jsonl").read_text().splitlines() if line.strip()]
        mixture = load_mixture([DataSource(path=str(ds_dir))], tok, 0)
        ours_lengths = [len(r["input_ids"]) for r in mixture.rows]
        ours_loss_pos = [sum(r["assistant_masks"][1:]) for r in mixture.rows]
        # TRL renders records with the model's own chat template (SmolLM2's ignores `tools`)
        trl_full, trl_prompt = [], []
        for r in records:
            tools = json.loads(r["tools"]) if isinstance(r.get("tools"), str) else r.get("tools")
            trl_full.append(len(tok.apply_chat_template(r["messages"], tools=tools, tokenize=True,
                                                        return_dict=True)["input_ids"]))
            trl_prompt.append(len(tok.apply_chat_template(r["messages"][:-1], tools=tools, tokenize=True,
                                                          add_generation_prompt=True, return_dict=True)["input_ids"]))
        cut = [max(0, n - 1024) for n in trl_full]
        reply = [n - p for n, p in zip(trl_full, trl_prompt)]
        report["dataset"] = {
            "records": len(records), "tokens_builder": built.card["tokens"],
            "loss_tokens_builder": built.card["loss_tokens"],
            "ours_tokens": sum(ours_lengths), "ours_loss_tokens": mixture.loss_tokens,
            "ours_lengths": ours_lengths, "trl_template_lengths": trl_full, "trl_template_prompt_lengths": trl_prompt,
            "trl_at_1024": {"records_truncated": sum(c > 0 for c in cut), "tokens_cut": sum(cut),
                            "reply_tokens_cut": sum(min(c, rp) for c, rp in zip(cut, reply)),
                            "reply_tokens": sum(reply)},
        }
        console.print(f"[bold]machine[/]: {threads} threads, torch {torch.__version__}, transformers "
                      f"{transformers.__version__}, trl {trl.__version__}; CPU bf16 "
                      f"{report['machine']['cpu_bf16']}, AMX {report['machine']['cpu_amx_tile']}")
        console.print(f"[bold]data[/]: builtin reasoning, --tokens {args.tokens}: {len(records)} records; ours "
                      f"(training template, tools rendered) {sum(ours_lengths)} tokens, {mixture.loss_tokens} "
                      f"loss-bearing, lengths {min(ours_lengths)}-{max(ours_lengths)}; TRL (model's own template, "
                      f"no tools in it) lengths {min(trl_full)}-{max(trl_full)}, reply starts at token "
                      f"{min(trl_prompt)}-{max(trl_prompt)}")
        a = report["dataset"]["trl_at_1024"]
        console.print(f"[bold]TRL max_length check[/]: at TRL's default max_length 1024, {a['records_truncated']}/"
                      f"{len(records)} records would be truncated (keep_start), cutting {a['tokens_cut']} tokens incl. "
                      f"{a['reply_tokens_cut']}/{a['reply_tokens']} reply tokens. No record would be dropped: TRL's "
                      "default loss (assistant_only_loss=False) covers every token, so a truncated record keeps a "
                      "loss. Raised to 2048 so every record is trained whole, as in ours.")
        changes = ", ".join(f"{k}={v!r}" for k, (v, _) in TRL_CHANGES.items())
        console.print(f"[bold]TRL defaults changed[/]: {changes}. Everything else as SFTConfig defaults "
                      "(full fine-tuning, gradient_checkpointing=True, bf16=True, per_device_train_batch_size=8, "
                      "learning_rate=2e-5, padding, assistant_only_loss=False i.e. loss on every token, fused LM "
                      "head); model loaded in float32. Also removed its console printer callback (output only).")

        # 2. the machine's matmul peak: sampled now and after every round (it moves a lot on a shared VM)
        if args.quiet_wait > 0:
            wait_quiet(args.quiet_wait, args.quiet_threshold)
        peak_samples: list[dict] = []

        def sample_peak(label: str) -> dict:
            meter = OthersMeter().start()
            row = {"when": label, **{d: matmul_peak(d, args.peak_n, args.peak_reps)["median_gflops"]
                                     for d in ("bfloat16", "float32")}}
            row["others_cores"] = meter.stop()
            peak_samples.append(row)
            return row

        for _ in range(3):
            sample_peak("start")
        torch.set_num_threads(1)
        one_thread = {d: matmul_peak(d, args.peak_n, args.peak_reps)["median_gflops"] for d in ("bfloat16", "float32")}
        torch.set_num_threads(threads)
        first = peak_samples[:3]
        bf16_first = "/".join(f"{r['bfloat16']:.0f}" for r in first)
        fp32_first = "/".join(f"{r['float32']:.0f}" for r in first)
        console.print(f"[bold]peak[/] torch.mm {args.peak_n}x{args.peak_n}, median of {args.peak_reps} reps per "
                      f"sample, {threads} threads: bf16 {bf16_first} GFLOP/s, fp32 {fp32_first} GFLOP/s (3 samples); "
                      "1 thread: bf16 "
                      f"{one_thread['bfloat16']:.0f}, fp32 {one_thread['float32']:.0f} GFLOP/s; resampled after "
                      "every round")

        warm = warm_up(model_dir, 512)
        report["warm_up_seconds"] = warm
        console.print(f"[dim]warm-up (one 512-token forward+backward per compute path): {warm:.1f} s[/]")

        # 3. rounds
        results: dict[str, list[dict]] = {c: [] for c in CONFIGS}
        for rnd in range(args.rounds):
            order = CONFIGS[rnd % len(CONFIGS):] + CONFIGS[:rnd % len(CONFIGS)]
            for cfg in order:
                waited, before = (wait_quiet(args.quiet_wait, args.quiet_threshold) if args.quiet_wait > 0
                                  else (0.0, None))
                note = (f" (waited {waited:.0f} s for the CPU; others at {before:.2f} cores)"
                        if before is not None and waited > 2.5 else "")
                console.print(f"[dim]round {rnd + 1}/{args.rounds} · {cfg} …{note}[/]")
                meter = OthersMeter().start()
                if cfg == "trl-defaults":
                    res = run_trl(model_dir, tok, records, work, threads)
                else:
                    res = run_ours(ds_dir, "bfloat16" if cfg == "ours-bf16" else "float32", work / f"{cfg}-r{rnd}")
                res["others_cores"] = meter.stop()
                res["waited_for_quiet_s"] = waited
                res["round"] = rnd + 1
                results[cfg].append(res)
                busy = res["others_cores"]
                flag = "" if busy is None else (f"  others used {busy:.2f} cores meanwhile"
                                                + (" [red](contended)[/]" if busy >= args.quiet_threshold else ""))
                console.print(f"round {rnd + 1}/{args.rounds} · {cfg:<12} {res['seconds']:7.1f} s  "
                              f"{res['tokens']:6d} tokens  {res['tokens_per_s']:7.1f} tok/s  {res['steps']} steps  "
                              f"loss {res['losses'][0]:.4f} → {res['losses'][-1]:.4f}{flag}")
            for _ in range(2):
                sample_peak(f"after round {rnd + 1}")
        report["runs"] = results
        pk = {d: [r[d] for r in peak_samples] for d in ("bfloat16", "float32")}
        report["peak"] = {"samples": peak_samples, "one_thread": one_thread, "n": args.peak_n, "reps": args.peak_reps,
                          **{f"{d}_median": median(v) for d, v in pk.items()},
                          **{f"{d}_max": max(v) for d, v in pk.items()}}
        console.print(f"[bold]peak over {len(peak_samples)} samples[/] ({threads} threads): bf16 median "
                      f"{median(pk['bfloat16']):.0f} GFLOP/s "
                      f"(range {min(pk['bfloat16']):.0f}-{max(pk['bfloat16']):.0f}), "
                      f"fp32 median {median(pk['float32']):.0f} (range {min(pk['float32']):.0f}-"
                      f"{max(pk['float32']):.0f}); bf16/fp32 {median(pk['bfloat16']) / median(pk['float32']):.2f}x. "
                      "MFU below uses the medians.")

        # 4. FLOPs and the summary table
        from transformers import AutoModelForCausalLM

        meta = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
        shape = model_shape(meta, LoraSpec().r)
        del meta
        trl_lengths = results["trl-defaults"][0]["lengths"]
        flops = {
            "ours": flops_ours(shape, ours_lengths, ours_loss_pos),
            "trl_model": flops_trl(shape, trl_lengths, recompute=False),
            "trl_hardware": flops_trl(shape, trl_lengths, recompute=True),
        }
        report["flops"] = {"shape": shape, "totals": flops,
                           "per_token": {"ours": flops["ours"] / sum(ours_lengths),
                                         "trl_model": flops["trl_model"] / sum(trl_lengths),
                                         "trl_hardware": flops["trl_hardware"] / sum(trl_lengths)}}
        pk16 = median(pk["bfloat16"]) * 1e9
        pk32 = median(pk["float32"]) * 1e9
        pk16_max = max(pk["bfloat16"]) * 1e9

        summary: dict[str, dict] = {}
        base_tps = median([r["tokens_per_s"] for r in results["trl-defaults"]])
        for cfg in CONFIGS:
            rs = results[cfg]
            sec = median([r["seconds"] for r in rs])
            tps = median([r["tokens_per_s"] for r in rs])
            total = flops["trl_model"] if cfg == "trl-defaults" else flops["ours"]
            achieved = median([total / r["seconds"] for r in rs])
            row = {"median_seconds": sec, "median_tokens_per_s": tps, "tokens": rs[0]["tokens"],
                   "speedup_vs_trl": tps / base_tps, "first_loss": rs[0]["losses"][0], "last_loss": rs[0]["losses"][-1],
                   "achieved_gflops": achieved / 1e9, "mfu_bf16_peak": achieved / pk16,
                   "mfu_fp32_peak": achieved / pk32, "mfu_bf16_max_peak": achieved / pk16_max,
                   "others_cores_median": median([r["others_cores"] for r in rs if r["others_cores"] is not None])}
            if cfg == "trl-defaults":
                hw = median([flops["trl_hardware"] / r["seconds"] for r in rs])
                row["hfu_bf16_peak"] = hw / pk16
            summary[cfg] = row
        report["summary"] = summary

        t = Table(title=f"SFT throughput, median of {args.rounds} rounds (tokens/s = all tokens, prompt + reply, "
                        "over training time)")
        for col in ("config", "median s", "tokens", "median tok/s", "vs TRL", "GFLOP/s", "MFU (bf16 peak)",
                    "loss first → last", "others' CPU"):
            t.add_column(col, justify="left" if col in ("config", "loss first → last") else "right")
        for cfg in CONFIGS:
            r = summary[cfg]
            mfu = f"{r['mfu_bf16_peak']:.1%}"
            if cfg == "trl-defaults":
                mfu += f" (HFU {r['hfu_bf16_peak']:.1%})"
            if cfg == "ours-fp32":
                mfu += f" ({r['mfu_fp32_peak']:.1%} of fp32)"
            t.add_row(cfg, f"{r['median_seconds']:.1f}", str(r["tokens"]), f"{r['median_tokens_per_s']:.1f}",
                      f"{r['speedup_vs_trl']:.2f}x", f"{r['achieved_gflops']:.1f}", mfu,
                      f"{r['first_loss']:.4f} → {r['last_loss']:.4f}", f"{r['others_cores_median']:.2f} cores")
        console.print(t)
        contended = [(c, i + 1, r["others_cores"]) for c in CONFIGS for i, r in enumerate(results[c])
                     if r["others_cores"] is not None and r["others_cores"] >= args.quiet_threshold]
        if contended:
            console.print("[yellow]contended runs (other processes on the CPU; on 2 cores that slows torch far "
                          "more than their share): " + ", ".join(f"{c} round {i} ({u:.2f} cores)"
                                                                  for c, i, u in contended)
                          + " — their times are not clean; rerun on an idle machine or with more --rounds.[/]")
        sp = summary["ours-bf16"]["speedup_vs_trl"]
        console.print(f"ours bf16 vs TRL defaults: {sp:.2f}x tokens/s (target ≥ 2x): "
                      + ("[green]met[/]" if sp >= 2 else "[red]NOT met[/]"))
        console.print("[dim]times: ours = sum of per-step times in train_log.jsonl (= last train_s: on_train_begin to "
                      "the last step's log; summary train_seconds, which also covers trainer setup, is in --json); "
                      "TRL = a callback's on_train_begin to the last on_step_end (the whole trainer.train() call is "
                      "in --json). Tokens: ours = summary tokens_seen (sum of attention_mask, no padding); TRL = its "
                      "num_tokens metric (sum of attention_mask, i.e. without padding) — "
                      f"{results['trl-defaults'][0]['positions_incl_padding']} positions were computed incl. "
                      "padding. Losses are not comparable across TRL and ours: TRL's default loss covers every token, "
                      f"ours only the reply. TRL's loss: {results['trl-defaults'][0]['loss_source']}.[/]")

        # 5. bf16 vs fp32 (ours)
        b16, b32 = results["ours-bf16"], results["ours-fp32"]
        deltas = [abs(x - y) for r16, r32 in zip(b16, b32) for x, y in zip(r16["losses"], r32["losses"])]
        rerun = [abs(x - y) for rs in (b16, b32) for r in rs[1:] for x, y in zip(rs[0]["losses"], r["losses"])]
        curve = b32[0]["losses"]
        steps_change = [abs(b - a) for a, b in pairwise(curve)]
        max_d = max(deltas) if deltas else float("nan")
        typical = median(steps_change)
        ratio = summary["ours-bf16"]["median_tokens_per_s"] / summary["ours-fp32"]["median_tokens_per_s"]
        match = bool(deltas) and (max_d <= 0.5 * typical if steps_change else False)
        report["bf16_vs_fp32"] = {
            "losses_bf16": b16[0]["losses"], "losses_fp32": b32[0]["losses"], "max_abs_delta": max_d,
            "median_abs_step_change_fp32": typical, "max_rel_delta": max(
                abs(x - y) / abs(y) for x, y in zip(b16[0]["losses"], b32[0]["losses"])),
            "rerun_max_abs_delta": max(rerun) if rerun else None, "tokens_per_s_ratio": ratio,
            "curves_match": match if steps_change else None, "steps": len(curve)}
        t2 = Table(title="ours: per-step loss, bf16 vs fp32 (round 1; same data order and seed)")
        for col in ("step", "bf16", "fp32", "|Δ|"):
            t2.add_column(col, justify="right")
        for i, (x, y) in enumerate(zip(b16[0]["losses"], b32[0]["losses"]), 1):
            t2.add_row(str(i), f"{x:.4f}", f"{y:.4f}", f"{abs(x - y):.4f}")
        console.print(t2)
        bv = report["bf16_vs_fp32"]
        console.print(f"max |Δ loss| bf16 vs fp32 over steps and rounds: {max_d:.4f} ({bv['max_rel_delta']:.2%} of "
                      f"the loss at most); median |step-to-step change| of the fp32 curve: {typical:.4f} "
                      f"({len(curve)} steps); final losses bf16 {b16[0]['losses'][-1]:.4f}, fp32 "
                      f"{b32[0]['losses'][-1]:.4f}; rerun reproducibility (same config, other rounds): max |Δ| "
                      + (f"{max(rerun):.2e}" if rerun else "n/a"))
        faster = "bf16" if ratio > 1 else "fp32"
        console.print(f"tokens/s bf16/fp32: {ratio:.2f}x → [bold]{faster}[/] is faster; curves "
                      + ("[green]match[/]" if match else "[red]do not match[/]" if steps_change
                         else "[yellow]cannot be compared (one step)[/]")
                      + " (criterion: max |Δ| ≤ half the median step-to-step change"
                      + ("; with this few steps the step change mixes data variation with learning — raise "
                         "--tokens for a longer curve)" if len(curve) < 6 else ")"))

        # 6. the FLOP definitions
        console.print(
            f"[bold]FLOPs[/] (model FLOPs, real tokens only): P_dec = {shape['P_dec'] / 1e6:.2f}M params in the "
            f"decoder layers' linears ({shape['layers']} layers, embedding lookup excluded), P_head = "
            f"{shape['P_head'] / 1e6:.2f}M (LM head, tied to the embedding), P_lora = {shape['P_lora'] / 1e6:.2f}M "
            f"(r={shape['lora_r']} on every decoder linear), attention forward per sequence of length L = "
            f"layers·4·d_attn·L(L+1)/2 (QKᵀ and AV, causal pairs, d_attn={shape['d_attn']}), ×3 with backward.\n"
            "  ours (LoRA, frozen base) per token: 4·P_dec (2 forward + 2 activation gradients) + 6·P_lora, plus "
            "4·P_head per loss-bearing position only, plus attention ×3 → "
            f"{report['flops']['per_token']['ours'] / 1e9:.3f} GFLOP/token on this data\n"
            "  TRL (full fine-tuning, loss on every token) per token: 6·(P_dec + P_head) + attention ×3 → "
            f"{report['flops']['per_token']['trl_model'] / 1e9:.3f} GFLOP/token; HFU adds the forward recomputed "
            "by gradient checkpointing (2·P_dec + attention forward) → "
            f"{report['flops']['per_token']['trl_hardware'] / 1e9:.3f} GFLOP/token (padding not counted)\n"
            "  MFU = achieved model FLOP/s ÷ the median bf16 torch.mm peak sample (fp32 peak also given for "
            f"ours-fp32); against the highest bf16 sample ({max(pk['bfloat16']):.0f} GFLOP/s) ours-bf16 reaches "
            f"{summary['ours-bf16']['mfu_bf16_max_peak']:.1%}, TRL {summary['trl-defaults']['mfu_bf16_max_peak']:.1%}; "
            "norms, activations, softmax, optimizer and the embedding gradient are not counted.")
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
