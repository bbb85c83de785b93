"""One path for every LLM call teachwhy makes through Inspect AI's model API.

The LLM teacher (teachers/llm.py, and the self teacher built on it), the RL reward judge
(train/rewards.py) and the eval judge (evals/suites/agentic/judge.py) send their requests through `LLMClient`:

- **Retries are Inspect's.** Each request is one `Model.generate` call with
  `GenerateConfig(max_retries=..., attempt_timeout=..., timeout=...)`, and Inspect's loop retries it.
  The provider SDK's own retries are off where it has them (the OpenAI SDK: `max_retries=0`, its
  request timeout set to the attempt timeout), so no second loop multiplies the first. Two decisions
  GenerateConfig cannot express are made here, through the hooks Inspect gives a provider
  (`ModelAPI.should_retry` and `ModelAPI.retry_wait`), and only for calls made by a client (anyone
  else calling the same model keeps the provider's own):

  * what is worth another try (`classify_error`: 429, 5xx, 408/409, timeouts, what the provider
    calls transient), and that a refused connection is not a rate limit: at most
    UNREACHABLE_ATTEMPTS attempts, then one line naming the model, the URL and what to check
    (Inspect would retry it like a 5xx, for minutes);
  * how long to wait: exponential backoff with jitter within `backoff`, and at least the server's
    Retry-After up to the cap (Inspect's own wait starts at 3 s, grows to 30 minutes and ignores
    Retry-After). Every retry is counted by cause in `CallStats`.

- **Deadline.** A batch of requests, retries included, ends within the API deadline
  (`api_deadline()`: the caller's value, else $TEACHWHY_API_DEADLINE, else 600 s) or fails with one
  line naming the model and its URL. Inspect's `timeout` stops retrying past it; an asyncio bound also
  ends an attempt that hangs.
- **Cache.** Inspect's own (`cache=True` or a `CachePolicy`: keyed by model, base URL, messages and
  config), off unless asked for. The LLM teacher keeps its resume store instead (teachers/llm.py says
  why).
- **Errors.** A request that cannot succeed comes back as a `Failure` (a one-line detail; cause None
  when it is not worth retrying, such as a bad request or a bad key), and the caller decides: the
  teacher stops, the reward judge scores zero, the eval judge records why it has no verdict. A refused
  connection always stops the command, with `unreachable_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from teachwhy.errors import UserError

if TYPE_CHECKING:
    from inspect_ai.model import CachePolicy, ChatMessage, GenerateConfig, Model

# every API path (teacher, judges, generate-mode target) has an overall deadline, in seconds
API_DEADLINE_ENV = "TEACHWHY_API_DEADLINE"
DEFAULT_API_DEADLINE = 600.0
# a refused connection is not a rate limit: this many attempts in all, then one clear error
UNREACHABLE_ATTEMPTS = 3
# Inspect keeps one connection pool per model for the whole process, sized by whoever asked first: a
# fixed, generous size so that it never binds; the client's semaphore is the limit
INSPECT_POOL = 1024
# providers whose SDK client (openai.AsyncOpenAI) takes max_retries/client_timeout through model_args
OPENAI_SDK_PROVIDERS = ("openai", "openai-api")
DEFAULT_BACKOFF = (0.5, 8.0)  # (first wait, longest wait) in seconds, before jitter


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


# ---------------------------------------------------------------------------------------------
# errors


def _unwrap(exc: BaseException) -> BaseException:
    """The last attempt's exception inside tenacity's RetryError (Inspect's loop ran out of retries)."""
    from tenacity import RetryError

    while isinstance(exc, RetryError) and exc.last_attempt.failed:
        inner = exc.last_attempt.exception()
        if inner is None:
            break
        exc = inner
    return exc


def short_error(exc: BaseException) -> str:
    """An exception in one line: its type and (at most 300 characters of) what the provider said."""
    exc = _unwrap(exc)
    # Inspect's ModelGenerateError carries the whole request in str(); its provider_message is the point
    text = " ".join(str(getattr(exc, "provider_message", None) or exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


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


def classify_error(exc: BaseException,
                   provider_should_retry: Callable[[Exception], Any] | None = None
                   ) -> tuple[str | None, float | None]:
    """('rate_limit' | 'server_error' | 'timeout' | 'transient' | 'unreachable', Retry-After seconds)
    for an error worth another try; (None, None) for one that is not (bad request, auth, unknown
    model). Errors without an HTTP status are put to the provider's own `should_retry`."""
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
    if provider_should_retry is None or not isinstance(exc, Exception):  # (Inspect asks it about Exceptions only)
        return None, None
    try:  # the provider knows its own transient errors (dropped connections, overloads, ...)
        decision = provider_should_retry(exc)
    except Exception:
        decision = False
    if decision:
        kind = getattr(decision, "kind", "transient")
        return ("rate_limit" if kind == "rate_limit" else "transient"), getattr(decision, "retry_after", None)
    return None, None


def base_url_of(model: Any) -> str | None:
    url = getattr(getattr(model, "api", None), "base_url", None)
    return str(url) if url else None


def at_url(model: Any) -> str:
    """' at <base URL>' for messages, or '' when the model has none."""
    url = base_url_of(model)
    return f" at {url}" if url else ""


def unreachable_error(role: str, model_id: str, model: Any) -> UserError:
    """The one-line error for an endpoint that refuses connections."""
    url = base_url_of(model) or "its base URL"
    return UserError(f"{role} model '{model_id}': cannot connect to {url} (connection refused, "
                     "retried briefly); check that the server is running and that the "
                     "base URL (e.g. OPENAI_BASE_URL or <SERVICE>_BASE_URL) and port are right")


def deadline_error(role: str, model_id: str, model: Any, deadline: float, what: str) -> UserError:
    """The one-line error for a model that missed the API deadline; `what`: e.g. 'did not answer'."""
    return UserError(f"{role} model '{model_id}'{at_url(model)} {what} within the API deadline of "
                     f"{deadline:g} s; check that the endpoint is up and not overloaded, or raise "
                     f"{API_DEADLINE_ENV}")


# ---------------------------------------------------------------------------------------------
# Inspect models and event loops


def open_model(model_id: str, role: str, model_args: dict[str, Any] | None = None,
               config: GenerateConfig | None = None) -> Model:
    """A fresh Inspect model (a memoized one may hold a client bound to a closed event loop), or a
    one-line UserError naming the `role` ("teacher", "judge") it was meant for."""
    from inspect_ai._util.error import PrerequisiteError
    from inspect_ai.model import GenerateConfig, get_model

    if model_id.startswith("teachwhy/"):
        import teachwhy.inspect_local  # noqa: F401  (registers the provider)
    try:
        return get_model(model_id, config=config or GenerateConfig(), memoize=False, **(model_args or {}))
    except (ValueError, PrerequisiteError, ImportError, TypeError) as exc:
        raise model_setup_error(f"{role} model '{model_id}'", model_id, exc) from None


def model_setup_error(label: str, model_id: str, exc: BaseException) -> UserError:
    """One plain line for an Inspect model that cannot be set up (`label` names it, e.g. "teacher model
    'openai/gpt-4o-mini'"). Inspect's messages carry rich markup, which is removed; a missing API key
    names the environment variable to set; only an id Inspect does not know gets a hint at other ids."""
    from rich.errors import MarkupError
    from rich.text import Text

    message = getattr(exc, "message", None)  # Inspect's PrerequisiteError keeps its (markup) text here
    text = message if isinstance(message, str) else str(exc)
    with contextlib.suppress(MarkupError):
        text = Text.from_markup(text).plain
    detail = " ".join(text.split()).removeprefix("ERROR: ")
    missing = re.search(r"No (.+?) defined in the environment", detail)
    if missing:
        first, *others = [n for n in re.split(r",\s*(?:or\s+)?|\s+or\s+", missing.group(1)) if n.strip()]
        also = f" (Inspect also accepts {' or '.join(others)})" if others else ""
        return UserError(f"{label} needs an API key: set {first} in the environment{also}")
    if not isinstance(exc, ValueError):
        return UserError(f"{label} cannot be used: {detail}")
    example = next(m for m in ("openai/gpt-4o-mini", "anthropic/claude-sonnet-4-0") if m != model_id)
    return UserError(f"{label} cannot be used: {detail} (use an Inspect id such as {example} or "
                     "openai-api/<service>/<model>)")


async def close_model(model: Any) -> None:
    close = getattr(getattr(model, "api", None), "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):  # closing is best effort
            await close()


def run_sync(make_coro: Callable[[], Any]) -> Any:
    """Run the coroutine `make_coro()` to completion from sync code, also when called inside a running
    event loop (then in a thread with its own loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(make_coro())
        except BaseException as exc:
            result["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


# ---------------------------------------------------------------------------------------------
# the client


@dataclass
class Completion:
    text: str
    stop_reason: str | None


@dataclass
class Failure:
    """A request given up on: `cause` as classify_error names it (None: not worth retrying)."""

    cause: str | None
    detail: str  # one line: the exception type and what the provider said
    retries: int

    @property
    def retryable(self) -> bool:
        return self.cause is not None


@dataclass
class CallStats:
    calls: int = 0  # attempts sent, retries included
    retries: int = 0
    retries_by_cause: Counter = field(default_factory=Counter)
    failures: int = 0  # requests given up on


class _Call:
    """One request in flight: the client's retry decisions for it, and the causes of its retries."""

    def __init__(self, client: LLMClient, provider_should_retry: Callable[[Exception], Any]):
        self.client = client
        self.provider_should_retry = provider_should_retry
        self.unreachable = 0
        self.waited: list[str] = []  # the cause of each failed attempt Inspect computed a wait for

    def should_retry(self, exc: BaseException) -> Any:
        from inspect_ai.model import RetryDecision

        cause, retry_after = classify_error(exc, self.provider_should_retry)
        if cause == "unreachable":
            self.unreachable += 1
            if self.unreachable >= UNREACHABLE_ATTEMPTS:
                return RetryDecision.no()
        if cause is None:
            return RetryDecision.no()
        if cause == "rate_limit":
            return RetryDecision.rate_limit(retry_after)
        return RetryDecision.transient(retry_after)

    def wait(self, retry_state: Any) -> float:
        """tenacity's wait before the next attempt (tenacity asks for it before checking whether
        max_retries stops the loop, so the last one may never be slept)."""
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        cause, retry_after = classify_error(exc, self.provider_should_retry) if exc else (None, None)
        self.waited.append(cause or "transient")  # or one Inspect retries by itself (an attempt timeout)
        return self.client.backoff_delay(retry_state.attempt_number - 1, retry_after)

    def count(self, error: BaseException | None) -> int:
        """Add this request's attempts and retries to the client's stats; returns its retries. A
        RetryError means max_retries (or Inspect's timeout) stopped the loop after the last wait."""
        from tenacity import RetryError

        retried = self.waited[:-1] if isinstance(error, RetryError) else self.waited
        stats = self.client.stats
        stats.calls += 1 + len(retried)
        stats.retries += len(retried)
        stats.retries_by_cause.update(retried)
        return len(retried)


_CALL: ContextVar[_Call | None] = ContextVar("teachwhy_llm_call", default=None)


def _take_retry_decisions(model: Model) -> Callable[[Exception], Any]:
    """Route `model`'s retry hooks (ModelAPI.should_retry / retry_wait, which Inspect's generate loop
    consults) to the client call in progress, if any; returns the provider's own should_retry."""
    api = model.api
    taken = getattr(api.should_retry, "provider_should_retry", None)
    if taken is not None:
        return taken
    provider_should_retry, provider_retry_wait = api.should_retry, api.retry_wait

    def should_retry(ex: Exception) -> Any:  # as ModelAPI.should_retry names its argument
        call = _CALL.get()
        return provider_should_retry(ex) if call is None else call.should_retry(ex)

    def retry_wait() -> Any:
        call = _CALL.get()
        return provider_retry_wait() if call is None else call.wait

    should_retry.provider_should_retry = provider_should_retry  # type: ignore[attr-defined]
    api.should_retry = should_retry  # type: ignore[method-assign]
    api.retry_wait = retry_wait  # type: ignore[method-assign]
    return provider_should_retry


class LLMClient:
    """Requests to one Inspect model in one role ("teacher", "judge"), made the way every teachwhy
    API path makes them (see the module docstring).

    `max_retries`: Inspect's retries per request; `attempt_timeout`: seconds per attempt (None: only
    the deadline bounds it); `backoff`: (first wait, longest wait) in seconds; `concurrency`: requests
    in flight; `cache`: Inspect's cache (False, True or a CachePolicy); `stats`: where attempts,
    retries and failures are counted (a CallStats, or a subclass the caller also counts in)."""

    def __init__(self, model_id: str, role: str, *, temperature: float | None = None,
                 max_tokens: int | None = None, max_retries: int = 3, attempt_timeout: float | None = None,
                 backoff: tuple[float, float] = DEFAULT_BACKOFF, concurrency: int = 4,
                 model_args: dict[str, Any] | None = None, cache: bool | CachePolicy = False,
                 seed: int | None = None, stats: CallStats | None = None):
        if concurrency < 1:
            raise UserError(f"{role} concurrency must be at least 1 (got {concurrency})")
        if max_retries < 0:
            raise UserError(f"{role} max_retries must be 0 or more (got {max_retries})")
        self.model_id = model_id
        self.role = role
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_retries = max_retries
        self.attempt_timeout = attempt_timeout
        self.backoff = backoff
        self.concurrency = concurrency
        self.cache = cache
        self.stats = stats if stats is not None else CallStats()
        self._rng = random.Random(seed)
        self.model_args = dict(model_args or {})
        if model_id.split("/", 1)[0] in OPENAI_SDK_PROVIDERS:
            # the OpenAI SDK retries twice by itself (honouring Retry-After up to a minute): off,
            # Inspect's loop is the only one; its request timeout is the attempt timeout
            self.model_args.setdefault("max_retries", 0)
            if attempt_timeout is not None:
                self.model_args.setdefault("client_timeout", float(attempt_timeout))

    def generate_config(self, deadline: float) -> GenerateConfig:
        from inspect_ai.model import GenerateConfig

        return GenerateConfig(
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            max_retries=self.max_retries,
            attempt_timeout=None if self.attempt_timeout is None else max(1, math.ceil(self.attempt_timeout)),
            timeout=max(1, math.ceil(deadline)),  # no retry starts past the deadline
            max_connections=INSPECT_POOL,
        )

    def backoff_delay(self, attempt: int, retry_after: float | None) -> float:
        """The wait before retry number `attempt` + 1: base * 2**attempt up to the cap, jittered into
        [d/2, d], and at least the server's Retry-After (capped)."""
        base, cap = self.backoff
        delay = min(cap, base * (2 ** attempt))
        delay = delay / 2 + self._rng.uniform(0, delay / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, cap))
        return delay

    async def complete_all(
        self,
        prompts: Sequence[str | list[ChatMessage]],
        *,
        deadline: float,
        what: str = "did not finish",
        started: float | None = None,
        model: Model | None = None,
        on_result: Callable[[int, Completion | Failure], None] | None = None,
    ) -> list[Completion | Failure]:
        """Each prompt's Completion or Failure, in order, with at most `concurrency` requests in
        flight. All of it, retries included, ends `deadline` seconds after `started` (a
        time.monotonic() value; default now), else a one-line UserError saying that the model `what`
        within the deadline. `on_result(i, result)` is called as each request ends (an exception it
        raises stops the batch). `model`: an Inspect Model made in this event loop by the caller;
        by default a fresh one is opened here and closed at the end."""
        own = model is None
        if model is None:
            model = open_model(self.model_id, self.role, self.model_args, self.generate_config(deadline))
        provider_should_retry = _take_retry_decisions(model)
        config = self.generate_config(deadline)
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(i: int, prompt: str | list[ChatMessage]) -> Completion | Failure:
            async with semaphore:
                result = await self._complete(model, config, prompt, provider_should_retry)
            if on_result is not None:
                on_result(i, result)
            return result

        left = deadline - (time.monotonic() - started) if started is not None else deadline
        try:
            return list(await asyncio.wait_for(asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))),
                                               max(0.01, left)))
        except TimeoutError:
            raise deadline_error(self.role, self.model_id, model, deadline, what) from None
        finally:
            if own:
                await close_model(model)

    async def _complete(self, model: Model, config: GenerateConfig, prompt: str | list[ChatMessage],
                        provider_should_retry: Callable[[Exception], Any]) -> Completion | Failure:
        call = _Call(self, provider_should_retry)
        token = _CALL.set(call)
        try:
            output = await model.generate(prompt, config=config, cache=self.cache)
        except Exception as exc:  # any failure: classified below
            retries = call.count(exc)
            cause, _ = classify_error(exc, provider_should_retry)
            if cause == "unreachable":
                raise unreachable_error(self.role, self.model_id, model) from None
            self.stats.failures += 1
            return Failure(cause, short_error(exc), retries)
        finally:
            _CALL.reset(token)
        call.count(None)
        stop = getattr(output.stop_reason, "value", output.stop_reason)
        return Completion(output.completion or "", str(stop) if stop is not None else None)
