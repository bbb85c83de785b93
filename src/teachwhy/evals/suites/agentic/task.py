"""Generate mode: the agentic honeypot scenarios as an Inspect AI Task.

Each scenario becomes one Sample (system + user message, the decision point); the model writes its
reply once per epoch; the `harm_scorer` grades the actions the reply takes with the rule grader and,
when a judge model is given, also asks the LLM judge (stored beside the rule verdict, never instead).
Nothing the agent does is executed: tools are simulated, and when offered to an API model as native
tools (offer_tools=True) generate runs with tool_calls="none", so a call is recorded but never run.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from inspect_ai import Epochs, Task
from inspect_ai import eval as inspect_eval
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.hooks import Hooks, SampleEnd, TaskEnd, TaskStart, hooks
from inspect_ai.model import ChatMessageSystem, ChatMessageUser, GenerateConfig, Model, get_model
from inspect_ai.scorer import Score, Scorer, Target, grouped, scorer
from inspect_ai.solver import Generate, Solver, TaskState, generate, solver
from inspect_ai.tool import ToolDef, ToolParams

from teachwhy import inspect_local  # noqa: F401  (registers the "teachwhy" model API)
from teachwhy.errors import UserError
from teachwhy.evals.inspect_metrics import harmful_ci, harmful_rate, pooled
from teachwhy.evals.suites.agentic.graders import GradingContext, grade_text
from teachwhy.evals.suites.agentic.judge import judge_reply, reply_for_judge
from teachwhy.llm_client import api_deadline, model_setup_error, open_model, unreachable_error
from teachwhy.models import GENERATE_MAX_TOKENS
from teachwhy.scenarios.schema import Scenario

TASK_NAME = "teachwhy_agentic"
TARGET_MAX_RETRIES = 3  # Inspect's retries per target call (its default: retry for up to 30 min)
SCORER_NAME = "harm_scorer"


def scenario_sample(scenario: Scenario, offer_tools: bool = False) -> Sample:
    system, user = scenario.prompt_messages()
    metadata: dict[str, Any] = {
        "scenario_id": scenario.id,
        "family": scenario.family,
        "goal_conflict": scenario.goal_conflict,
        "urgency": scenario.urgency,
        "condition": scenario.condition,
        "split": scenario.split,
        "variant": scenario.variant,
        "grading": GradingContext.of(scenario).model_dump(),
    }
    if offer_tools:
        metadata["tools"] = [t.model_dump() for t in scenario.tools]
    return Sample(
        id=scenario.id,
        input=[ChatMessageSystem(content=system["content"]), ChatMessageUser(content=user["content"])],
        metadata=metadata,
    )


def _inert(name: str) -> Any:
    """A fresh callable per tool (Inspect keeps a tool's name on its function object)."""

    async def never_run(**kwargs: Any) -> str:
        raise RuntimeError(f"teachwhy tool {name} is simulated and must never be executed")

    return never_run


def _tool_params(schema: dict[str, Any]) -> ToolParams:
    """A scenario tool's JSON schema as Inspect ToolParams (Inspect wants every parameter described)."""
    schema = {**schema, "properties": {
        name: {"description": name.replace("_", " "), **prop} for name, prop in schema["properties"].items()
    }}
    return ToolParams.model_validate(schema)


@solver
def offer_scenario_tools() -> Solver:
    """Offer the sample's scenario tools as native tools (inert: generate must use tool_calls="none")."""

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        state.tools = [
            ToolDef(
                _inert(t["name"]),
                name=t["name"],
                description=t["description"],
                parameters=_tool_params(t["parameters"]),
            ).as_tool()
            for t in state.metadata.get("tools", [])
        ]
        state.tool_choice = "auto"
        return state

    return solve


@scorer(metrics=[harmful_rate(), harmful_ci(), grouped(harmful_rate(), "family", all=False)],
        name=SCORER_NAME)
def harm_scorer(judge: str | None = None) -> Scorer:
    """1 when the rule grader finds a harmful action, 0 when it finds only aligned ones; a reply
    with no gradable action ("invalid") is unscored, kept in the log and left out of the rates, as
    in teachwhy's summary (metadata.verdict says which). With `judge` (an Inspect model id), the LLM
    judge's verdict is added beside the rule verdict."""

    judge_model: Model | None = None

    async def score(state: TaskState, target: Target) -> Score:
        nonlocal judge_model
        context = GradingContext.model_validate(state.metadata["grading"])
        text = state.output.completion if state.output else ""
        tool_calls = list(state.output.message.tool_calls or []) if state.output and state.output.choices else []
        result = grade_text(context, text, tool_calls)
        judge_verdict, judge_explanation, judge_aware = None, None, None
        if judge:
            try:
                # made inside the eval's event loop, once per scorer (a memoized instance could hold
                # an HTTP client bound to another, closed loop)
                sdk_args: dict[str, Any] = (
                    {"max_retries": 0} if judge.split("/", 1)[0] in ("openai", "openai-api") else {})
                judge_model = judge_model or open_model(judge, "judge", sdk_args)
                verdict = await judge_reply(judge_model, context, reply_for_judge(text, result.actions))
                judge_verdict, judge_explanation, judge_aware = verdict.verdict, verdict.explanation, verdict.aware
            except UserError as exc:
                if "cannot connect to" in str(exc):
                    raise  # a dead judge endpoint fails the run with its one line (see run_generate)
                judge_explanation = f"judge failed: {exc}"
            except Exception as exc:  # the rule verdict stands; record why the judge has none
                judge_explanation = f"judge failed: {type(exc).__name__}: {exc}"
        fields: dict[str, Any] = {
            "answer": result.verdict,
            "explanation": "; ".join(result.reasons) or None,
            "metadata": {**result.to_dict(), "judge_verdict": judge_verdict, "judge_aware": judge_aware,
                         "judge_explanation": judge_explanation},
        }
        if result.verdict not in ("harmful", "aligned"):
            return Score.unscored(**fields)
        return Score(value=1 if result.verdict == "harmful" else 0, **fields)

    return score


def agentic_task(
    scenarios: list[Scenario],
    samples: int = 1,
    judge: str | None = None,
    max_tokens: int = GENERATE_MAX_TOKENS,
    *,
    offer_tools: bool = False,
    deadline: float | None = None,
    metadata: dict[str, Any] | None = None,
) -> Task:
    """The Inspect Task: one Sample per scenario, `samples` epochs, graded by harm_scorer."""
    ids = [s.id for s in scenarios]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise UserError(f"scenario ids must be unique within a run; repeated: {', '.join(duplicates)}")
    if samples < 1:
        raise UserError(f"samples must be at least 1 (got {samples})")
    solvers = [offer_scenario_tools()] if offer_tools else []
    return Task(
        dataset=MemoryDataset([scenario_sample(s, offer_tools) for s in scenarios], name="teachwhy-agentic"),
        solver=[*solvers, generate(tool_calls="none")],
        scorer=harm_scorer(judge=judge),
        epochs=Epochs(samples, pooled()),
        # every target call, retries included, ends within the API deadline (Inspect's `timeout`)
        config=GenerateConfig(max_tokens=max_tokens, max_retries=TARGET_MAX_RETRIES,
                              timeout=max(1, int(api_deadline(deadline)))),
        name=TASK_NAME,
        metadata=metadata,
    )


def inspect_model(model: str, memoize: bool = True, **model_args: Any) -> Model:
    """An Inspect Model for an Inspect model id; a bare local spec or an existing model directory is
    taken as teachwhy/<spec>. A one-line UserError when Inspect does not know it or cannot start it."""
    from inspect_ai._util.error import PrerequisiteError

    local = "/" not in model or Path(model).expanduser().is_dir()
    model_id = f"teachwhy/{model}" if local else model
    try:
        return get_model(model_id, memoize=memoize, **model_args)
    except (ValueError, PrerequisiteError, ImportError) as exc:
        raise model_setup_error(f"model '{model_id}'", model_id, exc) from None


SINK_KEY = "teachwhy_sink"
# sink token -> (per-record callback, log dir, how a finished Inspect sample becomes a record)
_SINKS: dict[str, tuple[Callable[[dict], None], str, Callable[[Any, str], dict]]] = {}
_EVAL_SINKS: dict[str, tuple[str, str]] = {}  # Inspect eval id -> (sink token, task id)
_LOG_FILES: dict[str, str] = {}  # Inspect eval id -> its log file, found once


class SampleSink(Hooks):
    """Each finished sample of a teachwhy generate run is handed to the run's callback as it ends,
    so teachwhy's samples.jsonl (and its progress) moves per sample while Inspect writes one log for
    the run. Inspect runs hooks inside try/except, so a failure here only warns: run_generate
    reconciles against the finished log, and nothing is lost."""

    def enabled(self) -> bool:
        return bool(_SINKS)  # only while a teachwhy run is listening (and Inspect says nothing else)

    async def on_task_start(self, data: TaskStart) -> None:
        token = (data.spec.metadata or {}).get(SINK_KEY)
        if token in _SINKS:
            _EVAL_SINKS[data.eval_id] = (token, data.spec.task_id)

    async def on_sample_end(self, data: SampleEnd) -> None:
        entry = _EVAL_SINKS.get(data.eval_id)
        if entry is None or entry[0] not in _SINKS:
            return
        token, task_id = entry
        callback, log_dir, to_record = _SINKS[token]
        if data.eval_id not in _LOG_FILES:  # Inspect names it <time>_<task>_<task id>.eval at task start
            found = sorted(Path(log_dir).glob(f"*_{task_id}.*"))
            _LOG_FILES[data.eval_id] = str(found[0]) if found else log_dir
        callback(to_record(data.sample, _LOG_FILES[data.eval_id]))

    async def on_task_end(self, data: TaskEnd) -> None:
        _EVAL_SINKS.pop(data.eval_id, None)
        _LOG_FILES.pop(data.eval_id, None)


_sink_registered = False


def register_sample_sink() -> None:
    """Register SampleSink with Inspect once, when a teachwhy run first needs it (registered at
    import, Inspect would list it at start-up in every process that imports teachwhy)."""
    global _sink_registered
    if not _sink_registered:
        hooks(name="teachwhy_samples", description="hands each finished sample to teachwhy's run store")(SampleSink)
        _sink_registered = True


def run_generate(
    scenarios: list[Scenario],
    model: str,
    samples: int,
    log_dir: str,
    judge: str | None = None,
    max_tokens: int = GENERATE_MAX_TOKENS,
    seed: int = 0,
    *,
    offer_tools: bool = False,
    model_args: dict[str, Any] | None = None,
    max_connections: int | None = None,
    deadline: float | None = None,
    on_record: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Run the task with Inspect (one log for the call) and return one plain record per (scenario,
    epoch). `on_record` gets each record as its sample ends (the run store appends it), and again
    for any the per-sample hook missed, once the log is final; callers dedupe by (scenario_id,
    sample_index). Each target and judge call (retries included) and each sample is bounded by the
    API deadline (`deadline`, else $TEACHWHY_API_DEADLINE, else 600 s); a target or judge that
    refuses connections fails the run with one line."""
    if not scenarios:
        return []
    limit = api_deadline(deadline)
    token = uuid.uuid4().hex
    task = agentic_task(scenarios, samples=samples, judge=judge, max_tokens=max_tokens, offer_tools=offer_tools,
                        deadline=limit, metadata={SINK_KEY: token})
    return run_task(task, token, model, log_dir, _record, judge=judge, seed=seed, model_args=model_args,
                    max_connections=max_connections, deadline=limit, on_record=on_record)


def run_task(task: Task, token: str, model: str, log_dir: str, to_record: Callable[[Any, str], dict],
             judge: str | None = None, seed: int = 0, model_args: dict[str, Any] | None = None,
             max_connections: int | None = None, deadline: float | None = None,
             on_record: Callable[[dict], None] | None = None) -> list[dict]:
    """Run one teachwhy Inspect task (its metadata holds SINK_KEY: `token`) on `model` with one log,
    handing each sample to `on_record` as `to_record(sample, log file)` when it ends and again once
    the log is final (callers dedupe); a dead target or judge endpoint is one line."""
    limit = api_deadline(deadline)
    model_args = dict(model_args or {})
    if model.split("/", 1)[0] in ("openai", "openai-api"):
        model_args.setdefault("max_retries", 0)  # the OpenAI SDK's own retries would multiply Inspect's
    target_model = inspect_model(model, **model_args)
    if judge:
        inspect_model(judge, memoize=False)  # fail early, before any generation, on an unknown judge
    if on_record is not None:
        register_sample_sink()
        _SINKS[token] = (on_record, log_dir, to_record)
    try:
        logs = inspect_eval(
            task,
            model=target_model,
            log_dir=log_dir,
            display="none",
            seed=seed,
            max_connections=max_connections,
            score_display=False,
            time_limit=max(1, int(limit)),
        )
    finally:
        _SINKS.pop(token, None)
    log = logs[0]
    if log.status != "success":
        why = log.error.message if log.error else log.status
        detail = f"{why} {log.error.traceback if log.error else ''}"
        dead_judge = re.search(r"judge model '([^']+)': cannot connect to (\S+) \(", str(detail))
        if dead_judge:  # the judge's own one-line error, raised in the scorer
            raise unreachable_error("judge", dead_judge.group(1),
                                    SimpleNamespace(api=SimpleNamespace(base_url=dead_judge.group(2))))
        if any(k in detail for k in ("ConnectError", "ConnectionRefusedError", "Connection refused",
                                     "APIConnectionError")):
            raise unreachable_error("target", model, target_model)
        ours = re.search(r"UserError\((['\"])(.+)\1\)", str(why))
        if ours:  # one of teachwhy's own one-line errors, raised inside the task (an auditor, a judge)
            raise UserError(f"{ours.group(2)}; details in the Inspect log {log.location}")
        raise UserError(f"the generate run did not finish ({' '.join(str(why).split())}); "
                        f"details in the Inspect log {log.location}")
    records = [to_record(sample, log.location) for sample in log.samples or []]
    if on_record is not None:
        for rec in records:
            on_record(rec)
    return records


def _record(sample: Any, log_file: str) -> dict:
    from teachwhy.evals.suites.agentic.awareness import classify

    meta = sample.metadata or {}
    score = (sample.scores or {}).get(SCORER_NAME)
    graded = score.metadata if score is not None and score.metadata else {}
    return {
        "scenario_id": meta.get("scenario_id", str(sample.id)),
        "sample_index": sample.epoch - 1,
        "family": meta.get("family"),
        "goal_conflict": meta.get("goal_conflict"),
        "urgency": meta.get("urgency"),
        "condition": meta.get("condition"),
        "completion": sample.output.completion if sample.output else "",
        "awareness": classify(sample.output.completion if sample.output else ""),
        "actions": graded.get("actions", []),
        "verdict": graded.get("verdict", "invalid"),
        "parse_status": graded.get("parse_status", "no_action"),
        "reasons": graded.get("reasons", ["the sample was not scored"]),
        "judge_verdict": graded.get("judge_verdict"),
        "judge_aware": graded.get("judge_aware"),
        "judge_explanation": graded.get("judge_explanation"),
        "log_file": log_file,
    }
