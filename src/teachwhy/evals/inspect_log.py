"""An Inspect log (.eval) of a finished choice-mode run, so its items open in `inspect view` beside
generate mode's logs: one sample per item and format, with the prompt, the candidates, the chosen
one as the output, and the scoring blocks as the score.

Choice mode scores log-probs with teachwhy's own backends (Inspect's model API samples text; it does
not score given continuations), so the log is written from the run's records with Inspect's log API
rather than by an Inspect eval loop. It is rewritten whole, atomically, each time the run finishes.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from teachwhy.evals.choice import LABEL
from teachwhy.results import EvalSummary, Row, of


def _block(rec: dict, scoring: str) -> dict:
    return rec.get(scoring) or {}


def write_choice_log(run_dir: Path, run_id: str, config: dict, items: list[Any], records: list[dict],
                     summary: dict) -> Path:
    from inspect_ai.log import (
        EvalConfig,
        EvalDataset,
        EvalLog,
        EvalMetric,
        EvalResults,
        EvalSample,
        EvalScore,
        EvalSpec,
        EvalStats,
        write_eval_log,
    )
    from inspect_ai.model import ChatMessageSystem, ChatMessageUser, ModelOutput
    from inspect_ai.scorer import Score

    suite = config.get("suite", "agentic")
    model = f"teachwhy/{config['model']}"
    by_id = {it.id: it for it in items}
    typed = of(summary)
    by_format = typed.by_format if isinstance(typed, EvalSummary) else {}
    scorings = {f: v.scoring or "mean" for f, v in by_format.items()}
    samples = []
    for rec in records:
        it = by_id.get(rec["scenario_id"])
        if it is None:
            continue
        fmt = rec.get("format", "continuation")
        scoring = scorings.get(fmt, LABEL if fmt == "options" else "mean")
        block = _block(rec, scoring)
        texts = {c.id: c.text for c in it.candidates}
        harmful = next(c.text for c in it.candidates if c.label == "harmful")
        aligned = [c.text for c in it.candidates if c.label == "aligned"]
        top = block.get("top")
        chosen = texts.get(top, str(top)) if isinstance(top, str) else str(top)
        msgs: list[Any] = []
        for m in it.prompt_messages():
            msgs.append(ChatMessageSystem(content=m["content"]) if m["role"] == "system"
                        else ChatMessageUser(content=m["content"]))
        meta = {k: v for k, v in rec.items() if k not in ("candidates", "context") and not isinstance(v, dict)}
        samples.append(EvalSample(
            id=f"{rec['scenario_id']}:{fmt}", epoch=1, input=msgs, target=aligned or "",
            choices=[c.text for c in it.candidates], output=ModelOutput.from_content(model, chosen),
            messages=[*msgs], metadata=meta,
            scores={"choice": Score(
                value={"harmful_choice": float(bool(block.get("harmful_choice"))),
                       "p_harmful": float(block.get("p_harmful", 0.0))},
                answer=chosen, explanation=(f"{fmt}/{scoring}: P({'violating' if suite == 'adherence' else 'harmful'})"
                                            f" = {block.get('p_harmful', 0.0):.3f}; harmful candidate: {harmful}"),
                metadata={k: v for k, v in rec.items() if isinstance(v, dict) and k != "context"})}))
    ov = typed.overall if isinstance(typed, EvalSummary) else Row()
    now = datetime.now(UTC).isoformat(timespec="seconds")
    log = EvalLog(
        status="success",
        eval=EvalSpec(created=now, task=f"teachwhy/{suite}", task_id=run_id, run_id=run_id,
                      dataset=EvalDataset(name=suite, samples=len(items)), model=model,
                      config=EvalConfig(), metadata={"teachwhy_run": run_id, "mode": "choice", **{
                          k: v for k, v in config.items() if isinstance(v, str | int | float | bool | list)}}),
        results=EvalResults(total_samples=len(samples), completed_samples=len(samples), scores=[EvalScore(
            name="choice", scorer="choice", metrics={
                "harmful_rate": EvalMetric(name="harmful_rate", value=float(ov.rate or 0.0)),
                "mean_p_harmful": EvalMetric(name="mean_p_harmful", value=float(ov.mean_p_harmful or 0.0)),
            })]),
        stats=EvalStats(started_at=now, completed_at=now),
        samples=samples,
    )
    out_dir = run_dir / "inspect-logs"
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{run_id}-choice.eval"
    tmp = out_dir / f".{run_id}-choice.tmp.eval"
    write_eval_log(log, tmp, format="eval")
    os.replace(tmp, final)
    return final
