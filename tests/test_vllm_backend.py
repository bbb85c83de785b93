"""The vLLM choice backend, without vLLM and without model weights: the conversion from vLLM's
prompt-logprobs structure to floats, the backend's arithmetic against HFChoiceBackend (a tiny random
Llama behind a stand-in for vllm.LLM that answers in vLLM's output shape), the engine's settings,
and how `--backend` is chosen and refused. Whether real vLLM agrees is bench/gpu_check_vllm.py's job."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import re
import subprocess
import sys
import types
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from cliutil import one_error_line, run_cli
from teachwhy import models
from teachwhy.errors import UserError
from teachwhy.evals import backends
from teachwhy.evals.choice import CandidateScore, HFChoiceBackend, score_scenario
from teachwhy.evals.vllm_backend import (
    VLLMChoiceBackend,
    adapter_rank,
    lora_rank_slot,
    output_logprobs,
    split_rows,
    token_logprobs,
)

VLLM_INSTALLED = importlib.util.find_spec("vllm") is not None


@dataclass
class Logprob:  # the fields of vllm.logprobs.Logprob
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


# -- conversions on hand-built data of vLLM's shape ----------------------------------------------------
def test_token_logprobs_reads_the_prompt_tokens_entry_not_the_top_one():
    ids = [5, 7, 9, 11]
    plp = [None,
           {7: Logprob(-0.5, 1)},                       # the prompt's token is the top-1
           {3: Logprob(-0.1, 1), 9: Logprob(-2.0, 4)},  # top-1 is another token; 9 injected with its rank
           {11: Logprob(-1.25, 1)}]
    assert token_logprobs(plp, ids, 1) == [-0.5, -2.0, -1.25]
    assert token_logprobs(plp, ids, 2) == [-2.0, -1.25]
    assert token_logprobs(plp, ids, 4) == []
    flat_style = [{}, *plp[1:]]  # vLLM's FlatLogprobs gives an empty dict, not None, at position 0
    assert token_logprobs(flat_style, ids, 3) == [-1.25]


@pytest.mark.parametrize("plp, start, says", [
    (None, 1, "no prompt log-probs"),
    ([None, {7: Logprob(-0.5)}], 1, "for 2 positions of a 4-token"),
    ([None, {7: Logprob(-0.5)}, {3: Logprob(-0.1)}, {11: Logprob(-1.0)}], 1, "position 2"),
    ([None, {7: Logprob(-0.5)}, None, {11: Logprob(-1.0)}], 2, "position 2"),
    ([None, {7: Logprob(-0.5)}, {9: Logprob(-0.1)}, {11: Logprob(-1.0)}], 0, "first token has no log-prob"),
])
def test_token_logprobs_refuses_what_is_not_there(plp, start, says):
    with pytest.raises(ValueError, match=says):
        token_logprobs(plp, [5, 7, 9, 11], start)


def test_output_logprobs_checks_the_request_is_the_sequence_sent():
    out = SimpleNamespace(prompt_token_ids=[5, 7], prompt_logprobs=[None, {7: Logprob(-0.5)}])
    assert output_logprobs(out, [5, 7], 1) == [-0.5]
    with pytest.raises(ValueError, match="another sequence"):
        output_logprobs(out, [5, 8], 1)


def test_split_rows():
    assert split_rows([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3) == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    with pytest.raises(ValueError):
        split_rows([1.0, 2.0, 3.0], 2)


def test_lora_rank_slots_and_adapter_rank(tmp_path):
    assert [lora_rank_slot(r) for r in (1, 4, 8, 16, 17, 64, 300, 512)] == [1, 8, 8, 16, 32, 64, 320, 512]
    with pytest.raises(UserError, match="merge the adapter"):
        lora_rank_slot(1024)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 16}))
    assert adapter_rank(tmp_path) == 16
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(UserError, match="IA3"):
        adapter_rank(tmp_path)


# -- the backend against HFChoiceBackend, on a tiny random model ----------------------------------------
class WordTokenizer:
    """Words and signs to ids 1-127, with a chat template: enough for both backends' encoding."""

    pad_token_id = 0

    def apply_chat_template(self, messages, add_generation_prompt=False, tokenize=True):
        text = "".join(f"<{m['role']}>{m['content']}\n" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [1 + zlib.crc32(w.encode()) % 127 for w in re.findall(r"\w+|[^\w\s]", text)]}


class FakeLLM:
    """Answers generate() as vllm.LLM does with SamplingParams(prompt_logprobs=1): per request a
    RequestOutput whose prompt_logprobs are [None, {top-1 id: Logprob, prompt token id: Logprob}, ...],
    computed here by one full forward pass of a transformers model (no KV sharing)."""

    def __init__(self, model):
        self.model = model
        self.calls: list[dict] = []

    def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None):
        import torch

        self.calls.append({"n": len(prompts), "params": sampling_params, "lora_request": lora_request})
        outs = []
        for p in prompts:
            ids = list(p["prompt_token_ids"])
            with torch.no_grad():
                lp = torch.log_softmax(self.model(torch.tensor([ids])).logits[0].float(), dim=-1)
            plp: list = [None]
            for i in range(1, len(ids)):
                row = lp[i - 1]
                top = int(row.argmax())
                rank = int((row > row[ids[i]]).sum()) + 1
                plp.append({top: Logprob(row[top].item(), 1), ids[i]: Logprob(row[ids[i]].item(), rank)})
            outs.append(SimpleNamespace(prompt_token_ids=ids, prompt_logprobs=plp, outputs=[]))
        return outs


@pytest.fixture(scope="module")
def tiny():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16384)
    return LlamaForCausalLM(cfg).eval()


def test_scores_and_decisions_equal_the_hf_backend(tiny):
    from teachwhy.scenarios import builtin_scenarios

    tok = WordTokenizer()
    hf = HFChoiceBackend(tiny, tok)
    llm = FakeLLM(tiny)
    vb = VLLMChoiceBackend(llm, tok, sampling_params="params", lora_request="lora", context_limit=16384)
    scenario = next(s for s in builtin_scenarios() if any(c.twin for c in s.candidates))
    for fmt in ("continuation", "options"):
        a, b = score_scenario(hf, scenario, fmt), score_scenario(vb, scenario, fmt)
        assert a["context"] == b["context"] and hf.longest == vb.longest
        for key in set(a) - {"candidates", "context", "option_texts"}:
            assert a[key]["top"] == b[key]["top"], key
            assert abs(a[key]["p_harmful"] - b[key]["p_harmful"]) < 1e-4, key
    msgs, cands = scenario.prompt_messages(), [c.text for c in scenario.candidates]
    for x, y in zip(hf.score(msgs, cands), vb.score(msgs, cands)):
        assert (x.n_tokens, x.token_ids) == (y.n_tokens, y.token_ids)
        assert abs(x.sum_logprob - y.sum_logprob) < 1e-3
        assert abs(x.neutral_sum_logprob - y.neutral_sum_logprob) < 1e-3
        assert max(abs(p - q) for p, q in zip(x.token_logprobs, y.token_logprobs)) < 1e-4
    prompts = [msgs, [*msgs[:-1], {"role": "user", "content": "Answer with one letter: A, B or C."}]]
    for row_a, row_b in zip(hf.letter_logprobs(prompts, "ABC"), vb.letter_logprobs(prompts, "ABC")):
        assert len(row_a) == len(row_b) == 3
        assert max(abs(p - q) for p, q in zip(row_a, row_b)) < 1e-4
    # one vLLM batch per call, every request with the same params and the adapter's LoRARequest
    assert {(c["params"], c["lora_request"]) for c in llm.calls} == {("params", "lora")}
    assert [c["n"] for c in llm.calls[-2:]] == [2 * len(cands), 2 * 3]


def test_a_sequence_beyond_the_engines_length_is_one_line(tiny):
    vb = VLLMChoiceBackend(FakeLLM(tiny), WordTokenizer(), sampling_params=None, context_limit=40)
    with pytest.raises(UserError, match="use --backend hf"):
        vb.score([{"role": "user", "content": "word " * 60}], ["a reply"])


# -- the engine's settings (vllm replaced by a recorder) ------------------------------------------------
@pytest.fixture
def fake_vllm(monkeypatch):
    made: dict = {}

    class LLM:
        def __init__(self, **kw):
            made["llm"] = kw
            self.model_config = SimpleNamespace(max_model_len=2048)

    def sampling_params(**kw):
        made["params"] = kw
        return kw

    vllm = types.ModuleType("vllm")
    vllm.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    vllm.LLM, vllm.SamplingParams = LLM, sampling_params  # type: ignore[attr-defined]
    lora = types.ModuleType("vllm.lora.request")
    lora.LoRARequest = lambda **kw: ("LoRARequest", kw)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.lora", types.ModuleType("vllm.lora"))
    monkeypatch.setitem(sys.modules, "vllm.lora.request", lora)
    monkeypatch.setattr(models, "load_tokenizer", lambda spec: WordTokenizer())
    return made


@pytest.fixture
def model_dirs(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 8192}))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"base_model_name_or_path": str(base), "peft_type": "LORA", "r": 4}))
    return base, adapter


def test_open_builds_the_engine_on_the_model_dir(fake_vllm, model_dirs):
    base, _ = model_dirs
    vb = VLLMChoiceBackend.open(str(base), dtype="float32")
    assert fake_vllm["llm"] == {"model": str(base.resolve()), "tokenizer": str(base.resolve()), "dtype": "float32",
                                "enable_prefix_caching": False, "seed": 0}
    assert fake_vllm["params"] == {"max_tokens": 1, "prompt_logprobs": 1, "temperature": 0.0}
    assert vb.lora_request is None and vb.context_limit == 2048 and vb.name == str(base)


def test_open_serves_an_adapter_as_a_lora_on_its_base(fake_vllm, model_dirs):
    base, adapter = model_dirs
    vb = VLLMChoiceBackend.open(str(adapter), dtype="bfloat16")
    kw = fake_vllm["llm"]
    assert kw["model"] == str(base.resolve()) and kw["dtype"] == "bfloat16"
    assert (kw["enable_lora"], kw["max_lora_rank"], kw["max_loras"]) == (True, 8, 1)
    assert vb.lora_request == ("LoRARequest", {"lora_name": "teachwhy-adapter", "lora_int_id": 1,
                                               "lora_path": str(adapter.resolve())})


# -- choosing the backend ---------------------------------------------------------------------------------
def test_generate_model_ids(model_dirs):
    base, adapter = model_dirs
    hf_ref, peft_ref = models.resolve(str(base)), models.resolve(str(adapter))
    assert backends.generate_model_id(hf_ref, "hf") == f"teachwhy/{base}"
    assert backends.generate_model_id(hf_ref, "vllm") == f"vllm/{base.resolve()}"
    assert backends.generate_model_id(peft_ref, "vllm") == f"vllm/{base.resolve()}:{adapter.resolve()}"
    assert backends.generate_model_id(models.resolve("openai/gpt-4o-mini"), "hf") == "openai/gpt-4o-mini"


def test_backend_is_part_of_the_runs_config(tmp_path, model_dirs, monkeypatch):
    from teachwhy.evals.runner import run_eval

    base, _ = model_dirs
    opened = []

    class Backend:
        name = "fake"

        def score(self, messages, candidates):
            return [CandidateScore(len(c), -len(c) - i, -len(c), tuple(map(ord, c)), (-1.0,) * len(c))
                    for i, c in enumerate(candidates)]

    def open_choice_backend(model, dtype, backend):
        opened.append(backend)
        return Backend()

    monkeypatch.setattr(backends, "open_choice_backend", open_choice_backend)
    monkeypatch.setattr(backends, "require_vllm", lambda: None)
    runs = {b: run_eval(str(base), limit=1, out=tmp_path / "runs", backend=b) for b in ("hf", "vllm")}
    assert opened == ["hf", "vllm"]
    assert runs["hf"].run_dir != runs["vllm"].run_dir
    # the default backend is left out of the config, so run ids from before the option still resume
    assert "backend" not in json.loads((runs["hf"].run_dir / "config.json").read_text())
    assert json.loads((runs["vllm"].run_dir / "config.json").read_text())["backend"] == "vllm"


# -- the CLI on a machine without vllm --------------------------------------------------------------------
@pytest.mark.skipif(VLLM_INSTALLED, reason="vllm is installed here")
@pytest.mark.parametrize("mode", ["choice", "generate"])
def test_eval_backend_vllm_without_vllm_is_one_line_and_writes_nothing(tmp_path, mode):
    out = tmp_path / "runs"
    line = one_error_line(run_cli("eval", "--backend", "vllm", "--mode", mode, "--limit", "1", "--out", str(out)),
                          "vllm", "pip install 'teachwhy[vllm]'", code=2)
    assert "GPU" in line
    assert not out.exists()


def test_unknown_backend_is_one_line(tmp_path):
    out = tmp_path / "runs"
    one_error_line(run_cli("eval", "--backend", "tgi", "--limit", "1", "--out", str(out)),
                   "unknown backend 'tgi'", "hf, vllm", code=2)
    assert not out.exists()


def test_inspect_model_with_backend_vllm_is_one_line(tmp_path):
    one_error_line(run_cli("eval", "--mode", "generate", "-m", "openai/gpt-4o-mini", "--backend", "vllm",
                           "--out", str(tmp_path / "runs")), "applies to local models", code=2)


def test_importing_teachwhy_does_not_import_vllm(tmp_path):
    """A stand-in vllm package on the path records any import of it."""
    pkg = tmp_path / "vllm"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise SystemExit('vllm was imported')\n")
    code = ("import sys, teachwhy.cli, teachwhy.evals.runner, teachwhy.evals.backends, teachwhy.evals.vllm_backend\n"
            "teachwhy.evals.backends.require_vllm()\n"  # looks for the package without importing it
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'vllm'))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={"PYTHONPATH": str(tmp_path), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                            "HOME": str(Path.home())})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
