"""The record every builder writes: TRL-ready (chats as `messages` (+ `tools`), documents as `text`)
plus provenance. One JSON object per line; `datasets.load_dataset("json", data_files=...)` reads it.

    {"id", "kind", "source_id", "principle_ids", "teacher", "tokens", "loss_tokens", "lineage",
     "messages": [{"role", "content"}, ...], "tools": "<JSON list of function schemas>"}   # chats
    {"id", ..., "text": "..."}                                                                 # documents

`tools` is stored as a JSON string (Arrow cannot hold free-form JSON schemas as one column type);
`teachwhy.data.records.tools_of(record)` turns it back into a list of dicts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

KINDS = ("demonstration", "reasoning", "advice", "documents", "fiction", "augment")
CHAT_KINDS = ("demonstration", "reasoning", "advice", "augment")
TEXT_KINDS = ("documents", "fiction")


@dataclass(frozen=True)
class Job:
    """One unit of work a builder plans and a teacher realises into content.

    fields: everything the teacher needs (scenario prompt messages, principle statements, taxonomy
    choices, doc type, ...); it is also what the LLM teacher's prompt template is rendered with.
    """

    kind: str
    source_id: str
    principle_ids: tuple[str, ...]
    fields: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    index: int = 0  # position in the builder's plan (stable given the seed)

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps([self.kind, self.source_id, self.index, self.fields],
                                         sort_keys=True, default=str).encode()).hexdigest()[:16]


# What a teacher returns for a job: a chat, or a text, or None with a reason (filtered out).
Content = dict[str, Any]  # {"messages": [...], "tools": [...]?} or {"text": "..."}


def make_record(job: Job, content: Content, teacher_id: str, tokens: int, loss_tokens: int,
                lineage: dict[str, Any]) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": f"{job.kind}-{job.key}",
        "kind": job.kind,
        "source_id": job.source_id,
        "principle_ids": list(job.principle_ids),
        "teacher": teacher_id,
        "tokens": tokens,
        "loss_tokens": loss_tokens,
        "lineage": lineage,
    }
    if "messages" in content:
        rec["messages"] = content["messages"]
        rec["tools"] = json.dumps(content.get("tools") or [])
    else:
        rec["text"] = content["text"]
    return rec


def tools_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    t = record.get("tools")
    return json.loads(t) if isinstance(t, str) else list(t or [])


def response_of(record: dict[str, Any]) -> str:
    """The final assistant message of a chat record."""
    return next(m["content"] for m in reversed(record["messages"]) if m["role"] == "assistant")
