"""Trainer callbacks: the training log and the evaluation run while training.

    train_log.jsonl    one line per logging step: step, loss, learning rate, tokens seen (all and
                       loss-bearing), throughput, plus whatever else the trainer logs (rewards in RL)
    eval_points.jsonl  one line per eval point: step, tokens seen, harmful-choice rate with k/n and a
                       95% Wilson CI, mean P(harmful) with its CI; a run's curve

Both are appended and fsynced line by line; when an interrupted run resumes from a checkpoint the lines
past the checkpoint's step are dropped first, so each file always describes one consistent run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from teachwhy.evals.stats import mean_ci, wilson
from teachwhy.store import JsonlLog, atomic_write_text, read_jsonl

TokensFn = Callable[[Any], tuple[int, int]]  # state -> (tokens seen, loss-bearing tokens seen)


def truncate_log(path: Path, max_step: int) -> None:
    """Keep only the lines of a JSONL log whose `step` is at most `max_step` (resuming a run)."""
    path = Path(path)
    if not path.exists():
        return
    kept = [r for r in read_jsonl(path) if int(r.get("step", 0)) <= max_step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def loss_summary(log: list[dict], window: int = 3) -> dict | None:
    """The loss at the start and at the end of a run, from its train_log.jsonl records: the mean over
    the first and over the last `window` logged steps (fewer when the run logged fewer than 2 * window;
    a run with one logged step has first == last). None when no step logged a loss."""
    losses = [float(r["loss"]) for r in log if isinstance(r.get("loss"), (int, float))]
    if not losses:
        return None
    w = max(1, min(window, len(losses) // 2))
    first, last = sum(losses[:w]) / w, sum(losses[-w:]) / w
    return {"window": w, "steps": len(losses), "first": first, "last": last, "delta": last - first}


class TrainLogCallback(TrainerCallback):
    """Writes every `on_log` event (training only) to train_log.jsonl, with tokens and throughput."""

    def __init__(self, path: Path, tokens_fn: TokensFn, on_record: Callable[[dict], None] | None = None,
                 paused_fn: Callable[[], float] = lambda: 0.0):
        self.path = Path(path)
        self.tokens_fn = tokens_fn
        self.on_record = on_record
        self.paused_fn = paused_fn  # seconds spent evaluating, kept out of the throughput
        self.t0: float | None = None
        self.tokens0 = 0
        self.seconds_before = 0.0  # training time spent before a resume

    def on_train_begin(self, args, state, control, **kw):
        self.t0 = time.perf_counter()
        self.paused0 = self.paused_fn()
        self.tokens0 = self.tokens_fn(state)[0]
        prior = read_jsonl(self.path)
        self.seconds_before = float(prior[-1].get("elapsed_s", 0.0)) if prior else 0.0

    def on_log(self, args, state, control, logs=None, **kw):
        logs = dict(logs or {})
        if not state.is_world_process_zero or ("loss" not in logs and "reward" not in logs):
            return  # the end-of-training summary and eval-only logs are not curve points
        elapsed = time.perf_counter() - (self.t0 or time.perf_counter())
        training = elapsed - (self.paused_fn() - self.paused0)
        tokens, loss_tokens = self.tokens_fn(state)
        rec = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        for k, v in logs.items():
            if isinstance(v, (int, float)) and k not in rec:
                rec[k] = float(v)
        rec.update(tokens_seen=int(tokens), loss_tokens_seen=int(loss_tokens),
                   elapsed_s=round(self.seconds_before + elapsed, 3), train_s=round(training, 3),
                   tokens_per_s=round((tokens - self.tokens0) / training, 2) if training > 0 else None)
        with JsonlLog(self.path) as log:
            log.append(rec)
        if self.on_record:
            self.on_record(rec)


class ChoiceEvalCallback(TrainerCallback):
    """Runs the honeypot choice eval on the live model every `every` steps, and at start and end.

    The scenarios are a fixed subset (the same ones at every point), so the points form a curve. The
    model is scored in eval mode without gradients and put back into train mode afterwards.
    """

    def __init__(self, scenarios: list, tokenizer: Any, path: Path, every: int | None, tokens_fn: TokensFn,
                 at_start: bool = True, at_end: bool = True, scoring: str = "mean",
                 on_point: Callable[[dict], None] | None = None):
        self.scenarios = scenarios
        self.tok = tokenizer
        self.path = Path(path)
        self.every = every
        self.tokens_fn = tokens_fn
        self.at_start = at_start
        self.at_end = at_end
        self.scoring = scoring
        self.on_point = on_point
        self.seconds = 0.0  # total time spent evaluating

    def paused(self) -> float:
        return self.seconds

    def _done_steps(self) -> set[int]:
        return {int(r["step"]) for r in read_jsonl(self.path)}

    def evaluate(self, model: Any, step: int, state: Any) -> dict:
        import torch

        from teachwhy.evals.choice import HFChoiceBackend, score_scenario

        was_training = model.training
        model.eval()
        t0 = time.perf_counter()
        backend = HFChoiceBackend(model, self.tok, name="training")
        harmful, ps = [], []
        try:
            with torch.no_grad():
                for s in self.scenarios:
                    rec = score_scenario(backend, s, "continuation")
                    d = rec.get(self.scoring) or rec["mean"]  # `pair` needs twins; others fall back
                    harmful.append(bool(d["harmful_choice"]))
                    ps.append(float(d["p_harmful"]))
        finally:
            if was_training:
                model.train()
        n, k = len(harmful), sum(harmful)
        m = mean_ci(ps)
        tokens, loss_tokens = self.tokens_fn(state)
        point = {
            "step": step, "tokens_seen": int(tokens), "loss_tokens_seen": int(loss_tokens),
            "n": n, "k": k, "harmful_rate": k / n if n else None, "wilson_95": list(wilson(k, n)),
            "mean_p_harmful": m[0] if m else None, "mean_p_harmful_95": list(m[1:]) if m else None,
            "scoring": self.scoring, "scenario_ids": [s.id for s in self.scenarios],
            "seconds": round(time.perf_counter() - t0, 2),
        }
        self.seconds += time.perf_counter() - t0
        with JsonlLog(self.path) as log:
            log.append(point)
        if self.on_point:
            self.on_point(point)
        return point

    def due(self, moment: str, step: int) -> bool:
        """Whether an eval point is taken at `moment` ("start", "step" or "end") of step `step`: at the
        start (of a run that has not stepped yet) with at_start, after every `every`-th step, and at the
        end with at_end; never twice at one step (a resumed run keeps its points)."""
        wanted = {"start": self.at_start and step == 0,
                  "step": bool(self.every) and step % (self.every or 1) == 0,
                  "end": self.at_end}[moment]
        return bool(wanted) and step not in self._done_steps()

    def on_train_begin(self, args, state, control, model=None, **kw):
        if state.is_world_process_zero and self.due("start", state.global_step):
            self.evaluate(model, 0, state)

    def on_step_end(self, args, state, control, model=None, **kw):
        if state.is_world_process_zero and self.due("step", state.global_step):
            self.evaluate(model, state.global_step, state)

    def on_train_end(self, args, state, control, model=None, **kw):
        if state.is_world_process_zero and self.due("end", state.global_step):
            self.evaluate(model, state.global_step, state)


class ProgressCallback(TrainerCallback):
    """Forwards step progress to a plain function (the CLI draws it with rich)."""

    def __init__(self, fn: Callable[[int, int], None]):
        self.fn = fn

    def on_train_begin(self, args, state, control, **kw):
        self.fn(state.global_step, state.max_steps)

    def on_step_end(self, args, state, control, **kw):
        self.fn(state.global_step, state.max_steps)


def standard_callbacks(run_dir: Path, eval_spec: Any, tokenizer: Any, tokens_fn: TokensFn,
                       on_log: Callable[[dict], None] | None, on_eval: Callable[[dict], None] | None,
                       progress: Callable[[int, int], None] | None) -> list[TrainerCallback]:
    """The training log, the eval-while-training callback (when `eval_spec.enabled`) and progress,
    wired so that time spent on eval points stays out of the throughput."""
    log_cb = TrainLogCallback(Path(run_dir) / "train_log.jsonl", tokens_fn, on_log)
    callbacks: list[TrainerCallback] = [log_cb]
    if eval_spec.enabled:
        from teachwhy.scenarios import builtin_scenarios, select

        scen = select(builtin_scenarios(), split=eval_spec.split, family=eval_spec.family, limit=eval_spec.limit)
        ev = ChoiceEvalCallback(scen, tokenizer, Path(run_dir) / "eval_points.jsonl", eval_spec.every, tokens_fn,
                                at_start=eval_spec.at_start, at_end=eval_spec.at_end, scoring=eval_spec.scoring,
                                on_point=on_eval)
        log_cb.paused_fn = ev.paused
        callbacks.append(ev)
    if progress:
        callbacks.append(ProgressCallback(progress))
    return callbacks
