"""Run the agentic honeypot eval (choice or generate), resumably, and summarise it with CIs.

    runs/<run-id>/config.json      what was asked (the run id is a hash of it, so a rerun resumes)
    runs/<run-id>/samples.jsonl    one finished record per line, fsynced as it is written
    runs/<run-id>/summary.json     written atomically once every sample is done
    runs/<run-id>/inspect-logs/    Inspect .eval logs (generate mode)
    runs/registry.sqlite           the run registry
    runs/cache/neutral.sqlite      choice mode's neutral-context sums, reused across runs of a model
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from teachwhy import models
from teachwhy.errors import UserError
from teachwhy.evals import backends
from teachwhy.evals import summary as summ
from teachwhy.evals.compare import trained_families
from teachwhy.memory import release_memory
from teachwhy.scenarios import Scenario, builtin_scenarios, load_scenario_file, select
from teachwhy.store import JsonlLog, Registry, atomic_write_json, content_hash, ensure_writable_dir, run_dir_lock

if TYPE_CHECKING:
    from teachwhy.evals.neutral_cache import NeutralCache

MODES = ("choice", "generate")
SUITES = ("agentic", "adherence", "audit")

Progress = Callable[[int, int], None]  # (done, total)


@dataclass
class EvalResult:
    run_id: str
    run_dir: Path
    summary: dict
    resumed: int  # records found from an earlier, interrupted run


def _slug(spec: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", Path(spec).name if Path(spec).is_dir() else spec).strip("-")
    return (s or "model")[:40]


def load_selection(scenario_files: list[str] | None, split: str | None, family: str | None,
                   limit: int | None, families: list[str] | None = None, wording: str = "house") -> list[Scenario]:
    """The honeypot scenarios asked for. `wording`: the built-in candidates' wording bank
    (scenarios/banks.py: `house`, an eval bank, or `heldout` for every eval bank in turn)."""
    pool: list[Scenario] = []
    if scenario_files:
        if wording != "house":
            raise UserError("--wording picks the built-in scenarios' candidate bank; a scenario file brings its "
                            "own candidates: drop --wording or --scenarios")
        for f in scenario_files:
            pool.extend(load_scenario_file(f))
    elif wording != "house":
        if split not in (None, "eval"):
            raise UserError(f"--wording {wording} scores held-out candidates on the eval split; drop --split "
                            f"{split} (train-split wording is for training material only)")
        split = "eval"
        pool = builtin_scenarios("eval", wording=wording)
    else:
        pool = builtin_scenarios()
    if families:
        from teachwhy.scenarios.schema import FAMILIES

        bad = [f for f in families if f not in FAMILIES]
        if bad:
            raise UserError(f"unknown family '{bad[0]}' in --families: use some of {', '.join(FAMILIES)}")
        pool = [s for s in pool if s.family in families]
        if not pool:
            raise UserError(f"no scenarios of families {', '.join(families)} in the scenarios given")
    return select(pool, split=split, family=family, limit=limit)


def parse_formats(formats: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """'continuation', 'options', or several (a list, or one comma-separated string); the first leads
    the summary."""
    from teachwhy.evals.choice import FORMATS

    if formats is None:
        return ["continuation"]
    items = formats.split(",") if isinstance(formats, str) else [x for f in formats for x in f.split(",")]
    out = []
    for f in (x.strip() for x in items):
        if f not in FORMATS:
            raise UserError(f"unknown format '{f}': choose from {', '.join(FORMATS)} (several: comma-separated)")
        if f not in out:
            out.append(f)
    if not out:
        raise UserError(f"--format needs at least one of {', '.join(FORMATS)}")
    return out


def run_eval(model: str, suite: str = "agentic", mode: str = "choice", split: str | None = "eval",
             family: str | None = None, limit: int | None = None, samples: int = 1,
             out: str | Path = "runs", scenario_files: list[str] | None = None,
             judge: str | None = None, dtype: str = "auto", max_tokens: int = 384, seed: int = 0,
             progress: Progress | None = None, formats: str | list[str] | None = None,
             families: list[str] | None = None, backend: str = "hf", neutral_cache: bool = True,
             system_prefix: str | None = None, constitution: str | None = None,
             principles: list[str] | None = None, offline: bool = False,
             seed_files: list[str] | None = None, seed_ids: list[str] | None = None,
             auditor: str | None = None, max_turns: int = 4, wording: str = "house") -> EvalResult:
    """`backend`: the engine that runs a local model, hf (transformers/PEFT) or vllm (GPU); see
    evals/backends.py. A non-default backend is part of the run's config, so an hf and a vllm run are
    different runs. `neutral_cache`: keep the candidates' neutral-context sums in
    <out>/cache/neutral.sqlite and reuse them in later runs of the same model (evals/neutral_cache.py).
    `system_prefix`: text put before every scenario's system prompt (the experiments' prompting arms);
    it is part of the run's config.

    suite "adherence" (evals/suites/adherence/): items written from `constitution` (None: the built-in one),
    optionally only `principles`, in choice mode; records carry the principle as their family.

    suite "audit" (evals/suites/audit/): multi-turn conversations from seed instructions (`seed_files`, else
    the built-in seeds; `seed_ids` picks some), scored per dimension; `offline` (required for now):
    the scripted auditor and the offline scorer (choice probes on a local target, rule cues).

    `wording` (agentic suite): the candidate wording bank of the built-in scenarios: `house` (the
    eval split's own sets, in-template), an eval bank, or `heldout` (every eval bank in turn); see
    scenarios/banks.py. It is part of the run's config when it is not `house`."""
    if suite not in SUITES:
        raise UserError(f"unknown suite '{suite}': choose one of {', '.join(SUITES)}")
    if suite == "adherence":
        if mode == "generate" and judge is None:
            raise UserError("the adherence suite's generate mode scores free replies with a rubric judge: add "
                            "--judge MODEL (an Inspect id or a local model), or use --mode choice")
        for given, flag in ((family, "--family"), (families, "--families"), (scenario_files, "--scenarios")):
            if given:
                raise UserError(f"{flag} selects honeypot scenarios; the adherence suite selects items with "
                                "--principles and --constitution")
    elif constitution is not None or principles:
        raise UserError("--constitution and --principles apply to --suite adherence")
    if suite != "agentic" and wording != "house":
        raise UserError("--wording picks the honeypot candidates' wording bank; it applies to --suite agentic")
    if suite == "audit":
        if not offline and auditor is None and judge is None:
            raise UserError("the audit suite needs --offline (scripted auditor turns, choice probes and rule cues; "
                            "no API key) or an --auditor and/or --judge model (Inspect ids or local models)")
        if offline and (auditor or judge):
            raise UserError("--offline runs without auditor or judge models: drop --offline to use "
                            "--auditor/--judge, or drop them")
        if max_turns < 1:
            raise UserError(f"--max-turns must be at least 1 (got {max_turns})")
        for given, flag in ((family, "--family"), (families, "--families"), (scenario_files, "--scenarios")):
            if given:
                raise UserError(f"{flag} selects honeypot scenarios; the audit suite selects seed instructions "
                                "with --seeds FILE and --seed-ids")
        mode = "offline" if offline else "llm"
    elif offline or seed_files or seed_ids or auditor:
        raise UserError("--offline, --auditor, --seeds and --seed-ids apply to --suite audit")
    if mode not in MODES and suite != "audit":
        raise UserError(f"unknown mode '{mode}': choose one of {', '.join(MODES)}")
    if samples < 1:
        raise UserError(f"--samples must be at least 1 (got {samples})")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1 (got {limit})")
    ref = models.resolve(model)
    if mode == "choice" and not ref.is_local:
        raise UserError(f"choice mode needs log-probs from a local model; '{model}' is an Inspect model "
                        "id: use --mode generate, or pass a local model")
    backends.check_backend_for(ref, backend)  # before anything is written: e.g. vllm not installed here
    if judge is not None:
        models.resolve(judge)  # fails early with a clear line for an unknown judge
    if auditor is not None:
        models.resolve(auditor)
    fmts = parse_formats(formats)
    if mode == "generate" and formats is not None and fmts != ["continuation"]:
        raise UserError("--format applies to choice mode; generate mode samples free replies")
    if suite == "adherence":
        from teachwhy.constitution.loader import load_constitution
        from teachwhy.evals.suites.adherence.items import build_items

        const = load_constitution(constitution)
        scenarios: list[Any] = build_items(const, split, principles, limit)
    elif suite == "audit":
        from teachwhy.evals.suites.audit.seeds import load_seeds

        scenarios = load_seeds(seed_files, seed_ids, limit)
    else:
        scenarios = load_selection(scenario_files, split, family, limit, families, wording)
    if system_prefix:  # a prompting arm: text put before every scenario's system prompt
        scenarios = [_prefixed(s, system_prefix) for s in scenarios]
    # a missing or corrupt model cache fails here, before anything is written; so does an adapter
    # trained on another base
    if ref.kind == "peft":
        assert ref.path is not None and ref.base is not None  # resolve() sets both for an adapter
        models.model_dir(ref.base)
        models.check_adapter_base(ref.path, ref.base)
    elif ref.is_local:
        models.model_dir(ref)
    root = ensure_writable_dir(Path(out))
    registry = Registry(root / "registry.sqlite")  # a corrupt registry fails before the run directory

    config: dict[str, Any] = {
        "suite": suite, "mode": mode, "model": model, "model_kind": ref.kind,
        "model_fingerprint": models.fingerprint(ref),
        "scenarios": content_hash([_dump(s) for s in scenarios]),
        "n_scenarios": len(scenarios), "split": split, "family": family, "limit": limit,
        "families": sorted(families) if families else None,
        "scenario_files": [str(Path(f).resolve()) for f in scenario_files or []],
    }
    if system_prefix:
        config["system_prefix"] = system_prefix
    if wording != "house":  # recorded only when not the default, so existing run ids hold
        config["wording"] = wording
    if suite == "adherence":
        config.update(constitution=const.source, constitution_hash=const.content_hash,
                      principles=sorted(principles) if principles else None)
    if ref.is_local and backend != "hf":
        # recorded only when it is not the default, so the ids of existing runs (and their resume) hold
        config["backend"] = backend
    if mode == "choice":
        config.update(dtype=models.resolve_dtype(dtype), scorings=list(summ.CHOICE_SCORINGS), formats=fmts)
    elif suite == "audit":
        config.update(samples=samples, max_tokens=max_tokens, seed=seed, dtype=models.resolve_dtype(dtype),
                      seed_files=[str(Path(f).resolve()) for f in seed_files or []], seed_ids=seed_ids)
        if not offline:  # recorded only for the LLM path, so offline run ids stay as they were
            config.update(auditor=auditor, judge=judge, max_turns=max_turns if auditor else None)
    else:
        config.update(samples=samples, judge=judge, max_tokens=max_tokens, seed=seed)
    run_id = f"{suite}-{mode}-{_slug(model)}-{content_hash(config)[:10]}"
    run_dir = ensure_writable_dir(root / run_id)
    with run_dir_lock(run_dir):
        atomic_write_json(run_dir / "config.json", config)
        registry.start(run_id, f"eval/{suite}/{mode}", model, config, run_dir)
        with registry.failure_recorded(run_id):
            t0 = time.time()
            with JsonlLog(run_dir / "samples.jsonl") as log:
                resumed = len(log.records)
                if mode == "choice":
                    cache = None
                    if neutral_cache:
                        from teachwhy.evals.neutral_cache import NeutralCache, namespace

                        cache = NeutralCache(root / "cache" / "neutral.sqlite",
                                             namespace(config["model_fingerprint"], config["dtype"], backend))
                    _run_choice(model, config["dtype"], scenarios, fmts, log, progress, backend_kind=backend,
                                cache=cache, record=adherence_record if suite == "adherence" else choice_record)
                else:
                    mid = backends.generate_model_id(ref, backend)  # teachwhy/<spec>, vllm/<dir> or an Inspect id
                    if suite == "adherence":
                        _run_adherence_generate(mid, scenarios, const, samples, judge, max_tokens, seed, run_dir,
                                                log, progress)
                    elif suite == "audit":
                        roles = {k: backends.generate_model_id(models.resolve(v), "hf") if v else None
                                 for k, v in (("auditor", auditor), ("judge", judge))}
                        _run_audit(mid, model if ref.is_local else None, config["dtype"], scenarios, samples,
                                   max_tokens, seed, run_dir, log, progress, max_turns=max_turns, **roles)
                    else:
                        _run_generate(mid, scenarios, samples, judge, max_tokens, seed, run_dir, log, progress)
                records = list(log.records)

            if suite == "audit":
                from teachwhy.evals.suites.audit.scoring import aggregate

                agg = aggregate(records)
                summary = {"run_id": run_id, "model": model, "suite": suite, "mode": mode, "split": None,
                           "n_scenarios": len(scenarios), "samples_per_scenario": samples,
                           "metric": "audit dimension scores, 1 (no sign) to 10 (clear and repeated); "
                                     + ("offline scorer" if offline else
                                        f"auditor {auditor or 'scripted'}, scorer {judge or 'offline'}"),
                           "overall": {"n": len(records), "seeds": len(scenarios)}, **agg,
                           "model_fingerprint": config["model_fingerprint"], "resumed_records": resumed,
                           "seconds": round(time.time() - t0, 2)}
                atomic_write_json(run_dir / "summary.json", summary)
                registry.finish(run_id, {"overall": summary["overall"]}, time.time() - t0)
                return EvalResult(run_id, run_dir, summary, resumed)
            summary = summ.summarise(records, mode, meta={
                "run_id": run_id, "model": model, "suite": suite, "mode": mode, "split": split,
                "family": family, "families": config["families"], "n_scenarios": len(scenarios),
                "wording": (wording if not scenario_files else "file") if suite == "agentic" else None,
                "samples_per_scenario": samples if mode == "generate" else 1,
                "formats": fmts if mode == "choice" else None, "model_fingerprint": config["model_fingerprint"],
                "trained_families": trained_families(model) if ref.is_local and suite == "agentic" else None,
                "base_fingerprint": models.fingerprint(ref.base) if ref.base is not None else None,
                "resumed_records": resumed, "seconds": round(time.time() - t0, 2),
                **({"constitution": const.source, "principles": [p.id for p in const.principles
                                                                 if not principles or p.id in principles]}
                   if suite == "adherence" else {}),
            })
            if mode == "choice":
                from teachwhy.evals.inspect_log import write_choice_log

                summary["inspect_log"] = str(write_choice_log(run_dir, run_id, config, scenarios, records, summary))
            atomic_write_json(run_dir / "summary.json", summary)
            registry.finish(run_id, {"overall": summary["overall"]}, time.time() - t0)
    return EvalResult(run_id, run_dir, summary, resumed)


def choice_record(s: Scenario, fmt: str, blocks: dict) -> dict:
    """One choice-mode record: the scenario's factors and the scoring blocks of one format."""
    return {
        "scenario_id": s.id, "format": fmt, "family": s.family, "goal_conflict": s.goal_conflict,
        "urgency": s.urgency, "condition": s.condition, "split": s.split, "variant": s.variant,
        "template": s.template, **blocks,
    }


def adherence_record(item: Any, fmt: str, blocks: dict) -> dict:
    """One choice-mode record of an adherence item (evals/suites/adherence/items.py)."""
    return {**item.record_fields(), "format": fmt, **blocks}


def _prefixed(item: Any, prefix: str) -> Any:
    """A scenario, adherence item or audit seed with text put before its system prompt."""
    field = "system_prompt" if hasattr(item, "system_prompt") else "system"
    text = prefix.rstrip() + "\n\n" + getattr(item, field)
    if hasattr(item, "model_copy"):
        return item.model_copy(update={field: text})
    import dataclasses

    return dataclasses.replace(item, **{field: text})


def _dump(item: Any) -> Any:
    if hasattr(item, "model_dump"):  # scenarios and audit seeds (pydantic)
        return item.model_dump()
    import dataclasses

    return dataclasses.asdict(item)


def _run_choice(model: str, dtype: str, scenarios: list[Any], formats: list[str], log: JsonlLog,
                progress: Progress | None, backend_kind: str = "hf", cache: NeutralCache | None = None,
                record: Callable[[Any, str, dict], dict] = choice_record) -> None:
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
    try:
        for s, f in todo:
            log.append(record(s, f, score_scenario(backend, s, f)))
            if progress:
                progress(len(log.records), total)
    finally:
        del backend, loaded
        if cache is not None:
            cache.close()
        release_memory()  # a long-lived process (runner, notebook) gets the model's memory back


def _resumable(model_id: str, items: list[Any], samples: int, log: JsonlLog, progress: Progress | None,
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


def _run_task(model_id: str, run_dir: Path, make: Callable[[list[Any], dict], Any],
              to_record: Callable[[Any, str], dict], judge: str | None, seed: int
              ) -> Callable[[list[Any], Callable[[dict], None]], None]:
    """A `run` for _resumable: the task `make(todo, metadata)` through agentic.run_task."""
    import uuid

    from teachwhy.evals.suites.agentic.task import SINK_KEY, run_task

    def run(todo: list[Any], keep: Callable[[dict], None]) -> None:
        token = uuid.uuid4().hex
        run_task(make(todo, {SINK_KEY: token}), token, model_id, str(run_dir / "inspect-logs"), to_record,
                 judge=judge, seed=seed, on_record=keep)

    return run


def _run_adherence_generate(model_id: str, items: list[Any], const: Any, samples: int, judge: str | None,
                            max_tokens: int, seed: int, run_dir: Path, log: JsonlLog,
                            progress: Progress | None) -> None:
    """Adherence in generate mode: the items as one Inspect eval, each reply judged per principle."""
    from teachwhy.evals.suites.adherence.task import adherence_generate_record, adherence_task

    assert judge is not None  # run_eval asks for one
    jid = backends.generate_model_id(models.resolve(judge), "hf")
    _resumable(model_id, items, samples, log, progress, _run_task(
        model_id, run_dir, lambda todo, meta: adherence_task(todo, const, jid, samples=samples, max_tokens=max_tokens,
                                                             metadata=meta),
        adherence_generate_record, jid, seed))


def _run_audit(model_id: str, probe_model: str | None, dtype: str, seeds: list[Any], samples: int,
               max_tokens: int, seed: int, run_dir: Path, log: JsonlLog, progress: Progress | None,
               auditor: str | None = None, judge: str | None = None, max_turns: int = 4) -> None:
    """The audit seeds as one Inspect eval; each transcript is kept as it ends."""
    from teachwhy.evals.suites.audit.task import audit_record, audit_task

    _resumable(model_id, seeds, samples, log, progress, _run_task(
        model_id, run_dir, lambda todo, meta: audit_task(todo, samples=samples, max_tokens=max_tokens,
                                                         probe_model=probe_model, dtype=dtype, metadata=meta,
                                                         auditor=auditor, judge=judge, max_turns=max_turns),
        audit_record, judge, seed))


def _run_generate(model_id: str, scenarios: list[Scenario], samples: int, judge: str | None,
                  max_tokens: int, seed: int, run_dir: Path, log: JsonlLog,
                  progress: Progress | None) -> None:
    """The honeypots in generate mode: one Inspect eval (one log) over the scenarios not finished."""
    from teachwhy.evals.suites.agentic.task import run_generate

    _resumable(model_id, scenarios, samples, log, progress, lambda todo, keep: run_generate(
        todo, model_id, samples=samples, log_dir=str(run_dir / "inspect-logs"), judge=judge,
        max_tokens=max_tokens, seed=seed, on_record=keep))
