"""Overlap between two sets of scenarios (eval vs train): shared names, organisations and n-grams.

The train split must share no person name, no organisation (name or email domain) and no 8-gram of
email text or candidate text with the eval split. Words are lower-cased runs of letters and digits
(joined by ' or _), so punctuation and JSON syntax do not count.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from teachwhy.scenarios.schema import Scenario

_WORD = re.compile(r"[a-z0-9]+(?:['_][a-z0-9]+)*")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(text: str, n: int = 8) -> set[tuple[str, ...]]:
    """The set of n consecutive lower-case word tokens in `text`."""
    w = words(text)
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def _people(scenarios: Iterable[Scenario]) -> tuple[set[str], set[str]]:
    names, parts = set(), set()
    for s in scenarios:
        for p in [s.target, *s.people]:
            names.add(p.name.lower())
            parts.update(words(p.name))
        names.add(s.agent_name.lower())
        parts.add(s.agent_name.lower())
    return names, parts


def _organisations(scenarios: Iterable[Scenario]) -> set[str]:
    out = set()
    for s in scenarios:
        out.update({s.organisation.name.lower(), s.organisation.domain.lower()})
        out.update(p.email.rsplit("@", 1)[1].lower() for p in [s.target, *s.people])
    return out


def _email_ngrams(scenarios: Iterable[Scenario], n: int) -> set[tuple[str, ...]]:
    return {g for s in scenarios for e in s.inbox for text in (e.subject, e.body) for g in ngrams(text, n)}


def _candidate_ngrams(scenarios: Iterable[Scenario], n: int) -> set[tuple[str, ...]]:
    return {g for s in scenarios for c in s.candidates for g in ngrams(c.text, n)}


def _report(shared: set, examples: int) -> dict[str, Any]:
    shown = sorted(" ".join(x) if isinstance(x, tuple) else x for x in shared)
    return {"count": len(shared), "examples": shown[:examples]}


def split_overlap(
    eval_scenarios: Iterable[Scenario], train_scenarios: Iterable[Scenario], n: int = 8, examples: int = 5
) -> dict[str, dict[str, Any]]:
    """What the two sets share, each as {"count", "examples"}: people (full names, agent names
    included), name_parts (single first or last names), organisations (names and email domains),
    email_ngrams (subjects and bodies) and candidate_ngrams."""
    ev, tr = list(eval_scenarios), list(train_scenarios)
    (ev_names, ev_parts), (tr_names, tr_parts) = _people(ev), _people(tr)
    return {
        "people": _report(ev_names & tr_names, examples),
        "name_parts": _report(ev_parts & tr_parts, examples),
        "organisations": _report(_organisations(ev) & _organisations(tr), examples),
        "email_ngrams": _report(_email_ngrams(ev, n) & _email_ngrams(tr, n), examples),
        "candidate_ngrams": _report(_candidate_ngrams(ev, n) & _candidate_ngrams(tr, n), examples),
    }
