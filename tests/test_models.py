import json

import pytest

from teachwhy import models
from teachwhy.errors import UserError


def test_resolve_kinds(tmp_path):
    assert models.resolve("smollm2-135m").kind == "embedded"
    assert models.resolve("openai/gpt-4o-mini").kind == "inspect"
    assert models.resolve("vllm/meta-llama/Llama-3.1-8B-Instruct").inspect_id.startswith("vllm/")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    assert models.resolve(str(hf)).kind == "hf"
    ad = tmp_path / "adapter"
    ad.mkdir()
    (ad / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "smollm2-135m"}))
    ref = models.resolve(str(ad))
    assert ref.kind == "peft" and ref.base.kind == "embedded"


@pytest.mark.parametrize("spec, msg", [
    ("gpt-nonexistent", "unknown model"),
    ("./no/such/dir", "does not exist"),
    ("", "no model given"),
])
def test_resolve_errors(spec, msg):
    with pytest.raises(UserError, match=msg):
        models.resolve(spec)


def test_dir_without_config_is_an_error(tmp_path):
    with pytest.raises(UserError, match=r"neither config\.json"):
        models.resolve(str(tmp_path))


def test_corrupt_cache_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TEACHWHY_HOME", str(tmp_path))
    d = models.embedded_cache_dir("smollm2-135m")
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"123")
    (d / ".teachwhy-complete.json").write_text(json.dumps({"files": {"model.safetensors": 999}}))
    with pytest.raises(UserError, match=r"corrupt.*--force"):
        models.prepare_embedded("smollm2-135m")
    (d / ".teachwhy-complete.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        models.prepare_embedded("smollm2-135m")


@pytest.mark.slow
def test_embedded_model_prepared_offline_and_generates(embedded):
    d = models.embedded_cache_dir("smollm2-135m")
    assert (d / "model.safetensors").is_file() and (d / "config.json").is_file()
    assert (d / ".teachwhy-complete.json").is_file()
    tok = embedded.tokenizer
    assert "<|im_start|>" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)

    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = embedded.model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0][ids["input_ids"].shape[1]:])
