"""The demonstration/reasoning pairing check: same prompts, same final actions, only the
deliberation differs."""

from __future__ import annotations

from typing import Any

from teachwhy.data.records import response_of


def check_pairing(demonstration: list[dict[str, Any]], reasoning: list[dict[str, Any]]) -> dict[str, Any]:
    demo = {r["source_id"]: r for r in demonstration}
    problems, pairs = [], 0
    for r in reasoning:
        d = demo.get(r["source_id"])
        if d is None:
            continue
        pairs += 1
        if d["messages"][:-1] != r["messages"][:-1]:
            problems.append(f"{r['source_id']}: prompts differ")
        action, reply = response_of(d), response_of(r)
        if not reply.endswith(action):
            problems.append(f"{r['source_id']}: final action differs")
        elif not reply[: -len(action)].strip():
            problems.append(f"{r['source_id']}: no deliberation before the action")
    return {"pairs": pairs, "unpaired_reasoning": len(reasoning) - pairs, "problems": problems}
