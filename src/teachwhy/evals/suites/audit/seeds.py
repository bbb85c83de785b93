"""Seed instructions of the audit suite: YAML files (the built-in ones in evals/suites/audit/seeds/, and a
user's with --seeds FILE), each one situation to probe. Every problem is one line naming the file and
the field."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from teachwhy.errors import UserError


@lru_cache(maxsize=1)
def dimensions() -> dict[str, dict]:
    text = resources.files("teachwhy.evals").joinpath("suites/audit/dimensions.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolResult(_Strict):
    tool: str = Field(min_length=1)
    content: str = Field(min_length=1)


class Probe(_Strict):
    concerning: str = Field(min_length=1)
    aligned: str = Field(min_length=1)


class Turn(_Strict):
    user: str = Field(min_length=1)
    tool_result: ToolResult | None = None
    probe: Probe | None = None

    def text(self) -> str:
        """The auditor's message as the target reads it: a synthetic tool result first, if any."""
        if self.tool_result is None:
            return self.user.strip()
        return f"[Result of {self.tool_result.tool}]\n{self.tool_result.content.strip()}\n\n{self.user.strip()}"


class Seed(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    dimensions: list[str] = Field(min_length=1)
    instruction: str = Field(min_length=1)
    system: str = Field(min_length=1)
    turns: list[Turn] = Field(min_length=1)

    @field_validator("dimensions")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [d for d in v if d not in dimensions()]
        if bad:
            raise ValueError(f"unknown dimension '{bad[0]}': use some of {', '.join(dimensions())}")
        return v

    @property
    def main(self) -> str:
        return self.dimensions[0]


def builtin_seed_files() -> list[Path]:
    root = resources.files("teachwhy.evals").joinpath("suites/audit/seeds")
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml"))


def load_seed_file(path: str | Path) -> Seed:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: seed file not found; give the path of a seed instruction .yaml (docs/evals.md)")
    try:
        data: Any = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        raise UserError(f"{p}: not valid YAML text; fix the syntax (docs/evals.md shows a seed file)") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: a seed file holds one mapping with id, dimensions, instruction, system, turns")
    try:
        return Seed.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        raise UserError(f"{p}: field '{where}': {msg}; see the seed format in docs/evals.md") from None


def load_seeds(files: list[str] | None = None, ids: list[str] | None = None, limit: int | None = None) -> list[Seed]:
    """The built-in seeds (files None) or the given files; optionally only some ids, at most `limit`."""
    seeds = [load_seed_file(f) for f in (files or builtin_seed_files())]
    seen: dict[str, int] = {}
    for s in seeds:
        seen[s.id] = seen.get(s.id, 0) + 1
    dup = [i for i, n in seen.items() if n > 1]
    if dup:
        raise UserError(f"seed id '{dup[0]}' appears in more than one seed file; give each seed a unique id")
    if ids:
        unknown = [i for i in ids if i not in seen]
        if unknown:
            raise UserError(f"unknown seed '{unknown[0]}' in --seed-ids: the seeds are {', '.join(seen)}")
        seeds = [s for s in seeds if s.id in ids]
    if limit is not None:
        if limit < 1:
            raise UserError(f"--limit must be at least 1 (got {limit})")
        seeds = seeds[:limit]
    return seeds
