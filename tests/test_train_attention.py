"""SFT's compute path: the training attention function (grouped key/value heads repeated while
gradients are recorded) computes what transformers' SDPA computes, and an SFT step in bfloat16 runs
the adapters in bfloat16 under autocast, through that function."""

from __future__ import annotations

import pytest
import torch

from teachwhy.train import attention
from test_sft_memory import _grads, _tiny_llama


def test_repeated_heads_give_sdpa_values_and_gradients():
    ids = torch.randint(0, 128, (1, 40), generator=torch.Generator().manual_seed(0))
    plain, switched = _tiny_llama(0), _tiny_llama(0)
    assert attention.use_for_training(switched)
    assert switched.config._attn_implementation == attention.NAME
    loss0, g0 = _grads(plain, ids)
    loss1, g1 = _grads(switched, ids)
    assert torch.allclose(loss1, loss0, atol=1e-6)
    assert g0.keys() == g1.keys() and g0
    for name in g0:
        assert torch.allclose(g1[name], g0[name], rtol=1e-4, atol=1e-6), name
    with torch.no_grad():  # without gradients the SDPA path itself runs: bitwise the same
        assert torch.equal(switched(input_ids=ids).logits, plain(input_ids=ids).logits)


def test_padded_batches_keep_their_mask():
    ids = torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # left padding on the second row
    plain, switched = _tiny_llama(2), _tiny_llama(2)
    attention.use_for_training(switched)
    a = plain(input_ids=ids, attention_mask=mask).logits
    b = switched(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(a[mask.bool()], b[mask.bool()], atol=1e-6)


def test_other_attention_implementations_are_left_alone():
    model = _tiny_llama(0, impl="eager")
    assert attention.use_for_training(model) is False
    assert model.config._attn_implementation == "eager"


@pytest.mark.parametrize("dtype,adapter_input", [("bfloat16", torch.bfloat16), ("float32", torch.float32)])
def test_sft_step_runs_adapters_in_the_compute_dtype(tiny, tmp_path, monkeypatch, dtype, adapter_input):
    """bf16: the forward runs under autocast and PEFT's cast up to the float32 adapter weights is
    skipped, so the adapters see bf16 inputs; float32: everything stays float32."""
    from teachwhy.data.build import build_dataset
    from teachwhy.teachers import get_teacher
    from teachwhy.train import SFTSpec, run_sft

    data = tmp_path / "data"
    build_dataset("reasoning", get_teacher("builtin", seed=0), tokens=1500, seed=0, out=data)
    seen: list[tuple[torch.dtype, bool]] = []
    calls = []
    real = attention._train_sdpa

    def counting(*args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(attention, "_train_sdpa", counting)

    def record(module, args):
        # the adapters are the only trainable Linear layers with float32 weights here
        w = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear) and w is not None and w.requires_grad and torch.is_grad_enabled():
            seen.append((args[0].dtype, torch.is_autocast_enabled("cpu")))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        result = run_sft(SFTSpec(model=tiny, data=[{"path": str(data)}], out=str(tmp_path / "run"), dtype=dtype))
    finally:
        handle.remove()
    assert result.summary["steps"] >= 1
    assert seen, "no adapter layer ran with gradients"
    assert {d for d, _ in seen} == {adapter_input}
    assert {a for _, a in seen} == {dtype == "bfloat16"}
    assert calls and any(calls)  # the training attention function ran, with gradients on
