"""Supervised fine-tuning on why-data with TRL's SFTTrainer.

    runs/sft-<name>-<hash>/
      config.json          the spec, the model fingerprint and the datasets' content hashes (the hash names the run)
      mixture.json         per dataset: budget, records and tokens taken (all and loss-bearing)
      train_log.jsonl      loss, learning rate, tokens seen, throughput per logging step
      eval_points.jsonl    the honeypot choice eval while training (eval.every, at_start, at_end)
      checkpoints/         the latest Trainer checkpoint (a rerun resumes from it; removed at the end)
      adapter/             the PEFT adapter (`teachwhy eval --model runs/<id>/adapter` or `--model runs/<id>`)
      merged/ or model/    the adapter merged into the base (merge: true) / a full fine-tune
      summary.json         written last, atomically; a finished run is not trained again

Speed on CPU (the reference is 2 cores): the frozen base is held in bfloat16 where the CPU computes it
natively and the LoRA weights in float32; the forward runs under accelerate's bf16 autocast, so the
adapters compute in bfloat16 on bfloat16 inputs while their float32 weights take the updates (PEFT's cast
of each input up to float32 is skipped for the step); each record is its own micro-batch (no padding, so
attention takes the causal fast path; grouped key/value heads are repeated for the kernel while training,
train/attention.py), and the loss projects only the loss-bearing positions through the LM head, a chunk
of rows at a time (`WhySFTTrainer.compute_loss`, train/chunked_loss.py). `gradient_checkpointing:
selective` recomputes each layer in the backward pass except its attention kernel
(train/checkpointing.py), for peak memory under 2 GB of live tensors. glibc's heap can otherwise grow
well past the step's live memory (freed activations leave resident holes), so with checkpointing on,
between decoder layers a trimmer hands freed memory back once more than TEACHWHY_SFT_HEAP_SLACK_MIB (512)
of it is resident (`teachwhy.memory.trimmed_between_layers`; summary.json's `heap_trims` has the trims,
the checks and the seconds they took). With `TEACHWHY_SFT_MAP_MIB=1`, glibc instead maps every block of 1
MiB and more on its own (`mapped_large_blocks`): the lowest peak, at a cost in tokens/s
(docs/performance.md, Memory).
`bench/bench_sft.py` measures this against TRL's SFTTrainer defaults and float32.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from teachwhy import models
from teachwhy.errors import UserError
from teachwhy.memory import heap_slack, mapped_large_blocks, train_map_threshold, trimmed_between_layers
from teachwhy.store import read_jsonl
from teachwhy.train.attention import use_for_training
from teachwhy.train.config import SFTSpec
from teachwhy.train.mixture import Mixture, load_mixture
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
    save_into,
    training_args_common,
)

# -- the trainer -------------------------------------------------------------------------------------

def why_sft_trainer_class():
    """SFTTrainer with a loss that projects only loss-bearing positions through the LM head.

    TRL's fused LM head scores every position when Triton is unavailable (CPU); with prompts that
    are most of each record (scenario inboxes), that is most of the head's work wasted. The loss here
    is the same token-mean cross-entropy TRL computes (normalised by `num_items_in_batch` across
    gradient accumulation), so curves are comparable.
    """
    import torch
    import torch.nn.functional as F
    from trl import SFTTrainer

    from teachwhy.train.chunked_loss import lm_head_nll

    class WhySFTTrainer(SFTTrainer):
        tokens_seen = 0
        loss_tokens_seen = 0

        def training_step(self, model, *args, **kwargs):
            # under autocast PEFT's cast of each adapted layer's input up to the float32 adapter weights
            # is a copy that autocast undoes; skip it for the step, forward and backward (checkpointed
            # layers rerun their forward in the backward pass)
            from peft.helpers import disable_input_dtype_casting

            mixed = self.accelerator.mixed_precision in ("bf16", "fp16")
            with disable_input_dtype_casting(model, active=mixed):
                return super().training_step(model, *args, **kwargs)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            mode = "train" if model.training else "eval"
            labels = inputs["labels"]
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            base = getattr(base, "module", base)
            backbone = getattr(base, base.base_model_prefix)
            kw = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids") if k in inputs}
            with self.accelerator.autocast():  # what accelerate wraps model.forward in (bf16: mixed precision)
                hidden = backbone(**kw, use_cache=False).last_hidden_state[:, :-1]
            targets = labels[:, 1:]
            mask = targets != -100
            head = base.get_output_embeddings()
            tgt = targets[mask]
            if type(head) is torch.nn.Linear and head.bias is None:  # chunked: no full logits held
                nll, correct = lm_head_nll(hidden[mask], head.weight, tgt)
            else:  # a head with a bias or an adapter of its own
                logits = head(hidden[mask]).float()
                nll = F.cross_entropy(logits, tgt, reduction="sum")
                correct = (logits.argmax(-1) == tgt).sum()
            denom = num_items_in_batch if num_items_in_batch is not None else mask.sum().clamp(min=1)
            loss = nll / denom
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            with torch.no_grad():
                n_valid = int(mask.sum())
                acc = float(correct) / n_valid if n_valid else 0.0
            self._metrics[mode]["mean_token_accuracy"].append(acc)
            if mode == "train":
                if "attention_mask" in inputs:
                    n_tok = int(inputs["attention_mask"].sum())
                else:
                    n_tok = int(inputs["input_ids"].numel())
                self.tokens_seen += n_tok
                self.loss_tokens_seen += n_valid
                self._metrics[mode]["num_tokens"] = [self.tokens_seen]
                self._metrics[mode]["loss_tokens"] = [self.loss_tokens_seen]
            return loss

    return WhySFTTrainer


# -- helpers -------------------------------------------------------------------------------------

def _packing(spec: SFTSpec, mixture: Mixture) -> bool:
    if spec.packing != "auto":
        return spec.packing == "on"
    lengths = sorted(len(r["input_ids"]) for r in mixture.rows)
    median = lengths[len(lengths) // 2]
    # short records waste a forward pass each; long ones already fill one (packing them only adds
    # a block-diagonal mask that costs the causal fast path)
    return median * 4 <= spec.max_length


def _load_base(base_dir: Path, spec: SFTSpec, dtype: str):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    # LoRA: the frozen base in the compute dtype; full fine-tuning keeps fp32 master weights
    weights = torch.bfloat16 if dtype == "bfloat16" and spec.method == "lora" else torch.float32
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        return AutoModelForCausalLM.from_pretrained(base_dir, dtype=weights)
    except (OSError, ValueError, RuntimeError) as e:
        raise UserError(f"could not load model weights from {base_dir} ({type(e).__name__}): check that the "
                        "directory holds a complete Hugging Face model") from None
    finally:
        transformers.logging.set_verbosity(verbosity)


# -- the run ---------------------------------------------------------------------------------------

def run_sft(spec: SFTSpec, progress: Callable[[int, int], None] | None = None,
            on_log: Callable[[dict], None] | None = None,
            on_eval: Callable[[dict], None] | None = None) -> TrainResult:
    if spec.batch_size % spec.micro_batch_size:
        raise UserError(f"batch_size {spec.batch_size} must be a multiple of micro_batch_size "
                        f"{spec.micro_batch_size}")
    train_map_threshold()  # a bad TEACHWHY_SFT_MAP_MIB or _HEAP_SLACK_MIB fails here, before anything is written
    heap_slack()
    ref, base, init_adapter = resolve_training_model(spec.model, spec.init_adapter)
    if spec.method == "full" and init_adapter is not None:
        raise UserError("method 'full' trains all weights; it cannot continue a LoRA adapter "
                        "(use method: lora, or give a full model directory as the model)")
    base_dir = models.model_dir(base)
    dtype = models.resolve_dtype(spec.dtype)
    tok = models.load_tokenizer(base.spec)
    # packing keeps every token; otherwise a max_length that cuts off every answer is refused here
    mixture = load_mixture(spec.data, tok, spec.seed, max_length=None if spec.packing == "on" else spec.max_length)
    config = {
        "kind": "sft", "spec": spec.model_dump(exclude={"out"}), "model_fingerprint": models.fingerprint(ref),
        "data": [{"name": s.name, "content_hash": s.content_hash, "budget": s.budget} for s in mixture.sources],
        "dtype": dtype,
    }
    handle = open_run("sft", spec.name or "+".join(s.name for s in mixture.sources), config, spec.out)
    out_dir = handle.run_dir / ("adapter" if spec.method == "lora" else "model")
    mixture_file = {"tokens": mixture.tokens, "loss_tokens": mixture.loss_tokens, "records": len(mixture.rows),
                    "sources": mixture.report()}
    return run_once(handle, spec.model, out_dir, lambda: _train_sft(
        spec, handle, base, base_dir, init_adapter, dtype, tok, mixture, out_dir, progress, on_log, on_eval),
        report_to=spec.report_to, files={"mixture.json": mixture_file})


def _train_sft(spec, handle, base, base_dir, init_adapter, dtype, tok, mixture, out_dir,
               progress, on_log, on_eval) -> TrainResult:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from trl import SFTConfig

    from teachwhy.train.callbacks import standard_callbacks

    run_dir = handle.run_dir
    ckpt_root, resume_from, resumed_step = resume_point(run_dir, ("train_log.jsonl", "eval_points.jsonl"))

    torch.manual_seed(spec.seed)
    quiet_hf()
    model = _load_base(base_dir, spec, dtype)
    use_for_training(model)
    if spec.gradient_checkpointing == "selective":
        from teachwhy.train.checkpointing import enable_selective

        enable_selective(model)
    peft_config = None
    if spec.method == "lora":
        if init_adapter is not None:
            model = PeftModel.from_pretrained(model, init_adapter, is_trainable=True)
        else:
            peft_config = LoraConfig(r=spec.lora.r, lora_alpha=spec.lora.alpha, lora_dropout=spec.lora.dropout,
                                     target_modules=spec.lora.target_modules, task_type="CAUSAL_LM")

    packing = _packing(spec, mixture)
    args = SFTConfig(
        output_dir=str(ckpt_root), per_device_train_batch_size=spec.micro_batch_size,
        gradient_accumulation_steps=spec.batch_size // spec.micro_batch_size,
        learning_rate=spec.learning_rate, lr_scheduler_type=spec.lr_scheduler, warmup_steps=spec.warmup_steps,
        weight_decay=spec.weight_decay, num_train_epochs=spec.epochs, max_length=spec.max_length,
        packing=packing, gradient_checkpointing=spec.gradient_checkpointing is True, assistant_only_loss=False,
        dataset_kwargs={"skip_prepare_dataset": False},
        **training_args_common(spec, dtype),
    )
    dataset = Dataset.from_list([{"input_ids": r["input_ids"], "assistant_masks": r["assistant_masks"]}
                                 for r in mixture.rows])
    trainer_cls = why_sft_trainer_class()

    def tokens_fn(_state):
        return trainer.tokens_seen, trainer.loss_tokens_seen

    callbacks = standard_callbacks(run_dir, spec.eval, models.load_tokenizer(base.spec), tokens_fn, on_log,
                                   on_eval, progress)
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset, processing_class=tok,
                          peft_config=peft_config, callbacks=callbacks)
    drop_printer(trainer)
    if resume_from:
        _restore_token_counts(trainer, run_dir)
    t0 = time.time()
    threshold = train_map_threshold()  # opt-in: lower peak memory, fewer tokens/s
    # with checkpointing, the heap's holes are most of the peak: trim them (mapped blocks leave none;
    # without checkpointing the live activations dominate and tokens/s comes first)
    slack = heap_slack() if spec.gradient_checkpointing and not threshold else None
    with (mapped_large_blocks(threshold) if threshold else contextlib.nullcontext(False),
          trimmed_between_layers(trainer.model, slack) as trimmer):
        out = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.time() - t0
    trainer.heap_trims = {"trims": trimmer.trims, "checks": trimmer.checks, "seconds": round(trimmer.seconds, 3)} \
        if trimmer is not None else None

    merged = _save_sft(spec, handle, trainer, tok, base, base_dir, mixture, out_dir)
    summary = _sft_summary(spec, handle, trainer, out, base, dtype, packing, mixture, seconds, resumed_step,
                           out_dir, merged)
    points = summary["eval_points"]
    return finish_run(handle, summary, ckpt_root, seconds, {
        "loss": summary["loss"], "tokens": mixture.tokens, "eval_last": points[-1] if points else None},
        out_dir, resumed=bool(resume_from))


def _restore_token_counts(trainer: Any, run_dir: Path) -> None:
    """A resumed run: the counters are not in the checkpoint; the log holds them."""
    prior = read_jsonl(run_dir / "train_log.jsonl")
    if prior:
        trainer.tokens_seen = int(prior[-1].get("tokens_seen", 0))
        trainer.loss_tokens_seen = int(prior[-1].get("loss_tokens_seen", 0))


def _save_sft(spec: SFTSpec, handle: Any, trainer: Any, tok: Any, base: Any, base_dir: Path, mixture: Mixture,
              out_dir: Path) -> Path | None:
    """Write the adapter (or the full model) to out_dir, and the merged model where asked; returns the
    merged model's directory, or None."""
    if spec.method == "lora":
        save_adapter(trainer.model, out_dir, base, base_dir, {"run_id": handle.run_id, "tokens": mixture.tokens,
                                                             "loss_tokens": mixture.loss_tokens})
    else:
        save_into(out_dir, lambda tmp: save_model_and_tokenizer(trainer.model, tok, tmp))
    if spec.merge and spec.method == "lora":
        return merge_adapter(out_dir, handle.run_dir / "merged")
    return None


def _sft_summary(spec: SFTSpec, handle: Any, trainer: Any, out: Any, base: Any, dtype: str, packing: bool,
                 mixture: Mixture, seconds: float, resumed_step: int, out_dir: Path,
                 merged: Path | None) -> dict[str, Any]:
    """summary.json of a finished run, from the trainer's state and the run's logs."""
    from teachwhy.train.callbacks import loss_summary

    log = read_jsonl(handle.run_dir / "train_log.jsonl")
    points = read_jsonl(handle.run_dir / "eval_points.jsonl")
    tps = [r["tokens_per_s"] for r in log if r.get("tokens_per_s")]
    return {
        "run_id": handle.run_id, "kind": "sft", "model": spec.model, "base": base.spec, "method": spec.method,
        "dtype": dtype, "packing": packing, "steps": trainer.state.global_step,
        "tokens": mixture.tokens, "loss_tokens": mixture.loss_tokens, "records": len(mixture.rows),
        "tokens_seen": trainer.tokens_seen, "loss_tokens_seen": trainer.loss_tokens_seen,
        "sources": mixture.report(), "train_seconds": round(seconds, 2),
        "train_runtime": out.metrics.get("train_runtime"),
        "tokens_per_s": tps[-1] if tps else None, "loss": loss_summary(log), "final_loss": out.training_loss,
        "eval_points": points, "resumed_from_step": resumed_step or None,
        "heap_trims": getattr(trainer, "heap_trims", None),
        "output": str(out_dir), "merged": str(merged) if merged else None,
    }


def save_model_and_tokenizer(model: Any, tokenizer: Any, directory: Path) -> None:
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def merge_adapter(adapter_dir: Path, out: Path) -> Path:
    """Write base + adapter merged into one plain Hugging Face directory (float32)."""
    loaded = models.load(str(adapter_dir), dtype="float32")
    merged = loaded.model.merge_and_unload()
    return save_into(out, lambda tmp: save_model_and_tokenizer(merged, loaded.tokenizer, tmp))
