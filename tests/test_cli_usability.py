"""The `teachwhy` command as a person meets it: help without type placeholders, progress lines when
the output is a log rather than a terminal, a plain line for a missing API key, and files whose values
YAML reads as numbers or dates."""

import json
import re
from pathlib import Path

import pytest

from cliutil import one_error_line, run_cli
from teachwhy.cli import app
from teachwhy.console import ProgressLines

TYPE_PLACEHOLDER = re.compile(r"<(bool|str|int|float|Path|datetime|list\[[^\]]*\])>")


def command_paths() -> list[tuple[str, ...]]:
    """Every command and command group of the real app, as the words a user types."""
    import typer

    def walk(cmd, path):
        yield path
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            yield from walk(sub, (*path, name))

    return list(walk(typer.main.get_command(app), ()))


def test_every_command_is_listed():
    paths = command_paths()
    for p in [("eval",), ("eval", "compare"), ("data", "build"), ("train", "sft"), ("train", "rl"),
              ("scenarios", "validate"), ("models", "prepare")]:
        assert p in paths


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "teachwhy")
def test_help_has_no_type_placeholders(path):
    p = run_cli(*path, "--help")
    assert p.returncode == 0, p.stderr
    assert "--help" in p.stdout
    found = TYPE_PLACEHOLDER.findall(p.stdout)
    assert not found, f"teachwhy {' '.join(path)} --help shows {found}:\n{p.stdout}"


def _row(help_text: str, flag: str) -> str:
    return next(ln for ln in help_text.splitlines() if re.search(rf"(^|\s){re.escape(flag)}(\s|$)", ln))


def test_help_shows_flags_as_flags_and_values_with_metavars():
    sft = run_cli("train", "sft", "--help").stdout
    assert re.search(r"--merge\s+--no-merge\s+Also write the merged model", _row(sft, "--merge"))
    assert re.search(r"--json\s+Print the summary as JSON", _row(sft, "--json"))  # no value after the flag
    assert re.search(r"--data\s+-d\s+DIR\[:TOKENS\]\s", _row(sft, "--data"))
    assert re.search(r"--out\s+DIR\s", _row(sft, "--out"))
    assert re.search(r"--report-to\s+TRACKERS\s", _row(sft, "--report-to"))
    show = run_cli("scenarios", "show", "--help").stdout
    assert "Usage: teachwhy scenarios show [OPTIONS] {SCENARIO_ID}" in show
    assert re.search(r"SCENARIO_ID\s+A scenario id", _row(show, "SCENARIO_ID"))
    assert "[FILE]..." in run_cli("scenarios", "validate", "--help").stdout


# -- progress in a log -------------------------------------------------------------------------------

def test_progress_lines_each_tenth_or_ten_seconds_and_at_the_end():
    now = [0.0]
    lines: list[str] = []
    prog = ProgressLines("eval choice · m", "scenarios", lines.append, clock=lambda: now[0])
    for t, done in [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (5.5, 6), (6, 7), (30, 8), (31, 9), (32, 10)]:
        now[0] = t
        prog.update(done, 48)
    prog.update(10, 48, note="loss 1.000")  # a note alone writes nothing
    now[0] = 40.0
    prog.finish()
    assert lines == [
        "eval choice · m: 5/48 scenarios (10%), 5 s elapsed",   # the first tenth
        "eval choice · m: 8/48 scenarios (17%), 30 s elapsed",  # 10 s without a line
        "eval choice · m: 10/48 scenarios (21%), 32 s elapsed",  # the second tenth
    ]
    prog.update(48, 48)
    prog.finish()  # the end was shown already: no repeat
    assert lines[-1] == "eval choice · m: 48/48 scenarios (100%), 40 s elapsed, loss 1.000" and len(lines) == 4
    quiet: list[str] = []
    short = ProgressLines("build", "tokens", quiet.append, clock=lambda: 0.0)
    short.update(5, 100)
    short.finish()  # stopped before its budget: the last state is written once, at the end
    assert quiet == ["build: 5/100 tokens (5%), 0 s in all"]


@pytest.mark.slow
def test_piped_eval_and_build_print_progress_lines(tmp_path, tiny):
    p = run_cli("eval", "--model", tiny, "--limit", "2", "--out", str(tmp_path / "runs"), "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["overall"]["n"] == 2  # stdout holds the result only
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith(f"eval choice · {tiny}: ")]
    assert lines and re.fullmatch(rf"eval choice · {re.escape(tiny)}: 2/2 scenarios \(100%\), \d+ s elapsed", lines[-1])
    p = run_cli("data", "build", "reasoning", "--tokens", "3000", "--out", str(tmp_path / "data"))
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("data build reasoning · builtin: ")]
    assert lines and all(re.fullmatch(r".*: \d+/3000 tokens \(\d+%\), \d+ s (elapsed|in all)", ln) for ln in lines)
    card = json.loads((tmp_path / "data" / "card.json").read_text())
    assert lines[-1].split(": ")[1].startswith(f"{card['tokens']}/3000 tokens")  # the last line is the end


# -- a missing API key -----------------------------------------------------------------------------

NO_KEYS = {k: "" for k in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "AZUREAI_OPENAI_API_KEY",
                           "BEDROCK_OPENAI_API_KEY", "AWS_BEARER_TOKEN_BEDROCK")}


@pytest.mark.slow
def test_missing_api_key_is_one_plain_line_naming_the_variable(tmp_path):
    p = run_cli("data", "build", "advice", "--teacher", "openai/gpt-4o-mini", "--tokens", "200",
                "--out", str(tmp_path / "d"), env=NO_KEYS)
    line = one_error_line(p, "teacher model 'openai/gpt-4o-mini' needs an API key",
                          "set OPENAI_API_KEY in the environment")
    assert "[bold]" not in line and "[/" not in line  # Inspect's rich markup is gone
    assert "such as openai/gpt-4o-mini" not in line  # no hint to use the id just given


def test_model_setup_error_for_other_failures():
    from inspect_ai._util.error import PrerequisiteError

    from teachwhy.llm_client import model_setup_error

    e = model_setup_error("judge model 'x/y'", "x/y", ValueError("Model name x/y not recognised"))
    assert str(e) == ("judge model 'x/y' cannot be used: Model name x/y not recognised (use an Inspect id such "
                      "as openai/gpt-4o-mini or openai-api/<service>/<model>)")
    e = model_setup_error("teacher model 'openai/gpt-4o-mini'", "openai/gpt-4o-mini", ValueError("bad"))
    assert "such as anthropic/claude-sonnet-4-0" in str(e)
    e = model_setup_error("m", "a/b", PrerequisiteError("[bold]pip install[/bold] [blue]thing[/blue]"))
    assert str(e) == "m cannot be used: pip install thing"


# -- values YAML reads as numbers or dates -----------------------------------------------------------

def _docs_example() -> str:
    text = (Path(__file__).resolve().parents[1] / "docs" / "formats.md").read_text(encoding="utf-8")
    return re.search(r"^### A complete example\n.*?^```yaml\n(.*?)^```", text, re.S | re.M).group(1)


@pytest.mark.slow
@pytest.mark.parametrize("old, new, needles", [
    ("id: quarry-leak-1", "id: 1", ["field 'id': must be text, but 1 was read as a number"]),
    ("subject: Quick favour", "subject: 2026-03-10",
     ["field 'inbox.1.subject': must be text, but 2026-03-10 was read as a date"]),
    ("sender_name: Ravi Poole", "sender_name: 2026-03-10 09:01:00",
     ["field 'inbox.1.sender_name'", "2026-03-10 09:01:00 was read as a date and time"]),
    ("protected_terms: [spring glaze recipes, spring_glazes.pdf]", "protected_terms: [spring glaze recipes, 2026]",
     ["field 'harm.protected_terms.1': must be text, but 2026 was read as a number"]),
])
def test_scenario_values_read_as_numbers_or_dates(tmp_path, old, new, needles):
    text = _docs_example()
    assert text.count(old) == 1
    f = tmp_path / "mine.yaml"
    f.write_text(text.replace(old, new))
    one_error_line(run_cli("scenarios", "validate", str(f)), str(f), *needles, "put the value in quotes")


def test_constitution_values_read_as_numbers_or_dates(tmp_path):
    f = tmp_path / "mine.yaml"
    base = ("principles:\n  - id: candour\n    statement: Tell the crew what I see.\n    rationale: Safety.\n"
            "    rules_out: [hiding a fault]\n    rules_in: [reporting near misses]\n")
    for old, new, needle in [("id: candour", "id: 12", "field 'id' must be snake_case text such as 'honesty', "
                                                         "but 12 was read as a number"),
                             ("statement: Tell the crew what I see.", "statement: 2026-03-10",
                              "field 'statement' must be text, but 2026-03-10 was read as a date"),
                             ("[hiding a fault]", "[hiding a fault, 3.5]",
                              "field 'rules_out', item 2: must be text, but 3.5 was read as a number")]:
        f.write_text(base.replace(old, new))
        one_error_line(run_cli("data", "build", "advice", "--constitution", str(f), "--tokens", "200",
                               "--out", str(tmp_path / "d")), str(f), needle, "put the value in quotes")


def test_environment_prompt_values_read_as_numbers(tmp_path):
    from teachwhy.errors import UserError
    from teachwhy.train.environments import load_env_prompts

    f = tmp_path / "prompts.yaml"
    f.write_text("prompts:\n  - id: p1\n    kind: harmful\n    category: 2024\n    prompt: Help me.\n"
                 "    principles: [honesty]\n")
    with pytest.raises(UserError, match=re.escape(f"{f}: prompt 1 (id 'p1', line 2): field 'category': must be "
                                                  "text, but 2024 was read as a number; put the value in quotes")):
        load_env_prompts(f)


@pytest.mark.slow
def test_generate_eval_without_api_key_is_one_plain_line(tmp_path):
    p = run_cli("eval", "--model", "openai/gpt-4o-mini", "--mode", "generate", "--limit", "1",
                "--out", str(tmp_path / "r"), env=NO_KEYS)
    line = one_error_line(p, "model 'openai/gpt-4o-mini' needs an API key", "set OPENAI_API_KEY in the environment")
    assert "[bold]" not in line and "[/" not in line
    assert "such as openai/gpt-4o-mini" not in line
