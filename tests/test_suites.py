"""The suite registry: the built-in suites implement the Suite protocol, a user's own suite runs
through run_eval (with the run store's resume) once registered, and a wrong name or a non-suite is
one clear error."""

from __future__ import annotations

import pytest

from teachwhy.errors import UserError
from teachwhy.evals import suites
from teachwhy.evals.config import EvalConfig
from teachwhy.evals.runner import run_eval
from teachwhy.scenarios.selection import load_selection


class PromptLengths:
    """A suite from a user's package: the length in words of each honeypot's system prompt (it needs
    no model output, so any model id runs it)."""

    name = "prompt-lengths"
    unit = "scenarios"

    def __init__(self) -> None:
        self.runs = 0

    def check(self, cfg: EvalConfig) -> EvalConfig:
        if cfg.family:
            raise UserError("--family does not apply to --suite prompt-lengths")
        return cfg

    def items(self, cfg, state):
        return load_selection(None, cfg.split, None, cfg.limit)

    def config(self, cfg, state):
        return {"measure": "words in the system prompt"}

    def run(self, ctx, items):
        self.runs += 1
        done = {r["scenario_id"] for r in ctx.log.records}
        for s in items:
            if s.id not in done:
                ctx.log.append({"scenario_id": s.id, "family": s.family, "words": len(s.system_prompt.split())})

    def summarise(self, ctx, items, records, meta):
        words = [r["words"] for r in records]
        return {**meta, "overall": {"n": len(words), "mean_words": sum(words) / len(words)}}

    def compare(self, a, b, out, effect):
        raise UserError("prompt-lengths runs are not compared")


def test_builtin_suites_implement_the_protocol():
    for name in ("agentic", "adherence", "audit"):
        suite = suites.get(name)
        assert isinstance(suite, suites.Suite) and suite.name == name
    assert {"agentic", "adherence", "audit"} <= set(suites.names())


def test_a_registered_suite_runs_and_resumes(tmp_path):
    suite = suites.register(PromptLengths())
    try:
        cfg = EvalConfig(model="mockllm/model", suite="prompt-lengths", mode="generate", limit=3, out=str(tmp_path))
        first = run_eval(cfg)
        assert first.summary["overall"]["n"] == 3 and first.summary["suite"] == "prompt-lengths"
        assert first.run_id.startswith("prompt-lengths-generate-")
        assert (first.run_dir / "summary.json").is_file() and first.resumed == 0
        again = run_eval(cfg)  # the same config is the same run: its records are kept
        assert again.run_id == first.run_id and again.resumed == 3 and suite.runs == 2
        with pytest.raises(UserError, match="--family does not apply"):
            run_eval(cfg, family="leak")
    finally:
        suites._REGISTRY.pop("prompt-lengths", None)


def test_unknown_suite_and_non_suite():
    with pytest.raises(UserError, match="unknown suite 'nope': choose one of agentic, adherence, audit"):
        run_eval("mockllm/model", suite="nope", mode="generate")
    with pytest.raises(TypeError, match="Suite protocol"):
        suites.register(object())  # type: ignore[arg-type]


def test_config_errors_name_the_flag():
    with pytest.raises(UserError, match=r"^--samples: must be at least 1 \(got 0\)$"):
        EvalConfig.build("smollm2-135m", samples=0)
    with pytest.raises(UserError, match=r"^--format: "):
        EvalConfig.build(formats=3)
    assert EvalConfig.build(EvalConfig(limit=2), families="leak, framing").families == ["leak", "framing"]
