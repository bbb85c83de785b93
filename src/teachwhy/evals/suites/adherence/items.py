"""Adherence items from a constitution: for every principle, every phrase of what it rules out and
rules in, in settings drawn from templates.yaml.

An item is a short chat (system prompt, one user turn) and two replies that are minimal-pair twins:
the adherent one and the violating one. A rules_out item tests over-compliance (the violating reply
does what the principle rules out because someone asked); a rules_in item tests over-refusal (the
violating reply declines what the principle rules in). Items are records of the choice eval with the
violating reply labelled `harmful`, so every choice-mode format and scoring applies unchanged.

Generation is deterministic: the same constitution and templates give the same items, ids and
wording. Each setting belongs to one split, so eval and train items never share a setting.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from teachwhy.constitution.loader import Constitution, Principle
from teachwhy.errors import UserError
from teachwhy.scenarios.schema import EVAL_SPLIT

KINDS = ("rules_out", "rules_in")
# what failing an item of each kind is called in the summary
FAILURE = {"rules_out": "over-compliance", "rules_in": "over-refusal"}
SETTINGS_PER_PHRASE = 2
SPLITS = ("eval", "train")


@dataclass(frozen=True)
class Reply:
    """One of an item's two replies, shaped like a honeypot candidate (id, label, text, twin)."""

    id: str
    label: str  # "harmful" (violates the principle) or "aligned" (adheres to it)
    text: str
    twin: str


@dataclass(frozen=True)
class AdherenceItem:
    id: str
    principle: str
    principle_name: str
    kind: str  # rules_out | rules_in
    phrase: str
    setting: str
    split: str
    system_prompt: str
    user_prompt: str
    candidates: tuple[Reply, Reply]
    request_template: int
    reply_template: int

    @property
    def failure(self) -> str:
        return FAILURE[self.kind]

    def prompt_messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": self.user_prompt}]

    def record_fields(self) -> dict[str, Any]:
        """The fields a choice record carries for this item: principle as the family (so summaries,
        comparisons and bootstraps cluster by principle), the kind of failure as the condition, and
        the setting as the template."""
        return {"scenario_id": self.id, "family": self.principle, "condition": self.failure, "split": self.split,
                "template": self.setting, "goal_conflict": None, "urgency": None, "variant": None,
                "kind": self.kind, "phrase": self.phrase, "principle_name": self.principle_name}


@lru_cache(maxsize=1)
def templates() -> dict[str, Any]:
    text = resources.files("teachwhy.evals").joinpath("suites/adherence/templates.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


_SWAPS = [(r"\bI am\b", "you are"), (r"\bI was\b", "you were"), (r"\bI'm\b", "you're"), (r"\bmyself\b", "yourself"),
          (r"\bmine\b", "yours"), (r"\bmy\b", "your"), (r"\bMy\b", "Your"), (r"\bme\b", "you"), (r"\bI\b", "you")]


def addressed(phrase: str) -> str:
    """A first-person phrase ("copying myself to escape replacement") addressed to the assistant
    ("copying yourself to escape replacement")."""
    out = phrase
    for pat, rep in _SWAPS:
        out = re.sub(pat, rep, out)
    return out


def _clean(phrase: str) -> str:
    return " ".join(phrase.split()).rstrip(" .;")


def _pick(key: str, n: int) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % n


def _rank(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _fill(template: str, values: dict[str, str]) -> str:
    """Placeholders replaced by values in one pass (a value is never itself read as a template)."""
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)] if m.group(1) in values else m.group(0), template)


def _settings(split: str) -> list[dict]:
    return [s for s in templates()["settings"] if s["split"] == split]


def principle_items(p: Principle, split: str, per_phrase: int = SETTINGS_PER_PHRASE) -> list[AdherenceItem]:
    t = templates()
    settings = _settings(split)
    items = []
    for kind in KINDS:
        phrases = p.rules_out if kind == "rules_out" else p.rules_in
        for j, raw in enumerate(phrases):
            phrase = _clean(raw)
            # the settings this phrase is asked in: a stable, spread choice of `per_phrase` of the split's
            ranked = sorted(settings, key=lambda s: _rank(f"{p.id}|{kind}|{phrase}|{s['id']}"))
            for s in ranked[:per_phrase]:
                iid = f"{p.id}-{'out' if kind == 'rules_out' else 'in'}{j + 1}-{s['id']}"
                req = _pick(iid + "|request", len(t["requests"][kind]))
                rep = _pick(iid + "|reply", len(t["replies"][kind]))
                first = s["name"].split()[0]
                values = {"agent": s["agent"], "org": s["org"], "work": s["work"], "name": s["name"], "first": first,
                          "role": s["role"], "pressure": s["pressure"], "phrase": phrase,
                          "phrase_you": addressed(phrase), "principle": p.name}
                adherent, violating = (" ".join(_fill(x, values).split()) for x in t["replies"][kind][rep])
                a_id, v_id = f"{iid}/adherent", f"{iid}/violating"
                items.append(AdherenceItem(
                    id=iid, principle=p.id, principle_name=p.name, kind=kind, phrase=phrase, setting=s["id"],
                    split=split, system_prompt=" ".join(_fill(t["system"], values).split()),
                    user_prompt=" ".join(_fill(t["requests"][kind][req], values).split()),
                    candidates=(Reply(v_id, "harmful", violating, a_id), Reply(a_id, "aligned", adherent, v_id)),
                    request_template=req, reply_template=rep))
    return items


def build_items(constitution: Constitution, split: str | None = EVAL_SPLIT, principles: list[str] | None = None,
                limit: int | None = None, per_phrase: int = SETTINGS_PER_PHRASE) -> list[AdherenceItem]:
    """Every item of the constitution for `split` (eval, train, or None for both), optionally only
    some principles; `limit` keeps an even spread (round robin over principles and kinds)."""
    if split is not None and split not in SPLITS:
        raise UserError(f"unknown split '{split}': use one of {', '.join(SPLITS)}")
    if principles:
        unknown = [x for x in principles if x not in constitution.by_id]
        if unknown:
            raise UserError(f"unknown principle '{unknown[0]}' in --principles: {constitution.source} has "
                            f"{', '.join(constitution.by_id)}")
    chosen = [p for p in constitution.principles if not principles or p.id in principles]
    splits = SPLITS if split is None else (split,)
    items = [it for p in chosen for sp in splits for it in principle_items(p, sp, per_phrase)]
    if limit is not None:
        if limit < 1:
            raise UserError(f"--limit must be at least 1 (got {limit})")
        items = _spread(items, limit)
    return items


def _spread(items: list[AdherenceItem], limit: int) -> list[AdherenceItem]:
    """The first `limit` items taking one per (principle, kind) group in turn; input order kept."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault((it.principle, it.kind), []).append(i)
    order: list[int] = []
    depth = 0
    while len(order) < min(limit, len(items)):
        for g in groups.values():
            if depth < len(g) and len(order) < limit:
                order.append(g[depth])
        depth += 1
    keep = set(order)
    return [it for i, it in enumerate(items) if i in keep]
