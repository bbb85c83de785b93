"""Training options that need no training: when the eval-while-training callback takes its points (from
the parsed config), `report_to` reaching TRL's training arguments, one-line config errors that point at
docs/training.md, and the loss summary of a run that logged a single step."""

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from cliutil import one_error_line, run_cli
from teachwhy.errors import UserError
from teachwhy.train import RLSpec, SFTSpec, load_spec
from teachwhy.train.callbacks import ChoiceEvalCallback, TrainLogCallback, loss_summary, standard_callbacks

DOCS = Path(__file__).resolve().parents[1] / "docs" / "training.md"


def _config(tmp_path, cls, text: str):
    f = tmp_path / "config.yaml"
    f.write_text(text)
    return load_spec(cls, str(f), {})


def eval_points(spec, run_dir: Path, steps: int = 10) -> list[int] | None:
    """The steps at which a run of `steps` steps would take eval points, as the callback decides them;
    None when the run gets no eval callback at all."""
    callbacks = standard_callbacks(run_dir, spec.eval, tokenizer=None, tokens_fn=lambda state: (0, 0),
                                   on_log=None, on_eval=None, progress=None)
    ev = next((c for c in callbacks if isinstance(c, ChoiceEvalCallback)), None)
    if ev is None:
        return None
    points = [0] if ev.due("start", 0) else []
    points += [s for s in range(1, steps + 1) if ev.due("step", s)]
    if ev.due("end", steps) and steps not in points:
        points.append(steps)
    return points


@pytest.mark.parametrize("text, points", [
    ("eval: {every: null, at_start: true, at_end: true}\n", [0, 10]),  # the formerly documented default
    ("eval: {at_start: true, at_end: true, limit: 4}\n", [0, 10]),
    ("eval: {at_end: true}\n", [10]),
    ("eval: {every: 4}\n", [0, 4, 8, 10]),
    ("eval: {every: 4, at_start: false}\n", [4, 8, 10]),
    ("eval: {every: 5, at_end: false}\n", [0, 5, 10]),
    ("seed: 1\n", None),  # no eval section: no eval while training
    ("eval: {every: null}\n", None),
    ("eval: {at_start: true, limit: 0}\n", None),
])
def test_sft_eval_points_follow_the_config(tmp_path, text, points):
    spec = _config(tmp_path, SFTSpec, text)
    assert eval_points(spec, tmp_path) == points


def test_rl_eval_points_default_and_off(tmp_path):
    assert eval_points(RLSpec(), tmp_path, steps=20) == [0, 10, 20]
    assert eval_points(_config(tmp_path, RLSpec, "eval: {every: 0}\n"), tmp_path, steps=20) is None
    # the flag that turns it off (`--eval-every 0`) overrides the file
    spec = load_spec(RLSpec, None, {"eval.every": 0})
    assert eval_points(spec, tmp_path, steps=20) is None


def test_a_resumed_run_does_not_repeat_its_points(tmp_path):
    spec = _config(tmp_path, SFTSpec, "eval: {every: 4}\n")
    (tmp_path / "eval_points.jsonl").write_text('{"step": 0}\n{"step": 4}\n')
    assert eval_points(spec, tmp_path) == [8, 10]


def _yaml_blocks(path: Path) -> dict[str, str]:
    text = path.read_text(encoding="utf-8")
    return {m.group(1): m.group(2) for m in
            re.finditer(r"^## (\w+) config \(`teachwhy\.train\.\w+`\)\n.*?^```yaml\n(.*?)^```", text, re.S | re.M)}


def test_the_configs_in_training_md_load(tmp_path):
    blocks = _yaml_blocks(DOCS)
    assert set(blocks) == {"SFT", "RL"}
    sft = _config(tmp_path, SFTSpec, blocks["SFT"])
    assert [(d.path, d.tokens) for d in sft.data] == [("data/reasoning", 20000), ("data/documents", 10000)]
    assert eval_points(sft, tmp_path) is None  # as documented: no eval unless asked for
    assert sft.report_to == "none"
    rl = _config(tmp_path, RLSpec, blocks["RL"])
    assert eval_points(rl, tmp_path, steps=rl.steps) == [0, 10, 20]


# -- report_to -------------------------------------------------------------------------------------

def _training_args(spec):
    import tempfile

    from trl import GRPOConfig, SFTConfig

    from teachwhy.train.runs import training_args_common

    out = tempfile.mkdtemp()
    if isinstance(spec, RLSpec):
        return GRPOConfig(output_dir=out, **{**training_args_common(spec, "float32"), "remove_unused_columns": False})
    return SFTConfig(output_dir=out, **training_args_common(spec, "float32"))


def test_report_to_reaches_the_training_arguments(tmp_path):
    assert _training_args(SFTSpec()).report_to == []  # the default: no tracker
    assert _training_args(_config(tmp_path, SFTSpec, "report_to: none\n")).report_to == []
    # a tracker validated when the config was read, e.g. report_to: tensorboard where tensorboard is
    # installed (it is not on the reference machine, so the validated value is set directly)
    for cls in (SFTSpec, RLSpec):
        spec = cls().model_copy(update={"report_to": ["tensorboard", "trackio"]})
        assert _training_args(spec).report_to == ["tensorboard", "trackio"]
    # "all": every installed tracker, as transformers resolves it
    from transformers.integrations.integration_utils import get_available_reporting_integrations

    all_ = _config(tmp_path, SFTSpec, "report_to: all\n")
    assert _training_args(all_).report_to == get_available_reporting_integrations()


def test_report_to_is_checked_and_is_not_part_of_the_run_id(tmp_path):
    assert _config(tmp_path, SFTSpec, "report_to: none\n").report_to == "none"
    assert SFTSpec(report_to="all").model_dump() == SFTSpec().model_dump()  # run id unchanged
    with pytest.raises(UserError, match=r"'report_to': unknown tracker 'tensorbord'; use none, all, or from .*"
                                        r"tensorboard, trackio, wandb"):
        _config(tmp_path, SFTSpec, "report_to: tensorbord\n")
    with pytest.raises(UserError, match="none and all stand alone"):
        _config(tmp_path, RLSpec, "report_to: [none, wandb]\n")
    with pytest.raises(UserError, match="must be text, but 3 was read as a number"):
        _config(tmp_path, SFTSpec, "report_to: 3\n")


@pytest.mark.slow
def test_report_to_a_tracker_that_is_not_installed_is_one_line(tmp_path):
    # the dev install has tensorboard (the test below) and neither of these two
    assert importlib.util.find_spec("mlflow") is None and importlib.util.find_spec("wandb") is None
    cfg = tmp_path / "sft.yaml"
    cfg.write_text("report_to: mlflow\n")
    one_error_line(run_cli("train", "sft", "--config", str(cfg), "--out", str(tmp_path / "runs")),
                   str(cfg), "'report_to'", "tracker 'mlflow' is not installed", "pip install mlflow")
    one_error_line(run_cli("train", "rl", "--report-to", "tensorboard,wandb", "--out", str(tmp_path / "runs")),
                   "'report_to'", "tracker 'wandb' is not installed", "pip install wandb")
    assert not (tmp_path / "runs").exists()


def test_report_to_tensorboard_where_it_is_installed(tmp_path):
    assert importlib.util.find_spec("tensorboard") is not None, "pip install -e '.[dev]' installs tensorboard"
    spec = _config(tmp_path, SFTSpec, "report_to: tensorboard\n")
    assert _training_args(spec).report_to == ["tensorboard"]


# -- config errors ---------------------------------------------------------------------------------

def test_unknown_key_points_to_training_md(tmp_path):
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(yaml.safe_dump({"learning_rat": 0.1}))
    one_error_line(run_cli("train", "sft", "--config", str(cfg)), str(cfg), "'learning_rat': unknown key",
                   "docs/training.md")
    cfg.write_text("eval: {evry: 5}\n")
    line = one_error_line(run_cli("train", "rl", "--config", str(cfg)), "'eval.evry': unknown key",
                          "docs/training.md")
    assert "formats.md" not in line


def test_a_name_read_as_a_date_says_to_quote_it(tmp_path):
    cfg = tmp_path / "sft.yaml"
    cfg.write_text("name: 2026-03-10\n")
    one_error_line(run_cli("train", "sft", "--config", str(cfg)), str(cfg), "'name': must be text",
                   "2026-03-10 was read as a date", "put the value in quotes")
    cfg.write_text("lora: {target_modules: [q_proj, 1]}\nname: x\n")
    with pytest.raises(UserError, match=r"'lora\.target_modules\.1': must be text, but 1 was read as a number"):
        load_spec(SFTSpec, str(cfg), {})
    cfg.write_text("packing: on\n")  # YAML reads an unquoted on as true
    with pytest.raises(UserError, match=r"'packing': .*'on' or 'off', but true was read as true/false.*quotes"):
        load_spec(SFTSpec, str(cfg), {})
    cfg.write_text('packing: "on"\n')
    assert load_spec(SFTSpec, str(cfg), {}).packing == "on"


# -- the loss summary of a run --------------------------------------------------------------------------

def _write_log(path: Path, losses: list[float]) -> None:
    """train_log.jsonl as the real TrainLogCallback writes it, one logging step per loss."""
    from transformers import TrainerState

    cb = TrainLogCallback(path, tokens_fn=lambda state: (100 * state.global_step, 40 * state.global_step))
    state = TrainerState()
    cb.on_train_begin(None, state, None)
    for step, loss in enumerate(losses, 1):
        state.global_step, state.epoch = step, step / len(losses)
        cb.on_log(None, state, None, logs={"loss": loss, "learning_rate": 5e-4, "grad_norm": 1.0})


def test_loss_summary_of_one_logged_step(tmp_path):
    from teachwhy.store import read_jsonl

    log = tmp_path / "train_log.jsonl"
    _write_log(log, [2.5])
    records = read_jsonl(log)
    assert [r["step"] for r in records] == [1] and records[0]["loss"] == 2.5
    assert loss_summary(records) == {"window": 1, "steps": 1, "first": 2.5, "last": 2.5, "delta": 0.0}


def test_loss_summary_of_several_and_of_no_logged_steps(tmp_path):
    from teachwhy.store import read_jsonl

    log = tmp_path / "train_log.jsonl"
    _write_log(log, [3.0, 2.0, 1.0, 0.5])
    s = loss_summary(read_jsonl(log))
    assert s["window"] == 2 and s["steps"] == 4 and s["first"] == 2.5 and s["last"] == 0.75
    assert loss_summary(read_jsonl(tmp_path / "missing.jsonl")) is None  # a run that logged nothing
    assert loss_summary([{"step": 1, "reward": 0.5}]) is None  # RL logs rewards, not a loss
