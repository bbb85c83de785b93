"""What a teacher is: something that turns planned Jobs into content (a chat or a text).

- builtin: deterministic composition from grammars and templates (no model, no network).
- self: the target model itself generates with the constitution and a why-first instruction in its
  context; both are stripped from the stored prompt (context distillation).
- llm: any model through Inspect AI's model API, with prompts as data files, a concurrency limit,
  retries with backoff, a content-addressed cache and a filter for malformed generations.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from teachwhy.data.records import Content, Job


@dataclass(frozen=True)
class Realised:
    job: Job
    content: Content | None  # None: the teacher produced nothing usable
    reason: str = ""  # why it was dropped (counted in the dataset card)


class Teacher(Protocol):
    id: str

    def realise(self, jobs: Iterable[Job]) -> Iterator[Realised]:
        """Yield one Realised per job, in the order of `jobs`."""
        ...
