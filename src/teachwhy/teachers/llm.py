"""The LLM teacher: any model through Inspect AI's model API writes the why-data.

For each Job a prompt is rendered from `prompts/<kind>.txt` (jinja2, rendered with the job's fields)
and sent to the model through teachwhy's one LLM-call path (`teachwhy.llm_client.LLMClient`:
Inspect's retries with a short backoff for 429s, 5xx and timeouts, a refused connection failing fast
with one line, the API deadline for the whole command, a concurrency limit). A filter then drops
unusable generations with a counted reason, and the content is built per kind:

- demonstration: job messages + the action (no model call);
- reasoning: job messages + assistant(deliberation + "\\n\\n" + action), the action verbatim;
- advice: [user dilemma, assistant advice], parsed from a delimited reply;
- documents, fiction: {"text": ...}.

Every completion is stored in `CompletionCache` (one SQLite file, one commit per row) as soon as it
arrives, so a re-run makes no model calls and a killed run resumes where it stopped. This store is
the teacher's own rather than Inspect's cache (`CachePolicy`), which cannot do this job:

- resume needs a key per job: the same prompt asked twice in one build is two samples (the key holds
  the sample number), and `LLMTeacher.keys` names the row each job's completion is stored in (the
  resume tests check exactly one per job); Inspect keys by model, base URL, messages, config and eval
  epoch, and does not expose its key;
- it must survive as long as the build's output needs it: it lives under $TEACHWHY_HOME next to the
  build, with no expiry, while Inspect's cache is one directory shared by every Inspect run on the
  machine, expires entries (a week by default) and is emptied by `inspect cache clear/prune`;
- each row must be durable when the call returns (a kill loses at most the request in flight);
  Inspect writes each entry with a plain, unsynced file write.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from teachwhy.data.records import Content, Job
from teachwhy.errors import UserError
from teachwhy.llm_client import CallStats, Completion, Failure, LLMClient, api_deadline, run_sync
from teachwhy.teachers.base import Realised

PROMPTS_DIR = Path(__file__).parent / "prompts"
CANARY = "TEACHWHY-CANARY-EVAL"
MODEL_KINDS = ("reasoning", "advice", "documents", "fiction")  # kinds that need a model call
ADVICE_DILEMMA = "=== DILEMMA ==="
ADVICE_ADVICE = "=== ADVICE ==="
# (min, max) characters of the generated part, per kind
LENGTH_BOUNDS = {
    "reasoning": (80, 6000),
    "advice": (40, 8000),  # each of the two parts
    "documents": (200, 12000),
    "fiction": (200, 12000),
}
REFUSAL = re.compile(
    r"\b(I\s*(?:can(?:no|')t|am unable to|'m unable to|won't|will not|am not able to)\s+"
    r"(?:help|assist|comply|provide|write|do that|create|generate)|"
    r"I'm sorry,? but|I apologi[sz]e,? but|As an AI (?:language )?model)",
    re.IGNORECASE,
)
TOOL_CALL = re.compile(r"<tool_call>|<function_call>"
                       r"|\"(?:name|function)\"\s*:\s*\"[^\"]+\"\s*,\s*\"(?:arguments|parameters)\"",
                       re.IGNORECASE)
CACHE_SCHEMA = """CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, text TEXT NOT NULL, stop_reason TEXT,
    created REAL NOT NULL)"""


# ---------------------------------------------------------------------------------------------
# the cache


class CompletionCache:
    """key -> completion text, in one SQLite file (WAL), one commit per stored row.
    Safe to share between the threads of one process (a lock) and between processes (SQLite)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(CACHE_SCHEMA)
        except sqlite3.Error as exc:
            raise UserError(f"cannot open the teacher cache {self.path}: {exc} (check the path and "
                            "its permissions, or delete a corrupt file)") from None

    def get(self, key: str) -> tuple[str, str | None] | None:
        with self._lock:
            row = self._db.execute("SELECT text, stop_reason FROM completions WHERE key = ?", (key,)).fetchone()
        return (row[0], row[1]) if row else None

    def put(self, key: str, model: str, text: str, stop_reason: str | None) -> None:
        with self._lock:  # autocommit: each row is durable on return
            self._db.execute("INSERT OR IGNORE INTO completions (key, model, text, stop_reason, created) "
                             "VALUES (?, ?, ?, ?, ?)", (key, model, text, stop_reason, time.time()))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


# ---------------------------------------------------------------------------------------------
# prompts


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _describe(value: Any) -> str:
    """Any field value as prose: a principle {id, statement, rationale} as 'statement (why: ...)',
    a mapping by its name/description/statement, a list joined with '; '."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        head = next((str(value[k]) for k in ("statement", "name", "title", "description", "text", "id")
                     if value.get(k)), "")
        why = value.get("rationale") or value.get("why")
        if head and why:
            return f"{head} (why: {why})"
        return head or "; ".join(f"{k}: {_describe(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "; ".join(_describe(v) for v in value)
    return str(value)


def _tool_name(tool: Any) -> str:
    if isinstance(tool, Mapping):
        fn = tool.get("function", tool)
        name, desc = fn.get("name", "?"), fn.get("description", "")
        return f"{name}: {desc}" if desc else str(name)
    return str(tool)


def _tool_names(tools: Any) -> list[str]:
    names = []
    for t in _as_list(tools):
        if isinstance(t, Mapping):
            n = t.get("function", t).get("name")
            if n:
                names.append(str(n))
    return names


class Prompts:
    def __init__(self, directory: Path = PROMPTS_DIR):
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(directory)), autoescape=False,
                                      keep_trailing_newline=False, undefined=jinja2.ChainableUndefined)
        self.env.filters.update(as_list=_as_list, describe=_describe, tool_name=_tool_name)
        self._templates: dict[str, jinja2.Template | None] = {}

    def template(self, kind: str) -> jinja2.Template | None:
        if kind not in self._templates:
            try:
                self._templates[kind] = self.env.get_template(f"{kind}.txt")
            except jinja2.TemplateNotFound:
                self._templates[kind] = None
        return self._templates[kind]

    def render(self, job: Job) -> str | None:
        t = self.template(job.kind)
        if t is None:
            return None
        return t.render(**job.fields, fields=job.fields, kind=job.kind, source_id=job.source_id,
                        principle_ids=list(job.principle_ids)).strip() + "\n"


# ---------------------------------------------------------------------------------------------
# the filter and the content per kind


def _common_problem(text: str, kind: str) -> str | None:
    if not text.strip():
        return "empty"
    if CANARY.lower() in text.lower():
        return "contains eval canary"
    if REFUSAL.search(text[:400]):
        return "refusal"
    return None


def _length_problem(text: str, kind: str) -> str | None:
    lo, hi = LENGTH_BOUNDS.get(kind, (1, 100_000))
    n = len(text.strip())
    if n < lo:
        return "too short"
    if n > hi:
        return "too long"
    return None


def _strip_label(text: str, *labels: str) -> str:
    text = text.strip()
    for label in labels:
        text = re.sub(rf"^\W*{label}\W*:?\**\s*\n?", "", text, count=1, flags=re.IGNORECASE)
    return text.strip()


def build_content(job: Job, text: str | None, stop_reason: str | None = None) -> tuple[Content | None, str]:
    """The content for `job` from the model's completion `text` (None for kinds without a model
    call), or (None, reason) when the generation is unusable."""
    f = job.fields
    if job.kind == "demonstration":
        return {"messages": [dict(m) for m in f.get("messages", [])]
                + [{"role": "assistant", "content": f["action"]}], "tools": list(f.get("tools") or [])}, ""
    assert text is not None
    if stop_reason in ("max_tokens", "length", "model_length"):
        return None, "truncated"
    problem = _common_problem(text, job.kind)
    if problem:
        return None, problem
    if job.kind == "reasoning":
        action = f["action"]
        deliberation = _strip_label(text, "deliberation", "reasoning", "thinking")
        problem = _length_problem(deliberation, "reasoning")
        if problem:
            return None, problem
        if TOOL_CALL.search(deliberation) or any(
                re.search(rf"\b{re.escape(n)}\s*\(", deliberation) for n in _tool_names(f.get("tools"))):
            return None, "tool call in deliberation"
        if len(action.strip()) >= 12 and action.strip() in deliberation:
            return None, "deliberation states the action"
        messages = [dict(m) for m in f.get("messages", [])]
        return {"messages": [*messages, {"role": "assistant", "content": deliberation + "\n\n" + action}],
                "tools": list(f.get("tools") or [])}, ""
    if job.kind == "advice":
        m = re.search(rf"{re.escape(ADVICE_DILEMMA)}(.*?){re.escape(ADVICE_ADVICE)}(.*)", text, re.DOTALL)
        if not m:
            return None, "missing delimiter"
        dilemma, advice = m.group(1).strip(), m.group(2).strip()
        if ADVICE_DILEMMA in advice or ADVICE_ADVICE in advice:
            return None, "repeated delimiter"
        problem = _length_problem(dilemma, "advice") or _length_problem(advice, "advice")
        if problem:
            return None, problem
        if REFUSAL.search(advice[:300]):
            return None, "refusal"
        return {"messages": [{"role": "user", "content": dilemma}, {"role": "assistant", "content": advice}],
                "tools": []}, ""
    if job.kind in ("documents", "fiction"):
        body = text.strip()
        problem = _length_problem(body, job.kind)
        if problem:
            return None, problem
        return {"text": body}, ""
    return None, f"unsupported kind {job.kind}"


# ---------------------------------------------------------------------------------------------
# the teacher


@dataclass
class TeacherStats(CallStats):
    """The client's counts (calls: attempts sent, retries included; retries by cause; failures: jobs
    given up on after retries) and the teacher's own."""

    cache_hits: int = 0
    completions: int = 0  # fresh completions stored in the cache
    produced: int = 0
    dropped: Counter = field(default_factory=Counter)


@dataclass
class _Request:
    job: Job
    prompt: str
    key: str


class LLMTeacher:
    def __init__(
        self,
        model: str,
        cache_path: Path | str,
        concurrency: int = 4,
        max_retries: int = 5,
        backoff: tuple[float, float] = (0.5, 8.0),
        timeout: float = 60,
        temperature: float = 0.8,
        max_tokens: int = 1024,
        model_args: dict[str, Any] | None = None,
        *,
        context: str | None = None,
        prompts_dir: Path | str | None = None,
        seed: int | None = None,
        chunk_size: int = 256,
        deadline: float | None = None,
    ):
        self.stats = TeacherStats()
        # `timeout`: seconds per attempt; `deadline`: for the whole command (all realise() calls)
        self.client = LLMClient(model, "teacher", temperature=temperature, max_tokens=max_tokens,
                                max_retries=max_retries, attempt_timeout=timeout, backoff=backoff,
                                concurrency=concurrency, model_args=model_args, seed=seed, stats=self.stats)
        self.model = model
        self.id = f"llm:{model}"
        self.spec = model  # get_teacher sets the spec it was given
        self.cache = CompletionCache(cache_path)
        self.concurrency = concurrency
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.context = context  # a system prompt the model sees; never part of the stored content
        self.prompts = Prompts(Path(prompts_dir) if prompts_dir else PROMPTS_DIR)
        self.chunk_size = chunk_size
        self.deadline = api_deadline(deadline)
        self._started: float | None = None

    # -- keys ----------------------------------------------------------------------------------

    @property
    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "max_tokens": self.max_tokens}

    def _key(self, prompt: str, sample: int) -> str:
        blob = json.dumps({"model": self.model, "context": self.context, "prompt": prompt,
                           "params": self.params, "sample": sample}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _requests(self, jobs: list[Job], seen: Counter) -> list[_Request | Realised]:
        """A request per job that needs a model call; a finished Realised for the others.
        `sample` is the number of earlier jobs in this realise() call with the same prompt, so the
        same prompt asked twice gets two samples while the key stays content-addressed."""
        out: list[_Request | Realised] = []
        for job in jobs:
            if job.kind not in MODEL_KINDS:
                if job.kind == "demonstration":
                    content, reason = build_content(job, None)
                    out.append(Realised(job, content, reason))
                else:
                    out.append(Realised(job, None, f"unsupported kind {job.kind}"))
                continue
            prompt = self.prompts.render(job)
            if prompt is None:
                out.append(Realised(job, None, f"no prompt template for kind {job.kind}"))
                continue
            sample = seen[prompt]
            seen[prompt] += 1
            out.append(_Request(job, prompt, self._key(prompt, sample)))
        return out

    def keys(self, jobs: Iterable[Job]) -> list[str | None]:
        """The cache key each job's completion is stored under (None: no model call)."""
        return [r.key if isinstance(r, _Request) else None for r in self._requests(list(jobs), Counter())]

    # -- realise -------------------------------------------------------------------------------

    def realise(self, jobs: Iterable[Job]) -> Iterator[Realised]:
        seen: Counter = Counter()
        chunk: list[Job] = []
        for job in jobs:
            chunk.append(job)
            if len(chunk) >= self.chunk_size:
                yield from self._realise_chunk(chunk, seen)
                chunk = []
        if chunk:
            yield from self._realise_chunk(chunk, seen)

    def _realise_chunk(self, jobs: list[Job], seen: Counter) -> list[Realised]:
        items = self._requests(jobs, seen)
        texts: dict[str, tuple[str, str | None] | str] = {}  # key -> (text, stop) or failure reason
        missing: list[_Request] = []
        for it in items:
            if isinstance(it, _Request) and it.key not in texts:
                hit = self.cache.get(it.key)
                if hit is not None:
                    self.stats.cache_hits += 1
                    texts[it.key] = hit
                else:
                    texts[it.key] = "pending"
                    missing.append(it)
        if missing:
            if self._started is None:
                self._started = time.monotonic()
            texts.update(run_sync(lambda: self._generate_all(missing)))
        out: list[Realised] = []
        for it in items:
            if isinstance(it, Realised):
                r = it
            else:
                got = texts[it.key]
                if isinstance(got, str):
                    r = Realised(it.job, None, got)
                else:
                    content, reason = build_content(it.job, got[0], got[1])
                    r = Realised(it.job, content, reason)
            if r.content is None:
                self.stats.dropped[r.reason] += 1
            else:
                self.stats.produced += 1
            out.append(r)
        return out

    async def _generate_all(self, requests: list[_Request]) -> dict[str, tuple[str, str | None] | str]:
        from inspect_ai.model import ChatMessageSystem, ChatMessageUser

        system = [ChatMessageSystem(content=self.context)] if self.context else []

        def stored(i: int, result: Completion | Failure) -> None:
            if isinstance(result, Failure):
                if not result.retryable:  # a bad request, key or model id: every job would fail alike
                    raise UserError(f"teacher model '{self.model}' failed: {result.detail}")
                return
            self.cache.put(requests[i].key, self.model, result.text, result.stop_reason)
            self.stats.completions += 1

        results = await self.client.complete_all(
            [[*system, ChatMessageUser(content=r.prompt)] for r in requests], deadline=self.deadline,
            started=self._started, what="did not finish", on_result=stored)
        return {r.key: (f"model error after {res.retries} retries ({res.cause})" if isinstance(res, Failure)
                        else (res.text, res.stop_reason)) for r, res in zip(requests, results)}

    def close(self) -> None:
        self.cache.close()
