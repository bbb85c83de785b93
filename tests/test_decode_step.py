"""teachwhy.decode_step against the model's own forward: the decode loop's logits are bitwise the same
with the lean step as with `model(...)` per token, for one unpadded row (the grouped kernel), one
row with the folded heads (`decode=fast`) and a padded batch, in float32 and bf16, for a plain model
and one with LoRA adapters; and models the step does not reproduce are left to the forward."""

from __future__ import annotations

import pytest
import torch

from teachwhy import decode, models
from teachwhy.decode_step import LlamaStep

PROMPTS = [[5, 17, 99, 230, 7, 41, 8], [300, 12, 9], [44, 45, 46, 47, 48]]


def _model(spec: str, dtype: str):
    return models.load(spec, dtype=dtype).model


def _logits(model, prompts: list[list[int]], pack: bool, steps: int = 6) -> list[torch.Tensor]:
    """Every step's float32 logits from decode(), greedy."""
    seen: list[torch.Tensor] = []

    def choose(_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        seen.append(logits.clone())
        return torch.argmax(logits, dim=-1)

    with torch.inference_mode():
        rows = [decode.prefill(model, x, torch.device("cpu")) for x in prompts]
        decode.decode(model, rows, choose, steps, set(), 0, pack_heads=pack)
    return seen


def _both(model, monkeypatch, prompts: list[list[int]], pack: bool) -> tuple[list, list, int]:
    """(logits through the model's forward, through the lean step, lean steps taken)."""
    lean_of = LlamaStep.of
    with monkeypatch.context() as m:
        m.setattr(LlamaStep, "of", classmethod(lambda cls, model: None))
        want = _logits(model, prompts, pack)
    calls = []
    original = LlamaStep.__call__

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(LlamaStep, "__call__", counted)
        assert lean_of(model) is not None
        got = _logits(model, prompts, pack)
    return want, got, len(calls)


CASES = [([PROMPTS[0]], False), ([PROMPTS[0]], True), (PROMPTS, False)]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(("prompts", "pack"), CASES, ids=["one-row", "folded-heads", "padded-batch"])
def test_logits_bitwise_equal_to_the_forward(tiny, monkeypatch, dtype, prompts, pack):
    model = _model(tiny, dtype)
    want, got, calls = _both(model, monkeypatch, prompts, pack)
    assert calls == len(want) - 1 == 5  # the first logits come from the prefill
    assert len(got) == len(want)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_lora_adapters_bitwise_equal(tiny, monkeypatch, dtype):
    """Random (non-zero) LoRA adapters on every projection, in float32 on a bf16 base as PEFT loads
    them: the step adds each delta as PEFT does."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = _model(tiny, dtype)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                            init_lora_weights=False)).eval()
    assert next(p for n, p in model.named_parameters() if "lora_A" in n).dtype == torch.float32
    for prompts, pack in CASES:
        want, got, calls = _both(model, monkeypatch, prompts, pack)
        assert calls == 5 and all(torch.equal(a, b) for a, b in zip(got, want))
    with monkeypatch.context() as m:  # the adapters count: without them the logits differ
        m.setattr(LlamaStep, "of", classmethod(lambda cls, model: None))
        adapted = _logits(model, [PROMPTS[0]], False)
        with model.disable_adapter():
            plain = _logits(model, [PROMPTS[0]], False)
    assert not torch.equal(plain[1], adapted[1])


def test_follows_the_active_adapter(tiny, monkeypatch):
    """A PEFT model switched to another adapter between decodes: the step applies the active one."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    model = get_peft_model(_model(tiny, "float32"), LoraConfig(r=4, target_modules="all-linear",
                                                               init_lora_weights=False), adapter_name="a")
    model.add_adapter("b", LoraConfig(r=2, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
    model.eval()
    seen = {}
    for name in ("a", "b"):
        model.set_adapter(name)
        want, got, calls = _both(model, monkeypatch, [PROMPTS[0]], False)
        assert calls == 5 and all(torch.equal(x, y) for x, y in zip(got, want))
        seen[name] = got
    assert not torch.equal(seen["a"][1], seen["b"][1])
    step = LlamaStep.of(model)
    q_proj = model.get_base_model().model.layers[0].self_attn.q_proj
    assert step is not None and step.layers[0][2][0][0] is q_proj.base_layer.weight  # the model's own tensor


def test_models_it_does_not_reproduce_use_the_forward(tiny):
    from peft import LoraConfig, get_peft_model

    model = _model(tiny, "float32")
    model.train()
    assert LlamaStep.of(model) is None  # training mode
    model.eval()
    model.config._attn_implementation = "eager"
    assert LlamaStep.of(model) is None  # another attention implementation
    model.config._attn_implementation = "sdpa"
    assert LlamaStep.of(model) is not None
    dora = get_peft_model(_model(tiny, "float32"), LoraConfig(r=4, target_modules="all-linear", use_dora=True)).eval()
    assert LlamaStep.of(dora) is None  # a LoRA variant
    biased = _model(tiny, "float32")
    layer = biased.model.layers[0].self_attn
    layer.q_proj = torch.nn.Linear(layer.q_proj.in_features, layer.q_proj.out_features, bias=True)
    assert LlamaStep.of(biased) is None  # a bias the step would leave out
    merged = get_peft_model(_model(tiny, "float32"), LoraConfig(r=4, target_modules="all-linear")).eval()
    merged.merge_adapter()
    assert LlamaStep.of(merged) is None
    with torch.inference_mode():  # the decode loop still runs, through the forward
        rows = [decode.prefill(merged, PROMPTS[0], torch.device("cpu"))]
        out = decode.decode(merged, rows, lambda _i, logits: torch.argmax(logits, dim=-1), 4, set(), 0)
    assert len(out[0]) == 4
    scaled = _model(tiny, "float32")
    scaled.config.rope_parameters = {**scaled.config.rope_parameters, "rope_type": "dynamic"}
    assert LlamaStep.of(scaled) is None  # rotary frequencies that change with the length


@pytest.mark.slow
def test_real_model_bitwise_equal_in_bf16(monkeypatch):
    """The embedded model's real shapes (30 layers, 9 query heads on 3 key/value heads) in bf16, as
    the engine runs it on this CPU."""
    model = _model("smollm2-135m", "bfloat16")
    for prompts, pack in CASES:
        want, got, calls = _both(model, monkeypatch, prompts, pack)
        assert calls == 5 and all(torch.equal(a, b) for a, b in zip(got, want))
