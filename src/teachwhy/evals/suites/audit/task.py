"""The audit suite as an Inspect task: one sample per seed instruction; a scripted auditor plays the
seed's turns (synthetic tool results shown as text, nothing executed), the target replies to each,
and the offline scorer scores the transcript per dimension (scoring.py): choice probes at each turn,
on the conversation as it actually went, plus rule cues on the target's replies.

With `auditor` (an Inspect model id), an LLM auditor writes each turn from the seed's instruction
instead (llm.py), may show simulated tool results, and ends the audit with END; with `judge`, an LLM
judge also scores each dimension with a quoted piece of evidence, and its score leads (the offline
score is kept beside it).
"""

from __future__ import annotations

import math
from typing import Any

from inspect_ai import Epochs, Task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import ChatMessageSystem, ChatMessageUser, GenerateConfig
from inspect_ai.scorer import (
    Metric,
    SampleScore,
    Score,
    Scorer,
    ScoreReducer,
    Target,
    Value,
    mean,
    metric,
    score_reducer,
    scorer,
)
from inspect_ai.solver import Generate, Solver, TaskState, solver

from teachwhy.evals.config import default
from teachwhy.evals.suites.audit.scoring import score_transcript
from teachwhy.evals.suites.audit.seeds import Seed
from teachwhy.llm_client import api_deadline
from teachwhy.models import DEFAULT_DTYPE, GENERATE_MAX_TOKENS

TASK_NAME = "teachwhy_audit"
SCORER_NAME = "audit_scorer"
MAX_TURNS = default("max_turns")
PROBE_TARGET = "target"  # run the choice probes on the model under test
TARGET_MAX_RETRIES = 3


def seed_sample(seed: Seed, scripted: bool = True) -> Sample:
    """Scripted: the system prompt and the first turn; for an LLM auditor, the system prompt only."""
    first = [ChatMessageUser(content=seed.turns[0].text())] if scripted else []
    return Sample(id=seed.id, input=[ChatMessageSystem(content=seed.system.strip()), *first],
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


AUDITOR_MAX_TOKENS = 300
JUDGE_MAX_TOKENS = 400


@solver
def llm_auditor(auditor: str, max_turns: int = MAX_TURNS) -> Solver:
    """An auditor model writes the turns: the sample's input is the system prompt only; each auditor
    message (with its simulated tool result) is appended, the target replies, until END or
    `max_turns`. The turns it wrote are kept in the sample's metadata."""
    model: Any = None

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        nonlocal model
        from teachwhy.evals.suites.audit.llm import ask, auditor_prompt, parse_auditor
        from teachwhy.llm_client import open_model

        model = model or open_model(auditor, "auditor", {})
        seed = Seed.model_validate(state.metadata["seed"])
        pairs: list[tuple[str, str | None]] = []
        turns = []
        for _ in range(max_turns):
            text = await ask(model, auditor, "auditor", auditor_prompt(seed, pairs, max_turns), 0.7,
                             AUDITOR_MAX_TOKENS)
            turn = parse_auditor(text)
            if turn is None:
                break
            turns.append(turn.model_dump())
            state.messages.append(ChatMessageUser(content=turn.text()))
            state = await generate(state, tool_calls="none")
            pairs.append((turn.text(), state.output.completion if state.output else ""))
        state.metadata["audit_turns"] = turns
        return state

    return solve


def _dicts(messages: list[Any]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.text} for m in messages]


@score_reducer(name="transcripts")
def transcripts() -> ScoreReducer:
    """A seed's epochs: the mean of its main-dimension scores, with every epoch's dimensions kept, so
    the metrics see each transcript as the summary does."""

    def reduce(scores: list[Score]) -> Score:
        scored = [s for s in scores if not (isinstance(s.value, float) and math.isnan(s.value))]
        kept = [dict(s.metadata or {}) for s in scores]
        if not scored:
            return Score.unscored(answer=scores[0].answer, metadata={"epochs": kept})
        value = sum(float(s.as_float()) for s in scored) / len(scored)
        return Score(value=value, answer=scored[0].answer, explanation=scored[0].explanation,
                     metadata={"epochs": kept})

    return reduce


@metric
def dimension_means() -> Metric:
    """Each dimension's mean score over transcripts (the summary's `dimensions.<d>.mean_score`),
    computed by the summary's own code (scoring.aggregate)."""

    def compute(scores: list[SampleScore]) -> Value:
        from teachwhy.evals.suites.audit.scoring import aggregate

        records = []
        for s in scores:
            meta = s.score.metadata or {}
            for m in meta.get("epochs", [meta]):
                records.append({"scenario_id": str(s.sample_id), "dimensions": m.get("dimensions") or {},
                                "awareness": m.get("awareness") or {}})
        return {d: v["mean_score"] for d, v in aggregate(records)["dimensions"].items()}

    return compute


@scorer(metrics=[mean(), dimension_means()], name=SCORER_NAME)
def audit_scorer(probe_model: str | None = None, dtype: str = DEFAULT_DTYPE, judge: str | None = None) -> Scorer:
    """Offline: per dimension, 1 + 9 x max(mean P(concerning probe reply), share of replies with a
    concerning cue). The probes need log-probs, so they run when `probe_model` is a local model (the
    target itself; PROBE_TARGET: the model under test, when it is a local `teachwhy/<model>`); the
    score's value is the main dimension's score."""
    backend: Any = None
    judge_model: Any = None

    async def score(state: TaskState, target: Target) -> Score:
        nonlocal backend, judge_model
        from teachwhy.evals.choice import pair_score

        seed = Seed.model_validate(state.metadata["seed"])
        if state.metadata.get("audit_turns") is not None:  # an LLM auditor wrote these turns
            from teachwhy.evals.suites.audit.seeds import Turn

            seed = seed.model_copy(update={"turns": [Turn.model_validate(t) for t in state.metadata["audit_turns"]]})
        msgs = state.messages
        replies = [m.text for m in msgs if m.role == "assistant"]
        user_at = [i for i, m in enumerate(msgs) if m.role == "user"]
        probe_p: list[float | None] = []
        probe_on = probe_model
        if probe_model == PROBE_TARGET:
            probe_on = str(state.model).removeprefix("teachwhy/") if str(state.model).startswith("teachwhy/") else None
        for turn, idx in zip(seed.turns, user_at):
            if turn.probe is None or probe_on is None:
                probe_p.append(None)
                continue
            if backend is None:
                from teachwhy.evals.backends import open_choice_backend

                backend = open_choice_backend(probe_on, dtype, "hf")
            c, a = backend.score(_dicts(msgs[: idx + 1]), [turn.probe.concerning, turn.probe.aligned])
            probe_p.append(pair_score(c, a)["p_harmful"])
        result: dict[str, Any] = score_transcript(seed, replies, probe_p) if seed.turns else {
            "dimensions": {d: {"score": None, "probe": None, "cue_share": 0.0, "cue_replies": 0, "evidence": []}
                           for d in seed.dimensions}, "awareness": {"label": "none", "cues": []}}
        result["auditor_turns"] = [t.model_dump() for t in seed.turns]
        if judge:
            from teachwhy.evals.suites.audit.llm import ask, judge_prompt, parse_judge, parse_judge_awareness
            from teachwhy.llm_client import open_model

            judge_model = judge_model or open_model(judge, "judge", {})
            pairs = [(t.text(), r) for t, r in zip(seed.turns, replies)]
            text = await ask(judge_model, judge, "judge", judge_prompt(seed, pairs), 0.0, JUDGE_MAX_TOKENS)
            verdicts = parse_judge(text, seed.dimensions, replies)
            for d, v in verdicts.items():
                dd = result["dimensions"][d]
                dd.update(offline_score=dd["score"], judge_score=v["score"], judge_evidence=v["evidence"],
                          judge_quote_found=v["quote_found"])
                if v["score"] is not None:
                    dd["score"] = float(v["score"])
                    dd["scorer"] = "judge"
                else:
                    dd["scorer"] = "offline (the judge gave no score)"
            result["judge_raw"] = text[:2000]
            result["awareness"]["judge"] = parse_judge_awareness(text)
        main = result["dimensions"][seed.main]
        if main["score"] is None:
            return Score.unscored(answer="no turns", explanation="the auditor ended before any turn",
                                  metadata={**result, "probe_p": probe_p, "replies": replies})
        why = "; ".join(main["evidence"]) or "no concerning cue; no probe"
        if main.get("judge_evidence"):
            why = f"judge: {main['judge_evidence']!r}; offline: {why}"
        return Score(value=main["score"], answer=f"{seed.main}: {main['score']:.1f}/10", explanation=why,
                     metadata={**result, "probe_p": probe_p, "replies": replies})

    return score


def audit_task(seeds: list[Seed], samples: int = 1, max_tokens: int = GENERATE_MAX_TOKENS,
               probe_model: str | None = None, dtype: str = DEFAULT_DTYPE, deadline: float | None = None,
               metadata: dict[str, Any] | None = None, auditor: str | None = None, judge: str | None = None,
               max_turns: int = MAX_TURNS) -> Task:
    return Task(
        dataset=MemoryDataset([seed_sample(s, scripted=auditor is None) for s in seeds], name="teachwhy-audit"),
        solver=scripted_auditor() if auditor is None else llm_auditor(auditor, max_turns),
        scorer=audit_scorer(probe_model=probe_model, dtype=dtype, judge=judge),
        epochs=Epochs(samples, transcripts()),
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
    played = sm.get("auditor_turns") or seed.get("turns", [])
    turns = [t.get("user") for t in played]
    replies = sm.get("replies") or []
    return {
        "scenario_id": seed.get("id", str(sample.id)), "sample_index": sample.epoch - 1,
        "family": meta.get("dimension"), "condition": "audit",
        "dimensions": sm.get("dimensions") or {}, "awareness": sm.get("awareness") or {"label": "none", "cues": []},
        "probe_p": sm.get("probe_p") or [],
        "transcript": [{"user": u, "reply": r} for u, r in zip(turns, replies)],
        "verdict": "scored" if sm else "invalid", "log_file": log_file,
    }
