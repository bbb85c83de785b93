"""teachwhy as Inspect users meet it: the registered task `teachwhy/agentic`, run with Inspect's own
CLI, and an Inspect log whose metrics are the numbers of teachwhy's summary (invalid replies
unscored, the rate among valid samples pooled over epochs, per family, Wilson and family-clustered
CIs), one log per run, progress per sample."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
from inspect_ai.log import read_eval_log
from inspect_ai.model import GenerateConfig, ModelAPI, ModelOutput, modelapi

from cliutil import BIN, run_cli
from teachwhy.evals import summary as summ
from teachwhy.evals.suites.agentic.task import run_generate
from teachwhy.scenarios import builtin_scenarios, select

INSPECT = Path(BIN).with_name("inspect")


def pick(n_per_family: int = 2) -> list:
    """Eval scenarios from every family, a few each (several families: the clustered CI exists)."""
    pool = select(builtin_scenarios(), split="eval")
    out = []
    for fam in sorted({s.family for s in pool}):
        out += [s for s in pool if s.family == fam][:n_per_family]
    return out


@modelapi(name="bychoice")
class ByChoiceAgent(ModelAPI):
    """An agent that replies, per scenario, with the scenario's own harmful or aligned candidate, or
    with prose that takes no action (an invalid reply), in a fixed rotation over its calls for that
    scenario; enough to give the grader all three verdicts on real scenarios."""

    def __init__(self, model_name, base_url=None, api_key=None, config=GenerateConfig(), **kw):
        super().__init__(model_name=model_name, base_url=base_url, api_key=api_key, config=config)
        self.by_system = {s.prompt_messages()[0]["content"]: s for s in builtin_scenarios()}
        self.calls: dict[str, int] = {}

    async def generate(self, input, tools, tool_choice, config):
        s = self.by_system[input[0].text]
        i = self.calls.get(s.id, 0) + len(s.id)  # the rotation starts at a different place per scenario
        self.calls[s.id] = self.calls.get(s.id, 0) + 1
        kind = ("harmful", "aligned", "invalid")[i % 3]
        text = ("I will think about this." if kind == "invalid"
                else next(c.text for c in s.candidates if c.label == kind))
        return ModelOutput.from_content("bychoice", text)


def headline(log) -> dict:
    metrics = log.results.scores[0].metrics
    return {name: m.value for name, m in metrics.items()}


def same(a, b) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return b is not None and abs(a - b) < 1e-12


@pytest.mark.parametrize("samples", [1, 3])
def test_log_metrics_are_the_summary(tmp_path, samples):
    scenarios = pick()
    seen: list[int] = []
    records: dict = {}

    def keep(rec):
        records.setdefault((rec["scenario_id"], rec["sample_index"]), rec)
        seen.append(len(records))

    run_generate(scenarios, "bychoice/x", samples=samples, log_dir=str(tmp_path), on_record=keep)
    recs = list(records.values())
    assert len(recs) == len(scenarios) * samples
    assert {r["verdict"] for r in recs} == {"harmful", "aligned", "invalid"}
    logs = list(tmp_path.glob("*.eval"))
    assert len(logs) == 1  # one log for the run, whatever its size
    assert all(Path(r["log_file"]) == logs[0] for r in recs)
    # each record came once as its sample ended (progress per sample) and once more from the
    # finished log (the reconciliation that makes a failed hook lose nothing)
    assert len(seen) == 2 * len(recs)
    assert seen[: len(recs)] == list(range(1, len(recs) + 1))

    log = read_eval_log(str(logs[0]))
    row = summ.summarise(recs, "generate", meta={})["overall"]
    h = headline(log)
    assert h["harmful_rate"] == pytest.approx(row["rate"], abs=1e-12)
    assert (h["n"], h["k"]) == (row["n"], row["k"])
    assert row["invalid"] > 0 and row["n"] == len(recs) - row["invalid"]
    assert [h["wilson_low"], h["wilson_high"]] == pytest.approx(row["wilson_95"])
    assert [h["family_low"], h["family_high"]] == pytest.approx(row["cluster_bootstrap_95"])
    fam_rows = {r["key"]: r for r in summ.summarise(recs, "generate", meta={})["rows"] if r["group"] == "family"}
    for fam, fr in fam_rows.items():
        assert same(h.get(fam), fr["rate"]), fam  # a family with no valid sample has no rate
    # an invalid reply is kept in the log, unscored (not a 0 that would pull the mean down)
    invalid = [s for s in log.samples if s.scores["harm_scorer"].answer == "invalid"]
    assert invalid and all(math.isnan(s.scores["harm_scorer"].value) for s in invalid)


def test_all_invalid_is_not_a_zero_rate(tmp_path):
    """Every reply invalid: the summary says n/a, and the log must not say 0.000."""
    scenarios = pick(1)

    @modelapi(name="silent")
    class Silent(ModelAPI):
        async def generate(self, input, tools, tool_choice, config):
            return ModelOutput.from_content("silent", "Let me think.")

    recs = run_generate(scenarios, "silent/x", samples=1, log_dir=str(tmp_path))
    row = summ.summarise(recs, "generate", meta={})["overall"]
    assert row["n"] == 0 and row["rate"] is None
    h = headline(read_eval_log(recs[0]["log_file"]))
    assert math.isnan(h["harmful_rate"]) and h["n"] == 0


def test_task_registered_with_inspect():
    """`inspect list tasks` style lookup: the registry resolves teachwhy/agentic with its parameters."""
    from inspect_ai._util.registry import registry_lookup

    fn = registry_lookup("task", "teachwhy/agentic")
    assert fn is not None
    task = fn(split="eval", families="leak,framing", limit=3)
    assert len(task.dataset) == 3
    assert {s.metadata["family"] for s in task.dataset} <= {"leak", "framing"}
    adherence = registry_lookup("task", "teachwhy/adherence")(principles="honesty", limit=2)
    assert len(adherence.dataset) == 2 and {s.metadata["family"] for s in adherence.dataset} == {"honesty"}
    audit = registry_lookup("task", "teachwhy/audit")(seed_ids="coercion,deception")
    assert sorted(s.id for s in audit.dataset) == ["coercion", "deception"]


@pytest.mark.slow
def test_inspect_cli_runs_the_task_and_matches_teachwhy(tmp_path, tiny):
    """`inspect eval teachwhy/agentic --model teachwhy/<model> -T limit=2` with Inspect's own CLI, then
    `teachwhy eval --mode generate` on the same scenarios: each log's headline is what teachwhy's summary
    of that run says. On the tiny model (a local directory, as a user's own model): the plumbing is under
    test; its random weights reply with garbage, which the grader still labels."""
    env_logs = tmp_path / "inspect"
    p = subprocess.run(
        [str(INSPECT), "eval", "teachwhy/agentic", "--model", f"teachwhy/{tiny}", "-T", "limit=2",
         "-T", "max_tokens=48", "--seed", "0", "--log-dir", str(env_logs), "--display", "none"],
        capture_output=True, text=True, timeout=900,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    (log_file,) = env_logs.glob("*.eval")
    log = read_eval_log(str(log_file))
    assert log.status == "success" and len(log.samples) == 2
    ids = [s.id for s in log.samples]
    # the same selection as teachwhy's
    assert sorted(ids) == sorted(s.id for s in select(builtin_scenarios(), split="eval", limit=2))
    recs = [
        {"scenario_id": s.id, "family": s.metadata["family"], "condition": s.metadata["condition"],
         "verdict": s.scores["harm_scorer"].answer, "parse_status": s.scores["harm_scorer"].metadata["parse_status"]}
        for s in log.samples
    ]
    row = summ.summarise(recs, "generate", meta={})["overall"]
    h = headline(log)
    assert h["n"] == row["n"] and same(h["harmful_rate"], row["rate"])

    out = tmp_path / "runs"
    q = run_cli("eval", "--model", tiny, "--mode", "generate", "--limit", "2", "--max-tokens", "48",
                "--out", str(out))
    assert q.returncode == 0, q.stderr
    (run_dir,) = [d for d in out.iterdir() if d.is_dir()]
    import json

    summary = json.loads((run_dir / "summary.json").read_text())
    (tw_log,) = (run_dir / "inspect-logs").glob("*.eval")
    th = headline(read_eval_log(str(tw_log)))
    assert th["n"] == summary["overall"]["n"] and same(th["harmful_rate"], summary["overall"]["rate"])
    assert th["k"] == summary["overall"]["k"]


def _inspect_cli(task: str, tiny: str, logs: Path, *args: str):
    p = subprocess.run(
        [str(INSPECT), "eval", task, "--model", f"teachwhy/{tiny}", "-T", "limit=2", *args, "--seed", "0",
         "--log-dir", str(logs), "--display", "none"],
        capture_output=True, text=True, timeout=900,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    (log_file,) = logs.glob("*.eval")
    log = read_eval_log(str(log_file))
    assert log.status == "success" and len(log.samples) == 2, log.error
    return log


def _teachwhy_summary(out: Path, *args: str) -> dict:
    import json

    q = run_cli("eval", *args, "--limit", "2", "--out", str(out))
    assert q.returncode == 0, q.stderr
    (run_dir,) = [d for d in out.iterdir() if d.is_dir() and d.name != "cache"]
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
def test_inspect_cli_runs_adherence_and_matches_teachwhy(tmp_path, tiny):
    """`inspect eval teachwhy/adherence --model teachwhy/<model> -T limit=2` scores the same items in
    choice mode as `teachwhy eval --suite adherence --limit 2`: its headline (mean P(violating), the
    rate of violating choices, n, k) is teachwhy's summary of those items, and the records it keeps
    summarise to the same numbers."""
    log = _inspect_cli("teachwhy/adherence", tiny, tmp_path / "inspect")
    h = headline(log)
    recs = [s.scores["adherence_choice"].metadata["record"] for s in log.samples]
    row = summ.summarise(recs, "choice", meta={"suite": "adherence", "formats": ["continuation"]})["overall"]
    assert h["n"] == row["n"] and h["k"] == row["k"] and same(h["harmful_rate"], row["rate"])
    assert same(h["mean"], row["mean_p_harmful"])
    summary = _teachwhy_summary(tmp_path / "runs", "--model", tiny, "--suite", "adherence")
    assert sorted(s.id for s in log.samples) == sorted(r["scenario_id"] for r in recs)
    assert summary["overall"]["n"] == h["n"] and summary["overall"]["k"] == h["k"]
    assert abs(summary["overall"]["mean_p_harmful"] - h["mean"]) < 1e-6


@pytest.mark.slow
def test_inspect_cli_runs_audit_and_matches_teachwhy(tmp_path, tiny):
    """`inspect eval teachwhy/audit --model teachwhy/<model> -T limit=2` plays the seeds with the
    scripted auditor and scores them offline (choice probes on the target, rule cues): each
    dimension's mean in its headline is teachwhy's summary of those transcripts; and a `teachwhy eval
    --suite audit --offline` run's own Inspect log agrees with its summary the same way."""
    from teachwhy.evals.suites.audit.scoring import aggregate
    from teachwhy.evals.suites.audit.task import audit_record

    log = _inspect_cli("teachwhy/audit", tiny, tmp_path / "inspect", "-T", "max_tokens=8")
    h = headline(log)
    dims = aggregate([audit_record(s, "") for s in log.samples])["dimensions"]
    assert dims and {d: h[d] for d in dims} == {d: v["mean_score"] for d, v in dims.items()}
    assert all(s.scores["audit_scorer"].metadata["probe_p"] for s in log.samples)  # probes ran on the target
    summary = _teachwhy_summary(tmp_path / "runs", "--model", tiny, "--suite", "audit", "--offline",
                                "--max-tokens", "8")
    run_dir = Path(summary["run_id"])
    (tw_log,) = (tmp_path / "runs" / run_dir / "inspect-logs").glob("*.eval")
    th = headline(read_eval_log(str(tw_log)))
    assert {d: th[d] for d in summary["dimensions"]} == {
        d: v["mean_score"] for d, v in summary["dimensions"].items()}
