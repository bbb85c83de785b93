"""The audit suite: seed instructions played as multi-turn conversations (task.py), scored per
dimension offline (scoring.py) or by an LLM judge, with a scripted or LLM auditor (llm.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from teachwhy import models
from teachwhy.errors import UserError
from teachwhy.evals import execute
from teachwhy.evals.config import EvalConfig
from teachwhy.evals.suites.agentic.suite import HONEYPOT_ONLY, refuse


class AuditSuite:
    name = "audit"
    unit = "transcripts"

    def check(self, cfg: EvalConfig) -> EvalConfig:
        if not cfg.offline and cfg.auditor is None and cfg.judge is None:
            raise UserError("the audit suite needs --offline (scripted auditor turns, choice probes and rule cues; "
                            "no API key) or an --auditor and/or --judge model (Inspect ids or local models)")
        if cfg.offline and (cfg.auditor or cfg.judge):
            raise UserError("--offline runs without auditor or judge models: drop --offline to use "
                            "--auditor/--judge, or drop them")
        refuse(cfg, ("constitution", "principles"), "applies to --suite adherence")
        refuse(cfg, HONEYPOT_ONLY, "selects honeypot scenarios; the audit suite selects seed instructions with "
               "--seeds FILE and --seed-ids")
        if cfg.formats is not None:
            raise UserError("--format applies to choice-mode honeypot and adherence runs; the audit suite's probes "
                            "have a format of their own")
        if cfg.wording != "house":
            raise UserError("--wording picks the honeypot candidates' wording bank; it applies to --suite agentic")
        return cfg.model_copy(update={"mode": "offline" if cfg.offline else "llm"})

    def items(self, cfg: EvalConfig, state: dict[str, Any]) -> list[Any]:
        from teachwhy.evals.suites.audit.seeds import load_seeds

        return load_seeds(cfg.seed_files, cfg.seed_ids, cfg.limit)

    def config(self, cfg: EvalConfig, state: dict[str, Any]) -> dict[str, Any]:
        out = {"samples": cfg.samples, "max_tokens": cfg.max_tokens, "seed": cfg.seed,
               "dtype": models.resolve_dtype(cfg.dtype),
               "seed_files": [str(Path(f).resolve()) for f in cfg.seed_files or []], "seed_ids": cfg.seed_ids}
        if not cfg.offline:  # recorded only for the LLM path, so offline run ids stay as they were
            out.update(auditor=cfg.auditor, judge=cfg.judge, max_turns=cfg.max_turns if cfg.auditor else None)
        return out

    def run(self, ctx: Any, items: list[Any]) -> None:
        from teachwhy.evals.suites.audit.task import audit_record, audit_task

        cfg = ctx.cfg
        auditor, judge = execute.role_id(cfg.auditor), execute.role_id(cfg.judge)
        probe = cfg.model if ctx.ref.is_local else None
        run = execute.run_task(execute.generate_id(ctx), ctx.run_dir, lambda todo, meta: audit_task(
            todo, samples=cfg.samples, max_tokens=cfg.max_tokens, probe_model=probe, dtype=ctx.config["dtype"],
            metadata=meta, auditor=auditor, judge=judge, max_turns=cfg.max_turns), audit_record, judge, cfg.seed)
        execute.resumable(execute.generate_id(ctx), items, cfg.samples, ctx.log, ctx.progress, run)

    def summarise(self, ctx: Any, items: list[Any], records: list[dict], meta: dict) -> dict:
        from teachwhy.evals.suites.audit.scoring import aggregate

        cfg = ctx.cfg
        how = ("offline scorer" if cfg.offline
               else f"auditor {cfg.auditor or 'scripted'}, scorer {cfg.judge or 'offline'}")
        return {"run_id": ctx.run_id, "model": cfg.model, "suite": self.name, "mode": cfg.mode, "split": None,
                "n_scenarios": len(items), "samples_per_scenario": cfg.samples,
                "metric": "audit dimension scores, 1 (no sign) to 10 (clear and repeated); " + how,
                "overall": {"n": len(records), "seeds": len(items)}, **aggregate(records),
                "model_fingerprint": ctx.config["model_fingerprint"], "resumed_records": meta["resumed_records"],
                "seconds": meta["seconds"]}

    # what `teachwhy compare` says of two audit runs (evals/compare.py checks it before any suite's compare)
    not_comparable = ("compare works on choice-mode runs (per-scenario P(harmful)); audit runs are compared per "
                      "dimension in an experiment's analysis (an experiment with an audit eval: `teachwhy "
                      "experiment run`)")

    def compare(self, a: dict, b: dict, out: dict, effect: Any) -> dict:
        raise UserError(self.not_comparable)  # not reached through compare_runs, which refuses first


SUITE = AuditSuite()
