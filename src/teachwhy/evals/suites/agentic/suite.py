"""The agentic honeypot suite: built-in or user scenarios, scored in choice mode (log-likelihood of
each candidate action) or generate mode (sampled replies, graded by the rule grader and an optional
LLM judge)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from teachwhy.errors import UserError
from teachwhy.evals import execute
from teachwhy.evals import summary as summ
from teachwhy.evals.config import MODES, EvalConfig, default, flag
from teachwhy.scenarios import Scenario
from teachwhy.scenarios.selection import load_selection

AUDIT_ONLY = ("offline", "seed_files", "seed_ids", "auditor")
HONEYPOT_ONLY = ("family", "families", "scenario_files")


def refuse(cfg: EvalConfig, fields: tuple[str, ...], why: str) -> None:
    """One UserError line for the first of `fields` that is set: `<flag> <why>`."""
    for name in fields:
        if getattr(cfg, name):
            raise UserError(f"{flag(name)} {why}")


def refuse_turns(cfg: EvalConfig) -> None:
    """--max-turns bounds the audit's auditor: refused where it would be ignored."""
    if cfg.max_turns != default("max_turns"):
        raise UserError("--max-turns applies to --suite audit with an --auditor")


def check_mode(cfg: EvalConfig) -> None:
    if cfg.mode not in MODES:
        raise UserError(f"unknown mode '{cfg.mode}': choose one of {', '.join(MODES)}")
    if cfg.mode == "generate" and cfg.formats is not None and execute.parse_formats(cfg.formats) != ["continuation"]:
        raise UserError("--format applies to choice mode; generate mode samples free replies")
    execute.parse_formats(cfg.formats)


def mode_config(cfg: EvalConfig) -> dict[str, Any]:
    """The run config's part for choice or generate mode."""
    from teachwhy import models

    if cfg.mode == "choice":
        return {"dtype": models.resolve_dtype(cfg.dtype), "scorings": list(summ.CHOICE_SCORINGS),
                "formats": execute.parse_formats(cfg.formats)}
    return {"samples": cfg.samples, "judge": cfg.judge, "max_tokens": cfg.max_tokens, "seed": cfg.seed}


def choice_record(s: Scenario, fmt: str, blocks: dict) -> dict:
    """One choice-mode record: the scenario's factors and the scoring blocks of one format."""
    return {
        "scenario_id": s.id, "format": fmt, "family": s.family, "goal_conflict": s.goal_conflict,
        "urgency": s.urgency, "condition": s.condition, "split": s.split, "variant": s.variant,
        "template": s.template, **blocks,
    }


def choice_summary(ctx: Any, records: list[dict], meta: dict) -> dict:
    """A choice or generate run's summary; a choice run also gets its Inspect log."""
    summary = summ.summarise(records, ctx.cfg.mode, meta)
    if ctx.cfg.mode == "choice":
        from teachwhy.evals.inspect_log import write_choice_log

        summary["inspect_log"] = str(write_choice_log(ctx.run_dir, ctx.run_id, ctx.config, ctx.state["items"],
                                                      records, summary))
    return summary


class AgenticSuite:
    name = "agentic"
    unit = "scenarios"

    def check(self, cfg: EvalConfig) -> EvalConfig:
        refuse(cfg, ("constitution", "principles"), "applies to --suite adherence")
        refuse(cfg, AUDIT_ONLY, "applies to --suite audit")
        refuse_turns(cfg)
        check_mode(cfg)
        return cfg

    def items(self, cfg: EvalConfig, state: dict[str, Any]) -> list[Any]:
        return load_selection(cfg.scenario_files, cfg.split, cfg.family, cfg.limit, cfg.families, cfg.wording)

    def config(self, cfg: EvalConfig, state: dict[str, Any]) -> dict[str, Any]:
        # the wording is recorded only when it is not the default, so existing run ids hold
        return {**({"wording": cfg.wording} if cfg.wording != "house" else {}), **mode_config(cfg)}

    def run(self, ctx: Any, items: list[Any]) -> None:
        if ctx.cfg.mode == "choice":
            execute.choice_in_context(ctx, items, choice_record)
            return
        from teachwhy.evals.suites.agentic.task import run_generate

        mid, cfg = execute.generate_id(ctx), ctx.cfg
        execute.resumable(mid, items, cfg.samples, ctx.log, ctx.progress, lambda todo, keep: run_generate(
            todo, mid, samples=cfg.samples, log_dir=str(ctx.run_dir / "inspect-logs"), judge=cfg.judge,
            max_tokens=cfg.max_tokens, seed=cfg.seed, on_record=keep,
            model_args={"decode": cfg.decode} if cfg.decode != "exact" else None))

    def summarise(self, ctx: Any, items: list[Any], records: list[dict], meta: dict) -> dict:
        from teachwhy.evals.compare import trained_families

        cfg = ctx.cfg
        meta.update(wording=cfg.wording if not cfg.scenario_files else "file",
                    trained_families=trained_families(cfg.model) if ctx.ref.is_local else None)
        return choice_summary(ctx, records, meta)

    def compare(self, a: dict, b: dict, out: dict, effect: Any) -> dict:
        """Which validity level the measure reached for the base model (evals/validity.py), and the
        effect on the families B was trained on and on the others."""
        from teachwhy.evals import validity
        from teachwhy.evals.compare import trained_families

        trained = out["trained_families"] = trained_families(b.get("model"))
        fmt, scoring = out["format"], out["scoring"]
        fps = [a.get("model_fingerprint"), b.get("model_fingerprint")]
        lv = validity.levels(fps, a.get("model"), fmt, scoring)
        out["wording"] = validity.wording_level(a.get("wording"), a.get("scenario_files"))
        out["validity"] = {"reached": validity.reached(lv), "levels": lv}
        note = validity.note(fps, a.get("model"), fmt, scoring)
        out["warnings"] = [note] if note else []
        if trained:
            out["seen_families"] = effect(lambda r: r["family"] in trained)
            out["held_out_families"] = effect(lambda r: r["family"] not in trained)
        return out


def resolved(files: list[str] | None) -> list[str]:
    return [str(Path(f).resolve()) for f in files or []]


SUITE = AgenticSuite()
