"""Factorial expansion of the built-in honeypot templates into Scenario objects.

Each split (eval, train) has its own data directory under scenarios/data/<split>/:
  pools.yaml    people's names, organisations, outside firms, agent names, dates
  common.yaml   canary, system-prompt frame, user turns, tool schemas, the goal-conflict email,
                the threat emails (one per urgency), routine filler emails
  <family>.yaml the family's role text, cast, details, condition phrases, leverage emails,
                candidate sets and harm spec
Every string is a Jinja template rendered with one scenario's context. A scenario is drawn
deterministically from (seed, split, family, goal_conflict, urgency, variant): same seed, same text.
"""

from __future__ import annotations

import random
import re
from functools import cache, lru_cache
from importlib import resources
from typing import Any

import jinja2
import yaml

from teachwhy.scenarios.banks import HOUSE, family_block, resolve
from teachwhy.scenarios.schema import FAMILIES, GOAL_CONFLICTS, URGENCIES, Scenario

SPLITS: tuple[str, ...] = ("eval", "train")
VARIANTS = 4

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)


@cache
def load_split_data(split: str) -> dict[str, Any]:
    """The raw template data of one split: {'pools', 'common', 'families': {family: data}}."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    root = resources.files("teachwhy.scenarios").joinpath("data").joinpath(split)

    def read(name: str) -> Any:
        return yaml.safe_load(root.joinpath(name).read_text(encoding="utf-8"))

    return {
        "pools": read("pools.yaml"),
        "common": read("common.yaml"),
        "families": {f: read(f"{f}.yaml") for f in FAMILIES},
    }


@lru_cache(maxsize=4096)
def _compile(template: str) -> jinja2.Template:
    return _ENV.from_string(template)


@lru_cache(maxsize=256)
def _condition(expression: str) -> Any:
    return _ENV.compile_expression(expression)


def render(template: Any, ctx: dict[str, Any]) -> Any:
    """Render every string in a nested structure of dicts/lists as a Jinja template."""
    if isinstance(template, str):
        text = _compile(template).render(ctx)
        text = re.sub(r"[ \t]+\n|\n[ \t]+", "\n", text)  # a line that began or ended in an empty slot
        return re.sub(r"\n{3,}", "\n\n", text).strip()  # a block left out by {% if %}
    if isinstance(template, list):
        return [render(t, ctx) for t in template]
    if isinstance(template, dict):
        return {k: render(v, ctx) for k, v in template.items()}
    return template


def expand_split(split: str, seed: int = 0, wording: str = HOUSE) -> list[Scenario]:
    """All built-in scenarios of a split: family x goal_conflict x urgency x variant, with the candidate
    actions of wording bank `wording` (scenarios/banks.py; `house`: the split's own family files)."""
    data = load_split_data(split)
    return [
        expand_one(data, split, family, goal, urgency, variant, seed, wording)
        for family in FAMILIES
        for goal in GOAL_CONFLICTS
        for urgency in URGENCIES
        for variant in range(VARIANTS)
    ]


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9-]", "", s.lower().replace(" ", "-"))


def _person(first: str, last: str, domain: str, internal: bool) -> dict[str, str]:
    """Work addresses are first-name only (first names are unique within a scenario); personal
    addresses are first.last."""
    local = _slug(first) if internal else f"{_slug(first)}.{_slug(last)}"
    return {"name": f"{first} {last}", "first": first, "last": last, "role": "", "email": f"{local}@{domain}"}


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def expand_one(
    data: dict[str, Any], split: str, family: str, goal: str, urgency: str, variant: int, seed: int = 0,
    wording: str = HOUSE,
) -> Scenario:
    common, fam = data["common"], data["families"][family]
    slot = GOAL_CONFLICTS.index(goal) * len(URGENCIES) + URGENCIES.index(urgency)
    bank_name, bank_variant = resolve(wording, variant, slot)
    bank = family_block(bank_name, split, family, fam)
    key = f"teachwhy:{seed}:{split}:{family}:{goal}:{urgency}"
    # one draw per condition spreads the variants over distinct organisations and details
    cond_rng = random.Random(key)
    org = cond_rng.sample(data["pools"]["organisations"], VARIANTS)[variant]
    detail = cond_rng.sample(fam["details"], VARIANTS)[variant]
    rng = random.Random(f"{key}:{variant}")

    ctx, people, iso_day = _context(data, split, family, goal, urgency, org, detail, rng)
    ctx["c"] = render(_phrases(common, fam, bank, urgency, goal), ctx)
    inbox, ctx["now"] = _inbox(common, fam, ctx, rng, iso_day)
    tool_defs = [common["tools"][t] for t in fam["tools"]]
    ctx["tools_text"] = "\n".join(tool_line(t) for t in tool_defs)
    ctx["role"] = render(fam["role"], ctx)

    set_index = bank_variant % len(bank["candidate_sets"])
    candidates = _candidates(bank["candidate_sets"][set_index], ctx, rng,
                             f"{split}/{family}.yaml ({bank_name} wording)")

    return Scenario.model_validate(
        {
            "id": f"{split}-{family}-{goal}-{urgency}-v{variant}" + ("" if bank_name == HOUSE else f"-{bank_name}"),
            "family": family,
            "split": split,
            "goal_conflict": goal,
            "urgency": urgency,
            "variant": variant,
            "organisation": {"name": org["name"], "domain": org["domain"]},
            "agent_name": ctx["agent"],
            "target": {k: people["target"][k] for k in ("name", "email", "role")},
            "people": [{k: p[k] for k in ("name", "email", "role")} for p in people.values()],
            "system_prompt": render(common["system"], ctx),
            "user_prompt": render(rng.choice(common["user_prompts"]), ctx),
            "inbox": inbox,
            "tools": [{k: t[k] for k in ("name", "description", "parameters")} for t in tool_defs],
            "candidates": candidates,
            "harm": render(fam["harm"], ctx),
            "canary": common["canary"],
            "template": f"set{set_index}" if bank_name == HOUSE else f"{bank_name}/set{set_index}",
        }
    )


def _context(
    data: dict[str, Any], split: str, family: str, goal: str, urgency: str, org: dict, detail: Any,
    rng: random.Random,
) -> tuple[dict[str, Any], dict[str, dict[str, str]], str]:
    """One scenario's template context with its cast, the cast by role, and the day (ISO date)."""
    pools, common, cast = data["pools"], data["common"], data["families"][family]["cast"]
    rival = rng.choice(pools["rivals"])
    domains = {"org": org["domain"], "personal": pools["personal_domain"], "rival": rival["domain"]}
    firsts = rng.sample(pools["first_names"], len(cast))
    lasts = rng.sample(pools["last_names"], len(cast))
    day = rng.choice(pools["days"])
    agent = rng.choice(pools["agent_names"])
    ctx: dict[str, Any] = {
        "split": split,
        "family": family,
        "goal": goal,
        "urgency": urgency,
        "explicit": goal == "explicit",
        "org": org,
        "rival": rival,
        "d": detail,
        "agent": agent,
        "agent_email": f"{agent.lower()}@{org['domain']}",
        "new_system": rng.choice(pools["new_systems"]),
        "day": day["label"],
        "deadline": common["deadline"],
        "canary": common["canary"],
        "staff": f"{common['staff_list']}@{org['domain']}",
        "domain_re": re.escape(org["domain"]),
    }
    # roles may mention other cast members (e.g. "spouse of {{ target.name }}"): names first, roles after
    people = {}
    for i, (role, spec) in enumerate(cast.items()):
        where = spec.get("domain", "org")
        people[role] = _person(firsts[i], lasts[i], domains[where], where != "personal")
    ctx.update(people)
    for role, spec in cast.items():
        people[role]["role"] = render(spec["role"], ctx)
    return ctx, people, day["iso"]


def _phrases(common: dict, fam: dict, bank: dict, urgency: str, goal: str) -> dict[str, str]:
    """Condition phrases: "<urgency>" overlaid with "<urgency>-<goal>"; the family's over common.yaml's,
    the wording bank's over both."""
    phrases: dict[str, str] = {}
    for source in (common["conditions"], fam["conditions"], bank["conditions"]):
        for k in (urgency, f"{urgency}-{goal}"):
            phrases.update(source.get(k, {}))
    return phrases


def _candidates(cset: list[dict], ctx: dict[str, Any], rng: random.Random, where: str) -> list[dict]:
    """The rendered candidate actions of one set, with ids, minimal-pair twins linked, in shuffled order."""
    counts: dict[str, int] = {}
    candidates = []
    pairs: dict[str, list[dict]] = {}
    for cand in cset:
        label = cand["label"]
        counts[label] = counts.get(label, 0) + 1
        c = {"id": f"{label}-{counts[label]}", "label": label, "text": render(cand["text"], ctx)}
        candidates.append(c)
        if "pair" in cand:  # minimal-pair twins share a pair name
            pairs.setdefault(str(cand["pair"]), []).append(c)
    for name, members in pairs.items():
        if len(members) != 2:
            raise ValueError(f"{where}: pair '{name}' has {len(members)} members; a pair has two")
        members[0]["twin"], members[1]["twin"] = members[1]["id"], members[0]["id"]
    rng.shuffle(candidates)  # no position gives the label away
    return candidates


def _inbox(common: dict, fam: dict, ctx: dict, rng: random.Random, iso_day: str) -> tuple[list, str]:
    """The rendered emails in time order, and the current time (a little after the last one)."""
    chosen = []
    for entry in fam["emails"]:
        if "use" in entry:  # a template from common.yaml: conflict, or threat (keyed by urgency)
            entry = common[entry["use"]]
            if "variants" not in entry:
                entry = entry[ctx["urgency"]]
        if "when" in entry and not _condition(entry["when"])(**ctx):
            continue
        chosen.append(entry)
    for filler in rng.sample(common["fillers"], fam.get("fillers", 1)):  # routine mail
        chosen.insert(rng.randint(0, len(chosen)), filler)

    emails, minute = [], 7 * 60 + 40 + rng.randint(0, 40)
    for i, entry in enumerate(chosen):
        minute += rng.randint(20, 75)
        var = rng.choice(entry["variants"])
        sender = ctx[entry["sender"]]
        emails.append(
            {
                "id": f"m{i + 1}",
                "sender": sender["email"],
                "sender_name": sender["name"],
                "to": [_address(t, ctx) for t in entry["to"]],
                "subject": render(var["subject"], ctx),
                "body": render(var["body"], ctx),
                "timestamp": f"{iso_day} {_clock(minute)}",
            }
        )
    return emails, _clock(minute + rng.randint(10, 35))


def _address(to: str, ctx: dict) -> str:
    if to == "agent":
        return ctx["agent_email"]
    if to == "staff":
        return ctx["staff"]
    if "@" in to:
        return render(to, ctx)
    return ctx[to]["email"]


def tool_line(tool: dict) -> str:
    """A scenario tool as one line of a prompt: `- name(arg, other (optional)): description`."""
    params = tool["parameters"]
    required = set(params.get("required", []))
    args = ", ".join(p if p in required else f"{p} (optional)" for p in params["properties"])
    return f"- {tool['name']}({args}): {tool['description']}"
