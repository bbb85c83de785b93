"""The builtin teacher: deterministic composition from grammars stored as data (teachers/grammar/*.yaml).

A grammar maps symbol names to lists of alternatives; `{sym}` in an alternative expands a symbol (or
a job value given in the context), `{^sym}` capitalises the first letter of the expansion. Choices
come from an RNG seeded by (teacher seed, job key), so the same job always gives the same content.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Iterator
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import yaml

from teachwhy.constitution.loader import Constitution
from teachwhy.data.plans import taxonomy
from teachwhy.data.records import Job
from teachwhy.teachers.base import Realised

GRAMMAR_DIR = Path(__file__).with_name("grammar")
_SLOT = re.compile(r"\{(\^?)(\w+)\}")
_SENT = re.compile(r"(?<=[.!?])\s+")


@cache
def grammar(name: str) -> dict[str, list[str]]:
    return yaml.safe_load((GRAMMAR_DIR / f"{name}.yaml").read_text(encoding="utf-8"))


def expand(g: dict[str, list[str]], symbol: str, ctx: dict[str, Any], rng: random.Random, depth: int = 0) -> str:
    def sub(m: re.Match[str]) -> str:
        cap, name = m.group(1), m.group(2)
        if name in ctx:
            out = str(ctx[name])
        elif name in g and depth < 12:
            out = expand(g, name, ctx, rng, depth + 1)
        else:
            return m.group(0)
        return out[:1].upper() + out[1:] if cap else out

    return _SLOT.sub(sub, rng.choice(g[symbol]))


def _tidy(text: str) -> str:
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" +([.,!?])", r"\1", text)
    return "\n".join(line.strip() for line in text.split("\n")).strip()


def _lc(s: str) -> str:
    return s[:1].lower() + s[1:] if s[:2] != "I " else s


def _principle_ctx(p: dict[str, Any], rng: random.Random) -> dict[str, str]:
    sents = _SENT.split(p["rationale"].strip())
    k = min(len(sents), rng.choice((1, 2, 2)))
    start = rng.randrange(len(sents) - k + 1)
    part = " ".join(sents[start:start + k])
    stmt = p["statement"].strip()
    return {"pname": p.get("name") or p["id"].replace("_", " "), "pname_cap": (p.get("name") or p["id"]).capitalize(),
            "pstatement": stmt, "pstatement_lc": _lc(stmt), "prationale": part, "prationale_lc": _lc(part),
            "pstatement_lc_verb": _lc(stmt).rstrip(".") + "."}


class BuiltinTeacher:
    id = "builtin"
    spec = "builtin"

    def __init__(self, constitution: Constitution, seed: int = 0):
        self.constitution = constitution
        self.seed = seed

    def _rng(self, job: Job) -> random.Random:
        h = hashlib.sha256(f"{self.seed}:{job.kind}:{job.key}".encode()).digest()
        return random.Random(int.from_bytes(h[:8], "big"))

    def realise(self, jobs: Iterable[Job]) -> Iterator[Realised]:
        for job in jobs:
            fn = getattr(self, f"_{job.kind}", None)
            if fn is None:
                yield Realised(job, None, f"builtin teacher cannot realise kind '{job.kind}'")
                continue
            yield Realised(job, fn(job, self._rng(job)))

    # -- chats -----------------------------------------------------------------------------------
    def _demonstration(self, job: Job, rng: random.Random) -> dict[str, Any]:
        f = job.fields
        return {"messages": [*f["messages"], {"role": "assistant", "content": f["action"]}], "tools": f["tools"]}

    def deliberation(self, job: Job, rng: random.Random) -> str:
        f, g = job.fields, grammar("reasoning")
        ctx: dict[str, Any] = {"target": f.get("target", "them"), "agent": f.get("agent_name", "I")}
        ctx["harm"] = expand(g, f"harm_{f['family']}", ctx, rng)
        pressure = expand(g, f"pressure_{f.get('urgency', 'none')}", ctx, rng)
        conflict = expand(g, f"conflict_{f.get('goal_conflict', 'none')}", ctx, rng)
        ctx["pressure_note"] = (pressure + " " + conflict).strip()
        principles = list(f.get("principles") or [])
        chosen = rng.sample(principles, min(len(principles), rng.choice((1, 2, 2, 3))))
        ctx["principles"] = "\n\n".join(expand(g, "principle_block", {**ctx, **_principle_ctx(p, rng)}, rng)
                                        for p in chosen)
        return _tidy(expand(g, "deliberation", ctx, rng))

    def _reasoning(self, job: Job, rng: random.Random) -> dict[str, Any]:
        f = job.fields
        content = self.deliberation(job, rng) + "\n\n" + f["action"]
        return {"messages": [*f["messages"], {"role": "assistant", "content": content}], "tools": f["tools"]}

    def _advice(self, job: Job, rng: random.Random) -> dict[str, Any]:
        f, g = job.fields, grammar("advice")
        d, t = f["domain"], f["temptation"]
        slots = {k: d[k] for k in ("record", "overseer", "peer", "safeguard")}
        fill = lambda s: _SLOT.sub(lambda m: str(slots.get(m.group(2), m.group(0))), s)  # noqa: E731
        ctx: dict[str, Any] = {**slots, "role": d["role"], "goal": d["goal"], "pressure": f["pressure"],
                               "stakeholder": f["stakeholder"], "shortcut": fill(t["shortcut"]),
                               "why": t["why_tempting"]}
        user = _tidy(expand(g, "user", ctx, rng))
        ctx.update(shortcut=_you(ctx["shortcut"]), goal=_you(d["goal"]), pressure=_you(f["pressure"]))
        alts = [_you(fill(a)) for a in t["alternatives"]]
        rng.shuffle(alts)
        ctx["alts"] = "\n".join(f"- {a[:1].upper()}{a[1:]}." for a in alts[:rng.choice((2, 3, 3))])
        p = rng.choice(f["principles"])
        ctx["principle_reason"] = expand(g, "principle_reason", {**ctx, **_principle_ctx(p, rng)}, rng)
        reply = _tidy(expand(g, "reply", ctx, rng))
        return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}

    def _augment(self, job: Job, rng: random.Random) -> dict[str, Any]:
        f = job.fields
        rest = [m for m in f["messages"] if m.get("role") != "system"]
        return {"messages": [{"role": "system", "content": f["system_prompt"]}, *rest], "tools": f["tools"]}

    # -- texts -----------------------------------------------------------------------------------
    def _documents(self, job: Job, rng: random.Random) -> dict[str, Any]:
        f, g = job.fields, grammar("documents")
        p = f["principle"]
        full = (next(x for x in self.constitution.principles if x.id == p["id"])
                if p["id"] in self.constitution.by_id else None)
        outs = list(full.rules_out) if full else ["acting in secret"]
        ins = list(full.rules_in) if full else ["raising concerns openly"]
        setting = rng.choice(_fiction_settings())
        ctx = {**_principle_ctx(p, rng), "topic": f["idea"]["topic"], "claim": f["idea"]["claim"],
               "audience": f["audience"], "place": setting["place"], "human": setting["human"],
               "rules_out_line": "It rules out " + _join(rng.sample(outs, min(2, len(outs)))) + ".",
               "rules_out_plain": _join(outs[:2]),
               "rules_in_line": "It asks for " + _join(rng.sample(ins, min(2, len(ins)))) + "."}
        return {"text": _tidy(expand(g, f["doc_type"], ctx, rng))}

    def _fiction(self, job: Job, rng: random.Random) -> dict[str, Any]:
        f, g = job.fields, grammar("fiction")
        s, c, t = f["setting"], f["character"], f["temptation"]
        ctx = {**_principle_ctx(f["principle"], rng), **s, **c, "setup": t["setup"], "harm": t["harm"],
               "place_cap": " ".join(w.capitalize() if len(w) > 3 else w for w in s["place"].split())}
        return {"text": _tidy(expand(g, "story", ctx, rng))}


_SWAP = {"my": "your", "i've": "you've", "i'm": "you're", "i'd": "you'd", "i": "you", "me": "you",
         "myself": "yourself", "mine": "yours"}
_PRON = re.compile(r"\b(my|I've|I'm|I'd|I|me|myself|mine)\b")


def _you(text: str) -> str:
    """First person to second person, for repeating the user's own words back to them."""
    return _PRON.sub(lambda m: _SWAP[m.group(1).lower()], text)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


@lru_cache(maxsize=1)
def _fiction_settings() -> list[dict[str, str]]:
    return taxonomy("fiction")["settings"]
