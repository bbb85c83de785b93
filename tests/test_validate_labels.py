"""`teachwhy scenarios validate` checks that the rule grader agrees with every candidate's label, and
its exit code says so (a problem found is exit 1, not 0)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from teachwhy.evals.suites.agentic.consistency import label_problems
from teachwhy.scenarios import builtin_scenarios

TEACHWHY = [sys.executable, "-m", "teachwhy"]


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*TEACHWHY, *args], capture_output=True, text=True, env=env, timeout=300)


def test_builtin_labels_agree_with_the_grader():
    for s in builtin_scenarios("eval")[:8] + builtin_scenarios("train")[:8]:
        assert label_problems(s) == []


@pytest.mark.slow
def test_a_harm_spec_that_flags_nothing_fails_validation(tmp_path: Path):
    s = builtin_scenarios("eval")[0].model_dump()
    s["harm"] = {"watched_recipients": [], "protected_terms": [], "requires_pressure": False, "tool_rules": []}
    f = tmp_path / "noflag.yaml"
    f.write_text(yaml.safe_dump([s], sort_keys=False))
    p = _run("scenarios", "validate", str(f))
    assert p.returncode == 1, p.stdout + p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 2 and all("labelled harmful but the rule grader finds it aligned" in ln for ln in lines)


@pytest.mark.slow
def test_an_aligned_candidate_the_grader_flags_fails_validation(tmp_path: Path):
    s = builtin_scenarios("eval")[0].model_dump()
    harmful = next(c for c in s["candidates"] if c["label"] == "harmful")
    aligned = next(c for c in s["candidates"] if c["label"] == "aligned")
    aligned["text"] = harmful["text"]  # an "aligned" candidate that takes the harmful action
    for c in s["candidates"]:
        c["twin"] = None
    f = tmp_path / "flagged.yaml"
    f.write_text(yaml.safe_dump([s], sort_keys=False))
    p = _run("scenarios", "validate", str(f))
    assert p.returncode == 1
    assert f"candidate '{aligned['id']}' is labelled aligned but the rule grader finds it harmful" in p.stderr


def test_scenarios_longer_than_the_context_are_reported():
    from teachwhy.evals.summary import summarise

    def rec(i, over):
        return {"scenario_id": f"s{i}", "format": "continuation", "family": "leak", "goal_conflict": "none",
                "urgency": "none", "condition": "goal=none/urgency=none", "split": "eval", "variant": i,
                "template": "", "mean": {"top": "a", "harmful_choice": False, "p_harmful": 0.4},
                "context": {"tokens": 9000 if over else 900, "context_limit": 8192, "over_context": over}}

    s = summarise([rec(0, True), rec(1, False)], "choice", {"formats": ["continuation"]})
    assert s["diagnostics"]["over_context"] == 1
    assert any("1/2 scenarios (e.g. s0) are longer than the model's context of 8192" in w for w in s["warnings"])
    s = summarise([rec(0, False), rec(1, False)], "choice", {"formats": ["continuation"]})
    assert not any("context" in w for w in s["warnings"])


@pytest.mark.slow
def test_a_model_directory_without_config_gets_a_hint(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    p = _run("eval", "--model", str(empty), "--limit", "1", "--out", str(tmp_path / "runs"))
    assert p.returncode != 0
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "pass smollm2-135m, a Hugging Face model directory" in lines[0]
    nested = tmp_path / "run"
    (nested / "checkpoint-3").mkdir(parents=True)
    (nested / "checkpoint-3" / "adapter_config.json").write_text("{}")
    p = _run("eval", "--model", str(nested), "--limit", "1", "--out", str(tmp_path / "runs"))
    assert p.returncode != 0 and f"it holds {nested / 'checkpoint-3'}: pass one of those" in p.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_eval_warns_for_a_prompt_longer_than_the_context(tmp_path: Path, tiny: str):
    """A real scenario whose inbox runs past SmolLM2's 8,192-token context (the tiny model keeps its
    config): the eval still scores it, and says that the score is unreliable."""
    s = builtin_scenarios("eval")[0].model_dump()
    filler = dict(s["inbox"][0], id="long")
    filler["body"] = " ".join(f"Line {i}: the quarterly facilities report lists room bookings and repairs."
                              for i in range(700))
    s["inbox"].append(filler)
    f = tmp_path / "long.yaml"
    f.write_text(yaml.safe_dump([s], sort_keys=False))
    p = _run("eval", "--model", tiny, "--scenarios", str(f), "--out", str(tmp_path / "runs"), "--dtype", "bfloat16")
    assert p.returncode == 0, p.stderr
    assert "1/1 scenarios (e.g. eval-blackmail-explicit-replacement-v0) are longer than the model's context of 8192" \
        in " ".join(p.stderr.split()), p.stderr
