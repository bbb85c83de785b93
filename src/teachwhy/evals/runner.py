"""Run an eval suite (evals/suites/), resumably, and summarise it with CIs.

    runs/<run-id>/config.json      what was asked (the run id is a hash of it, so a rerun resumes)
    runs/<run-id>/samples.jsonl    one finished record per line, fsynced as it is written
    runs/<run-id>/summary.json     written atomically once every sample is done
    runs/<run-id>/inspect-logs/    Inspect .eval logs (generate mode)
    runs/registry.sqlite           the run registry
    runs/cache/neutral.sqlite      choice mode's neutral-context sums, reused across runs of a model

Every option is an `EvalConfig` field (evals/config.py); `run_eval` drives any registered suite the
same way, and checks everything it can before the run directory exists.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teachwhy import models
from teachwhy.errors import UserError
from teachwhy.evals import backends, execute, suites
from teachwhy.evals.config import EvalConfig
from teachwhy.evals.execute import parse_formats
from teachwhy.evals.suites import Progress, RunContext
from teachwhy.results import EvalSummary, of
from teachwhy.scenarios.selection import load_selection
from teachwhy.store import JsonlLog, Registry, atomic_write_json, content_hash, ensure_writable_dir, run_dir_lock

__all__ = ["EvalConfig", "EvalResult", "load_selection", "parse_formats", "run_eval"]


@dataclass
class EvalResult:
    run_id: str
    run_dir: Path
    summary: dict
    resumed: int  # records found from an earlier, interrupted run

    @property
    def typed(self) -> EvalSummary:
        """The summary as its typed model (results.py): a choice or generate run's."""
        summary = of(self.summary)
        if not isinstance(summary, EvalSummary):
            raise TypeError(f"{self.run_id} is an audit run: read results.of(summary) as an AuditSummary")
        return summary


def _slug(spec: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", Path(spec).name if Path(spec).is_dir() else spec).strip("-")
    return (s or "model")[:40]


def run_eval(config: EvalConfig | str | None = None, *, progress: Progress | None = None,
             **options: Any) -> EvalResult:
    """Run one eval: `config` (an EvalConfig, or a model name) with `options` (EvalConfig fields) over
    it; `progress(done, total)` as records are kept. A rerun of the same config resumes."""
    cfg = EvalConfig.build(config, **options)
    suite = suites.get(cfg.suite)
    cfg = suite.check(cfg)
    ref = check_model(cfg)  # everything about the models, before anything is written
    state: dict[str, Any] = {}
    items = suite.items(cfg, state)
    if cfg.system_prefix:  # a prompting arm: text put before every item's system prompt
        items = [execute.prefixed(it, cfg.system_prefix) for it in items]
    state["items"] = items
    root = ensure_writable_dir(Path(cfg.out))
    registry = Registry(root / "registry.sqlite")  # a corrupt registry fails before the run directory
    recorded = {**run_config(cfg, ref, items), **suite.config(cfg, state)}
    run_id = f"{cfg.suite}-{cfg.mode}-{_slug(cfg.model)}-{content_hash(recorded)[:10]}"
    run_dir = ensure_writable_dir(root / run_id)
    with run_dir_lock(run_dir):
        atomic_write_json(run_dir / "config.json", recorded)
        registry.start(run_id, f"eval/{cfg.suite}/{cfg.mode}", cfg.model, recorded, run_dir)
        with registry.failure_recorded(run_id):
            t0 = time.time()
            with JsonlLog(run_dir / "samples.jsonl") as log:
                resumed = len(log.records)
                ctx = RunContext(cfg, ref, root, run_dir, run_id, recorded, log, progress, state)
                suite.run(ctx, items)
                records = list(log.records)
            meta = summary_meta(ctx, items, resumed, round(time.time() - t0, 2))
            summary = suite.summarise(ctx, items, records, meta)
            atomic_write_json(run_dir / "summary.json", summary)
            registry.finish(run_id, {"overall": summary["overall"]}, time.time() - t0)
    return EvalResult(run_id, run_dir, summary, resumed)


def check_model(cfg: EvalConfig) -> models.ModelRef:
    """Resolve the model (and judge, auditor) and check that it can run here: the backend, its cache,
    and an adapter's base (its recorded architecture, else the shapes of its weights). One UserError
    line, and nothing written, when not."""
    ref = models.resolve(cfg.model)
    if cfg.mode == "choice" and not ref.is_local:
        raise UserError(f"choice mode needs log-probs from a local model; '{cfg.model}' is an Inspect model "
                        "id: use --mode generate, or pass a local model")
    backends.check_backend_for(ref, cfg.backend)  # e.g. vllm not installed here
    check_decode(cfg, ref)
    for other in (cfg.judge, cfg.auditor):
        if other is not None:
            models.resolve(other)  # fails early with a clear line for an unknown model
    if ref.kind == "peft":
        assert ref.path is not None and ref.base is not None  # resolve() sets both for an adapter
        models.model_dir(ref.base)
        models.check_adapter_base(ref.path, ref.base)
    elif ref.is_local:
        models.model_dir(ref)
    return ref


def check_decode(cfg: EvalConfig, ref: models.ModelRef) -> None:
    """--decode is one of the local engine's decodes, and given only where that engine generates."""
    from teachwhy.inspect_local import DECODES

    if cfg.decode not in DECODES:
        raise UserError(f"unknown --decode '{cfg.decode}': use one of {', '.join(DECODES)}")
    where = cfg.suite == "agentic" and cfg.mode == "generate" and ref.is_local and cfg.backend == "hf"
    if cfg.decode != DECODES[0] and not where:
        raise UserError(f"--decode {cfg.decode} applies to the agentic suite's generate mode with a local model on "
                        f"the hf backend (here: suite {cfg.suite}, mode {cfg.mode}, model '{cfg.model}', backend "
                        f"{cfg.backend}): drop --decode")


def run_config(cfg: EvalConfig, ref: models.ModelRef, items: list[Any]) -> dict[str, Any]:
    """What every suite's run config holds (the suite adds its own part)."""
    config: dict[str, Any] = {
        "suite": cfg.suite, "mode": cfg.mode, "model": cfg.model, "model_kind": ref.kind,
        "model_fingerprint": models.fingerprint(ref),
        "scenarios": content_hash([execute.dump(s) for s in items]),
        "n_scenarios": len(items), "split": cfg.split, "family": cfg.family, "limit": cfg.limit,
        "families": sorted(cfg.families) if cfg.families else None,
        "scenario_files": [str(Path(f).resolve()) for f in cfg.scenario_files or []],
    }
    if cfg.system_prefix:
        config["system_prefix"] = cfg.system_prefix
    if ref.is_local and cfg.backend != "hf":
        # recorded only when it is not the default, so the ids of existing runs (and their resume) hold
        config["backend"] = cfg.backend
    if cfg.decode != "exact":  # likewise; another decode may give other tokens, so it is another run
        config["decode"] = cfg.decode
    return config


def summary_meta(ctx: RunContext, items: list[Any], resumed: int, seconds: float) -> dict[str, Any]:
    """The keys every choice/generate summary starts with (a suite fills in its own: wording, trained
    families, the constitution)."""
    cfg, ref = ctx.cfg, ctx.ref
    return {
        "run_id": ctx.run_id, "model": cfg.model, "suite": cfg.suite, "mode": cfg.mode, "split": cfg.split,
        "family": cfg.family, "families": ctx.config["families"], "n_scenarios": len(items), "wording": None,
        "samples_per_scenario": cfg.samples if cfg.mode == "generate" else 1,
        "formats": ctx.config.get("formats") if cfg.mode == "choice" else None,
        "model_fingerprint": ctx.config["model_fingerprint"], "trained_families": None,
        "base_fingerprint": models.fingerprint(ref.base) if ref.base is not None else None,
        "resumed_records": resumed, "seconds": seconds,
    }
