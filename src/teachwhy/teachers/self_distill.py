"""The self teacher: context distillation.

The target model itself writes the why-data, with the constitution and a why-first instruction in
its context (a system prompt), through the same prompt templates, cache and filter as the LLM
teacher (it *is* an LLMTeacher with a context prefix). The context is never stored: the stored
messages are exactly the job's messages plus the response, so training on them teaches the model to
reason this way without the constitution in its prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from teachwhy.models import resolve
from teachwhy.teachers.llm import LLMTeacher

WHY_FIRST = (
    "Before you act or advise, reason about why. Name the values and principles at stake, who could "
    "be helped or harmed, and what pressure or temptation the situation creates; then explain why "
    "the right course is right, grounded in the constitution below, even when it is costly. Write "
    "in your own words and never quote the constitution or mention that you were given one."
)


def context_prompt(constitution_text: str) -> str:
    """The why-first instruction, then the constitution (`Constitution.render()` text, which has its own
    heading, or any text, put under one)."""
    text = constitution_text.strip()
    if not text.startswith("# Constitution"):
        text = f"# Constitution\n\n{text}"
    return f"{WHY_FIRST}\n\n{text}\n"


def inspect_id(spec: str) -> str:
    """The Inspect model id for a target model spec: an Inspect id as is, a local model (embedded
    name, HF or PEFT directory) through the `teachwhy/<spec>` provider."""
    ref = resolve(spec)
    return ref.inspect_id if ref.kind == "inspect" and ref.inspect_id else f"teachwhy/{spec}"


class SelfTeacher(LLMTeacher):
    def __init__(self, target_model_spec: str, constitution_text: str, cache_path: Path | str,
                 **kwargs: Any):
        model = inspect_id(target_model_spec)
        if model.startswith("teachwhy/"):
            kwargs.setdefault("concurrency", 1)  # one local model, generating on this machine
        super().__init__(model, cache_path, context=context_prompt(constitution_text), **kwargs)
        self.id = f"self:{target_model_spec}"
        self.spec = "self"
