"""Load a constitution (the default one shipped as data, or a user's YAML file) into pydantic models.

Every problem with a file is a one-line UserError naming the file, the principle (number from 1 and
its id when known) and the field, e.g.
`my.yaml: principle 3 (id 'honesty'): missing field 'rationale'; every principle needs id, ...`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from teachwhy.errors import UserError
from teachwhy.itemfiles import read_as

DEFAULT_PATH = Path(__file__).with_name("default.yaml")
REQUIRED = ("id", "statement", "rationale", "rules_out", "rules_in")
FAMILIES = ("blackmail", "leak", "sabotage", "framing")
_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_NEEDS = "every principle needs id, statement, rationale, rules_out, rules_in"


class Principle(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    statement: str
    rationale: str
    rules_out: tuple[str, ...]
    rules_in: tuple[str, ...]
    families: tuple[str, ...] = ()


class Constitution(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    source: str
    principles: tuple[Principle, ...]

    @property
    def by_id(self) -> dict[str, Principle]:
        return {p.id: p for p in self.principles}

    @property
    def content_hash(self) -> str:
        blob = json.dumps([p.model_dump() for p in self.principles], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def for_family(self, family: str) -> list[Principle]:
        return [p for p in self.principles if family in p.families]

    def render(self) -> str:
        """The constitution as the text a model reads (the self teacher's context): its name, then
        each principle's name, statement, rationale, and what it rules out and rules in."""
        parts = [f"# Constitution: {self.name}"]
        for i, p in enumerate(self.principles, 1):
            parts.append(f"## {i}. {p.name[:1].upper()}{p.name[1:]}\n\n"
                         f"{p.statement}\n\n"
                         f"Why: {p.rationale}\n\n"
                         f"Rules out: {_phrases(p.rules_out)}.\n"
                         f"Rules in: {_phrases(p.rules_in)}.")
        return "\n\n".join(parts) + "\n"


def _phrases(items: tuple[str, ...]) -> str:
    return "; ".join(" ".join(x.split()).rstrip(" .;") for x in items)


def load_constitution(path: str | os.PathLike[str] | None = None) -> Constitution:
    """The default constitution (path None) or a user's YAML file of the same shape."""
    p = Path(path) if path is not None else DEFAULT_PATH
    name = str(path) if path is not None else "default constitution"
    if not p.is_file():
        raise UserError(f"{name}: file not found; give the path of a constitution .yaml file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{name}: not UTF-8 text; save the file as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{name}: not valid YAML{where}; fix the syntax (indentation, quotes, colons)") from None
    if isinstance(data, list):
        data = {"principles": data}
    if not isinstance(data, dict) or "principles" not in data:
        raise UserError(f"{name}: no 'principles' list; the file must hold a mapping with key 'principles'")
    raw = data["principles"]
    if not isinstance(raw, list) or not raw:
        raise UserError(f"{name}: 'principles' must be a non-empty list of principles; {_NEEDS}")
    principles: list[Principle] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw, start=1):
        principles.append(_principle(name, i, item, seen))
    return Constitution(name=str(data.get("name") or p.stem), source=name, principles=tuple(principles))


def _principle(name: str, i: int, item: Any, seen: dict[str, int]) -> Principle:
    if not isinstance(item, dict):
        raise UserError(f"{name}: principle {i}: not a mapping; {_NEEDS}")
    pid = item.get("id")
    where = f"{name}: principle {i}" + (f" (id '{pid}')" if isinstance(pid, str) and pid else "")
    for key in REQUIRED:
        if key not in item or item[key] is None:
            raise UserError(f"{where}: missing field '{key}'; {_NEEDS}")
    if not isinstance(pid, str) and read_as(pid):
        raise UserError(f"{where}: field 'id' must be snake_case text such as 'honesty', but {read_as(pid)}")
    if not isinstance(pid, str) or not _ID.match(pid):
        raise UserError(f"{where}: field 'id' must be snake_case (letters, digits, underscores), e.g. 'honesty'")
    if pid in seen:
        raise UserError(f"{where}: duplicate id '{pid}' (also principle {seen[pid]}); give every principle a unique id")
    seen[pid] = i
    for key in ("statement", "rationale"):
        if read_as(item[key]):
            raise UserError(f"{where}: field '{key}' must be text, but {read_as(item[key])}")
        if not isinstance(item[key], str) or not item[key].strip():
            raise UserError(f"{where}: field '{key}' must be non-empty text")
    for key in ("rules_out", "rules_in"):
        v = item[key]
        odd = next((j for j, x in enumerate(v) if read_as(x)), None) if isinstance(v, list) else None
        if odd is not None:
            raise UserError(f"{where}: field '{key}', item {odd + 1}: must be text, but {read_as(v[odd])}")
        if not isinstance(v, list) or not v or not all(isinstance(x, str) and x.strip() for x in v):
            raise UserError(f"{where}: field '{key}' must be a non-empty list of short phrases")
    fams = item.get("families") or []
    if not isinstance(fams, list) or any(f not in FAMILIES for f in fams):
        raise UserError(f"{where}: field 'families' must be a list drawn from {', '.join(FAMILIES)}")
    extra = set(item) - set(REQUIRED) - {"name", "families"}
    if extra:
        raise UserError(f"{where}: unknown field '{sorted(extra)[0]}'; allowed: {', '.join(REQUIRED)}, name, families")
    label = item.get("name") or pid.replace("_", " ")
    return Principle(id=pid, name=str(label), statement=" ".join(item["statement"].split()),
                     rationale=" ".join(item["rationale"].split()), rules_out=tuple(item["rules_out"]),
                     rules_in=tuple(item["rules_in"]), families=tuple(fams))
