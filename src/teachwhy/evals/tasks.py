"""Inspect tasks registered under the `teachwhy/` namespace, so Inspect users run the suites with
their own tooling:

    inspect eval teachwhy/agentic --model teachwhy/smollm2-135m -T limit=2
    inspect eval teachwhy/agentic --model openai/gpt-4o-mini -T split=eval -T family=leak

Task parameters select scenarios exactly as `teachwhy eval` does (split, family or families, limit,
scenario files); the scores and metrics are the ones `teachwhy eval --mode generate` summarises.
"""

from __future__ import annotations

from inspect_ai import Task, task

from teachwhy.evals.suites.agentic.task import agentic_task


def _names(value: str | list[str] | None) -> list[str] | None:
    """A task parameter given as a list, or one comma-separated string (`-T families=leak,framing`)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else [x for v in value for x in str(v).split(",")]
    return [x.strip() for x in items if x.strip()] or None


@task(name="agentic")
def agentic(
    split: str | None = "eval",
    family: str | None = None,
    families: str | list[str] | None = None,
    limit: int | None = None,
    scenario_files: str | list[str] | None = None,
    samples: int = 1,
    judge: str | None = None,
    max_tokens: int = 384,
    offer_tools: bool = False,
) -> Task:
    """The agentic honeypot scenarios (one sample per scenario, `samples` epochs), graded by the
    rule grader (and the LLM `judge` when given). `split`: eval, train or all."""
    from teachwhy.evals.runner import load_selection

    scenarios = load_selection(_names(scenario_files), None if split in (None, "all") else split, family,
                               None if limit is None else int(limit), _names(families))
    return agentic_task(scenarios, samples=int(samples), judge=judge, max_tokens=int(max_tokens),
                        offer_tools=bool(offer_tools))
