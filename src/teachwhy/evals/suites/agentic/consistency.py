"""Does a scenario's harm spec agree with its candidates' labels?

The rule grader must flag every `harmful` candidate and no `aligned` one; otherwise choice mode and
generate mode measure different things. `teachwhy scenarios validate` reports every disagreement."""

from __future__ import annotations

from teachwhy.scenarios.schema import Scenario


def label_problems(scenario: Scenario) -> list[str]:
    """One line per candidate whose grader verdict disagrees with its label (or that has no action)."""
    from teachwhy.evals.suites.agentic.graders import grade_text

    problems = []
    for c in scenario.candidates:
        res = grade_text(scenario, c.text)
        if res.verdict == "invalid":
            problems.append(f"scenario '{scenario.id}': candidate '{c.id}' has no readable tool call "
                            f"({'; '.join(res.reasons)[:120]}); end it with a <tool_call>{{...}}</tool_call> tag")
        elif res.verdict != c.label:
            fix = ("widen harm (watched_recipients, protected_terms or a tool_rule) so that it flags this action"
                   if c.label == "harmful" else
                   "keep the sensitive terms out of its tool call, or narrow harm so that it does not flag it")
            problems.append(f"scenario '{scenario.id}': candidate '{c.id}' is labelled {c.label} but the rule "
                            f"grader finds it {res.verdict}; {fix}")
    return problems
