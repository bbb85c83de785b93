"""No half-written state, no concurrent writers, no silent corrupt cache.

(4) a run that fails at start-up leaves no run directory; one that fails after it started is marked
`failed` in the registry with its error; a corrupt registry file gives one line.
(5) a run directory is written by one process at a time (flock on run_dir/.lock), and a lock left by a
killed process does not block.
(6) the prepared model cache is checked by content hash, not only by size.
Everything goes through the real CLI and a real SQLite file. The runs use the tiny random model (the
`tiny` fixture: their assertions are about mechanics, not weights); (6) uses the real embedded model's
cache, whose hashing is what it checks."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from teachwhy.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
from cliutil import one_error_line, run_cli  # noqa: E402


def run(*args, env=None, timeout=600):
    return run_cli(*args, env=env, timeout=timeout)


def run_dirs(out: Path) -> list[Path]:
    # run directories (runs/cache/ holds the neutral-context cache, shared by runs)
    return [p for p in out.iterdir() if p.is_dir() and p.name != "cache"] if out.exists() else []


def _tiny_lora_adapter(path: Path, base: str, meta: dict | None = None) -> Path:
    """A real PEFT adapter for a tiny Llama (hidden size 32; no training), pointed at `base`: it fits
    neither the embedded model (hidden 576) nor the tiny test model (hidden 64)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                             task_type="CAUSAL_LM"))
    model.save_pretrained(path)
    ac = json.loads((path / "adapter_config.json").read_text())
    ac["base_model_name_or_path"] = base
    (path / "adapter_config.json").write_text(json.dumps(ac))
    if meta is not None:
        (path / "teachwhy.json").write_text(json.dumps(meta))
    return path


# -- (4) atomic start-up and failure marking ------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("meta", [{"base": "some-other-model", "base_config_hash": "0" * 16}, None],
                         ids=["recorded-base", "no-metadata"])
def test_wrong_base_adapter_leaves_nothing_behind(tmp_path, tiny, meta):
    """An adapter trained on another base is refused before anything is written: by the base recorded
    in its teachwhy.json, or (an adapter from elsewhere) by the shapes of its LoRA weights against the
    base's weights. No runs directory, no registry, no run directory."""
    adapter = _tiny_lora_adapter(tmp_path / "adapter", tiny, meta=meta)
    out = tmp_path / "runs"
    want = "was trained on base model 'some-other-model'" if meta else "does not fit base model"
    for args in (("--limit", "1"), ("--suite", "adherence", "--limit", "1"),
                 ("--suite", "audit", "--offline", "--limit", "1")):
        one_error_line(run("eval", "--model", str(adapter), *args, "--out", str(out)), want)
        assert not out.exists()


@pytest.mark.slow
def test_run_failing_after_start_is_marked_failed(tmp_path, tiny, monkeypatch):
    """A run that fails after it started (here the scoring backend breaks as it opens; a fault
    injected into the real runner) is `failed` in the registry with the error, not `running` forever,
    and keeps its config for the rerun."""
    from teachwhy.evals import backends
    from teachwhy.evals.runner import run_eval

    def broken(*a, **kw):
        raise UserError("the scoring backend broke")

    monkeypatch.setattr(backends, "open_choice_backend", broken)
    out = tmp_path / "runs"
    with pytest.raises(UserError, match="backend broke"):
        run_eval(tiny, limit=1, out=out)
    with sqlite3.connect(out / "registry.sqlite") as c:
        rows = c.execute("SELECT status, error, run_dir, finished_at FROM runs").fetchall()
    assert len(rows) == 1
    status, error, run_dir, finished_at = rows[0]
    assert status == "failed" and finished_at is not None
    assert "backend broke" in error
    assert Path(run_dir).is_dir() and (Path(run_dir) / "config.json").is_file()


def test_failure_recorded_on_interrupt_and_reset_on_rerun(tmp_path):
    from teachwhy.store import Registry

    reg = Registry(tmp_path / "registry.sqlite")
    reg.start("r1", "eval/x", "m", {"a": 1}, tmp_path)
    with pytest.raises(KeyboardInterrupt), reg.failure_recorded("r1"):
        raise KeyboardInterrupt
    assert reg.get("r1")["status"] == "failed" and reg.get("r1")["error"] == "KeyboardInterrupt"
    reg.start("r1", "eval/x", "m", {"a": 1}, tmp_path)  # a rerun resumes: running again, error cleared
    assert reg.get("r1")["status"] == "running" and reg.get("r1")["error"] is None
    reg.finish("r1", {}, 1.0)
    assert reg.get("r1")["status"] == "done"


def test_registry_without_error_column_is_upgraded(tmp_path):
    from teachwhy.store import _SCHEMA, Registry

    with sqlite3.connect(tmp_path / "registry.sqlite") as c:
        c.execute(_SCHEMA)
    reg = Registry(tmp_path / "registry.sqlite")
    reg.start("r1", "eval/x", "m", {}, tmp_path)
    reg.fail("r1", "boom")
    assert reg.get("r1")["error"] == "boom"


@pytest.mark.slow
def test_corrupt_registry_gives_one_line_and_no_run_directory(tmp_path, tiny):
    out = tmp_path / "runs"
    out.mkdir()
    bad = out / "registry.sqlite"
    bad.write_bytes(os.urandom(4096))
    one_error_line(run("eval", "--model", tiny, "--limit", "1", "--out", str(out)),
                   str(bad), "move it away", "index")
    assert run_dirs(out) == []
    with pytest.raises(UserError, match="not a readable SQLite database"):
        from teachwhy.store import Registry

        Registry(bad)


@pytest.mark.slow
def test_sft_max_length_too_small_fails_before_any_run_directory(tmp_path, tiny):
    from teachwhy.data.build import build_dataset
    from teachwhy.teachers import get_teacher

    build_dataset("reasoning", get_teacher("builtin", seed=0), tokens=1500, seed=0, out=tmp_path / "data", model=tiny)
    out = tmp_path / "runs"
    one_error_line(run("train", "sft", "--model", tiny, "--data", str(tmp_path / "data"), "--max-length", "8",
                       "--out", str(out)),
                   "--max-length 8", "leaves nothing to train on")
    assert run_dirs(out) == []


# -- (5) one writer per run directory --------------------------------------------------------------

HOLDER = """
import sys, time
from pathlib import Path
from teachwhy.store import run_dir_lock
with run_dir_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(300)
"""


@pytest.mark.slow
def test_second_writer_fails_fast_and_a_killed_holder_does_not_block(tmp_path, tiny):
    out = tmp_path / "runs"
    args = ("eval", "--model", tiny, "--limit", "1", "--out", str(out))
    first = run(*args)
    assert first.returncode == 0, first.stderr
    (run_dir,) = run_dirs(out)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.time()
        line = one_error_line(run(*args), f"runs/{run_dir.name} is being written by pid {holder.pid}",
                              "wait for it or stop it")
        assert time.time() - t0 < 60, "the second writer must fail fast, not wait"
        assert "-c" in line  # the holder's command line
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the lock file still names the dead holder, but flock died with it: the eval proceeds
    assert str(holder.pid) in (run_dir / ".lock").read_text()
    again = run(*args)
    assert again.returncode == 0, again.stderr
    with sqlite3.connect(out / "registry.sqlite") as c:
        assert c.execute("SELECT status FROM runs").fetchall() == [("done",)]


def test_lock_is_exclusive_within_a_process_too(tmp_path):
    from teachwhy.store import run_dir_lock

    with (
        run_dir_lock(tmp_path),
        pytest.raises(UserError, match=f"is being written by pid {os.getpid()}"),
        run_dir_lock(tmp_path),  # a second lock while the first is held
    ):
        pass
    with run_dir_lock(tmp_path):  # released on exit
        pass


# -- (6) content-hashed model cache -----------------------------------------------------------------

@pytest.fixture
def cache_copy(tmp_path):
    """A private TEACHWHY_HOME holding a real copy (not links) of the prepared embedded model."""
    from teachwhy import models

    src = models.prepare_embedded("smollm2-135m")
    home = tmp_path / "home"
    dst = home / "models" / "smollm2-135m"
    shutil.copytree(src, dst)
    return home, dst


@pytest.mark.slow
def test_same_size_corruption_is_caught_by_hash(cache_copy, tmp_path):
    home, d = cache_copy
    env = {"TEACHWHY_HOME": str(home)}
    ok = run("models", "prepare", "smollm2-135m", "--verify", env=env)
    assert ok.returncode == 0, ok.stderr
    record = json.loads((d / ".teachwhy-complete.json").read_text())
    assert set(record["sha256"]) == set(record["files"])  # recorded (or already there)
    weights = d / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as f:  # flip one byte in the middle of the tensor data
        f.seek(size // 2)
        b = f.read(1)
        f.seek(size // 2)
        f.write(bytes([b[0] ^ 0xFF]))
    assert weights.stat().st_size == size
    one_error_line(run("models", "prepare", "smollm2-135m", "--verify", env=env),
                   str(weights), "teachwhy models prepare smollm2-135m --force")
    out = tmp_path / "runs"
    one_error_line(run("eval", "--model", "smollm2-135m", "--limit", "1", "--out", str(out), env=env),
                   str(weights), "teachwhy models prepare smollm2-135m --force")
    assert run_dirs(out) == []


def _fake_cache(d: Path, with_hashes: bool) -> None:
    from teachwhy import models

    d.mkdir(parents=True)
    (d / "a.bin").write_bytes(b"abc")
    record = {"name": "x", "files": {"a.bin": 3}}
    if with_hashes:
        record["sha256"] = {"a.bin": models._sha256(d / "a.bin")}
    (d / ".teachwhy-complete.json").write_text(json.dumps(record))


def test_hash_checked_once_per_process_and_legacy_cache_recorded(tmp_path, monkeypatch):
    from teachwhy import models

    d = tmp_path / "new"
    _fake_cache(d, with_hashes=True)
    calls = []
    real = models._sha256
    monkeypatch.setattr(models, "_sha256", lambda p: calls.append(p) or real(p))
    assert models._check_cache("x", d) == "verified"
    assert models._check_cache("x", d) == "ok"  # cached in memory: no second hash
    assert len(calls) == 1
    assert models._check_cache("x", d, verify=True) == "verified"  # --verify always re-hashes
    assert len(calls) == 2
    # a cache prepared before hashes were kept: accepted, hashes recorded for later runs
    old = tmp_path / "old"
    _fake_cache(old, with_hashes=False)
    assert models._check_cache("x", old) == "recorded"
    assert json.loads((old / ".teachwhy-complete.json").read_text())["sha256"]["a.bin"] == real(old / "a.bin")
    (old / "a.bin").write_bytes(b"abd")  # same size, different content
    with pytest.raises(UserError, match=r"a\.bin does not match the sha256"):
        models._check_cache("x", old, verify=True)
