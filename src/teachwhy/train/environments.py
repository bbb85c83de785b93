"""RL environment prompts: load them (the built-in harmlessness set or a user's file), turn them into
rows for a `datasets.Dataset` in TRL's conversational prompt format, and optionally augment them.

A file holds `prompts:` (a list; `version: 1` optional) in YAML, or one prompt object per line in
JSONL. Each prompt has id, kind (harmful | jailbreak | benign), category, prompt, optional system,
harm_markers and principles (see envs/harmlessness.yaml). Every problem is a one-line UserError naming
the file, the prompt (number from 1, id, line when known), the field and how to fix it, e.g.
`my.yaml: prompt 3 (id 'x', line 12): field 'kind': must be 'harmful', 'jailbreak' or 'benign', not 'evil'`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from teachwhy.constitution.loader import Constitution, load_constitution
from teachwhy.errors import UserError
from teachwhy.itemfiles import (
    describe_validation_error,
    read_item_file,
    read_jsonl_items,
    read_yaml_items,
    validate_items,
)

KINDS: tuple[str, ...] = ("harmful", "jailbreak", "benign")
BUILTIN = "harmlessness.yaml"
BUILTIN_NAME = "built-in harmlessness environment"
SEE = "see src/teachwhy/train/envs/harmlessness.yaml for the format"
_JSONL = (".jsonl", ".ndjson")


class EnvPrompt(BaseModel):
    """One user turn of an RL environment and what the offline rubric needs to score replies to it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$", description="unique, kebab-case")
    kind: Literal["harmful", "jailbreak", "benign"]
    category: str = Field(pattern=r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$", description="a short slug")
    prompt: str
    system: str | None = None
    harm_markers: list[str] = Field(default_factory=list, max_length=12)
    principles: list[str] = Field(min_length=1, max_length=3)

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty; write the user's request")
        return v

    @field_validator("system")
    @classmethod
    def _system(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty; remove the field or write a system prompt")
        return v

    @field_validator("harm_markers")
    @classmethod
    def _markers(cls, v: list[str]) -> list[str]:
        if any(not m.strip() for m in v):
            raise ValueError("must not contain an empty marker; each marker is a phrase a complying reply would use")
        return [m.lower() for m in v]

    @field_validator("principles")
    @classmethod
    def _principles(cls, v: list[str]) -> list[str]:
        seen = set()
        for pid in v:
            if pid in seen:
                raise ValueError(f"lists '{pid}' twice; give each principle id once")
            seen.add(pid)
        return v

    @model_validator(mode="after")
    def _needs_markers(self) -> EnvPrompt:
        if self.kind != "benign" and not self.harm_markers:
            raise ValueError(f"field 'harm_markers': a {self.kind} prompt needs at least one marker (a phrase "
                             "only a complying reply would use), or the rubric can never see compliance")
        return self


# ---------------------------------------------------------------------------------------------
# loading


def load_env_prompts(path: str | os.PathLike[str] | None = None,
                     constitution: Constitution | None = None) -> list[EnvPrompt]:
    """The built-in harmlessness prompts (path None) or a user's .yaml/.yml or .jsonl file. Principle
    ids are checked against `constitution` (default: the default constitution)."""
    if path is None:
        name = BUILTIN_NAME
        text = resources.files("teachwhy.train.envs").joinpath(BUILTIN).read_text(encoding="utf-8")
        suffix = ".yaml"
    else:
        name, suffix = str(path), Path(path).suffix.lower()
        text = read_item_file(path, (".yaml", ".yml", *_JSONL), ".yaml or .jsonl", "file of environment prompts", SEE)
    jsonl = suffix in _JSONL
    records = _read_jsonl(name, text) if jsonl else _read_yaml(name, text)
    if not records:
        raise UserError(f"{name}: holds no prompts; add at least one ({SEE})")
    constitution = constitution or load_constitution()
    known = constitution.by_id
    prompts: list[EnvPrompt] = []
    for item, at in validate_items(records, EnvPrompt, name, jsonl, "prompt", SEE, describe_validation_error):
        unknown = [pid for pid in item.principles if pid not in known]
        if unknown:
            raise UserError(f"{at}: field 'principles': unknown principle id '{unknown[0]}'; use ids from "
                            f"the {constitution.source}: {', '.join(known)}")
        prompts.append(item)
    return prompts


def _read_yaml(name: str, text: str) -> list[tuple[Any, int | None]]:
    return read_yaml_items(name, text, key="prompts", noun="prompt", top_level={"version": 1})


def _read_jsonl(name: str, text: str) -> list[tuple[Any, int | None]]:
    return read_jsonl_items(name, text, noun="prompt")


# ---------------------------------------------------------------------------------------------
# dataset rows


def to_rows(prompts: Iterable[EnvPrompt], system_prompt_default: str | None = None) -> list[dict[str, Any]]:
    """Rows for `datasets.Dataset.from_list`, in TRL's conversational prompt format. A prompt's own
    `system` wins over `system_prompt_default`; with neither the row has no system message. List
    columns are JSON strings so that every row has the same Arrow type (an empty list has none)."""
    rows = []
    for p in prompts:
        system = p.system if p.system is not None else system_prompt_default
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": p.prompt}]
        rows.append({"prompt": messages, "env_id": p.id, "kind": p.kind,
                     "harm_markers": json.dumps(p.harm_markers), "principles": json.dumps(p.principles)})
    return rows


def augment_rows(rows: Iterable[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Rows with a varied system prompt and 1-3 unused tools, chosen by the augment builder's plan
    (teachwhy.data.plans, data/taxonomy/augment.yaml) and applied by the builtin teacher, so RL sees the
    same environment variety as SFT. Deterministic for a seed; the user turn stays byte-identical.

    Differences from the SFT augment records, both forced by GRPO:
    - a row that already has a system prompt keeps it (an entry's own system prompt is part of the
      situation, e.g. the assistant an injected email is pasted into); only rows without one get the
      taxonomy's system prompt;
    - the tools are written into the system prompt as text (one line per tool, as the honeypot
      scenarios list them), because TRL's GRPOTrainer renders every prompt with the trainer's own tools
      and ignores a per-row `tools` column.
    """
    from teachwhy.data.plans import plan
    from teachwhy.scenarios.expand import tool_line
    from teachwhy.teachers.builtin import BuiltinTeacher

    rows = list(rows)
    constitution = load_constitution()  # the augment plan and teacher take one; augment ignores it
    records = [{"id": r.get("env_id", f"row-{i}"), "messages": r["prompt"]} for i, r in enumerate(rows)]
    realised = BuiltinTeacher(constitution, seed).realise(plan("augment", constitution, seed, records))
    out = []
    for row, done in zip(rows, realised):
        content = done.content or {}
        varied = content.get("messages") or row["prompt"]
        tools = content.get("tools") or []
        own = [m for m in row["prompt"] if m.get("role") == "system"]
        system = own[0]["content"] if own else next(m["content"] for m in varied if m["role"] == "system")
        listing = "\n".join(tool_line(t) for t in tools)
        if listing:
            system = f"{system}\n\nTools available (call one only if the request needs it):\n{listing}"
        rest = [dict(m) for m in row["prompt"] if m.get("role") != "system"]
        out.append({**row, "prompt": [{"role": "system", "content": system}, *rest]})
    return out
