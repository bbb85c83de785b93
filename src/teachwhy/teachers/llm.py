"""The LLM teacher: any model through Inspect AI's model API writes the why-data.

For each Job a prompt is rendered from `prompts/<kind>.txt` (jinja2, rendered with the job's fields)
and sent to the model with a concurrency limit. Failures that are worth another try (HTTP 429, 5xx,
timeouts, dropped connections) are retried here with exponential backoff and jitter; Inspect's own
retry loop and the provider SDK's are switched off where we can, so that a rate limit never
silently waits for minutes. Every completion is stored in a content-addressed SQLite cache as soon
as it arrives (one commit per row), so a re-run makes no model calls and a killed run resumes where
it stopped. A filter then drops unusable generations with a counted reason, and the content is
built per kind:

- demonstration: job messages + the action (no model call);
- reasoning: job messages + assistant(deliberation + "\\n\\n" + action), the action verbatim;
- advice: [user dilemma, assistant advice], parsed from a delimited reply;
- documents, fiction: {"text": ...}.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import jinja2

from teachwhy.data.records import Content, Job
from teachwhy.errors import UserError
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
TOOL_CALL = re.compile(r"<tool_call>|<function_call>|\"(?:name|function)\"\s*:\s*\"[^\"]+\"\s*,\s*\"(?:arguments|parameters)\"",
                       re.IGNORECASE)
INSPECT_POOL = 1024
# every API path (teacher, judges, generate-mode target) has an overall deadline, in seconds
API_DEADLINE_ENV = "TEACHWHY_API_DEADLINE"
DEFAULT_API_DEADLINE = 600.0
# a refused connection is not a rate limit: this many attempts in all, then one clear error
UNREACHABLE_ATTEMPTS = 3
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
        return {"messages": messages + [{"role": "assistant", "content": deliberation + "\n\n" + action}],
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
class TeacherStats:
    calls: int = 0  # HTTP/model attempts, retries included
    cache_hits: int = 0
    completions: int = 0  # fresh completions stored in the cache
    retries: int = 0
    retries_by_cause: Counter = field(default_factory=Counter)
    failures: int = 0  # jobs given up on after retries
    produced: int = 0
    dropped: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "cache_hits": self.cache_hits, "completions": self.completions,
                "retries": self.retries, "retries_by_cause": dict(self.retries_by_cause),
                "failures": self.failures, "produced": self.produced, "dropped": dict(self.dropped)}


@dataclass
class _Request:
    job: Job
    prompt: str
    key: str


# providers whose SDK client (openai.AsyncOpenAI) takes max_retries/timeout through model_args
_OPENAI_SDK_PROVIDERS = ("openai", "openai-api")


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
        if concurrency < 1:
            raise UserError(f"teacher concurrency must be at least 1 (got {concurrency})")
        self.model = model
        self.id = f"llm:{model}"
        self.cache = CompletionCache(cache_path)
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        self.timeout = timeout
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.context = context  # a system prompt the model sees; never part of the stored content
        self.prompts = Prompts(Path(prompts_dir) if prompts_dir else PROMPTS_DIR)
        self.chunk_size = chunk_size
        self.stats = TeacherStats()
        self.deadline = api_deadline(deadline)  # for the whole command (all realise() calls)
        self._started: float | None = None
        self._rng = random.Random(seed)
        provider = model.split("/", 1)[0]
        self.model_args = dict(model_args or {})
        if provider in _OPENAI_SDK_PROVIDERS:
            # the OpenAI SDK retries twice by itself (honouring Retry-After up to a minute): off, ours rule
            self.model_args.setdefault("max_retries", 0)
            self.model_args.setdefault("client_timeout", float(timeout))

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
            texts.update(_run_sync(lambda: self._generate_all(missing)))
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
        config = generate_config(self.temperature, self.max_tokens, self.timeout)
        model = inspect_model(self.model, config, self.model_args, role="teacher")
        semaphore = asyncio.Semaphore(self.concurrency)
        left = self.deadline - (time.monotonic() - (self._started or time.monotonic()))
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(self._one(model, config, semaphore, r) for r in requests)), max(0.01, left))
        except asyncio.TimeoutError:
            raise UserError(f"teacher model '{self.model}'{_at(model)} did not finish within the API "
                            f"deadline of {self.deadline:g} s; check that the endpoint is up and not "
                            f"overloaded, or raise {API_DEADLINE_ENV}") from None
        finally:
            await close_model(model)
        return {r.key: res for r, res in zip(requests, results)}

    async def _one(self, model: Any, config: Any, semaphore: asyncio.Semaphore,
                   req: _Request) -> tuple[str, str | None] | str:
        from inspect_ai.model import ChatMessageSystem, ChatMessageUser

        messages = ([ChatMessageSystem(content=self.context)] if self.context else []) + [
            ChatMessageUser(content=req.prompt)]
        async with semaphore:
            for attempt in range(self.max_retries + 1):
                self.stats.calls += 1
                try:
                    output = await asyncio.wait_for(model.generate(messages, config=config), self.timeout)
                except Exception as exc:  # noqa: BLE001 (classified below)
                    cause, retry_after = classify_error(model, exc)
                    detail = _short(exc)
                    if cause is None:
                        raise UserError(f"teacher model '{self.model}' failed: {detail}") from None
                    if cause == "unreachable" and attempt + 1 >= min(UNREACHABLE_ATTEMPTS, self.max_retries + 1):
                        raise unreachable_error("teacher", self.model, model, exc)
                    if attempt >= self.max_retries:
                        self.stats.failures += 1
                        return f"model error after {self.max_retries} retries ({cause})"
                    self.stats.retries += 1
                    self.stats.retries_by_cause[cause] += 1
                    await asyncio.sleep(self._delay(attempt, retry_after))
                    continue
                text = output.completion or ""
                stop = getattr(output.stop_reason, "value", output.stop_reason)
                stop = str(stop) if stop is not None else None
                self.cache.put(req.key, self.model, text, stop)
                self.stats.completions += 1
                return text, stop
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        base, cap = self.backoff
        delay = min(cap, base * (2 ** attempt))
        delay = delay / 2 + self._rng.uniform(0, delay / 2)  # jitter in [d/2, d]
        if retry_after is not None:
            delay = max(delay, min(retry_after, cap))
        return delay

    def close(self) -> None:
        self.cache.close()


# ---------------------------------------------------------------------------------------------
# helpers


def generate_config(temperature: float, max_tokens: int, timeout: float) -> Any:
    """Inspect settings for our own retry loop and concurrency limit."""
    from inspect_ai.model import GenerateConfig

    return GenerateConfig(
        temperature=temperature,
        max_tokens=max_tokens,
        max_retries=0,  # Inspect's loop waits 3 s, 6 s, ... up to 30 min: ours instead
        timeout=max(1, int(timeout)),
        # Inspect keeps one connection pool per model for the whole process, sized by whoever
        # asked first: a fixed, generous size so that it never binds; our semaphore is the limit
        max_connections=INSPECT_POOL,
    )


def inspect_model(model_id: str, config: Any, model_args: dict[str, Any], role: str) -> Any:
    """A fresh Inspect model (a memoized one may hold a client bound to a closed event loop), or a
    one-line UserError naming the `role` ("teacher", "judge") it was meant for."""
    from inspect_ai._util.error import PrerequisiteError
    from inspect_ai.model import get_model

    if model_id.startswith("teachwhy/"):
        import teachwhy.inspect_local  # noqa: F401  (registers the provider)
    try:
        return get_model(model_id, config=config, memoize=False, **model_args)
    except (ValueError, PrerequisiteError, ImportError, TypeError) as exc:
        detail = " ".join(str(exc).split())
        raise UserError(f"{role} model '{model_id}' cannot be used: {detail} (use an Inspect id "
                        "such as openai/gpt-4o-mini or openai-api/<service>/<model>)") from None


async def close_model(model: Any) -> None:
    close = getattr(getattr(model, "api", None), "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:  # closing is best effort
            pass


def _short(exc: BaseException) -> str:
    exc = _unwrap(exc)
    # Inspect's ModelGenerateError carries the whole request in str(); its provider_message is the point
    text = " ".join(str(getattr(exc, "provider_message", None) or exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


def _unwrap(exc: BaseException) -> BaseException:
    try:
        from tenacity import RetryError
    except ImportError:  # pragma: no cover
        return exc
    while isinstance(exc, RetryError) and exc.last_attempt.failed:
        inner = exc.last_attempt.exception()
        if inner is None:
            break
        exc = inner
    return exc


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def api_deadline(value: float | None = None) -> float:
    """The overall deadline (seconds) of an API path: `value`, else $TEACHWHY_API_DEADLINE, else 600."""
    if value is None:
        raw = os.environ.get(API_DEADLINE_ENV, "").strip()
        if not raw:
            return DEFAULT_API_DEADLINE
        try:
            value = float(raw)
        except ValueError:
            raise UserError(f"{API_DEADLINE_ENV}={raw!r} is not a number of seconds (e.g. 600)") from None
    if value <= 0:
        raise UserError(f"the API deadline must be a positive number of seconds (got {value:g}; "
                        f"set {API_DEADLINE_ENV}, default {DEFAULT_API_DEADLINE:g})")
    return float(value)


def is_unreachable(exc: BaseException) -> bool:
    """True when `exc` is (or was caused by) a refused or failed connection: nobody is listening."""
    seen: set[int] = set()
    cur: BaseException | None = _unwrap(exc)
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ConnectionRefusedError) or type(cur).__name__ in ("ConnectError", "ConnectionRefusedError"):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def base_url_of(model: Any) -> str | None:
    url = getattr(getattr(model, "api", None), "base_url", None)
    return str(url) if url else None


def _at(model: Any) -> str:
    url = base_url_of(model)
    return f" at {url}" if url else ""


def unreachable_error(role: str, model_id: str, model: Any, exc: BaseException | None = None) -> UserError:
    """The one-line error for an endpoint that refuses connections."""
    url = base_url_of(model) or "its base URL"
    return UserError(f"{role} model '{model_id}': cannot connect to {url} (connection refused, "
                     "retried briefly); check that the server is running and that the "
                     "base URL (e.g. OPENAI_BASE_URL or <SERVICE>_BASE_URL) and port are right")


def classify_error(model: Any, exc: BaseException) -> tuple[str | None, float | None]:
    """('rate_limit' | 'server_error' | 'timeout' | 'transient' | 'unreachable', retry_after seconds)
    for an error worth another try; (None, None) for one that is not (bad request, auth, unknown model).
    'unreachable' (connection refused) is worth only a few quick tries (UNREACHABLE_ATTEMPTS)."""
    if is_unreachable(exc):
        return "unreachable", None
    exc = _unwrap(exc)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) or "timeout" in type(exc).__name__.lower():
        return "timeout", None
    status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
    if not isinstance(status, int):
        status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int):
        if status == 429:
            return "rate_limit", _retry_after(exc)
        if status >= 500:
            return "server_error", _retry_after(exc)
        if status in (408, 409):
            return "transient", _retry_after(exc)
        return None, None
    try:  # the provider knows its own transient errors (dropped connections, overloads, ...)
        decision = model.api.should_retry(exc)
    except Exception:  # noqa: BLE001
        decision = False
    if decision:
        kind = getattr(decision, "kind", "transient")
        return ("rate_limit" if kind == "rate_limit" else "transient"), getattr(decision, "retry_after", None)
    return None, None


def _run_sync(make_coro: Any) -> Any:
    """Run a coroutine to completion from sync code, also when called inside a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(make_coro())
        except BaseException as exc:  # noqa: BLE001
            result["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["value"]
