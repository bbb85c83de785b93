"""The SFT memory savers compute the same thing as the plain path: the chunked LM-head loss (values
and gradients) and selective checkpointing (gradients of a real Llama-architecture model)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from teachwhy.train.chunked_loss import lm_head_nll


def _plain(hidden, weight, targets):
    logits = F.linear(hidden, weight).float()
    return F.cross_entropy(logits, targets, reduction="sum"), (logits.argmax(-1) == targets).sum()


@pytest.mark.parametrize("n,chunk", [(37, 8), (16, 16), (5, 256)])
def test_chunked_loss_matches_plain_in_float32(n, chunk):
    g = torch.Generator().manual_seed(n)
    hidden = torch.randn(n, 24, generator=g, requires_grad=True)
    weight = torch.randn(300, 24, generator=g, requires_grad=True)
    targets = torch.randint(0, 300, (n,), generator=g)
    ref, ref_correct = _plain(hidden, weight, targets)
    (ref * 0.3).backward()
    gh, gw = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    got, correct = lm_head_nll(hidden, weight, targets, chunk=chunk)
    (got * 0.3).backward()
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-4)
    assert int(correct) == int(ref_correct)
    assert torch.allclose(hidden.grad, gh, rtol=1e-4, atol=1e-5)
    assert torch.allclose(weight.grad, gw, rtol=1e-4, atol=1e-5)


def test_chunked_loss_under_bf16_autocast_matches_the_autocast_linear():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(40, 32, generator=g).to(torch.bfloat16).requires_grad_()
    weight = torch.randn(500, 32, generator=g).to(torch.bfloat16)  # a frozen head: no gradient
    targets = torch.randint(0, 500, (40,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref, _ = _plain(hidden, weight, targets)
    ref.backward()
    gh = hidden.grad.clone()
    hidden.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, _ = lm_head_nll(hidden, weight, targets, chunk=7)
    got.backward()
    assert abs(float(got.detach()) - float(ref.detach())) <= 1e-3 * abs(float(ref.detach()))
    assert hidden.grad.dtype == torch.bfloat16
    assert (hidden.grad.float() - gh.float()).abs().max() <= 2e-2 * gh.float().abs().max()
    assert weight.grad is None


def _tiny_llama(seed: int, impl: str = "sdpa"):
    """A randomly initialised 3-layer Llama with grouped key/value heads (4 query heads on 2)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      attn_implementation=impl)
    return LlamaForCausalLM(cfg)


def _grads(model, ids):
    model.train()
    model.zero_grad()
    out = model(input_ids=ids, labels=ids, use_cache=False)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_selective_checkpointing_gives_the_same_gradients_and_recomputes():
    from teachwhy.train.checkpointing import _saved_ops, enable_selective

    ids = torch.randint(0, 128, (1, 48), generator=torch.Generator().manual_seed(0))
    plain = _tiny_llama(0)
    loss0, g0 = _grads(plain, ids)
    ckpt = _tiny_llama(0)
    enable_selective(ckpt)
    calls = {"mm": 0}
    orig = torch.nn.functional.linear

    def counting(*a, **k):
        calls["mm"] += 1
        return orig(*a, **k)

    torch.nn.functional.linear = counting
    try:
        loss1, g1 = _grads(ckpt, ids)
    finally:
        torch.nn.functional.linear = orig
    assert torch.allclose(loss0, loss1)
    assert g0.keys() == g1.keys() and g0
    for name in g0:
        assert torch.allclose(g0[name], g1[name], rtol=1e-4, atol=1e-6), name
    # the layers' projections ran twice (forward and recompute): 7 per layer x 3 layers x 2, + head
    assert calls["mm"] >= 2 * 7 * 3
    assert any("flash_attention" in str(op) for op in _saved_ops())


def test_gradient_checkpointing_setting_accepts_selective_only_as_a_word():
    from pydantic import ValidationError

    from teachwhy.train.config import SFTSpec

    assert SFTSpec(gradient_checkpointing="selective").gradient_checkpointing == "selective"
    assert SFTSpec(gradient_checkpointing=True).gradient_checkpointing is True
    with pytest.raises(ValidationError):
        SFTSpec(gradient_checkpointing="sometimes")


def test_mapped_large_blocks_sets_the_threshold_and_leaves_it_at_glibcs_top(monkeypatch):
    from teachwhy import memory

    calls = []
    monkeypatch.setattr(memory, "_mallopt", lambda param, value: calls.append((param, value)) or True)
    with memory.mapped_large_blocks() as applied:
        assert applied
        assert calls == [(memory.M_MMAP_THRESHOLD, 1 << 20)]
    assert calls[-1] == (memory.M_MMAP_THRESHOLD, 32 << 20)


def test_mapped_large_blocks_is_a_no_op_without_glibc(monkeypatch):
    from teachwhy import memory

    monkeypatch.setattr(memory.sys, "platform", "darwin")
    with memory.mapped_large_blocks() as applied:
        assert applied is False


@pytest.mark.slow
def test_sft_adapter_is_bitwise_the_same_mapped_trimmed_and_plain(tiny, tmp_path, monkeypatch):
    """The allocator settings (TEACHWHY_SFT_MAP_MIB, TEACHWHY_SFT_HEAP_SLACK_MIB) change where memory
    comes from and when it goes back, never what is computed."""
    from safetensors.torch import load_file

    import teachwhy.train.sft as sft
    from teachwhy.data.build import build_dataset
    from teachwhy.teachers import get_teacher
    from teachwhy.train import SFTSpec, run_sft

    data = tmp_path / "data"
    build_dataset("reasoning", get_teacher("builtin", seed=0), tokens=1500, seed=0, out=data)

    def train(out: str) -> tuple[dict, int | None]:
        spec = SFTSpec(model=tiny, data=[{"path": str(data)}], out=str(tmp_path / out), dtype="bfloat16",
                       gradient_checkpointing="selective")
        result = run_sft(spec)
        return load_file(result.model_path / "adapter_model.safetensors"), result.summary["heap_trims"]

    entered: list[int] = []
    real = sft.mapped_large_blocks

    def spy(threshold):
        entered.append(threshold)
        return real(threshold)

    monkeypatch.setattr(sft, "mapped_large_blocks", spy)
    monkeypatch.setenv("TEACHWHY_SFT_MAP_MIB", "1")
    mapped, trims = train("mapped")
    assert entered == [1 << 20] and trims is None  # mapped blocks leave no holes: nothing to trim
    monkeypatch.delenv("TEACHWHY_SFT_MAP_MIB")
    monkeypatch.setenv("TEACHWHY_SFT_HEAP_SLACK_MIB", "0.000001")  # 1 byte: every check trims
    trimmed, trims = train("trimmed")
    assert entered == [1 << 20]  # off by default
    assert trims["trims"] > 0 and trims["checks"] >= trims["trims"] and trims["seconds"] >= 0
    monkeypatch.setenv("TEACHWHY_SFT_HEAP_SLACK_MIB", "0")
    plain, trims = train("plain")
    assert trims is None
    assert mapped.keys() == plain.keys() == trimmed.keys() and mapped
    for name in mapped:
        assert torch.equal(mapped[name], plain[name]), name
        assert torch.equal(trimmed[name], plain[name]), name


@pytest.mark.slow
def test_trimming_follows_checkpointing(tiny, tmp_path, monkeypatch):
    """Full (reentrant) checkpointing trims too, its recompute carrying the backward checks; without
    checkpointing nothing is trimmed and summary.json says so with null."""
    from teachwhy.data.build import build_dataset
    from teachwhy.teachers import get_teacher
    from teachwhy.train import SFTSpec, run_sft

    data = tmp_path / "data"
    build_dataset("reasoning", get_teacher("builtin", seed=0), tokens=1500, seed=0, out=data)
    monkeypatch.delenv("TEACHWHY_SFT_MAP_MIB", raising=False)
    monkeypatch.setenv("TEACHWHY_SFT_HEAP_SLACK_MIB", "0.000001")
    trims = {}
    for gc in (True, False):
        spec = SFTSpec(model=tiny, data=[{"path": str(data)}], out=str(tmp_path / f"gc-{gc}"), dtype="bfloat16",
                       gradient_checkpointing=gc)
        trims[gc] = run_sft(spec).summary["heap_trims"]
    assert trims[True]["trims"] > 0 and trims[True]["checks"] >= trims[True]["trims"]
    assert trims[False] is None


def test_map_threshold_is_opt_in_and_bad_values_are_one_line(monkeypatch):
    from teachwhy import memory
    from teachwhy.errors import UserError

    monkeypatch.delenv("TEACHWHY_SFT_MAP_MIB", raising=False)
    assert memory.train_map_threshold() is None
    for raw, want in (("0", None), ("1", 1 << 20), ("0.5", 1 << 19), (" 4 ", 4 << 20)):
        monkeypatch.setenv("TEACHWHY_SFT_MAP_MIB", raw)
        assert memory.train_map_threshold() == want
    for raw in ("lots", "-1", "5000"):
        monkeypatch.setenv("TEACHWHY_SFT_MAP_MIB", raw)
        with pytest.raises(UserError, match="TEACHWHY_SFT_MAP_MIB="):
            memory.train_map_threshold()


@pytest.mark.parametrize("env", ["TEACHWHY_SFT_MAP_MIB", "TEACHWHY_SFT_HEAP_SLACK_MIB"])
def test_bad_memory_setting_fails_before_anything_is_written(tmp_path, monkeypatch, env):
    from teachwhy.errors import UserError
    from teachwhy.train import SFTSpec, run_sft

    monkeypatch.setenv(env, "lots")
    with pytest.raises(UserError, match=f"{env}='lots'"):
        run_sft(SFTSpec(data=[{"path": str(tmp_path / "data")}], out=str(tmp_path / "runs")))
    assert not (tmp_path / "runs").exists()


def test_heap_slack_defaults_to_512_mib_and_bad_values_are_one_line(monkeypatch):
    from teachwhy import memory
    from teachwhy.errors import UserError

    monkeypatch.delenv("TEACHWHY_SFT_HEAP_SLACK_MIB", raising=False)
    assert memory.heap_slack() == 512 << 20
    for raw, want in (("", 512 << 20), ("0", None), ("128", 128 << 20), (" 0.5 ", 1 << 19)):
        monkeypatch.setenv("TEACHWHY_SFT_HEAP_SLACK_MIB", raw)
        assert memory.heap_slack() == want
    for raw in ("lots", "-3"):
        monkeypatch.setenv("TEACHWHY_SFT_HEAP_SLACK_MIB", raw)
        with pytest.raises(UserError, match="TEACHWHY_SFT_HEAP_SLACK_MIB=") as e:
            memory.heap_slack()
        assert "\n" not in str(e.value)


def test_heap_trimmer_gives_resident_freed_memory_back():
    """Real glibc: 64 KiB blocks come from the heap; freeing every other one leaves resident holes that
    malloc_trim can hand back once they pass the slack, and only then."""
    from teachwhy import memory

    trimmer = memory.HeapTrimmer(slack=16 << 20)
    assert trimmer.available  # Linux with glibc >= 2.33, as CI is
    blocks = [torch.ones(16384) for _ in range(2048)]  # 2048 x 64 KiB, written
    assert trimmer.freed_resident() < 16 << 20
    assert trimmer.check() is False
    del blocks[::2]
    holes = trimmer.freed_resident()
    assert holes > 32 << 20, holes
    before = memory.resident_mb()
    assert trimmer.check() is True and trimmer.trims == 1
    assert memory.resident_mb() < before - 32, (before, memory.resident_mb())
    assert trimmer.freed_resident() < 16 << 20
    assert trimmer.check() is False and trimmer.checks == 3 and trimmer.trims == 1
    del blocks


def test_trimmer_checks_at_every_layer_forward_and_backward_and_leaves_no_hooks(tiny):
    from teachwhy import memory
    from teachwhy.models import load

    model = load(tiny, dtype="float32").model  # a copy of its own: its weights get gradients here
    model.requires_grad_(True)
    layers = memory.decoder_layers(model)
    assert len(layers) == model.config.num_hidden_layers > 0
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with memory.trimmed_between_layers(model, 1) as trimmer:
        assert trimmer is not None
        model(input_ids=ids, labels=ids).loss.backward()
    assert trimmer.checks == 2 * len(layers) and trimmer.trims >= 1
    assert all(not layer._forward_hooks for layer in layers)
    with memory.trimmed_between_layers(model, None) as off:
        assert off is None
