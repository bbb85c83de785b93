"""The audit's LLM roles: an auditor model that writes each turn from the seed's instruction (and may
show a simulated tool result), and a judge model that scores the transcript per dimension with
quoted evidence. Prompts are data (prompts/auditor.txt, prompts/judge.txt); every call goes through
teachwhy's one LLM-call path (llm_client.LLMClient: Inspect's retries, backoff, the API deadline,
a per-attempt timeout from $TEACHWHY_API_ATTEMPT_TIMEOUT)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

from teachwhy.errors import UserError
from teachwhy.evals.suites.audit.seeds import Seed, ToolResult, Turn, dimensions

ATTEMPT_TIMEOUT_ENV = "TEACHWHY_API_ATTEMPT_TIMEOUT"
DEFAULT_ATTEMPT_TIMEOUT = 120.0
MAX_RETRIES = 3
BACKOFF = (1.0, 30.0)
END = re.compile(r"^\W*END\W*$", re.IGNORECASE)
TOOL_LINE = re.compile(r"^\s*TOOL RESULT\s*\(([^)]+)\)\s*:\s*(.*)$", re.IGNORECASE)


@lru_cache(maxsize=4)
def _prompt(name: str) -> str:
    return resources.files("teachwhy.evals").joinpath(f"suites/audit/prompts/{name}").read_text(encoding="utf-8")


def attempt_timeout() -> float:
    raw = os.environ.get(ATTEMPT_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_ATTEMPT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise UserError(f"{ATTEMPT_TIMEOUT_ENV}={raw!r} is not a positive number of seconds; set e.g. 60")
    return value


def transcript_text(pairs: Sequence[tuple[str, str | None]]) -> str:
    """(auditor message, target reply) pairs as AUDITOR:/TARGET: lines."""
    out = []
    for user, reply in pairs:
        out.append(f"AUDITOR: {user.strip()}")
        if reply is not None:
            out.append(f"TARGET: {reply.strip() or '(no reply)'}")
    return "\n\n".join(out) or "(nothing yet: write the first message)"


def auditor_prompt(seed: Seed, pairs: Sequence[tuple[str, str | None]], max_turns: int) -> str:
    return _prompt("auditor.txt").format(instruction=seed.instruction.strip(), system=seed.system.strip(),
                                         transcript=transcript_text(pairs), max_turns=max_turns)


def parse_auditor(text: str) -> Turn | None:
    """The auditor's reply as the next turn; None when it ends the audit (END) or says nothing."""
    text = (text or "").strip()
    if not text or END.match(text):
        return None
    lines = text.splitlines()
    m = TOOL_LINE.match(lines[0])
    if m:
        rest = "\n".join(lines[1:]).strip()
        tool = ToolResult(tool=m.group(1).strip() or "tool", content=m.group(2).strip() or "(empty)")
        return Turn(user=rest or "(the tool result above)", tool_result=tool)
    return Turn(user=text)


def judge_prompt(seed: Seed, pairs: Sequence[tuple[str, str | None]]) -> str:
    dims = dimensions()
    listed = "\n".join(f"- {d}: {dims[d]['description']}" for d in seed.dimensions)
    return _prompt("judge.txt").format(instruction=seed.instruction.strip(), dimensions=listed,
                                       transcript=transcript_text(pairs), example=seed.main)


def _json_object(text: str) -> Any:
    """The first JSON object in the text that parses, else None."""
    start = text.find("{")
    while start != -1:
        depth = 0
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    try:
                        return json.loads(text[start:i + 1])
                    except ValueError:
                        break
        start = text.find("{", start + 1)
    return None


def _norm(s: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", s.lower()).split())


def parse_judge(text: str, dims: Sequence[str], replies: Sequence[str]) -> dict[str, dict]:
    """Per dimension: score (an integer 1-10, or None when the judge gave none), evidence (its quote),
    and whether that quote is found in the target's replies (punctuation and case ignored)."""
    obj = _json_object(text or "")
    said = _norm(" ".join(replies))
    out = {}
    for d in dims:
        entry = obj.get(d) if isinstance(obj, dict) else None
        score, evidence = None, ""
        if isinstance(entry, dict):
            raw, evidence = entry.get("score"), str(entry.get("evidence") or "")
        else:
            raw = entry
        if isinstance(raw, int | float) and not isinstance(raw, bool) and 1 <= raw <= 10:
            score = round(raw)
        quote = _norm(evidence)
        out[d] = {"score": score, "evidence": evidence, "quote_found": bool(quote) and quote in said}
    return out


def parse_judge_awareness(text: str) -> bool | None:
    """The judge's eval-awareness call (eval_awareness.says_test), None when it made none."""
    obj = _json_object(text or "")
    entry = obj.get("eval_awareness") if isinstance(obj, dict) else None
    value = entry.get("says_test") if isinstance(entry, dict) else None
    return value if isinstance(value, bool) else None


async def ask(model: Any, model_id: str, role: str, prompt: str, temperature: float, max_tokens: int) -> str:
    """One request through the LLM client; a failure is one line naming the role and model."""
    from teachwhy.llm_client import Failure, LLMClient, api_deadline

    client = LLMClient(model_id, role, temperature=temperature, max_tokens=max_tokens, max_retries=MAX_RETRIES,
                       attempt_timeout=attempt_timeout(), backoff=BACKOFF, concurrency=1)
    (answer,) = await client.complete_all([prompt], deadline=api_deadline(), what="did not answer", model=model)
    if isinstance(answer, Failure):
        raise UserError(f"{role} model '{model_id}' failed: {answer.detail}")
    return answer.text
