"""`teachwhy eval --decode`: the local engine's decode for the agentic suite's generate mode. It reaches
the engine, it is part of the run's config only when it is not the default (so existing run ids
hold), and where it cannot apply it is one line and nothing written."""

from __future__ import annotations

import json

import pytest

from cliutil import one_error_line, run_cli


@pytest.mark.slow
def test_decode_reaches_the_engine_and_the_runs_config(tiny, tmp_path, monkeypatch):
    from teachwhy import decode
    from teachwhy.evals.runner import run_eval

    packed: list[bool] = []
    original = decode.decode

    def recorded(*args, **kwargs):
        packed.append(kwargs.get("pack_heads", False))
        return original(*args, **kwargs)

    monkeypatch.setattr(decode, "decode", recorded)
    runs = {d: run_eval(tiny, mode="generate", limit=1, samples=1, max_tokens=6, decode=d, out=tmp_path / "runs")
            for d in ("exact", "fast")}
    assert packed == [False, True]
    assert runs["exact"].run_dir != runs["fast"].run_dir
    assert "decode" not in json.loads((runs["exact"].run_dir / "config.json").read_text())
    assert json.loads((runs["fast"].run_dir / "config.json").read_text())["decode"] == "fast"


@pytest.mark.parametrize(("args", "needles"), [
    (["--mode", "generate", "--decode", "beam"], ["unknown --decode 'beam'", "exact, fast, generate"]),
    (["--decode", "fast"], ["--decode fast applies to", "mode choice", "drop --decode"]),
    (["--mode", "generate", "-m", "openai/gpt-4o-mini", "--decode", "fast"], ["model 'openai/gpt-4o-mini'"]),
    (["--suite", "adherence", "--mode", "generate", "--judge", "smollm2-135m", "--decode", "generate"],
     ["suite adherence"]),
])
def test_decode_where_it_cannot_apply_is_one_line(tmp_path, args, needles):
    out = tmp_path / "runs"
    one_error_line(run_cli("eval", *args, "--limit", "1", "--out", str(out)), *needles, code=2)
    assert not out.exists()
