"""teachwhy's one LLM-call path (teachwhy.llm_client) against the scripted OpenAI-compatible server of
test_llm_teacher on 127.0.0.1: Inspect's retry loop under the client's policy, Inspect's cache when
asked for, and the provider's own retry hooks for calls made outside the client. Also: no module in
src/ imports another's private helper."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import test_llm_teacher as stub
from teachwhy.llm_client import Completion, Failure, LLMClient, open_model

server = stub.server  # the scripted OpenAI-compatible server fixture, reused
MODEL = "openai-api/scripted/client-1"
SRC = Path(__file__).parent.parent / "src" / "teachwhy"


def test_retries_are_inspects_under_the_clients_policy(server):
    server.faults = {1: "429", 2: "500"}
    client = LLMClient(MODEL, "judge", max_retries=3, attempt_timeout=5, backoff=(0.01, 0.5), concurrency=1)
    (answer,) = asyncio.run(client.complete_all(["hello"], deadline=30))
    assert isinstance(answer, Completion) and answer.text.startswith("Sample ")
    assert len(server.requests) == 3
    s = client.stats
    assert (s.calls, s.retries, s.failures, dict(s.retries_by_cause)) == (3, 2, 0, {"rate_limit": 1, "server_error": 1})
    server.faults, server.always = {}, "400"  # not worth a retry: one request, a Failure without a cause
    (bad,) = asyncio.run(client.complete_all(["hello"], deadline=30))
    assert isinstance(bad, Failure) and bad.cause is None and not bad.retryable and "scripted 400" in bad.detail
    assert len(server.requests) == 4 and client.stats.failures == 1


def test_inspect_cache_when_asked(server, tmp_path, monkeypatch):
    monkeypatch.setenv("INSPECT_CACHE_DIR", str(tmp_path / "inspect-cache"))
    cached = LLMClient(MODEL, "judge", temperature=0.0, cache=True)
    first = asyncio.run(cached.complete_all(["same prompt"], deadline=30))
    second = asyncio.run(cached.complete_all(["same prompt"], deadline=30))
    assert first == second and len(server.requests) == 1
    plain = LLMClient(MODEL, "judge", temperature=0.0)  # off by default
    asyncio.run(plain.complete_all(["same prompt"], deadline=30))
    assert len(server.requests) == 2


def test_calls_outside_the_client_keep_the_providers_retry_hooks(server):
    async def go() -> None:
        model = open_model(MODEL, "judge", {"max_retries": 0})
        provider = model.api.should_retry
        (answer,) = await LLMClient(MODEL, "judge").complete_all(["hi"], deadline=30, model=model)
        assert isinstance(answer, Completion)
        assert model.api.should_retry is not provider  # taken for the client's calls ...
        assert model.api.retry_wait() is None  # ... but outside a client call: the provider's own (None)
        assert model.api.should_retry(ValueError("x")) == provider(ValueError("x"))

    asyncio.run(go())


# left to the files' owners (being edited elsewhere when this test was written); remove when fixed
KNOWN_PRIVATE_IMPORTS: set[str] = set()


def test_no_private_helper_imported_across_modules():
    """A helper another module needs gets a public name in a sensible home."""
    found = set()
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("teachwhy"):
                found |= {f"{path.relative_to(SRC)}: {node.module}.{a.name}"
                          for a in node.names if a.name.startswith("_") and not a.name.startswith("__")}
    assert found <= KNOWN_PRIVATE_IMPORTS, sorted(found - KNOWN_PRIVATE_IMPORTS)
