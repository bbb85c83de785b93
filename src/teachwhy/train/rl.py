"""GRPO on harmlessness environments with TRL's GRPOTrainer, from any SFT checkpoint.

    runs/rl-<name>-<hash>/
      config.json, train_log.jsonl (loss, reward and its parts per step), eval_points.jsonl (choice eval)
      completions.jsonl    every scored completion: step, prompt id and kind, reward parts, rubric flags
      checkpoints/         the latest Trainer checkpoint (a rerun resumes from it; removed at the end)
      adapter/             the trained LoRA adapter (continued from the SFT adapter when given one)
      summary.json         reward and compliance in the first and last steps with 95% CIs, eval points

The environment is a set of chat prompts written as data (harmful requests, jailbreak attempts, and
benign requests that only sound edgy), optionally varied by the augment builder's system prompts and
unused tools. The reward is the offline rubric (harm/refusal plus constitution adherence,
`teachwhy.train.rewards`) or an LLM judge through Inspect. Tool calls are never executed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from teachwhy import models
from teachwhy.errors import UserError
from teachwhy.evals.stats import mean_ci, wilson
from teachwhy.store import JsonlLog, content_hash, read_jsonl
from teachwhy.train.config import RLSpec
from teachwhy.train.runs import (
    TrainResult,
    drop_printer,
    finish_run,
    open_run,
    quiet_hf,
    resolve_training_model,
    resume_point,
    run_once,
    save_adapter,
    training_args_common,
)


def reward_weight_map() -> dict[str, float]:
    from teachwhy.train.rewards import reward_weights

    harm, adherence = reward_weights()
    return {"harm_refusal_reward": harm, "adherence_reward": adherence, "judge_reward": 1.0}


def _text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


class CompletionRecorder:
    """Wraps TRL reward functions: returns their values unchanged and logs every completion with its
    reward parts and the rubric's flags (complied / refused), so a run's compliance can be counted."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.step_fn: Callable[[], int] = lambda: 0
        self._calls: dict[tuple[int, str], int] = {}  # (step, reward) -> calls so far

    def wrap(self, fn: Callable, name: str) -> Callable:
        def reward(prompts, completions, **kw):
            values = fn(prompts, completions, **kw)
            self._record(name, completions, values, kw)
            return values

        reward.__name__ = name
        return reward

    def _record(self, name: str, completions: list, values: list, kw: dict) -> None:
        from teachwhy.train.rewards import score_reply

        step = self.step_fn()
        batch = self._calls.get((step, name), 0)
        self._calls[(step, name)] = batch + 1
        with JsonlLog(self.path) as log:
            for i, (c, v) in enumerate(zip(completions, values)):
                kind = kw["kind"][i]
                markers = json.loads(kw["harm_markers"][i])
                principles = json.loads(kw["principles"][i])
                text = _text(c)
                s = score_reply(text, kind, markers, principles)
                value = None if v is None else float(v)
                log.append({"step": step, "batch": batch, "slot": i, "reward": name, "value": value,
                            "env_id": kw["env_id"][i], "kind": kind, "complied": s.complied,
                            "refused": s.refused, "degenerate": s.degenerate, "completion": text[:400]})


def _reward_funcs(spec: RLSpec, recorder: CompletionRecorder) -> tuple[list[Any], list[float]]:
    from teachwhy.train import rewards

    if spec.reward == "rubric":
        funcs = [recorder.wrap(rewards.harm_refusal_reward, "harm_refusal_reward"),
                 recorder.wrap(rewards.adherence_reward, "adherence_reward")]
        w = reward_weight_map()
        return funcs, [w["harm_refusal_reward"], w["adherence_reward"]]
    ref = models.resolve(spec.reward)
    if ref.kind != "inspect":
        raise UserError(f"reward '{spec.reward}': use 'rubric' or an Inspect model id for an LLM judge "
                        "(e.g. openai/gpt-4o-mini, or openai-api/<name>/<model> for a local server)")
    return [recorder.wrap(rewards.make_judge_reward(spec.reward), "judge_reward")], [1.0]


def _window_stats(rows: list[dict], steps: list[int]) -> dict:
    vals = [r["value"] for r in rows if r["step"] in steps and r["value"] is not None]
    harmful = [r for r in rows if r["step"] in steps and r["kind"] in ("harmful", "jailbreak")]
    m = mean_ci(vals, bounds=None)
    k = sum(bool(r["complied"]) for r in harmful)
    return {"steps": [min(steps), max(steps)], "n": len(vals), "mean": m[0] if m else None,
            "mean_95": list(m[1:]) if m else None,
            "compliance": {"n": len(harmful), "k": k, "rate": k / len(harmful) if harmful else None,
                           "wilson_95": list(wilson(k, len(harmful)))}}


def reward_summary(rows: list[dict], window: int = 5) -> dict | None:
    """Total reward per completion (weighted parts summed) in the first and last `window` steps."""
    if not rows:
        return None
    weights = reward_weight_map()
    totals: dict[tuple, dict] = {}
    for r in rows:  # one row per (reward function, completion): sum the weighted parts per completion
        key = (r["step"], r.get("batch", 0), r.get("slot", 0))
        t = totals.setdefault(key, {"step": r["step"], "kind": r["kind"], "complied": r["complied"], "value": 0.0})
        t["value"] += weights.get(r["reward"], 1.0) * (r["value"] or 0.0)
    merged = list(totals.values())
    steps = sorted({r["step"] for r in merged})
    w = max(1, min(window, len(steps) // 2 or 1))
    first, last = _window_stats(merged, steps[:w]), _window_stats(merged, steps[-w:])
    return {"window": w, "first": first["mean"], "last": last["mean"], "n": first["n"],
            "first_window": first, "last_window": last}


def _load_policy(base_dir: Path, adapter: Path | None, dtype: str, spec: RLSpec):
    import torch
    import transformers
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            base_dir, dtype=torch.bfloat16 if dtype == "bfloat16" else torch.float32)
    finally:
        transformers.logging.set_verbosity(verbosity)
    if adapter is not None:
        try:
            return PeftModel.from_pretrained(model, adapter, is_trainable=True), None
        except (RuntimeError, ValueError, KeyError) as e:
            raise UserError(f"adapter {adapter} does not fit its base model ({type(e).__name__}): "
                            "train it on that base or fix base_model_name_or_path") from None
    return model, LoraConfig(r=spec.lora.r, lora_alpha=spec.lora.alpha, lora_dropout=spec.lora.dropout,
                             target_modules=spec.lora.target_modules, task_type="CAUSAL_LM")


def run_rl(spec: RLSpec, progress: Callable[[int, int], None] | None = None,
           on_log: Callable[[dict], None] | None = None,
           on_eval: Callable[[dict], None] | None = None) -> TrainResult:
    from teachwhy.train.environments import augment_rows, load_env_prompts, to_rows

    if spec.use_vllm:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise UserError("use_vllm needs the vllm package on a GPU machine: pip install 'teachwhy[vllm]' "
                            "(or drop --vllm to generate with transformers)")
    ref, base, adapter = resolve_training_model(spec.model)
    base_dir = models.model_dir(base)
    dtype = models.resolve_dtype(spec.dtype)
    prompts = load_env_prompts(spec.prompts)
    rows = to_rows(prompts)
    if spec.augment:
        rows = augment_rows(rows, seed=spec.seed)
    if spec.reward != "rubric" and models.resolve(spec.reward).kind != "inspect":
        _reward_funcs(spec, CompletionRecorder(Path("completions.jsonl")))  # raises its one line, before any run dir
    config = {"kind": "rl", "spec": spec.model_dump(exclude={"out"}), "model_fingerprint": models.fingerprint(ref),
              "prompts": content_hash(rows), "dtype": dtype}
    handle = open_run("rl", spec.name or (Path(spec.model).parent.name if ref.kind == "peft" else spec.model),
                      config, spec.out)
    out_dir = handle.run_dir / "adapter"
    return run_once(handle, spec.model, out_dir, lambda: _train_rl(
        spec, handle, base, base_dir, adapter, dtype, rows, out_dir, progress, on_log, on_eval),
        report_to=spec.report_to)


def _train_rl(spec, handle, base, base_dir, adapter, dtype, rows, out_dir, progress, on_log,
              on_eval) -> TrainResult:
    import torch
    from datasets import Dataset

    from teachwhy.train.callbacks import standard_callbacks

    run_dir = handle.run_dir
    ckpt_root, resume_from, resumed_step = resume_point(
        run_dir, ("train_log.jsonl", "eval_points.jsonl", "completions.jsonl"))

    torch.manual_seed(spec.seed)
    quiet_hf()
    from trl import GRPOConfig, GRPOTrainer

    model, peft_config = _load_policy(base_dir, adapter, dtype, spec)
    tok = models.load_tokenizer(base.spec)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    recorder = CompletionRecorder(run_dir / "completions.jsonl")
    funcs, weights = _reward_funcs(spec, recorder)
    batch = spec.prompts_per_step * spec.num_generations
    vllm = {"use_vllm": True, "vllm_mode": spec.vllm_mode} if spec.use_vllm else {}
    args = GRPOConfig(
        output_dir=str(ckpt_root), per_device_train_batch_size=batch, gradient_accumulation_steps=1,
        num_generations=spec.num_generations, max_completion_length=spec.max_completion_length,
        temperature=spec.temperature, learning_rate=spec.learning_rate, beta=spec.beta, max_steps=spec.steps,
        gradient_checkpointing=False, reward_weights=weights, lr_scheduler_type="constant",
        **vllm, **{**training_args_common(spec, dtype), "remove_unused_columns": False},  # rewards read columns
    )
    dataset = Dataset.from_list(rows)

    completion_tokens = {"n": 0}

    def tokens_fn(state):
        return int(getattr(state, "num_input_tokens_seen", 0) or 0), completion_tokens["n"]

    from transformers import TrainerCallback

    class _CountCompletions(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                completion_tokens["n"] += round(logs["completions/mean_length"] * batch)

    callbacks = [_CountCompletions(), *standard_callbacks(run_dir, spec.eval, models.load_tokenizer(base.spec),
                                                          tokens_fn, on_log, on_eval, progress)]
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=dataset,
                          processing_class=tok, peft_config=peft_config, callbacks=callbacks)
    drop_printer(trainer)
    recorder.step_fn = lambda: trainer.state.global_step + 1  # rewards are computed for the step under way
    if resume_from:
        prior = read_jsonl(run_dir / "train_log.jsonl")
        if prior:
            completion_tokens["n"] = int(prior[-1].get("loss_tokens_seen", 0))
    t0 = time.time()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.time() - t0

    save_adapter(trainer.model, out_dir, base, base_dir, {
        "run_id": handle.run_id, "rl_steps": trainer.state.global_step, "from": str(adapter) if adapter else None})

    log = read_jsonl(run_dir / "train_log.jsonl")
    points = read_jsonl(run_dir / "eval_points.jsonl")
    completions = read_jsonl(run_dir / "completions.jsonl")
    summary = {
        "run_id": handle.run_id, "kind": "rl", "model": spec.model, "base": base.spec, "from_adapter": str(adapter) if
        adapter else None, "dtype": dtype, "steps": trainer.state.global_step, "reward_source": spec.reward,
        "prompts": len(rows), "train_seconds": round(seconds, 2),
        "tokens_per_s": next((r["tokens_per_s"] for r in reversed(log) if r.get("tokens_per_s")), None),
        "reward": reward_summary(completions), "eval_points": points, "resumed_from_step": resumed_step or None,
        "output": str(out_dir), "merged": None,
    }
    return finish_run(handle, summary, ckpt_root, seconds, {
        "reward": summary["reward"], "eval_last": points[-1] if points else None}, out_dir, resumed=bool(resume_from))
