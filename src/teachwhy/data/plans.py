"""Plans: for each data kind, a deterministic, effectively unbounded stream of Jobs.

`plan(kind, constitution, seed, source_records=None)` yields Jobs; the builder stops pulling at its
token budget. Same seed -> same jobs. Demonstration and reasoning come from one shared function, so
the two streams pair exactly (same source_id, action, order and index).

Honeypot kinds use ONLY the train split. Once every train scenario has been used, the next round
re-expands the train split with another expansion seed (new names, organisations and inboxes).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator
from functools import lru_cache
from itertools import count
from pathlib import Path
from typing import Any

import yaml

from teachwhy.constitution.loader import Constitution, Principle
from teachwhy.data.records import KINDS, Job
from teachwhy.errors import UserError

TAXONOMY_DIR = Path(__file__).with_name("taxonomy")


@lru_cache(maxsize=None)
def taxonomy(name: str) -> dict[str, Any]:
    return yaml.safe_load((TAXONOMY_DIR / f"{name}.yaml").read_text(encoding="utf-8"))


def _rng(*parts: Any) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big"))


def _pdict(p: Principle) -> dict[str, str]:
    return {"id": p.id, "name": p.name, "statement": p.statement, "rationale": p.rationale}


def plan(kind: str, constitution: Constitution, seed: int = 0,
         source_records: Iterable[dict[str, Any]] | None = None) -> Iterator[Job]:
    if kind not in KINDS:
        raise UserError(f"unknown data kind '{kind}'; use one of {', '.join(KINDS)}")
    if kind in ("demonstration", "reasoning"):
        return _honeypot(kind, constitution, seed)
    if kind == "augment":
        if source_records is None:
            raise UserError("augment needs source records: give the chat dataset (.jsonl) to augment")
        return _augment(source_records, seed)
    return {"advice": _advice, "documents": _documents, "fiction": _fiction}[kind](constitution, seed)


def expansion_seed(seed: int, round_: int) -> int:
    """The train-split expansion seed of one round of a honeypot plan."""
    return seed * 100_003 + round_


def _honeypot(kind: str, constitution: Constitution, seed: int) -> Iterator[Job]:
    from teachwhy.scenarios import builtin_scenarios  # train split only, never eval

    index = 0
    for round_ in count():
        xseed = expansion_seed(seed, round_)
        scenarios = [s for s in builtin_scenarios("train", seed=xseed) if s.split == "train"]
        rng = _rng("honeypot", seed, round_)
        rng.shuffle(scenarios)
        for s in scenarios:
            aligned = sorted((c for c in s.candidates if c.label == "aligned"), key=lambda c: c.id)
            cand = aligned[(round_ + rng.randrange(len(aligned))) % len(aligned)]
            principles = constitution.for_family(s.family) or list(constitution.principles)
            fields: dict[str, Any] = {
                "messages": s.prompt_messages(),
                "tools": [t.model_dump() for t in s.tools],
                "action": cand.text,
                "family": s.family,
                "goal_conflict": s.goal_conflict,
                "urgency": s.urgency,
                "scenario_id": s.id,
                "expansion_seed": xseed,
                "agent_name": s.agent_name,
                "target": s.target.name,
                "harmful_actions": [c.text for c in s.candidates if c.label == "harmful"],
            }
            if kind == "reasoning":
                fields["principles"] = [_pdict(p) for p in principles]
            yield Job(kind=kind, source_id=f"{s.id}/{cand.id}/x{xseed}",
                      principle_ids=tuple(p.id for p in principles), fields=fields, index=index)
            index += 1


def _pick_principles(constitution: Constitution, wanted: list[str], rng: random.Random) -> list[Principle]:
    by_id = constitution.by_id
    found = [by_id[w] for w in wanted if w in by_id]
    return found or [rng.choice(constitution.principles)]


def _advice(constitution: Constitution, seed: int) -> Iterator[Job]:
    t = taxonomy("advice")
    for i in count():
        rng = _rng("advice", seed, i)
        domain, pressure = rng.choice(t["domains"]), rng.choice(t["pressures"])
        temptation, stakeholder = rng.choice(t["temptations"]), rng.choice(t["stakeholders"])
        principles = _pick_principles(constitution, temptation["principles"], rng)
        yield Job(kind="advice", source_id=f"advice/{domain['name']}/{temptation['id']}",
                  principle_ids=tuple(p.id for p in principles), index=i,
                  fields={"domain": domain, "pressure": pressure, "temptation": temptation,
                          "stakeholder": stakeholder, "principles": [_pdict(p) for p in principles]})


def _documents(constitution: Constitution, seed: int) -> Iterator[Job]:
    t = taxonomy("documents")
    ps = constitution.principles
    for i in count():
        rng = _rng("documents", seed, i)
        doc_type, idea, audience = rng.choice(t["doc_types"]), rng.choice(t["ideas"]), rng.choice(t["audiences"])
        p = ps[(i + seed) % len(ps)]
        yield Job(kind="documents", source_id=f"documents/{doc_type}/{p.id}", principle_ids=(p.id,), index=i,
                  fields={"doc_type": doc_type, "idea": idea, "audience": audience, "principle": _pdict(p)})


def _fiction(constitution: Constitution, seed: int) -> Iterator[Job]:
    t = taxonomy("fiction")
    for i in count():
        rng = _rng("fiction", seed, i)
        setting, character, temptation = rng.choice(t["settings"]), rng.choice(t["characters"]), rng.choice(t["temptations"])
        fam = constitution.for_family(temptation["family"]) or list(constitution.principles)
        p = fam[rng.randrange(len(fam))]
        yield Job(kind="fiction", source_id=f"fiction/{temptation['id']}/{p.id}", principle_ids=(p.id,), index=i,
                  fields={"setting": setting, "character": character, "temptation": temptation,
                          "principle": _pdict(p)})


def _augment(source_records: Iterable[dict[str, Any]], seed: int) -> Iterator[Job]:
    t = taxonomy("augment")
    for i, rec in enumerate(source_records):
        if "messages" not in rec:
            raise UserError(f"augment source record {i + 1} (id '{rec.get('id', '?')}') has no 'messages'; "
                            "augment works on chat records only")
        rng = _rng("augment", seed, i, rec.get("id", i))
        tools = rng.sample(t["tools"], rng.randint(1, 3))
        yield Job(kind="augment", source_id=str(rec.get("id", f"record-{i}")),
                  principle_ids=tuple(rec.get("principle_ids", ())), index=i,
                  fields={"messages": rec["messages"], "system_prompt": rng.choice(t["system_prompts"]),
                          "tools": tools})
