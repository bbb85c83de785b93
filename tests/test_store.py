import json
import sqlite3

import pytest

from teachwhy.errors import UserError
from teachwhy.store import JsonlLog, Registry, atomic_write_json, ensure_writable_dir, read_jsonl


def test_jsonl_log_drops_torn_tail_and_appends(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text(json.dumps({"a": 1}) + "\n" + '{"a": 2, "b"')  # interrupted mid-write
    with JsonlLog(p) as log:
        assert log.records == [{"a": 1}]
        log.append({"a": 3})
    assert read_jsonl(p) == [{"a": 1}, {"a": 3}]


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"k": [1, 2]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"k": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_registry_records_a_run(tmp_path):
    reg = Registry(tmp_path / "registry.sqlite")
    reg.start("r1", "eval/agentic/choice", "smollm2-135m", {"x": 1}, tmp_path / "r1")
    reg.finish("r1", {"overall": {"rate": 0.5}}, 1.5)
    row = reg.get("r1")
    assert row["status"] == "done" and row["model"] == "smollm2-135m" and row["seconds"] == 1.5
    assert "torch" in json.loads(row["versions_json"])
    # a real SQLite file other tools can read
    with sqlite3.connect(tmp_path / "registry.sqlite") as c:
        assert c.execute("select count(*) from runs").fetchone()[0] == 1


def test_corrupt_registry_is_a_clear_error(tmp_path):
    (tmp_path / "registry.sqlite").write_text("this is not sqlite" * 100)
    with pytest.raises(UserError, match="registry"):
        Registry(tmp_path / "registry.sqlite")


def test_unwritable_dir_is_a_clear_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match="not writable"):
        ensure_writable_dir(f / "sub")
