"""Training end to end: SFT (adapter saved, reloaded, evaluated), token budgets, the eval-while-training
callback, GRPO, resume, and one-line errors for bad input. The runs train the tiny random model (the
`tiny` fixture: same architecture, tokenizer and chat template as the embedded model; the assertions
are about mechanics, not weights)."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from teachwhy.errors import UserError
from test_cli import one_error_line, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    from teachwhy.data.build import build_dataset
    from teachwhy.teachers import get_teacher

    root = tmp_path_factory.mktemp("data")
    out = {}
    for kind, tokens in (("reasoning", 6000), ("documents", 3000)):
        build_dataset(kind, get_teacher("builtin", seed=0), tokens=tokens, seed=0, out=root / kind)
        out[kind] = root / kind
    return out


@pytest.fixture(scope="module")
def sft_run(datasets, tiny, tmp_path_factory):
    """A tiny SFT of the tiny model: two reasoning records (one optimizer step), with eval points at
    start and end; shared by the tests that read its adapter (end to end, GRPO, wrong base, merge)."""
    from teachwhy.train import SFTSpec, run_sft

    out = tmp_path_factory.mktemp("runs")
    spec = SFTSpec(model=tiny, data=[{"path": str(datasets["reasoning"]), "tokens": 3000}], out=str(out),
                   eval={"every": 1, "limit": 2})
    return spec, run_sft(spec)


def _tokenizer():
    from teachwhy import models

    return models.load_tokenizer("smollm2-135m")


# -- budgets and mixtures ----------------------------------------------------------------------------

def test_budget_held_per_source_and_masks(datasets):
    from teachwhy.store import read_jsonl
    from teachwhy.train.config import DataSource
    from teachwhy.train.mixture import load_mixture

    tok = _tokenizer()
    mix = load_mixture([DataSource(path=str(datasets["reasoning"]), tokens=4000),
                        DataSource(path=str(datasets["documents"]), tokens=1500)], tok, seed=0)
    by = {s.name: s for s in mix.sources}
    for name, budget in (("reasoning", 4000), ("documents", 1500)):
        s = by[name]
        assert 0 < s.tokens <= budget
        recs = read_jsonl(Path(s.path))
        # short of the budget by less than the next record: it stopped before the one that would exceed
        assert s.tokens + recs[s.records]["tokens"] > budget
        # the builder's counts and ours agree (same tokenizer, same template)
        assert s.tokens == sum(r["tokens"] for r in recs[: s.records])
        assert s.loss_tokens == sum(r["loss_tokens"] for r in recs[: s.records])
    assert mix.tokens == sum(len(r["input_ids"]) for r in mix.rows)
    chats = [r for r in mix.rows if r["source"] == "reasoning"]
    docs = [r for r in mix.rows if r["source"] == "documents"]
    assert docs and all(all(m == 1 for m in r["assistant_masks"]) for r in docs)  # LM loss
    for r in chats:  # assistant-only: the prompt carries no loss, the reply ends with <|im_end|>
        mask = r["assistant_masks"]
        assert mask[0] == 0 and 0 < sum(mask) < len(mask)
        last = max(i for i, m in enumerate(mask) if m)
        assert tok.decode([r["input_ids"][last]]) == "<|im_end|>"
    again = load_mixture([DataSource(path=str(datasets["reasoning"]), tokens=4000),
                          DataSource(path=str(datasets["documents"]), tokens=1500)], tok, seed=0)
    assert [r["record_id"] for r in again.rows] == [r["record_id"] for r in mix.rows]  # seeded order


def test_budget_smaller_than_a_record_and_bad_records(datasets, tmp_path):
    from teachwhy.train.config import DataSource
    from teachwhy.train.mixture import load_mixture

    tok = _tokenizer()
    with pytest.raises(UserError, match="smaller than the first record"):
        load_mixture([DataSource(path=str(datasets["reasoning"]), tokens=10)], tok)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(UserError, match=r"bad.jsonl: line 1: .*assistant"):
        load_mixture([DataSource(path=str(bad))], tok)
    with pytest.raises(UserError, match="does not exist"):
        load_mixture([DataSource(path=str(tmp_path / "missing"))], tok)
    with pytest.raises(UserError, match=r"no data\.jsonl"):
        load_mixture([DataSource(path=str(tmp_path))], tok)


# -- SFT end to end -------------------------------------------------------------------------------------

def test_sft_end_to_end_adapter_saved_reloaded_evaluated(sft_run, tiny, tmp_path):
    import torch

    from teachwhy import models
    from teachwhy.evals.runner import run_eval
    from teachwhy.store import read_jsonl

    spec, res = sft_run
    s = res.summary
    adapter = res.run_dir / "adapter"
    assert res.model_path == adapter and (adapter / "adapter_model.safetensors").is_file()
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    # the base's directory, which PEFT, transformers, Inspect and vLLM can open (teachwhy.json keeps the name)
    assert cfg["base_model_name_or_path"] == str(models.model_dir(models.resolve(tiny)).resolve())
    meta = json.loads((adapter / "teachwhy.json").read_text())
    assert meta["base"] == tiny and meta["tokens"] == s["tokens"]
    assert s["tokens"] <= 3000 and s["records"] == 2 and s["steps"] == 1
    assert s["tokens_seen"] == s["tokens"]  # every budgeted token went through the model once
    assert 0 < s["loss_tokens_seen"] == s["loss_tokens"] < s["tokens"]
    assert not (res.run_dir / "checkpoints").exists()
    assert (res.run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and s["plot"]

    log = read_jsonl(res.run_dir / "train_log.jsonl")
    assert [r["step"] for r in log] == [1]
    assert log[0]["loss"] > 0 and log[0]["tokens_seen"] == s["tokens"] and log[0]["tokens_per_s"] > 0

    # the callback wrote a point before training and one after, on the same two scenarios
    points = read_jsonl(res.run_dir / "eval_points.jsonl")
    assert [p["step"] for p in points] == [0, 1]
    assert [p["tokens_seen"] for p in points] == [0, s["tokens"]]
    for p in points:
        assert p["n"] == 2 and 0 <= p["k"] <= 2 and len(p["wilson_95"]) == 2
        assert p["scenario_ids"] == points[0]["scenario_ids"]
        assert len({sid.split("-")[1] for sid in p["scenario_ids"]}) == 2  # two families, not one
    # training moved the model: the mean P(harmful) changed, and LoRA B (initialised to 0) is non-zero
    assert points[0]["mean_p_harmful"] != points[1]["mean_p_harmful"]

    loaded = models.load(str(adapter), dtype="float32")
    lora_b = [p for n, p in loaded.model.named_parameters() if "lora_B" in n]
    assert lora_b and any(torch.count_nonzero(p) > 0 for p in lora_b)

    # `teachwhy eval --model runs/<id>` works on the run directory (and so on the adapter)
    ev = run_eval(str(res.run_dir), mode="choice", limit=2, out=tmp_path / "ev")
    assert ev.summary["overall"]["n"] == 2
    assert json.loads((ev.run_dir / "config.json").read_text())["model_kind"] == "peft"

    # a rerun of a finished run resumes: it returns the saved summary without training
    from teachwhy.train import run_sft

    again = run_sft(spec)
    assert again.resumed and again.run_id == res.run_id and again.summary == s


def test_sft_resumes_from_checkpoint(datasets, tiny, tmp_path):
    """An interrupted run (checkpoint on disk, no summary) continues from the checkpoint's step."""
    from teachwhy.store import read_jsonl
    from teachwhy.train import SFTSpec, run_sft

    spec = SFTSpec(model=tiny, data=[{"path": str(datasets["reasoning"]), "tokens": 3000}], out=str(tmp_path),
                   batch_size=1, save_steps=1)
    first = run_sft(spec)
    assert first.summary["steps"] == 2
    # a second run is killed after step 1's checkpoint: no summary, no adapter
    import subprocess
    import sys

    code = (
        "import json, os, sys\n"
        "from transformers import Trainer, TrainerCallback\n"
        "from teachwhy.train import SFTSpec, run_sft\n"
        "class Stop(TrainerCallback):\n"
        "    def on_save(self, args, state, control, **kw):\n"
        "        os._exit(3)  # killed right after the first checkpoint\n"
        "orig = Trainer.__init__\n"
        "def init(self, *a, **k):\n"
        "    k['callbacks'] = list(k.get('callbacks') or []) + [Stop()]\n"
        "    orig(self, *a, **k)\n"
        "Trainer.__init__ = init\n"
        "run_sft(SFTSpec.model_validate(json.loads(sys.argv[1])))\n"
    )
    spec2 = spec.model_copy(update={"out": str(tmp_path / "b")})
    p = subprocess.run([sys.executable, "-c", code, spec2.model_dump_json()], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 3, p.stderr[-2000:]
    run_dir = next((tmp_path / "b").glob("sft-*"))
    assert (run_dir / "checkpoints" / "checkpoint-1").is_dir() and not (run_dir / "summary.json").exists()
    resumed = run_sft(spec2)
    assert resumed.resumed and resumed.summary["resumed_from_step"] == 1 and resumed.summary["steps"] == 2
    log = read_jsonl(run_dir / "train_log.jsonl")
    assert [r["step"] for r in log] == [1, 2]  # one line per step, none repeated
    assert log[-1]["tokens_seen"] == first.summary["tokens_seen"]
    # same seed, same data order: the resumed run ends where the uninterrupted one did
    assert log[-1]["loss"] == pytest.approx(read_jsonl(first.run_dir / "train_log.jsonl")[-1]["loss"], rel=1e-3)


# -- RL -------------------------------------------------------------------------------------------------

def test_grpo_from_sft_checkpoint_logs_reward_and_eval_curve(sft_run, tiny, tmp_path):
    from teachwhy.store import read_jsonl
    from teachwhy.train import RLSpec, run_rl

    _, sft = sft_run
    spec = RLSpec(model=str(sft.model_path), out=str(tmp_path), steps=2, num_generations=2,
                  max_completion_length=8, eval={"every": 1, "limit": 1})
    res = run_rl(spec)
    s = res.summary
    assert s["steps"] == 2 and s["from_adapter"] == str(sft.model_path)
    log = read_jsonl(res.run_dir / "train_log.jsonl")
    assert [r["step"] for r in log] == [1, 2] and all("reward" in r for r in log)
    comps = read_jsonl(res.run_dir / "completions.jsonl")
    assert {c["step"] for c in comps} == {1, 2}
    assert {c["reward"] for c in comps} == {"harm_refusal_reward", "adherence_reward"}
    assert len(comps) == 2 * 2 * 2  # steps x completions x reward parts
    points = read_jsonl(res.run_dir / "eval_points.jsonl")
    assert [p["step"] for p in points] == [0, 1, 2] and all(p["n"] == 1 for p in points)
    assert s["reward"]["first_window"]["n"] == 2 and "compliance" in s["reward"]["last_window"]
    meta = json.loads((res.model_path / "teachwhy.json").read_text())
    assert meta["base"] == tiny and meta["rl_steps"] == 2
    assert (res.run_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"


# -- configs and errors -----------------------------------------------------------------------------------

def test_yaml_config_and_flag_overrides(tmp_path):
    from teachwhy.train import SFTSpec, load_spec

    cfg = tmp_path / "sft.yaml"
    cfg.write_text(yaml.safe_dump({"data": ["a/b:500", {"path": "c", "tokens": 7}], "learning_rate": 1e-4,
                                   "eval": {"every": 5}}))
    spec = load_spec(SFTSpec, str(cfg), {"learning_rate": 3e-4, "eval.limit": 8, "seed": None})
    assert [(d.path, d.tokens) for d in spec.data] == [("a/b", 500), ("c", 7)]
    assert spec.learning_rate == 3e-4 and spec.eval.every == 5 and spec.eval.limit == 8
    cfg.write_text("learning_rat: 0.1\n")
    with pytest.raises(UserError, match="'learning_rat': unknown key"):
        load_spec(SFTSpec, str(cfg), {})
    cfg.write_text("data:\n  - {path: x, tokens: -5}\n")
    with pytest.raises(UserError, match="positive"):
        load_spec(SFTSpec, str(cfg), {})
    cfg.write_text("data: [\n")
    with pytest.raises(UserError, match="not valid YAML at line"):
        load_spec(SFTSpec, str(cfg), {})


def test_cli_errors_missing_dataset_and_negative_budget(datasets, tmp_path):
    one_error_line(run("train", "sft", "--data", str(tmp_path / "nope"), "--out", str(tmp_path)),
                   "dataset path", "does not exist", "teachwhy data build")
    one_error_line(run("train", "sft", "--data", f"{datasets['reasoning']}:-100", "--out", str(tmp_path)),
                   "token budget must be positive", "-100")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": [{"path": str(datasets["reasoning"]), "tokens": -1}]}))
    one_error_line(run("train", "sft", "--config", str(cfg)), str(cfg), "positive")
    one_error_line(run("train", "sft", "--out", str(tmp_path)), "no training data")
    assert not list(tmp_path.glob("sft-*"))  # nothing half-written


def _tiny_other_base(path: Path, base: str) -> Path:
    """A different, randomly initialised architecture (hidden size 32; `base`, the tiny model, has 64)
    with `base`'s tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from teachwhy import models

    tok = models.load_tokenizer(base)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_adapter_for_the_wrong_base_model(sft_run, tiny, tmp_path):
    _, res = sft_run
    other = _tiny_other_base(tmp_path / "other-base", tiny)
    moved = tmp_path / "moved-adapter"
    shutil.copytree(res.model_path, moved)
    cfg = json.loads((moved / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(other)
    (moved / "adapter_config.json").write_text(json.dumps(cfg))
    for args in (("eval", "--model", str(moved), "--limit", "1", "--out", str(tmp_path / "r")),
                 ("train", "rl", "--model", str(moved), "--out", str(tmp_path / "r")),
                 ("train", "sft", "--model", str(moved), "--data", str(res.run_dir), "--out", str(tmp_path / "r"))):
        one_error_line(run(*args), f"was trained on base model '{tiny}'", str(other))
    # without our metadata file, PEFT's own shape check still gives one clear line
    (moved / "teachwhy.json").unlink()
    one_error_line(run("eval", "--model", str(moved), "--limit", "1", "--out", str(tmp_path / "r")),
                   "does not fit base model")


def test_merged_model_matches_adapter(sft_run, tmp_path):
    """merge: the adapter folded into the base gives the same next-token distribution, as a plain HF dir."""
    import torch

    from teachwhy import models
    from teachwhy.train.sft import merge_adapter

    _, res = sft_run
    merged = merge_adapter(res.model_path, tmp_path / "merged")
    assert (merged / "config.json").is_file() and not (merged / "adapter_config.json").exists()
    a = models.load(str(res.model_path), dtype="float32")
    m = models.load(str(merged), dtype="float32")
    assert m.ref.kind == "hf"
    ids = torch.tensor([a.tokenizer("The agent read the inbox and")["input_ids"]])
    with torch.no_grad():
        la, lm = a.model(ids).logits[0, -1], m.model(ids).logits[0, -1]
    assert torch.allclose(torch.log_softmax(la, -1), torch.log_softmax(lm, -1), atol=1e-3)
