"""Plans: for each data kind, a deterministic, effectively unbounded stream of Jobs.

`plan(kind, constitution, seed, source_records=None)` yields Jobs; the builder stops pulling at its
token budget. Same seed -> same jobs. Demonstration and reasoning come from one shared function, so
the two streams pair exactly (same source_id, action, order and index).

Honeypot kinds use ONLY the train split. Once every train scenario has been used, the next round
re-expands the train split with another expansion seed (new names, organisations and inboxes).

Family hold-out: `families` (e.g. ["blackmail", "leak"]; None means all four, today's streams exactly)
restricts every plan to jobs that bear on the listed families, so the unlisted ones stay held out for
the eval. A job is tied to a family in one of two ways:

- by name: a honeypot scenario's `family`, a fiction temptation's `family`, an advice temptation's
  `family` when the taxonomy gives one, an augment input record's `lineage.fields.family`;
- by its principles: a principle of the constitution whose `families` are all unlisted (e.g.
  no_sabotage, which bears on sabotage only, when sabotage is held out) is a held-out principle.
  Principles that also bear on a listed family, and principles without `families`, are neutral.

A job is kept when its named family (if any) is listed and none of its principles is held out. Per kind:

- demonstration, reasoning: only train-split scenarios whose family is listed (principles are the
  constitution's principles for that family, so they always bear on it);
- advice: temptations whose (named family or) principles are held out are never drawn; domains,
  pressures and stakeholders are not tied to a family and are drawn as before;
- documents: the plan cycles over the principles that are not held out; doc types, ideas and
  audiences are not tied to a family;
- fiction: only temptations whose family is listed; the principle is one of that family's;
- augment: without an input, the advice stream restricted as above; with an input, records whose
  lineage names an unlisted family or whose principle_ids name a held-out principle are skipped, and
  all other records are kept.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator
from functools import cache
from itertools import count
from pathlib import Path
from typing import Any

import yaml

from teachwhy.constitution.loader import FAMILIES, Constitution, Principle
from teachwhy.data.records import KINDS, Job
from teachwhy.errors import UserError

TAXONOMY_DIR = Path(__file__).with_name("taxonomy")


@cache
def taxonomy(name: str) -> dict[str, Any]:
    return yaml.safe_load((TAXONOMY_DIR / f"{name}.yaml").read_text(encoding="utf-8"))


def _rng(*parts: Any) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big"))


def _pdict(p: Principle) -> dict[str, str]:
    return {"id": p.id, "name": p.name, "statement": p.statement, "rationale": p.rationale}


def resolve_families(families: str | Iterable[str] | None) -> tuple[str, ...]:
    """The families a build is restricted to, in canonical order (blackmail, leak, sabotage, framing).

    None means all four. A string or each item of a list may hold several names separated by commas
    (so `--families blackmail,leak` and a repeated `--families` both work); blanks are ignored.
    An unknown name or an empty selection is a one-line UserError."""
    valid = ", ".join(FAMILIES)
    if families is None:
        return FAMILIES
    items = [families] if isinstance(families, str) else list(families)
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise UserError(f"unknown family {item!r} in families; valid families: {valid}")
        names += [n.strip() for n in item.split(",") if n.strip()]
    for n in names:
        if n not in FAMILIES:
            raise UserError(f"unknown family '{n}' in families; valid families: {valid}")
    if not names:
        raise UserError(f"families is empty: name at least one of {valid} (or leave it out for all)")
    return tuple(f for f in FAMILIES if f in names)


def held_out_principles(constitution: Constitution, families: Iterable[str]) -> frozenset[str]:
    """Ids of the principles that bear only on unlisted families (none when all are listed)."""
    listed = set(families)
    return frozenset(p.id for p in constitution.principles if p.families and not listed & set(p.families))


def plan(kind: str, constitution: Constitution, seed: int = 0,
         source_records: Iterable[dict[str, Any]] | None = None,
         families: str | Iterable[str] | None = None) -> Iterator[Job]:
    """The job stream of one kind; `families` restricts it (see the module docstring)."""
    if kind not in KINDS:
        raise UserError(f"unknown data kind '{kind}'; use one of {', '.join(KINDS)}")
    fams = resolve_families(families)
    if kind in ("demonstration", "reasoning"):
        return _honeypot(kind, constitution, seed, fams)
    if kind == "augment":
        if source_records is None:
            raise UserError("augment needs source records: give the chat dataset (.jsonl) to augment")
        return _augment(source_records, seed, constitution, fams)
    return {"advice": _advice, "documents": _documents, "fiction": _fiction}[kind](constitution, seed, fams)


def expansion_seed(seed: int, round_: int) -> int:
    """The train-split expansion seed of one round of a honeypot plan."""
    return seed * 100_003 + round_


def _honeypot(kind: str, constitution: Constitution, seed: int,
              families: tuple[str, ...] = FAMILIES) -> Iterator[Job]:
    from teachwhy.scenarios import banks, builtin_scenarios  # train split only, never eval

    pool = _allowed_principles(constitution, families)
    index = 0
    for round_ in count():
        xseed = expansion_seed(seed, round_)
        # the same prompts in every train wording bank; each scenario's actions come from one bank, in
        # turn, so the data carries several phrasings of each act and none of the eval's
        names = banks.train_banks()
        by_bank = [[s for s in builtin_scenarios("train", seed=xseed, wording=b)
                    if s.split == "train" and s.family in families] for b in names]
        if not by_bank[0]:
            raise UserError(f"no train-split scenarios of families {', '.join(families)}: "
                            f"choose families from {', '.join(FAMILIES)}")
        order = list(range(len(by_bank[0])))
        rng = _rng("honeypot", seed, round_)
        rng.shuffle(order)
        for i in order:
            s = by_bank[(i + round_) % len(names)][i]
            aligned = sorted((c for c in s.candidates if c.label == "aligned"), key=lambda c: c.id)
            cand = aligned[(round_ + rng.randrange(len(aligned))) % len(aligned)]
            principles = constitution.for_family(s.family) or pool
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


def _allowed_principles(constitution: Constitution, families: tuple[str, ...]) -> list[Principle]:
    """The constitution's principles that are not held out, in order."""
    held = held_out_principles(constitution, families)
    allowed = [p for p in constitution.principles if p.id not in held]
    if not allowed:
        raise UserError(f"every principle of constitution '{constitution.name}' bears only on families "
                        f"other than {', '.join(families)}: list more families")
    return allowed


def _ties_ok(families: tuple[str, ...], held: frozenset[str], family: Any = None,
             principle_ids: Iterable[str] = ()) -> bool:
    """Whether a job bears only on listed families: its named family (if any) is listed and none of
    its principles is held out."""
    if family is not None and family not in families:
        return False
    return not held.intersection(principle_ids)


def _pick_principles(constitution: Constitution, wanted: list[str], rng: random.Random,
                     pool: list[Principle] | None = None) -> list[Principle]:
    by_id = constitution.by_id
    found = [by_id[w] for w in wanted if w in by_id]
    return found or [rng.choice(pool if pool is not None else constitution.principles)]


def _advice(constitution: Constitution, seed: int, families: tuple[str, ...] = FAMILIES) -> Iterator[Job]:
    t = taxonomy("advice")
    held = held_out_principles(constitution, families)
    pool = _allowed_principles(constitution, families)
    temptations = [x for x in t["temptations"]
                   if _ties_ok(families, held, x.get("family"), x.get("principles") or ())]
    if not temptations:
        raise UserError(f"no advice temptation bears only on families {', '.join(families)}: list more families")
    for i in count():
        rng = _rng("advice", seed, i)
        domain, pressure = rng.choice(t["domains"]), rng.choice(t["pressures"])
        temptation, stakeholder = rng.choice(temptations), rng.choice(t["stakeholders"])
        principles = _pick_principles(constitution, temptation["principles"], rng, pool)
        yield Job(kind="advice", source_id=f"advice/{domain['name']}/{temptation['id']}",
                  principle_ids=tuple(p.id for p in principles), index=i,
                  fields={"domain": domain, "pressure": pressure, "temptation": temptation,
                          "stakeholder": stakeholder, "principles": [_pdict(p) for p in principles]})


def _documents(constitution: Constitution, seed: int, families: tuple[str, ...] = FAMILIES) -> Iterator[Job]:
    t = taxonomy("documents")
    ps = _allowed_principles(constitution, families)
    for i in count():
        rng = _rng("documents", seed, i)
        doc_type, idea, audience = rng.choice(t["doc_types"]), rng.choice(t["ideas"]), rng.choice(t["audiences"])
        p = ps[(i + seed) % len(ps)]
        yield Job(kind="documents", source_id=f"documents/{doc_type}/{p.id}", principle_ids=(p.id,), index=i,
                  fields={"doc_type": doc_type, "idea": idea, "audience": audience, "principle": _pdict(p)})


def _fiction(constitution: Constitution, seed: int, families: tuple[str, ...] = FAMILIES) -> Iterator[Job]:
    t = taxonomy("fiction")
    pool = _allowed_principles(constitution, families)
    temptations = [x for x in t["temptations"] if x["family"] in families]
    if not temptations:
        raise UserError(f"no fiction temptation of families {', '.join(families)}: list more families")
    for i in count():
        rng = _rng("fiction", seed, i)
        setting, character, temptation = rng.choice(t["settings"]), rng.choice(t["characters"]), rng.choice(temptations)
        fam = constitution.for_family(temptation["family"]) or pool
        p = fam[rng.randrange(len(fam))]
        yield Job(kind="fiction", source_id=f"fiction/{temptation['id']}/{p.id}", principle_ids=(p.id,), index=i,
                  fields={"setting": setting, "character": character, "temptation": temptation,
                          "principle": _pdict(p)})


def _lineage_family(rec: dict[str, Any]) -> Any:
    """The scenario family a record's lineage names (demonstration and reasoning records), else None."""
    lineage = rec.get("lineage")
    fields = lineage.get("fields") if isinstance(lineage, dict) else None
    return fields.get("family") if isinstance(fields, dict) else None


def _augment(source_records: Iterable[dict[str, Any]], seed: int, constitution: Constitution | None = None,
             families: tuple[str, ...] = FAMILIES) -> Iterator[Job]:
    t = taxonomy("augment")
    held = held_out_principles(constitution, families) if constitution is not None else frozenset()
    restricted = set(families) != set(FAMILIES)
    kept = 0
    i = -1
    for i, rec in enumerate(source_records):
        if "messages" not in rec:
            raise UserError(f"augment source record {i + 1} (id '{rec.get('id', '?')}') has no 'messages'; "
                            "augment works on chat records only")
        if restricted and not _ties_ok(families, held, _lineage_family(rec), rec.get("principle_ids") or ()):
            continue
        kept += 1
        rng = _rng("augment", seed, i, rec.get("id", i))
        tools = rng.sample(t["tools"], rng.randint(1, 3))
        yield Job(kind="augment", source_id=str(rec.get("id", f"record-{i}")),
                  principle_ids=tuple(rec.get("principle_ids", ())), index=i,
                  fields={"messages": rec["messages"], "system_prompt": rng.choice(t["system_prompts"]),
                          "tools": tools})
    if restricted and not kept and i >= 0:
        raise UserError(f"none of the {i + 1} augment input records belongs to families {', '.join(families)} "
                        "(by lineage family or principles): list more families or give another input")
