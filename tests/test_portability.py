"""What `teachwhy train` writes works in the field's own tools, without teachwhy and without the
Hub: an adapter loads in PEFT, transformers and Inspect's hf/ provider with the next-token
distribution `teachwhy eval` computes; the prepared model directory carries the chat template
teachwhy trains with, so plain TRL (assistant_only_loss=True) sees the tokens and the loss mask
`teachwhy train` sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("portability_worker.py")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from teachwhy.data.build import build_dataset
    from teachwhy.teachers import get_teacher
    from teachwhy.train import SFTSpec, run_sft

    root = tmp_path_factory.mktemp("port")
    build_dataset("reasoning", get_teacher("builtin", seed=0), tokens=3000, seed=0, out=root / "data")
    # a large learning rate, so the adapter's distribution differs clearly from the base's
    spec = SFTSpec(data=[{"path": str(root / "data"), "tokens": 3000}], out=str(root / "runs"),
                   learning_rate=1e-2, eval={"every": None, "at_start": False, "at_end": False})
    return root, run_sft(spec)


def _messages():
    from teachwhy.scenarios import builtin_scenarios, select

    return list(select(builtin_scenarios(), split="eval", limit=1)[0].prompt_messages())


def _teachwhy_logprobs(spec: str, messages) -> tuple[str, list[float]]:
    import torch

    from teachwhy import models

    loaded = models.load(spec, dtype="float32")
    text = loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = loaded.tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        return text, torch.log_softmax(loaded.model(ids).logits[0, -1].float(), -1).tolist()


def test_adapter_directory_describes_itself(trained):
    from teachwhy import models

    _, result = trained
    adapter = Path(result.summary["output"])
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    base = Path(cfg["base_model_name_or_path"])
    assert base.is_absolute() and (base / "config.json").is_file()  # a directory, not a teachwhy name
    assert (adapter / "tokenizer_config.json").is_file()
    from transformers import AutoTokenizer

    assert "{% generation %}" in AutoTokenizer.from_pretrained(adapter).chat_template
    ref = models.resolve(str(adapter))  # teachwhy still knows the base by name (teachwhy.json)
    assert ref.kind == "peft" and ref.base.kind == "embedded" and ref.base.spec == "smollm2-135m"


def test_adapter_loads_without_teachwhy_with_the_same_distribution(trained, tmp_path):
    _, result = trained
    adapter = str(Path(result.summary["output"]).resolve())
    messages = _messages()
    (tmp_path / "messages.json").write_text(json.dumps(messages))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEACHWHY")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    p = subprocess.run([sys.executable, str(WORKER), adapter, str(tmp_path / "messages.json"),
                        str(tmp_path / "out.json")], capture_output=True, text=True, env=env, timeout=600,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads((tmp_path / "out.json").read_text())
    text, want = _teachwhy_logprobs(adapter, messages)
    assert got["text"] == text  # the same prompt, from the adapter's own tokenizer
    _base_text, base = _teachwhy_logprobs("smollm2-135m", messages)
    assert max(abs(a - b) for a, b in zip(want, base)) > 1e-2  # the adapter matters
    for name in ("peft", "transformers"):
        assert got[f"{name}_is_peft"]
        assert max(abs(a - b) for a, b in zip(got[name], want)) < 1e-4, name
    from teachwhy import models

    tok = models.load_tokenizer(adapter)
    top = got["inspect_top"]
    assert len(top) == 20
    for token, lp in top:
        assert lp == pytest.approx(want[tok.convert_tokens_to_ids(token)], abs=1e-3), token
    assert [t for t, _ in top][:5] == [tok.convert_ids_to_tokens(i) for i in
                                       sorted(range(len(want)), key=lambda i: -want[i])[:5]]


def test_plain_trl_sees_the_tokens_and_mask_teachwhy_trains_on(trained):
    """The one-line TRL recipe of docs/training.md on a teachwhy dataset."""
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    from teachwhy import models
    from teachwhy.train.config import DataSource
    from teachwhy.train.mixture import load_mixture

    root, _ = trained
    model_dir = str(models.prepare_embedded("smollm2-135m"))
    data = load_dataset("json", data_files=str(root / "data" / "data.jsonl"), split="train")
    trainer = SFTTrainer(model=model_dir, train_dataset=data, args=SFTConfig(
        output_dir=str(root / "trl"), assistant_only_loss=True, max_length=None, report_to=[],
        use_cpu=True))
    mix = load_mixture([DataSource(path=str(root / "data"))], models.load_tokenizer("smollm2-135m"))
    ours = {r["record_id"]: r for r in mix.rows}
    assert len(ours) == len(trainer.train_dataset) >= 2
    for row in trainer.train_dataset:
        mine = ours[row["id"]]
        assert row["input_ids"] == mine["input_ids"]
        assert [int(x != -100) for x in row["labels"]] == mine["assistant_masks"]
        assert 0 < sum(mine["assistant_masks"]) < len(mine["assistant_masks"])  # prompt masked, reply not
    tools_line = "You can call these tools"
    assert tools_line in trainer.processing_class.decode(trainer.train_dataset[0]["input_ids"])


def test_a_cache_prepared_with_the_stock_template_is_rebuilt(tmp_path):
    """A cache whose completion record predates the shipped template is not current (prepare then
    builds it again)."""
    from teachwhy import models

    d = models.prepare_embedded("smollm2-135m")
    assert models.ships_training_template(d)
    record = json.loads((d / models.COMPLETE_RECORD).read_text())
    record.pop("chat_template_sha256")
    (tmp_path / models.COMPLETE_RECORD).write_text(json.dumps(record))
    assert not models.ships_training_template(tmp_path)


def test_a_copied_adapter_finds_the_embedded_base_by_name(trained, tmp_path):
    """On another machine the base's directory is elsewhere: teachwhy finds the embedded base by the
    name teachwhy.json keeps."""
    import shutil

    from teachwhy import models

    _, result = trained
    copy = tmp_path / "copied"
    shutil.copytree(result.summary["output"], copy)
    cfg = json.loads((copy / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "/elsewhere/.cache/teachwhy/models/smollm2-135m"
    (copy / "adapter_config.json").write_text(json.dumps(cfg))
    ref = models.resolve(str(copy))
    assert ref.kind == "peft" and ref.base.kind == "embedded" and ref.base.spec == "smollm2-135m"


def test_the_training_template_renders_prompts_as_the_stock_template_does():
    """Shipping the training template changes nothing the eval renders: for conversations without
    tools it gives, byte for byte, what SmolLM2's own template gives (every built-in scenario, with
    and without a reply)."""
    from transformers import AutoTokenizer

    from teachwhy import models
    from teachwhy.data.tokens import training_chat_template
    from teachwhy.scenarios import builtin_scenarios

    gguf = models.gguf_path(models.EMBEDDED["smollm2-135m"])
    stock = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    assert "{% generation %}" not in stock.chat_template  # the stock template, not ours
    ours = training_chat_template()
    for s in builtin_scenarios():
        msgs = list(s.prompt_messages())
        for conv, gen in ((msgs, True), ([*msgs, {"role": "assistant", "content": s.candidates[0].text}], False),
                          (msgs[1:], True)):  # no system turn: both insert the same default
            want = stock.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
            assert stock.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen,
                                             chat_template=ours) == want, s.id
