"""The adherence suite: items written from a constitution (items.py), scored in choice mode like the
honeypots, or in generate mode with a rubric judge (task.py)."""

from __future__ import annotations

from typing import Any

from teachwhy.errors import UserError
from teachwhy.evals import execute
from teachwhy.evals.config import EvalConfig
from teachwhy.evals.suites.agentic.suite import (
    AUDIT_ONLY,
    HONEYPOT_ONLY,
    check_mode,
    choice_summary,
    mode_config,
    refuse,
    refuse_turns,
)


def adherence_record(item: Any, fmt: str, blocks: dict) -> dict:
    """One choice-mode record of an adherence item (items.py)."""
    return {**item.record_fields(), "format": fmt, **blocks}


class AdherenceSuite:
    name = "adherence"
    unit = "items"

    def check(self, cfg: EvalConfig) -> EvalConfig:
        if cfg.mode == "generate" and cfg.judge is None:
            raise UserError("the adherence suite's generate mode scores free replies with a rubric judge: add "
                            "--judge MODEL (an Inspect id or a local model), or use --mode choice")
        refuse(cfg, HONEYPOT_ONLY, "selects honeypot scenarios; the adherence suite selects items with "
               "--principles and --constitution")
        if cfg.wording != "house":
            raise UserError("--wording picks the honeypot candidates' wording bank; it applies to --suite agentic")
        refuse(cfg, AUDIT_ONLY, "applies to --suite audit")
        refuse_turns(cfg)
        check_mode(cfg)
        return cfg

    def items(self, cfg: EvalConfig, state: dict[str, Any]) -> list[Any]:
        from teachwhy.constitution.loader import load_constitution
        from teachwhy.evals.suites.adherence.items import build_items

        state["constitution"] = const = load_constitution(cfg.constitution)
        return build_items(const, cfg.split, cfg.principles, cfg.limit)

    def config(self, cfg: EvalConfig, state: dict[str, Any]) -> dict[str, Any]:
        const = state["constitution"]
        return {"constitution": const.source, "constitution_hash": const.content_hash,
                "principles": sorted(cfg.principles) if cfg.principles else None, **mode_config(cfg)}

    def run(self, ctx: Any, items: list[Any]) -> None:
        if ctx.cfg.mode == "choice":
            execute.choice_in_context(ctx, items, adherence_record)
            return
        from teachwhy.evals.suites.adherence.task import adherence_generate_record, adherence_task

        cfg, const, judge = ctx.cfg, ctx.state["constitution"], execute.role_id(ctx.cfg.judge)
        assert judge is not None  # check() asks for one
        run = execute.run_task(execute.generate_id(ctx), ctx.run_dir, lambda todo, meta: adherence_task(
            todo, const, judge, samples=cfg.samples, max_tokens=cfg.max_tokens, metadata=meta),
            adherence_generate_record, judge, cfg.seed)
        execute.resumable(execute.generate_id(ctx), items, cfg.samples, ctx.log, ctx.progress, run)

    def summarise(self, ctx: Any, items: list[Any], records: list[dict], meta: dict) -> dict:
        const, chosen = ctx.state["constitution"], ctx.cfg.principles
        meta.update(constitution=const.source,
                    principles=[p.id for p in const.principles if not chosen or p.id in chosen])
        return choice_summary(ctx, records, meta)

    def compare(self, a: dict, b: dict, out: dict, effect: Any) -> dict:
        """Families are principles here: which ones B moved most, and which way."""
        from teachwhy.evals.compare import moved_most

        out["moved_most"] = moved_most(out["by_family"])
        return out


SUITE = AdherenceSuite()
