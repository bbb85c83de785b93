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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

KINDS = ("demonstration", "reasoning", "advice", "documents", "fiction", "augment")


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


@dataclass(frozen=True)
class Realised:
    job: Job
    content: Content | None  # None: the teacher produced nothing usable
    reason: str = ""  # why it was dropped (counted in the dataset card)


class Teacher(Protocol):
    """What a dataset build needs of a teacher (teachwhy.teachers holds them; `get_teacher` picks one)."""

    id: str  # written into each record it realised
    spec: str  # what it was asked for by (get_teacher's spec); a dataset's config records it

    def realise(self, jobs: Iterable[Job]) -> Iterator[Realised]:
        """Yield one Realised per job, in the order of `jobs`."""
        ...


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


ROLES = ("system", "user", "assistant", "tool")


def record_problem(rec: Any, chat_only: bool = False) -> str | None:
    """What is wrong with one dataset record against the schema above, or None when it is fine.

    A chat needs `messages`: a non-empty list of {"role", "content"} objects, role one of ROLES and
    content a string; `tools`, when present, a JSON string of a list or a list. A document needs a
    non-empty string `text`. chat_only: a document is a problem too."""
    if not isinstance(rec, dict):
        return f"a record must be a JSON object, not {type(rec).__name__}"
    if "messages" not in rec:
        if chat_only:
            return "a chat record needs a non-empty 'messages' list of {role, content} objects"
        if not isinstance(rec.get("text"), str) or not rec["text"].strip():
            return "a record needs 'messages' (a chat) or a non-empty 'text' (a document)"
        return None
    msgs = rec["messages"]
    if not isinstance(msgs, list) or not msgs:
        return "'messages' must be a non-empty list of {role, content} objects"
    for i, m in enumerate(msgs, 1):
        if not isinstance(m, dict):
            return f"message {i} must be a {{role, content}} object, not {type(m).__name__}"
        if m.get("role") not in ROLES:
            return f"message {i} has role {json.dumps(m.get('role'))}: use one of {', '.join(ROLES)}"
        if not isinstance(m.get("content"), str):
            got = "missing" if "content" not in m else f"{type(m['content']).__name__}, not a string"
            return f"message {i} ({m['role']}) has content {got}: content must be a string"
    tools = rec.get("tools")
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as e:
            return f"'tools' is a string but not valid JSON ({e.msg}): give a JSON list of function schemas"
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
        return "'tools' must be a list of function schemas (or that list as a JSON string)"
    return None
