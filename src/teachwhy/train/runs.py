"""What every training run shares, SFT and RL alike: the run skeleton and its helpers.

    handle = open_run("sft", name, config, out)         # run id = kind + name + hash of the config
    return run_once(handle, spec.model, out_dir, body)  # lock, reuse a finished run, record a failure
    ...inside body: resume_point(...), TRL trainer, save_adapter(...), finish_run(handle, summary, ...)

A run directory is locked while a process works in it; a finished run (summary.json and its output)
is returned as it is; a run that fails after it started is marked failed in the registry and resumes
from its last complete checkpoint when rerun.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teachwhy import models
from teachwhy.data.tokens import training_chat_template
from teachwhy.errors import UserError
from teachwhy.memory import release_memory
from teachwhy.store import Registry, atomic_write_json, content_hash, ensure_writable_dir, run_dir_lock

ADAPTER_META = models.ADAPTER_META


@dataclass
class TrainResult:
    run_id: str
    run_dir: Path
    summary: dict
    model_path: Path  # the adapter directory (LoRA) or the model directory (full)
    resumed: bool = False



# -- helpers ---------------------------------------------------------------------------------------

def slug(text: str) -> str:
    """A run-id-safe short form of a name."""
    return (re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or "run")[:40]


def resolve_training_model(spec: str, init_adapter: str | None = None) -> tuple[models.ModelRef, models.ModelRef,
                                                                                 Path | None]:
    """(the model ref, its base ref, the adapter to continue from or None), checking adapter/base fit."""
    ref = models.resolve(spec)
    if not ref.is_local:
        raise UserError(f"model '{spec}' is an Inspect model id: training needs local weights "
                        f"({models.DEFAULT_MODEL}, a Hugging Face directory, or an adapter directory)")
    base, adapter = ref, None
    if ref.kind == "peft":
        assert ref.path is not None and ref.base is not None  # resolve() sets both for an adapter
        base, adapter = ref.base, ref.path
    if init_adapter:
        if adapter is not None:
            raise UserError(f"model '{spec}' is already an adapter; give its base as the model to use "
                            "init_adapter, or drop init_adapter")
        aref = models.resolve(init_adapter)
        if aref.kind != "peft":
            raise UserError(f"init_adapter {init_adapter} is not a PEFT adapter directory (no adapter_config.json)")
        assert aref.path is not None  # resolve() sets it for an adapter
        adapter = aref.path
        models.check_adapter_base(aref.path, base)
    elif adapter is not None:
        models.check_adapter_base(adapter, base)
    return ref, base, adapter


def quiet_hf() -> None:
    """Our progress and logs replace the libraries' own bars and prints."""
    import warnings

    import datasets
    import transformers

    # deprecation notices about arguments TRL itself passes (gradient vs activation checkpointing)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers(\.|$)")
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def drop_printer(trainer: Any) -> None:
    from transformers.trainer_callback import PrinterCallback
    from transformers.trainer_callback import ProgressCallback as HFProgress

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(HFProgress)


def write_adapter_meta(adapter_dir: Path, base: models.ModelRef, base_dir: Path, extra: dict) -> None:
    """Point adapter_config.json at the base's directory, so PEFT, transformers, Inspect's hf/
    provider and vLLM load the adapter without teachwhy and without the Hub; save the tokenizer
    (with the training chat template) beside it; record the base's teachwhy spec and architecture
    hash in teachwhy.json, so teachwhy finds an embedded base by name on any machine and refuses
    another base with a clear line."""
    cfg_path = adapter_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = str(Path(base_dir).resolve())
    atomic_write_json(cfg_path, cfg)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_dir)  # a fresh copy: the loaded one is shared
    tok.chat_template = training_chat_template()
    tok.save_pretrained(adapter_dir)
    atomic_write_json(adapter_dir / ADAPTER_META, {
        "base": base.spec, "base_kind": base.kind, "base_config_hash": models.base_config_hash(base_dir), **extra})


def training_args_common(spec: Any, dtype: str) -> dict[str, Any]:
    import torch

    scale = spec.scale
    args: dict[str, Any] = dict(
        report_to=spec.report_to, seed=spec.seed, data_seed=spec.seed, logging_steps=spec.logging_steps,
        save_strategy="steps", save_steps=spec.save_steps, save_total_limit=1,
        bf16=dtype == "bfloat16", use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
        disable_tqdm=True, remove_unused_columns=True,
    )
    if scale.deepspeed:
        if not Path(scale.deepspeed).is_file():
            raise UserError(f"deepspeed config {scale.deepspeed} does not exist: give a DeepSpeed JSON file")
        args["deepspeed"] = scale.deepspeed
    if scale.fsdp:
        args["fsdp"] = scale.fsdp
        if scale.fsdp_config:
            args["fsdp_config"] = scale.fsdp_config
    return args


# what the Trainer writes into a checkpoint; trainer_state.json comes last, so a checkpoint without
# any of these was cut off while being written (kill -9, full disk) and cannot be resumed from
CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")


def checkpoint_complete(ck: Path) -> bool:
    return all((ck / f).is_file() for f in CHECKPOINT_FILES) and any(
        f.suffix in (".safetensors", ".bin") for f in ck.iterdir() if f.is_file() and f.name != "training_args.bin")


def last_checkpoint(ckpt_root: Path) -> Path | None:
    """The latest complete checkpoint. Incomplete ones (cut off while being written) are removed, so
    the rerun resumes from the one before and later saves never mix with their leftovers."""
    cks = sorted((p for p in ckpt_root.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                 key=lambda p: int(p.name.split("-")[-1]))
    complete = [ck for ck in cks if checkpoint_complete(ck)]
    for ck in cks:
        if ck not in complete:
            shutil.rmtree(ck, ignore_errors=True)
    return complete[-1] if complete else None


def resume_point(run_dir: Path, logs: tuple[str, ...]) -> tuple[Path, Path | None, int]:
    """(checkpoint root, the checkpoint to resume from or None, its step). Logs are cut back to that
    step when resuming, and cleared for a fresh start."""
    from teachwhy.train.callbacks import truncate_log

    ckpt_root = run_dir / "checkpoints"
    resume_from = last_checkpoint(ckpt_root)
    step = int(resume_from.name.split("-")[-1]) if resume_from else 0
    for f in logs:
        if resume_from:
            truncate_log(run_dir / f, step)
        else:
            (run_dir / f).unlink(missing_ok=True)
    return ckpt_root, resume_from, step


def save_into(out_dir: Path, write: Callable[[Path], None]) -> Path:
    """Write a directory next to `out_dir` and rename it into place, so `out_dir` is whole or absent."""
    import warnings

    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    with warnings.catch_warnings():  # PEFT looks for the base's config under the embedded name; harmless
        warnings.simplefilter("ignore", UserWarning)
        write(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def save_adapter(model: Any, out_dir: Path, base: models.ModelRef, base_dir: Path, meta: dict) -> Path:
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, save_embedding_layers=False)
        write_adapter_meta(tmp, base, base_dir, meta)

    return save_into(out_dir, write)




# -- the run skeleton ------------------------------------------------------------------------------

@dataclass
class RunHandle:
    kind: str       # "sft" | "rl"
    run_id: str
    run_dir: Path
    registry: Registry
    config: dict


def open_run(kind: str, name: str, config: dict, out: str | Path) -> RunHandle:
    """The run's id and directory. A corrupt registry or an unwritable output fails here, before
    anything is written."""
    root = ensure_writable_dir(Path(out))
    registry = Registry(root / "registry.sqlite")
    models.set_torch_threads()
    run_id = f"{kind}-{slug(name)}-{content_hash(config)[:10]}"
    return RunHandle(kind, run_id, ensure_writable_dir(root / run_id), registry, config)


def run_once(handle: RunHandle, model: str, out_dir: Path, body: Callable[[], TrainResult],
             report_to: str | list[str] = "none", files: dict[str, Any] | None = None) -> TrainResult:
    """Holding the run directory's lock: a finished run is returned as it is; otherwise config.json
    (and `files`) are written, the run is registered, and `body` trains it; a failure in `body` is
    recorded in the registry (the rerun resumes)."""
    with run_dir_lock(handle.run_dir):
        summary_file = handle.run_dir / "summary.json"
        if summary_file.is_file() and out_dir.is_dir():
            return TrainResult(handle.run_id, handle.run_dir, json.loads(summary_file.read_text()), out_dir,
                               resumed=True)
        atomic_write_json(handle.run_dir / "config.json", handle.config)
        for fname, content in (files or {}).items():
            atomic_write_json(handle.run_dir / fname, content)
        handle.registry.start(handle.run_id, f"train/{handle.kind}", model, handle.config, handle.run_dir)
        try:
            with handle.registry.failure_recorded(handle.run_id), tracker_dirs(handle.run_dir, report_to):
                return body()
        finally:
            release_memory()  # the trainer and model are gone: give their memory back


@contextlib.contextmanager
def tracker_dirs(run_dir: Path, report_to: str | list[str]) -> Iterator[None]:
    """TensorBoard writes where $TENSORBOARD_LOGGING_DIR says, else under the checkpoints (which a
    finished run deletes): point it at runs/<id>/tensorboard unless the user chose a place."""
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    wants = any(n in ("tensorboard", "all") for n in names)
    if not wants or os.environ.get("TENSORBOARD_LOGGING_DIR"):
        yield
        return
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")
    try:
        yield
    finally:
        os.environ.pop("TENSORBOARD_LOGGING_DIR", None)


def finish_run(handle: RunHandle, summary: dict, ckpt_root: Path, seconds: float, metrics: dict,
               out_dir: Path, resumed: bool) -> TrainResult:
    """Plot the curves, write summary.json (atomically, last), drop the checkpoints, mark the run done."""
    from teachwhy.train.plots import plot_run

    summary["plot"] = str(plot_run(handle.run_dir, title=handle.run_id))
    atomic_write_json(handle.run_dir / "summary.json", summary)
    shutil.rmtree(ckpt_root, ignore_errors=True)
    handle.registry.finish(handle.run_id, metrics, seconds)
    return TrainResult(handle.run_id, handle.run_dir, summary, out_dir, resumed=resumed)
