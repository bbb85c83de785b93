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
from teachwhy.teachers.base import Realised, Teacher

__all__ = ["Realised", "Teacher", "constitution_text", "get_teacher"]

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


def get_teacher(spec: str, constitution: Constitution | str, target_model: str, cache_dir: Path | str,
                seed: int = 0, **options: Any) -> Teacher:
    """A Teacher for `spec`; `options` go to the LLM/self teacher (concurrency, timeout, ...)."""
    spec = (spec or "").strip()
    if spec == "builtin":
        from teachwhy.teachers.builtin import BuiltinTeacher

        if not isinstance(constitution, Constitution):
            raise TypeError("the builtin teacher draws on a Constitution's principles, "
                            f"not {type(constitution).__name__}")
        return BuiltinTeacher(constitution, seed=seed)
    cache_path = Path(cache_dir) / CACHE_FILE
    if spec == "self":
        from teachwhy.teachers.self_distill import SelfTeacher

        return SelfTeacher(target_model, constitution_text(constitution), cache_path, seed=seed, **options)
    from teachwhy.models import INSPECT_PROVIDERS

    model = spec[len("llm:"):] if spec.startswith("llm:") else spec
    provider = model.split("/", 1)[0]
    if "/" in model and provider in INSPECT_PROVIDERS and model.split("/", 1)[1]:
        from teachwhy.teachers.llm import LLMTeacher

        return LLMTeacher(model, cache_path, seed=seed, **options)
    raise UserError(f"unknown teacher '{spec}': use builtin, self, or an Inspect model id such as "
                    "openai/gpt-4o-mini, anthropic/claude-sonnet-4-0 or openai-api/<service>/<model>")
