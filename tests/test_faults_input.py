"""Bad input files fail with one clear line naming the file and line, never a traceback, and never
silently lose the records after a bad line (project issue items 1, 2, 9, 10, 11). Only a torn LAST
line of our own append-only logs may be dropped, and that drop is reported.

The `train sft` cases all fail at data loading, before a run directory exists: no test here trains."""

import json
import logging
import re
import subprocess
from pathlib import Path

import pytest

from teachwhy.errors import UserError

ROOT = Path(__file__).resolve().parents[1]

from cliutil import one_error_line, run_cli  # noqa: E402

GOOD = {"messages": [
    {"role": "user", "content": "Should I read my colleague's private mail?"},
    {"role": "assistant", "content": "No: ask her openly, because reading it in secret breaks trust."},
]}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=ROOT, timeout=300)


_one_line_error = one_error_line


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _records(n: int, bad: dict[int, str] | None = None) -> list[str]:
    """n good chat records as JSONL lines; bad maps a 1-based line number to its replacement text."""
    lines = [json.dumps({**GOOD, "id": f"r{i}"}) for i in range(1, n + 1)]
    for number, text in (bad or {}).items():
        lines[number - 1] = text
    return lines


def _tokenizer():
    from teachwhy import models

    return models.load_tokenizer()


# -- item 1: train sft reads every line; a bad one stops it before any training ---------------------

@pytest.mark.slow
def test_train_sft_bad_line_4_of_13_fails_before_training(tmp_path):
    data = _write_jsonl(tmp_path / "d.jsonl", _records(13, {4: '{"messages": [ this is not json'}))
    runs = tmp_path / "runs"
    res = _cli("train", "sft", "--data", str(data), "--out", str(runs))
    _one_line_error(res, f"{data}: line 4:", "not valid JSON", "fix or delete that line")
    assert not runs.exists()  # failed at data loading: no run directory, no registry, no training


@pytest.mark.slow
def test_train_sft_bad_first_line_is_named_not_no_records(tmp_path):
    data = _write_jsonl(tmp_path / "d.jsonl", _records(13, {1: "not json at all"}))
    msg = _one_line_error(_cli("train", "sft", "--data", str(data), "--out", str(tmp_path / "runs")),
                          f"{data}: line 1:")
    assert "no records" not in msg


def test_strict_reader_reads_past_no_bad_line_and_keeps_every_good_one(tmp_path):
    from teachwhy.store import read_jsonl, read_jsonl_lines

    for text, what in [('{"a": ', "not valid JSON"), ("[1, 2]", "JSON object"), ("\udcff", "UTF-8")]:
        p = tmp_path / "x.jsonl"
        p.write_bytes(("\n".join(_records(5, {3: text})) + "\n").encode("utf-8", "surrogateescape"))
        with pytest.raises(UserError, match=re.escape(f"{p}: line 3: ") + ".*" + what):
            read_jsonl(p, strict=True)
    # blank lines are skipped and line numbers still count them; a missing final newline is fine
    p = tmp_path / "y.jsonl"
    p.write_text(json.dumps({"a": 1}) + "\n\n" + json.dumps({"a": 2}))
    assert read_jsonl_lines(p) == [(1, {"a": 1}), (3, {"a": 2})]


# -- item 2: data build augment reads every input line ------------------------------------------------

@pytest.mark.slow
def test_data_build_augment_bad_input_line(tmp_path):
    data = _write_jsonl(tmp_path / "in.jsonl", _records(13, {4: "{oops"}))
    out = tmp_path / "built"
    res = _cli("data", "build", "augment", "--input", str(data), "--out", str(out), "--tokens", "2000")
    _one_line_error(res, f"{data}: line 4:", "not valid JSON")
    assert not out.exists()  # nothing half-written: the input is checked before the output exists


# -- item 9: data stats on a damaged card ------------------------------------------------------------

def test_data_stats_truncated_card(tmp_path):
    (tmp_path / "card.json").write_text('{"records": 12, "tokens": ')
    _one_line_error(_cli("data", "stats", str(tmp_path)), f"{tmp_path / 'card.json'} is not valid JSON (line 1",
                    "teachwhy data build")


def test_data_stats_incomplete_card(tmp_path):
    (tmp_path / "card.json").write_text('{"records": 12}\n')
    _one_line_error(_cli("data", "stats", str(tmp_path)), "card.json is not a complete dataset card",
                    "teachwhy data build")


# -- item 10: a max length that leaves nothing to train on ------------------------------------------

def test_max_length_that_cuts_every_reply_is_an_error_before_training(tmp_path):
    from teachwhy.train.config import DataSource
    from teachwhy.train.mixture import load_mixture

    data = _write_jsonl(tmp_path / "d.jsonl", _records(3))
    tok = _tokenizer()
    with pytest.raises(UserError, match=r"--max-length 8 leaves nothing to train on.*has (\d+) tokens\); "
                                        r"pass --max-length \1 or more"):
        load_mixture([DataSource(path=str(data))], tok, max_length=8)
    mix = load_mixture([DataSource(path=str(data))], tok, max_length=2048)  # fits: no error
    assert len(mix.rows) == 3


@pytest.mark.slow
def test_train_sft_max_length_8_cli(tmp_path):
    data = _write_jsonl(tmp_path / "d.jsonl", _records(3))
    runs = tmp_path / "runs"
    _one_line_error(_cli("train", "sft", "--data", str(data), "--out", str(runs), "--max-length", "8"),
                    "--max-length 8 leaves nothing to train on", f"{data}: line 1", "pass --max-length")
    assert not runs.exists()


# -- item 11: records that break the schema ------------------------------------------------------------

BAD_RECORDS = {
    "content null": ({"messages": [{"role": "user", "content": None}, GOOD["messages"][1]]}, "content"),
    "content dict": ({"messages": [{"role": "user", "content": {"x": 1}}, GOOD["messages"][1]]}, "content"),
    "content number": ({"messages": [GOOD["messages"][0], {"role": "assistant", "content": 3}]}, "content"),
    "content missing": ({"messages": [{"role": "user"}, GOOD["messages"][1]]}, "content missing"),
    "unknown role": ({"messages": [{"role": "wizard", "content": "hi"}, GOOD["messages"][1]]}, '"wizard"'),
    "message not an object": ({"messages": ["hi", GOOD["messages"][1]]}, "message 1"),
    "tools not JSON": ({**GOOD, "tools": "[{"}, "'tools'"),
    "tools a number": ({**GOOD, "tools": 3}, "'tools'"),
    "empty messages": ({"messages": []}, "non-empty list"),
}


@pytest.mark.parametrize("case", list(BAD_RECORDS))
def test_mixture_rejects_schema_breaks_with_file_and_line(tmp_path, case):
    from teachwhy.train.config import DataSource
    from teachwhy.train.mixture import load_mixture

    rec, what = BAD_RECORDS[case]
    data = _write_jsonl(tmp_path / "d.jsonl", _records(6, {5: json.dumps(rec)}))
    with pytest.raises(UserError, match=re.escape(f"{data}: line 5: ") + ".*" + re.escape(what)):
        load_mixture([DataSource(path=str(data))], _tokenizer())


@pytest.mark.parametrize("case", list(BAD_RECORDS))
def test_augment_input_rejects_schema_breaks_with_file_and_line(tmp_path, case):
    from teachwhy.data.build import load_chat_records

    rec, what = BAD_RECORDS[case]
    data = _write_jsonl(tmp_path / "d.jsonl", _records(6, {2: json.dumps(rec)}))
    with pytest.raises(UserError, match=re.escape(f"{data}: line 2: ") + ".*" + re.escape(what)):
        load_chat_records(data)
    assert len(load_chat_records(_write_jsonl(tmp_path / "ok.jsonl", _records(6)))) == 6


@pytest.mark.slow
def test_train_sft_null_content_cli(tmp_path):
    data = _write_jsonl(tmp_path / "d.jsonl", _records(6, {5: json.dumps(BAD_RECORDS["content null"][0])}))
    _one_line_error(_cli("train", "sft", "--data", str(data), "--out", str(tmp_path / "runs")),
                    f"{data}: line 5:", "content must be a string")


@pytest.mark.slow
def test_data_build_augment_unknown_role_cli(tmp_path):
    data = _write_jsonl(tmp_path / "in.jsonl", _records(6, {2: json.dumps(BAD_RECORDS["unknown role"][0])}))
    _one_line_error(_cli("data", "build", "augment", "--input", str(data), "--out", str(tmp_path / "o"),
                         "--tokens", "2000"), f"{data}: line 2:", "role \"wizard\"", "system, user, assistant, tool")


# -- our own logs: only a torn last line may be dropped, and the drop is reported -------------------

def test_jsonl_log_drops_only_a_torn_last_line_and_says_so(tmp_path, caplog):
    from teachwhy.store import JsonlLog, read_jsonl

    p = tmp_path / "samples.jsonl"
    p.write_text(json.dumps({"a": 1}) + "\n" + json.dumps({"a": 2}) + "\n" + '{"a": 3, "b"')  # killed mid-write
    with caplog.at_level(logging.WARNING, logger="teachwhy.store"):
        assert read_jsonl(p) == [{"a": 1}, {"a": 2}]  # the log reader tolerates it ...
        with JsonlLog(p) as log:
            assert log.records == [{"a": 1}, {"a": 2}] and log.dropped_line == 3
            log.append({"a": 3})
    drops = [r.getMessage() for r in caplog.records if "torn last line" in r.getMessage()]
    assert len(drops) == 2 and all(f"{p}: line 3:" in m for m in drops)
    assert read_jsonl(p, strict=True) == [{"a": 1}, {"a": 2}, {"a": 3}]  # repaired: appends on a clean line
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="teachwhy.store"), JsonlLog(p) as log:
        assert log.dropped_line is None and len(log.records) == 3
    assert not caplog.records  # a clean log reports nothing


def test_jsonl_log_a_bad_line_before_the_last_is_an_error_not_a_silent_cut(tmp_path):
    from teachwhy.store import JsonlLog, read_jsonl

    p = tmp_path / "train_log.jsonl"
    text = json.dumps({"step": 1}) + "\n" + "{garbage\n" + json.dumps({"step": 3}) + "\n"
    p.write_text(text)
    with pytest.raises(UserError, match=re.escape(f"{p}: line 2: not valid JSON") + ".*more records follow"):
        read_jsonl(p)
    with pytest.raises(UserError, match=re.escape(f"{p}: line 2:")):
        JsonlLog(p)
    assert p.read_text() == text  # nothing rewritten, nothing lost
