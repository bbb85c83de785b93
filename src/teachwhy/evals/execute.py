"""The engines every suite runs its items with: choice scoring through a backend into the run's
samples.jsonl, and Inspect tasks whose samples are kept as they end (a killed run resumes from the
records already there)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from teachwhy import models, threads
from teachwhy.errors import UserError
from teachwhy.evals import backends
from teachwhy.memory import release_memory
from teachwhy.store import JsonlLog

if TYPE_CHECKING:
    from teachwhy.evals.neutral_cache import NeutralCache
    from teachwhy.evals.suites import RunContext

Progress = Callable[[int, int], None]  # (done, total)


def prefixed(item: Any, prefix: str) -> Any:
    """A scenario, adherence item or audit seed with text put before its system prompt."""
    field = "system_prompt" if hasattr(item, "system_prompt") else "system"
    text = prefix.rstrip() + "\n\n" + getattr(item, field)
    if hasattr(item, "model_copy"):
        return item.model_copy(update={field: text})
    return dataclasses.replace(item, **{field: text})


def dump(item: Any) -> Any:
    if hasattr(item, "model_dump"):  # scenarios and audit seeds (pydantic)
        return item.model_dump()
    return dataclasses.asdict(item)


def run_choice(model: str, dtype: str, scenarios: list[Any], formats: list[str], log: JsonlLog,
               progress: Progress | None, record: Callable[[Any, str, dict], dict], backend_kind: str = "hf",
               cache: NeutralCache | None = None) -> None:
    """Score each (item, format) not in the log yet through the choice backend; `record` makes its record."""
    from teachwhy.evals.choice import score_scenario

    done = {(r["scenario_id"], r.get("format", "continuation")) for r in log.records}
    todo = [(s, f) for s in scenarios for f in formats if (s.id, f) not in done]
    total = len(scenarios) * len(formats)
    if progress:
        progress(total - len(todo), total)
    if not todo:
        return
    loaded = None  # the backend loads the model itself (evals/backends.py)
    backend = backends.open_choice_backend(model, dtype, backend_kind)
    if cache is not None and hasattr(backend, "neutral_cache"):
        backend.neutral_cache = cache
    recheck = threads.Recheck()  # another torch process got busy, or left: adjust torch's threads
    try:
        for s, f in todo:
            recheck()
            log.append(record(s, f, score_scenario(backend, s, f)))
            if progress:
                progress(len(log.records), total)
    finally:
        del backend, loaded
        if cache is not None:
            cache.close()
        release_memory()  # a long-lived process (runner, notebook) gets the model's memory back


def resumable(model_id: str, items: list[Any], samples: int, log: JsonlLog, progress: Progress | None,
               run: Callable[[list[Any], Callable[[dict], None]], object]) -> None:
    """The Inspect paths' resume: `run(todo, keep)` runs the items not finished yet as one Inspect eval
    (one log), calling `keep` with each record as its sample ends; records are appended to
    samples.jsonl once each, so progress moves per sample and a killed run resumes from there."""
    done = {(r["scenario_id"], r["sample_index"]) for r in log.records}
    todo = [s for s in items if any((s.id, i) not in done for i in range(samples))]
    total = len(items) * samples
    if progress:
        progress(len(done), total)
    if not todo:
        return

    def keep(rec: dict) -> None:
        key = (rec["scenario_id"], rec["sample_index"])
        if key not in done:
            log.append(rec)
            done.add(key)
            if progress:
                progress(len(done), total)

    try:
        run(todo, keep)
    finally:
        if model_id.startswith("teachwhy/"):  # a local model served to Inspect: free it
            from teachwhy.inspect_local import close_engines

            close_engines()
            release_memory()


def run_task(model_id: str, run_dir: Path, make: Callable[[list[Any], dict], Any],
              to_record: Callable[[Any, str], dict], judge: str | None, seed: int
              ) -> Callable[[list[Any], Callable[[dict], None]], None]:
    """A `run` for resumable: the task `make(todo, metadata)` through the agentic suite's run_task."""
    import uuid

    from teachwhy.evals.suites.agentic.task import SINK_KEY, run_task

    def run(todo: list[Any], keep: Callable[[dict], None]) -> None:
        token = uuid.uuid4().hex
        run_task(make(todo, {SINK_KEY: token}), token, model_id, str(run_dir / "inspect-logs"), to_record,
                 judge=judge, seed=seed, on_record=keep)

    return run


def choice_in_context(ctx: RunContext, items: list[Any], record: Callable[[Any, str, dict], dict]) -> None:
    """Choice mode for a suite: every (item, format) through the run's backend, with the neutral cache
    of <out>/cache/neutral.sqlite unless the config turned it off."""
    cache = None
    if ctx.cfg.neutral_cache:
        from teachwhy.evals.neutral_cache import NeutralCache, namespace

        cache = NeutralCache(ctx.root / "cache" / "neutral.sqlite",
                             namespace(ctx.config["model_fingerprint"], ctx.config["dtype"], ctx.cfg.backend))
    run_choice(ctx.cfg.model, ctx.config["dtype"], items, parse_formats(ctx.cfg.formats), ctx.log, ctx.progress,
               record, backend_kind=ctx.cfg.backend, cache=cache)


def generate_id(ctx: RunContext) -> str:
    """The Inspect model id of the run's model: teachwhy/<spec>, vllm/<dir> or the Inspect id given."""
    return backends.generate_model_id(ctx.ref, ctx.cfg.backend)


def role_id(spec: str | None) -> str | None:
    """The Inspect model id of an auditor or judge model (local models served through teachwhy/)."""
    return backends.generate_model_id(models.resolve(spec), "hf") if spec else None


def parse_formats(formats: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """'continuation', 'options', or several (a list, or one comma-separated string); the first leads
    the summary."""
    from teachwhy.evals.choice import FORMATS
    from teachwhy.evals.config import names

    try:
        out = list(dict.fromkeys(names(formats) or [])) if formats is not None else ["continuation"]
    except ValueError:
        raise UserError(f"--format needs at least one of {', '.join(FORMATS)}") from None
    bad = [f for f in out if f not in FORMATS]
    if bad:
        raise UserError(f"unknown format '{bad[0]}': choose from {', '.join(FORMATS)} (several: comma-separated)")
    return out
