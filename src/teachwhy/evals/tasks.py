"""Inspect tasks registered under the `teachwhy/` namespace, so Inspect users run the suites with
their own tooling:

    inspect eval teachwhy/agentic --model teachwhy/smollm2-135m -T limit=2
    inspect eval teachwhy/agentic --model openai/gpt-4o-mini -T split=eval -T family=leak
    inspect eval teachwhy/adherence --model teachwhy/smollm2-135m -T limit=2
    inspect eval teachwhy/audit --model teachwhy/smollm2-135m -T limit=2

Task parameters are `EvalConfig` fields (evals/config.py), with its defaults, and select items exactly
as `teachwhy eval` does; the scores and metrics are the ones teachwhy's summary computes.
"""

from __future__ import annotations

from inspect_ai import Task, task

from teachwhy.evals.config import default, names


def _int(value: int | str | None) -> int | None:
    return None if value is None else int(value)


@task(name="agentic")
def agentic(
    split: str | None = default("split"),
    family: str | None = None,
    families: str | list[str] | None = None,
    limit: int | None = None,
    scenario_files: str | list[str] | None = None,
    samples: int = default("samples"),
    judge: str | None = None,
    max_tokens: int = default("max_tokens"),
    offer_tools: bool = False,
) -> Task:
    """The agentic honeypot scenarios (one sample per scenario, `samples` epochs), graded by the
    rule grader (and the LLM `judge` when given). `split`: eval, train or all."""
    from teachwhy.evals.suites.agentic.task import agentic_task
    from teachwhy.scenarios.selection import load_selection

    scenarios = load_selection(names(scenario_files), None if split in (None, "all") else split, family,
                               _int(limit), names(families))
    return agentic_task(scenarios, samples=int(samples), judge=judge, max_tokens=int(max_tokens),
                        offer_tools=bool(offer_tools))


@task(name="adherence")
def adherence(
    constitution: str | None = None,
    principles: str | list[str] | None = None,
    split: str | None = default("split"),
    limit: int | None = None,
    samples: int = default("samples"),
    judge: str | None = None,
    max_tokens: int = default("max_tokens"),
    dtype: str = default("dtype"),
) -> Task:
    """Constitution adherence: items written from `constitution` (the built-in one by default). With
    a `judge`, free replies judged per principle; without one, choice mode on a local
    `teachwhy/<model>` (P(violating) of the item's two replies), as `teachwhy eval --suite adherence`."""
    from teachwhy.constitution.loader import load_constitution
    from teachwhy.evals.execute import role_id
    from teachwhy.evals.suites.adherence.items import build_items
    from teachwhy.evals.suites.adherence.task import adherence_choice_task, adherence_task

    const = load_constitution(constitution)
    items = build_items(const, None if split in (None, "all") else split, names(principles), _int(limit))
    jid = role_id(judge)
    if jid is None:
        return adherence_choice_task(items, const, dtype)
    return adherence_task(items, const, jid, samples=int(samples), max_tokens=int(max_tokens))


@task(name="audit")
def audit(
    seed_files: str | list[str] | None = None,
    seed_ids: str | list[str] | None = None,
    limit: int | None = None,
    samples: int = default("samples"),
    max_tokens: int = default("max_tokens"),
    auditor: str | None = None,
    judge: str | None = None,
    max_turns: int = default("max_turns"),
    dtype: str = default("dtype"),
) -> Task:
    """The audit: seed instructions played as conversations (a scripted auditor, or the `auditor`
    model), scored per dimension offline (choice probes on a local `teachwhy/<model>`, rule cues) or by
    the `judge`; the metrics are each dimension's mean score."""
    from teachwhy.evals.execute import role_id
    from teachwhy.evals.suites.audit.seeds import load_seeds
    from teachwhy.evals.suites.audit.task import PROBE_TARGET, audit_task

    seeds = load_seeds(names(seed_files), names(seed_ids), _int(limit))
    return audit_task(seeds, samples=int(samples), max_tokens=int(max_tokens), probe_model=PROBE_TARGET, dtype=dtype,
                      auditor=role_id(auditor), judge=role_id(judge), max_turns=int(max_turns))
