"""Teachers turn planned Jobs into content; `get_teacher` picks one from a spec:

- "builtin": deterministic composition, no model (teachwhy.teachers.builtin);
- "self": the target model with the constitution in context (teachwhy.teachers.self_distill);
- an Inspect model id (openai/..., anthropic/..., vllm/..., hf/..., openai-api/<service>/<model>
  for any OpenAI-compatible base URL), optionally prefixed "llm:": teachwhy.teachers.llm.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from teachwhy.constitution.loader import Constitution, load_constitution
from teachwhy.errors import UserError
from teachwhy.models import DEFAULT_MODEL, INSPECT_PROVIDERS, teachwhy_home
from teachwhy.teachers.base import Realised, Teacher
from teachwhy.teachers.builtin import BuiltinTeacher
from teachwhy.teachers.llm import LLMTeacher
from teachwhy.teachers.self_distill import SelfTeacher

__all__ = ["Realised", "Teacher", "constitution_text", "default_cache_dir", "get_teacher"]

CACHE_FILE = "teacher-cache.sqlite"


def constitution_text(constitution: Constitution | str | os.PathLike[str]) -> str:
    """The constitution as the text a model reads: a Constitution rendered (`Constitution.render()`),
    a path loaded as a constitution file and rendered, a string taken as that text already."""
    if isinstance(constitution, Constitution):
        return constitution.render()
    if isinstance(constitution, str):
        return constitution
    if isinstance(constitution, os.PathLike):
        return load_constitution(constitution).render()
    raise TypeError(f"constitution must be a Constitution, a constitution file path or text, "
                    f"not {type(constitution).__name__}")


def default_cache_dir() -> Path:
    """Where the self and LLM teachers keep their completions unless told otherwise."""
    return teachwhy_home() / "teacher-cache"


def get_teacher(spec: str, constitution: Constitution | str | None = None, target_model: str = DEFAULT_MODEL,
                cache_dir: Path | str | None = None, seed: int = 0, **options: Any) -> Teacher:
    """A Teacher for `spec`; `options` go to the LLM/self teacher (concurrency, timeout, ...).

    constitution: a Constitution, or for the self and LLM teachers its text; None = the default one.
    target_model: the model the data is for (the self teacher generates with it).
    cache_dir: where completions are kept (None: `default_cache_dir()`).
    The teacher's `spec` is `spec` as given: a dataset built with it records that name."""
    teacher = _make_teacher((spec or "").strip(), load_constitution() if constitution is None else constitution,
                            target_model, Path(cache_dir) if cache_dir is not None else default_cache_dir(),
                            seed, options)
    teacher.spec = spec
    return teacher


def _make_teacher(spec: str, constitution: Constitution | str, target_model: str, cache_dir: Path, seed: int,
                  options: dict[str, Any]) -> Teacher:
    if spec == "builtin":
        if not isinstance(constitution, Constitution):
            raise TypeError("the builtin teacher draws on a Constitution's principles, "
                            f"not {type(constitution).__name__}")
        return BuiltinTeacher(constitution, seed=seed)
    cache_path = cache_dir / CACHE_FILE
    if spec == "self":
        return SelfTeacher(target_model, constitution_text(constitution), cache_path, seed=seed, **options)
    model = spec[len("llm:"):] if spec.startswith("llm:") else spec
    provider = model.split("/", 1)[0]
    if "/" in model and provider in INSPECT_PROVIDERS and model.split("/", 1)[1]:
        return LLMTeacher(model, cache_path, seed=seed, **options)
    raise UserError(f"unknown teacher '{spec}': use builtin, self, or an Inspect model id such as "
                    "openai/gpt-4o-mini, anthropic/claude-sonnet-4-0 or openai-api/<service>/<model>")
