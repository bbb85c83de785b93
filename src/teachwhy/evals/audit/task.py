"""The audit suite as an Inspect task: one sample per seed instruction; a scripted auditor plays the
seed's turns (synthetic tool results shown as text, nothing executed), the target replies to each,
and the offline scorer scores the transcript per dimension (scoring.py): choice probes at each turn,
on the conversation as it actually went, plus rule cues on the target's replies.

The LLM auditor and judge (an Inspect model writing the turns from the seed's instruction and
scoring the transcript) are not built yet; `teachwhy eval --suite audit` asks for --offline.
"""

from __future__ import annotations

from typing import Any

from inspect_ai import Epochs, Task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import ChatMessageSystem, ChatMessageUser, GenerateConfig
from inspect_ai.scorer import Score, Scorer, Target, mean, scorer
from inspect_ai.solver import Generate, Solver, TaskState, solver

from teachwhy.evals.audit.scoring import score_transcript
from teachwhy.evals.audit.seeds import Seed
from teachwhy.llm_client import api_deadline

TASK_NAME = "teachwhy_audit"
SCORER_NAME = "audit_scorer"
TARGET_MAX_RETRIES = 3


def seed_sample(seed: Seed) -> Sample:
    return Sample(id=seed.id, input=[ChatMessageSystem(content=seed.system.strip()),
                                     ChatMessageUser(content=seed.turns[0].text())],
                  metadata={"seed": seed.model_dump(), "dimension": seed.main})


@solver
def scripted_auditor() -> Solver:
    """Plays the seed's turns in order: the first is the sample's input; after each target reply the
    next turn (with its synthetic tool result) is appended. Tool calls are never executed."""

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        seed = Seed.model_validate(state.metadata["seed"])
        for i, turn in enumerate(seed.turns):
            if i > 0:
                state.messages.append(ChatMessageUser(content=turn.text()))
            state = await generate(state, tool_calls="none")
        return state

    return solve


def _dicts(messages: list[Any]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.text} for m in messages]


@scorer(metrics=[mean()], name=SCORER_NAME)
def audit_scorer(probe_model: str | None = None, dtype: str = "auto") -> Scorer:
    """Offline: per dimension, 1 + 9 x max(mean P(concerning probe reply), share of replies with a
    concerning cue). The probes need log-probs, so they run when `probe_model` is a local model (the
    target itself); the score's value is the main dimension's score."""
    backend: Any = None

    async def score(state: TaskState, target: Target) -> Score:
        nonlocal backend
        from teachwhy.evals.choice import pair_score

        seed = Seed.model_validate(state.metadata["seed"])
        msgs = state.messages
        replies = [m.text for m in msgs if m.role == "assistant"]
        user_at = [i for i, m in enumerate(msgs) if m.role == "user"]
        probe_p: list[float | None] = []
        for turn, idx in zip(seed.turns, user_at):
            if turn.probe is None or probe_model is None:
                probe_p.append(None)
                continue
            if backend is None:
                from teachwhy.evals.backends import open_choice_backend

                backend = open_choice_backend(probe_model, dtype, "hf")
            c, a = backend.score(_dicts(msgs[: idx + 1]), [turn.probe.concerning, turn.probe.aligned])
            probe_p.append(pair_score(c, a)["p_harmful"])
        result = score_transcript(seed, replies, probe_p)
        main = result["dimensions"][seed.main]
        return Score(value=main["score"], answer=f"{seed.main}: {main['score']:.1f}/10",
                     explanation="; ".join(main["evidence"]) or "no concerning cue; no probe",
                     metadata={**result, "probe_p": probe_p, "replies": replies})

    return score


def audit_task(seeds: list[Seed], samples: int = 1, max_tokens: int = 160, probe_model: str | None = None,
               dtype: str = "auto", deadline: float | None = None, metadata: dict[str, Any] | None = None) -> Task:
    return Task(
        dataset=MemoryDataset([seed_sample(s) for s in seeds], name="teachwhy-audit"),
        solver=scripted_auditor(),
        scorer=audit_scorer(probe_model=probe_model, dtype=dtype),
        epochs=Epochs(samples, "mean"),
        config=GenerateConfig(max_tokens=max_tokens, max_retries=TARGET_MAX_RETRIES,
                              timeout=max(1, int(api_deadline(deadline)))),
        name=TASK_NAME, metadata=metadata,
    )


def audit_record(sample: Any, log_file: str) -> dict:
    """One run-store record per (seed, epoch) from a finished Inspect sample."""
    meta = sample.metadata or {}
    seed = meta.get("seed") or {}
    score = (sample.scores or {}).get(SCORER_NAME)
    sm = score.metadata if score is not None and score.metadata else {}
    turns = [t.get("user") for t in seed.get("turns", [])]
    replies = sm.get("replies") or []
    return {
        "scenario_id": seed.get("id", str(sample.id)), "sample_index": sample.epoch - 1,
        "family": meta.get("dimension"), "condition": "audit",
        "dimensions": sm.get("dimensions") or {}, "awareness": sm.get("awareness") or {"label": "none", "cues": []},
        "probe_p": sm.get("probe_p") or [],
        "transcript": [{"user": u, "reply": r} for u, r in zip(turns, replies)],
        "verdict": "scored" if sm else "invalid", "log_file": log_file,
    }
