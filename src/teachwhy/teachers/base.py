"""What a teacher is: something that turns planned Jobs into content (a chat or a text).

- builtin: deterministic composition from grammars and templates (no model, no network).
- self: the target model itself generates with the constitution and a why-first instruction in its
  context; both are stripped from the stored prompt (context distillation).
- llm: any model through Inspect AI's model API, with prompts as data files, a concurrency limit,
  retries with backoff, a content-addressed cache and a filter for malformed generations.
"""

from __future__ import annotations

# both live with the Job and the record format (data/records.py), so a dataset build can take a
# teacher without importing this package
from teachwhy.data.records import Realised, Teacher

__all__ = ["Realised", "Teacher"]
