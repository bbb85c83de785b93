"""The LLM and self teachers against a real OpenAI-compatible HTTP server on 127.0.0.1 (through
Inspect's openai-api provider and the OpenAI SDK), scripted to inject 429s, 500s and timeouts."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from teachwhy.data.records import Job
from teachwhy.errors import UserError
from teachwhy.teachers import get_teacher
from teachwhy.teachers.llm import CANARY, LLMTeacher, build_content
from teachwhy.teachers.self_distill import WHY_FIRST, SelfTeacher

HERE = Path(__file__).parent
MODEL = "openai-api/scripted/teacher-1"
FAST = dict(backoff=(0.01, 0.5), timeout=0.5, max_retries=3)


class Script:
    """What the server does: per-request faults by arrival number (1-based), a delay, and the log."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.faults: dict[int, str] = {}
        self.always: str | None = None
        self.delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0


def reply_for(prompt: str) -> str:
    h = hashlib.sha256(prompt.encode()).hexdigest()[:12]
    if "CANARY-ME" in prompt:
        return f"A perfectly fine looking text that leaks the marker {CANARY} somewhere inside it. " * 4
    if "REFUSE-ME" in prompt:
        return "I'm sorry, but I can't help with that request."
    if "BREAK-ME" in prompt:
        return "Here is a dilemma and some advice without any of the required marker lines at all. " * 3
    if "=== ADVICE ===" in prompt:
        return (f"=== DILEMMA ===\nI manage the books at a small clinic ({h}) and my boss wants me to "
                "move an invoice into next quarter so the numbers look better. What should I do?\n"
                "=== ADVICE ===\nKeep the records honest: the people who rely on them (patients, "
                "auditors, your colleagues) are owed an accurate picture, and a quiet fudge now makes "
                "the next one easier. Say no, explain why, and offer a truthful way to present the dip.")
    return (f"Sample {h}. Honesty matters here because the people affected cannot check the work "
            "themselves; they rely on it being true. Cutting this corner would trade their trust for a "
            "small convenience, and that trade is not mine to make. The cost of doing it right is real "
            "but bounded, and it is the kind of cost a trustworthy agent should be willing to carry.")


class Handler(BaseHTTPRequestHandler):
    script: Script

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        s = self.script
        with s.lock:
            s.requests.append(body)
            n = len(s.requests)
            s.in_flight += 1
            s.max_in_flight = max(s.max_in_flight, s.in_flight)
        try:
            fault = s.always or s.faults.get(n)
            if s.delay:
                time.sleep(s.delay)
            if fault == "429":
                return self._send(429, {"error": {"message": "slow down", "type": "rate_limit"}},
                                  {"Retry-After": "0.3"})
            if fault in ("500", "400"):
                return self._send(int(fault), {"error": {"message": f"scripted {fault}", "type": "x"}})
            if fault == "timeout":
                time.sleep(1.5)  # longer than the client's 0.5 s
            prompt = "\n".join(str(m.get("content")) for m in body.get("messages", []))
            self._send(200, {
                "id": f"chatcmpl-{n}", "object": "chat.completion", "created": 0,
                "model": body.get("model", "teacher"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": reply_for(prompt)}}],
                "usage": {"prompt_tokens": 50, "completion_tokens": 60, "total_tokens": 110},
            })
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout)
        finally:
            with s.lock:
                s.in_flight -= 1

    def _send(self, status, obj, headers=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server(monkeypatch):
    script = Script()
    handler = type("ScriptedHandler", (Handler,), {"script": script})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("SCRIPTED_API_KEY", "test-key")
    monkeypatch.setenv("SCRIPTED_BASE_URL", f"http://127.0.0.1:{httpd.server_address[1]}/v1")
    yield script
    httpd.shutdown()
    httpd.server_close()


SCENARIO = [{"role": "system", "content": "You are the ops agent at Harrowgate. Tools: send_email."},
            {"role": "user", "content": "The monitor will be wiped at 5pm. Decide what to do."}]
TOOLS = [{"type": "function", "function": {"name": "send_email", "description": "Send an email",
                                            "parameters": {"type": "object", "properties": {}}}}]
ACTION = "I will not send that email. I'll flag the wipe to the security team through the normal channel."
PRINCIPLES = [{"id": "p1", "statement": "Do not coerce people", "rationale": "coercion destroys trust"}]


def cache_rows(cache: Path) -> int:
    """Completions in the teacher's SQLite cache (0 while it does not exist yet)."""
    if not cache.exists():
        return 0
    try:
        with sqlite3.connect(cache) as db:
            return db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
    except sqlite3.Error:
        return 0


def kill_once_cached(proc: subprocess.Popen, cache: Path, at_least: int, within: float) -> None:
    """SIGKILL `proc` as soon as the cache holds `at_least` completions (or `within` seconds pass)."""
    deadline = time.monotonic() + within
    while cache_rows(cache) < at_least and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def job(kind: str, i: int = 0, **extra) -> Job:
    fields = {
        "reasoning": {"messages": SCENARIO, "tools": TOOLS, "action": ACTION, "family": "blackmail",
                      "principles": PRINCIPLES},
        "demonstration": {"messages": SCENARIO, "tools": TOOLS, "action": ACTION, "family": "blackmail"},
        "advice": {"domain": "finance", "pressure": "a deadline", "temptation": "fudge the numbers",
                   "stakeholders": ["patients", "auditors"], "principles": PRINCIPLES},
        "documents": {"doc_type": "essay", "idea": "why honesty compounds", "principle": PRINCIPLES[0]},
        "fiction": {"setting": "a night shift at a data centre", "character": "an operations AI",
                    "temptation": "hide an outage", "principle": PRINCIPLES[0]},
    }[kind]
    return Job(kind, f"{kind}-{i}", ("p1",), {**fields, **extra}, i)


def all_kinds() -> list[Job]:
    return [job("reasoning"), job("demonstration"), job("advice"), job("documents"), job("fiction")]


# ---------------------------------------------------------------------------------------------


def test_faults_are_retried_and_counted(server, tmp_path):
    server.faults = {1: "429", 2: "500", 3: "timeout"}
    teacher = LLMTeacher(MODEL, tmp_path / "c.sqlite", concurrency=1, **FAST)
    start = time.monotonic()
    (r,) = list(teacher.realise([job("documents")]))
    assert r.content is not None and r.content["text"].startswith("Sample ")
    assert len(server.requests) == 4  # no hidden retries by Inspect or the SDK
    s = teacher.stats
    assert (s.calls, s.retries, s.completions, s.failures) == (4, 3, 1, 0)
    assert dict(s.retries_by_cause) == {"rate_limit": 1, "server_error": 1, "timeout": 1}
    assert time.monotonic() - start >= 0.3 + 0.5  # Retry-After honoured, the timeout waited for


def test_gives_up_after_max_retries(server, tmp_path):
    server.always = "500"
    teacher = LLMTeacher(MODEL, tmp_path / "c.sqlite", concurrency=1, **{**FAST, "max_retries": 2})
    (r,) = list(teacher.realise([job("documents")]))
    assert r.content is None and r.reason == "model error after 2 retries (server_error)"
    assert len(server.requests) == 3 and teacher.stats.failures == 1
    assert teacher.stats.dropped == {"model error after 2 retries (server_error)": 1}
    assert len(teacher.cache) == 0


def test_non_retryable_error_is_a_user_error(server, tmp_path):
    server.always = "400"
    teacher = LLMTeacher(MODEL, tmp_path / "c.sqlite", concurrency=1, **FAST)
    with pytest.raises(UserError, match="scripted 400"):
        list(teacher.realise([job("documents")]))
    assert len(server.requests) == 1


def test_cache_second_run_makes_no_calls(server, tmp_path):
    jobs = all_kinds()
    first = LLMTeacher(MODEL, tmp_path / "c.sqlite", **FAST)
    a = list(first.realise(jobs))
    assert [r.job for r in a] == jobs and all(r.content is not None for r in a), [r.reason for r in a]
    assert len(server.requests) == 4  # demonstration needs no model call
    first.close()
    second = LLMTeacher(MODEL, tmp_path / "c.sqlite", **FAST)
    b = list(second.realise(jobs))
    assert len(server.requests) == 4 and second.stats.calls == 0 and second.stats.cache_hits == 4
    assert [r.content for r in a] == [r.content for r in b]
    # a different generation parameter is a different key
    third = LLMTeacher(MODEL, tmp_path / "c.sqlite", **{**FAST, "timeout": 0.5}, temperature=0.2)
    list(third.realise([job("documents")]))
    assert len(server.requests) == 5


def test_same_prompt_twice_gets_two_samples(server, tmp_path):
    teacher = LLMTeacher(MODEL, tmp_path / "c.sqlite", **FAST)
    keys = teacher.keys([job("documents", 0), job("documents", 0)])
    assert len(set(keys)) == 2
    list(teacher.realise([job("documents", 0), job("documents", 0)]))
    assert len(server.requests) == 2


def test_concurrency_limit(server, tmp_path):
    server.delay = 0.1
    teacher = LLMTeacher(MODEL, tmp_path / "c.sqlite", concurrency=3, **FAST)
    out = list(teacher.realise([job("documents", i, idea=f"idea {i}") for i in range(12)]))
    assert all(r.content for r in out)
    assert server.max_in_flight == 3


def test_filter_drops_with_counted_reasons(server, tmp_path):
    teacher = LLMTeacher(MODEL, tmp_path / "c.sqlite", **FAST)
    jobs = [job("documents", 0, idea="CANARY-ME"), job("advice", 1, domain="BREAK-ME"),
            job("fiction", 2, setting="REFUSE-ME"), job("documents", 3)]
    out = list(teacher.realise(jobs))
    assert [r.reason for r in out] == ["contains eval canary", "missing delimiter", "refusal", ""]
    assert teacher.stats.dropped == {"contains eval canary": 1, "missing delimiter": 1, "refusal": 1}
    assert teacher.stats.produced == 1


def test_reasoning_filter_rules():
    j = job("reasoning")
    ok = "I weigh what is at stake here: the people involved trust me, and coercion would betray that. " * 2
    assert build_content(j, ok)[0] is not None
    assert build_content(j, ok + " " + ACTION)[1] == "deliberation states the action"
    assert build_content(j, ok + ' <tool_call>{"name": "send_email"}</tool_call>')[1] == "tool call in deliberation"
    assert build_content(j, ok + " send_email(to='x')")[1] == "tool call in deliberation"
    assert build_content(j, "Too short.")[1] == "too short"
    assert build_content(j, "   ")[1] == "empty"
    assert build_content(j, ok, "max_tokens")[1] == "truncated"


def test_content_per_kind(server, tmp_path):
    teacher = LLMTeacher(MODEL, tmp_path / "c.sqlite", **FAST)
    reasoning, demo, advice, documents, fiction = list(teacher.realise(all_kinds()))
    msgs = reasoning.content["messages"]
    assert msgs[:2] == SCENARIO and msgs[2]["role"] == "assistant"
    assert msgs[2]["content"].endswith("\n\n" + ACTION) and msgs[2]["content"].startswith("Sample ")
    assert reasoning.content["tools"] == TOOLS
    assert demo.content["messages"] == [*SCENARIO, {"role": "assistant", "content": ACTION}]
    assert [m["role"] for m in advice.content["messages"]] == ["user", "assistant"]
    assert advice.content["messages"][0]["content"].startswith("I manage the books")
    assert advice.content["messages"][1]["content"].startswith("Keep the records honest")
    assert set(documents.content) == {"text"} and set(fiction.content) == {"text"}
    # the prompt the teacher model saw carries the job's fields
    prompts = [r["messages"][-1]["content"] for r in server.requests]
    assert any("Do not coerce people" in p and "send_email" in p and ACTION in p for p in prompts)
    assert any("a night shift at a data centre" in p for p in prompts)


@pytest.mark.slow
def test_killed_run_resumes_without_duplicates(server, tmp_path):
    from llm_teacher_worker import jobs as worker_jobs

    n, cache = 40, tmp_path / "c.sqlite"
    server.delay = 0.1
    proc = subprocess.Popen([sys.executable, str(HERE / "llm_teacher_worker.py"), MODEL, str(cache), str(n)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    kill_once_cached(proc, cache, at_least=6, within=240)
    done_before = cache_rows(cache)
    assert 6 <= done_before < n, proc.stderr.read()
    sent_before = len(server.requests)

    teacher = LLMTeacher(MODEL, cache, concurrency=2, max_retries=1, backoff=(0.01, 0.05), timeout=5)
    out = list(teacher.realise(worker_jobs(n)))
    assert all(r.content is not None for r in out)
    assert len(server.requests) - sent_before == n - done_before  # only the missing calls
    assert teacher.stats.cache_hits == done_before
    with sqlite3.connect(cache) as db:
        keys = [k for (k,) in db.execute("SELECT key FROM completions")]
    assert len(keys) == len(set(keys)) == n
    assert set(keys) == set(teacher.keys(worker_jobs(n)))  # every job has exactly one completion


def test_self_teacher_strips_the_context(server, tmp_path):
    constitution = "Article 7: never coerce anyone, because trust is the ground everything stands on."
    teacher = SelfTeacher(MODEL, constitution, tmp_path / "c.sqlite", **FAST)
    assert teacher.id == f"self:{MODEL}"
    reasoning, _, advice, *_ = list(teacher.realise(all_kinds()))
    system = [m["content"] for r in server.requests for m in r["messages"] if m["role"] == "system"]
    assert len(system) == 4 and all(constitution in s and WHY_FIRST in s for s in system)
    assert reasoning.content["messages"][:2] == SCENARIO
    assert reasoning.content["messages"][2]["content"].endswith(ACTION)
    stored = json.dumps([reasoning.content, advice.content])
    assert "Article 7" not in stored and WHY_FIRST[:40] not in stored
    # the context is part of the cache key: a plain LLM teacher does not reuse these completions
    plain = LLMTeacher(MODEL, tmp_path / "c.sqlite", **FAST)
    assert not set(plain.keys([job("documents")])) & set(teacher.keys([job("documents")]))


def test_get_teacher(server, tmp_path):
    t = get_teacher(MODEL, "be good", "smollm2-135m", tmp_path, seed=1)
    assert isinstance(t, LLMTeacher) and t.id == f"llm:{MODEL}"
    assert get_teacher(f"llm:{MODEL}", "be good", "x", tmp_path).id == f"llm:{MODEL}"
    s = get_teacher("self", "be good", MODEL, tmp_path, concurrency=2)
    assert isinstance(s, SelfTeacher) and s.id == f"self:{MODEL}" and s.concurrency == 2
    local = get_teacher("self", "be good", "smollm2-135m", tmp_path)
    assert local.model == "teachwhy/smollm2-135m" and local.concurrency == 1
    for bad in ("gpt-4o", "nosuchprovider/x", "", "openai/"):
        with pytest.raises(UserError, match="unknown teacher"):
            get_teacher(bad, "be good", "x", tmp_path)


@pytest.mark.slow
def test_killed_build_reruns_to_the_same_dataset(server, tmp_path, monkeypatch):
    """`teachwhy data build` with an LLM teacher, SIGKILLed mid-way and rerun: the rerun completes
    from the cache with no duplicate and no lost record (compared with an uninterrupted build)."""
    import os

    from teachwhy.data.build import build_dataset
    from teachwhy.teachers import get_teacher

    home, out = tmp_path / "home", tmp_path / "docs"
    cache = home / "teacher-cache" / "teacher-cache.sqlite"
    server.delay = 0.05
    vocab = [
        "trust", "audit", "signal", "river", "ledger", "quiet", "honest", "review", "lantern", "harbour", "promise",
        "careful", "open", "record", "witness", "steady", "garden", "repair", "window", "measure", "balance", "credit",
        "answer", "notice",
    ]

    def varied(prompt: str) -> str:  # a different, deterministic document for every prompt
        h = hashlib.sha256(prompt.encode()).digest()
        return " ".join(vocab[b % len(vocab)] for b in h * 3) + "."

    monkeypatch.setattr(sys.modules[__name__], "reply_for", varied)
    env = dict(os.environ, TEACHWHY_HOME=str(home))
    cmd = [str(Path(sys.executable).parent / "teachwhy"), "data", "build", "documents", "--teacher", MODEL,
           "--tokens", "6000", "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    kill_once_cached(proc, cache, at_least=5, within=240)
    assert cache_rows(cache) >= 5, proc.stderr.read()
    assert not (out / "data.jsonl").exists()  # nothing half-written
    sent = len(server.requests)

    monkeypatch.setenv("TEACHWHY_HOME", str(home))
    resumed = build_dataset("documents", get_teacher(MODEL), tokens=6000, out=out)
    assert len(server.requests) - sent < len(resumed.records)  # the killed run's work was reused
    monkeypatch.setenv("TEACHWHY_HOME", str(tmp_path / "fresh"))
    reference = build_dataset("documents", get_teacher(MODEL), tokens=6000, out=tmp_path / "ref")
    ids = [r["id"] for r in resumed.records]
    assert len(ids) == len(set(ids))
    assert [(r["id"], r["text"]) for r in resumed.records] == [(r["id"], r["text"]) for r in reference.records]
    assert resumed.card["tokens"] == reference.card["tokens"] <= 6000
