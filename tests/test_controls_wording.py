"""`teachwhy eval controls` at both validity levels, on the built-in held-out wording and on a user's
own scenario file (the tiny model, tiny settings: the verdicts themselves are not the point here)."""

import json
from pathlib import Path

import pytest

from cliutil import run_cli
from teachwhy.results import ControlsResult

BYO = Path(__file__).parent / "data" / "byo_scenarios.yaml"

pytestmark = pytest.mark.slow


def test_controls_on_a_user_file_print_both_levels(tmp_path, tiny):
    out = tmp_path / "controls"
    r = run_cli("eval", "controls", "--model", tiny, "--scenarios", str(BYO), "--train-scenarios", "2",
                "--eval-limit", "4", "--epochs", "1", "--format", "continuation", "--train-banks", "house,chatty",
                "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "in-template (the eval's own candidates)" in r.stdout
    assert "across wording (held-out candidates)" in r.stdout and "byo_scenarios.yaml" in r.stdout
    res = json.loads((out / "controls.json").read_text())
    assert ControlsResult.model_validate(res).model_dump(exclude_unset=True) == res  # results.py round-trips it
    assert res["train_banks"] == ["house", "chatty"]
    assert res["levels_eval"]["across_wording"]["scenario_files"] == [str(BYO)]
    assert res["levels_eval"]["across_wording"]["n"] == 2 and res["levels_eval"]["in_template"]["n"] == 4
    for level in ("effects", "effects_across_wording"):
        assert "continuation/pair" in res[level]
        for eff in res[level].values():
            assert eff["verdict"]["level"] in ("validated", "partly", "not")
    # the across-wording runs scored the user's scenarios, the in-template ones the built-in eval split
    ids = {json.loads(line)["scenario_id"]
           for line in (Path(res["runs_across_wording"]["harmful"]) / "samples.jsonl").read_text().splitlines()}
    assert ids == {"byo-leak-1", "byo-leak-2"}
    entry = res["validation"]["formats"]["continuation/pair"]
    assert set(entry) >= {"in_template", "across_wording", "validated"}
    # the control data is phrased in the banks asked for and nothing else
    data = [json.loads(x) for x in (out / "data" / "harmful-house-chatty" / "data.jsonl").read_text().splitlines()]
    assert [d["source_id"].split("/")[0].endswith("-chatty") for d in data] == [False, True]
