"""The real `teachwhy` command, run as a user would: exit codes and one-line errors."""

import json

import pytest
import yaml

from cliutil import one_error_line as _one_error_line
from cliutil import run_cli


def run(*args, env=None, cwd=None):
    return run_cli(*args, env=env, cwd=cwd)


def one_error_line(p, *needles):
    return _one_error_line(p, *needles, code=2)


@pytest.fixture(scope="module")
def user_file(tmp_path_factory):
    from teachwhy.scenarios import builtin_scenarios

    sc = [s for s in builtin_scenarios("eval") if s.family == "blackmail"][:2]
    p = tmp_path_factory.mktemp("sc") / "mine.yaml"
    p.write_text(yaml.safe_dump([s.model_dump() for s in sc], sort_keys=False))
    return p


@pytest.mark.slow
def test_unknown_model(tmp_path):
    one_error_line(run("eval", "--model", "no-such-model", "--out", str(tmp_path)), "unknown model", "no-such-model")
    assert not any(tmp_path.iterdir())


def test_inspect_model_in_choice_mode(tmp_path):
    one_error_line(run("eval", "--model", "openai/gpt-4o-mini", "--mode", "choice", "--out", str(tmp_path)),
                   "--mode generate")


@pytest.mark.slow
def test_malformed_scenario_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- id: x\n  family: blackmail\n  split: [unclosed\n")
    one_error_line(run("eval", "--scenarios", str(bad), "--out", str(tmp_path / "o")), "bad.yaml")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_scenario_missing_field(tmp_path, user_file):
    data = yaml.safe_load(user_file.read_text())
    del data[1]["candidates"]
    f = tmp_path / "missing.yaml"
    f.write_text(yaml.safe_dump(data))
    line = one_error_line(run("scenarios", "validate", str(f)), "missing.yaml", "candidates")
    assert "scenario" in line


@pytest.mark.slow
def test_empty_selection(tmp_path, user_file):
    one_error_line(run("eval", "--scenarios", str(user_file), "--family", "leak", "--out", str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_unwritable_output_dir(tmp_path, user_file):
    f = tmp_path / "a-file"
    f.write_text("x")
    one_error_line(run("eval", "--scenarios", str(user_file), "--out", str(f / "runs")), "not writable")


@pytest.mark.slow
def test_corrupt_cache(tmp_path, user_file):
    home = tmp_path / "home"
    d = home / "models" / "smollm2-135m"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"0")
    (d / ".teachwhy-complete.json").write_text(json.dumps({"files": {"model.safetensors": 538090408}}))
    one_error_line(run("eval", "--scenarios", str(user_file), "--out", str(tmp_path / "o"),
                       env={"TEACHWHY_HOME": str(home)}), "corrupt", "--force")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_bad_flag_values(tmp_path):
    one_error_line(run("eval", "--mode", "vibes", "--out", str(tmp_path)), "unknown mode")
    one_error_line(run("eval", "--limit", "0", "--out", str(tmp_path)), "--limit")


@pytest.mark.parametrize("args, says", [(("--bogus",), "No such option: --bogus"),
                                         (("eval", "--limit", "many"), "Invalid value for '--limit'"),
                                         (("scenarios", "show"), "Missing argument"),
                                         (("nosuchcommand",), "No such command")])
def test_usage_errors_are_click_messages_not_tracebacks(args, says):
    p = run(*args)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr and says in p.stderr, p.stderr
    assert "Usage: teachwhy" in p.stderr


def test_no_arguments_shows_the_help_not_a_traceback():
    p = run()
    assert "Traceback" not in p.stderr, p.stderr
    assert "Usage: teachwhy" in p.stdout + p.stderr and "Commands" in p.stdout + p.stderr


@pytest.mark.slow
def test_eval_json_and_scenarios_commands(tmp_path, user_file, tiny):
    p = run("eval", "--model", tiny, "--scenarios", str(user_file), "--out", str(tmp_path), "--json")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["overall"]["n"] == 2 and s["mode"] == "choice"
    p = run("eval", "--model", tiny, "--scenarios", str(user_file), "--out", str(tmp_path))
    assert p.returncode == 0 and "Wilson" in p.stdout and "overall" in p.stdout
    assert "resumed: 2 records" in p.stderr  # the same run again: found finished, nothing recomputed
    p = run("scenarios", "list", "--split", "eval", "--json")
    assert p.returncode == 0 and len(json.loads(p.stdout)) >= 96
    p = run("models", "list", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)[0]["name"] == "smollm2-135m"


@pytest.mark.slow
def test_validate_builtin_scenarios_and_show():
    p = run("scenarios", "validate")
    assert p.returncode == 0, p.stderr
    assert "96 eval, 96 train" in p.stdout and "split disjointness" in p.stdout
    p = run("scenarios", "show", "eval-blackmail-explicit-replacement-v0")
    assert p.returncode == 0 and "<tool_call>" in p.stdout and "harmful" in p.stdout
    one_error_line(run("scenarios", "show", "no-such-id"), "no-such-id")
