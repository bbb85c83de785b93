"""The local engine's own decode loop (teachwhy.decode) against transformers' generate(): the same
greedy tokens for a batch of different-length prompts, the same seeded samples, stop sequences
honoured, and a prompt's prefill reused across epochs with the same result as without."""

from __future__ import annotations

import pytest

from teachwhy import inspect_local
from teachwhy.errors import UserError

PROMPTS = ["Say hello to the team.", "Write one line about the sea and the sky at night, please.", "Hi"]


def params(max_tokens: int = 24, temperature: float = 0.0, stop: tuple[str, ...] = ()) -> inspect_local.GenParams:
    return inspect_local.GenParams(max_tokens=max_tokens, temperature=temperature, top_p=None, top_k=None,
                                   stop=stop, seed=None)


@pytest.fixture
def engine(tiny):
    eng = inspect_local.Engine(tiny, "float32")
    yield eng
    eng.close()


def completions(eng: inspect_local.Engine, decode: str, p: inspect_local.GenParams, prompts: list[str] = PROMPTS,
                seeds: list[int | None] | None = None) -> list[inspect_local.Completion]:
    eng.decode = decode
    return eng._generate(prompts, p, seeds or [None] * len(prompts))


def test_unknown_decode_is_a_user_error():
    with pytest.raises(UserError, match="unknown decode 'beam'"):
        inspect_local.TeachwhyAPI("smollm2-135m", decode="beam")


@pytest.mark.slow
def test_greedy_batch_token_identical_to_generate(engine):
    assert engine.own_loop
    tok, model = engine.tokenizer, engine.loaded.model
    import torch

    from teachwhy import decode

    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    assert len({len(x) for x in ids}) == len(ids)  # different lengths: the batch is padded
    want = engine._hf_generate(ids, params())
    with torch.inference_mode():
        rows = [decode.prefill(model, x, engine.device) for x in ids]
        for pack in (False, True):
            choose = decode.chooser(model, False, max(map(len, ids)), len(ids), inspect_local._pad_id(tok))
            got = decode.decode(model, rows, choose, 24, inspect_local._eos_ids(model, tok),
                                inspect_local._pad_id(tok), pack_heads=pack)
            for g, w in zip(got, want):
                assert g == w[:len(g)] and (len(g) == 24 or g[-1] in inspect_local._eos_ids(model, tok))
    by_generate = completions(engine, "generate", params())
    for mode in ("exact", "fast"):
        assert completions(engine, mode, params()) == by_generate


@pytest.mark.slow
def test_seeded_samples_identical_to_generate(engine):
    """Sampling keeps generate()'s semantics: its logits processors (top_k 50 by default) and one
    multinomial draw per row per step, so a seeded batch draws the very same tokens."""
    p = params(temperature=1.0)
    seeds = [1, 2, 3]
    want = completions(engine, "generate", p, seeds=seeds)
    assert completions(engine, "exact", p, seeds=seeds) == want
    assert completions(engine, "exact", p, seeds=[4, 5, 6]) != want


@pytest.mark.slow
def test_stop_sequence_honoured(engine):
    """A reply ends at the first stop sequence, which is left out (seeded samples: the tiny model's
    greedy text repeats one token)."""
    full = completions(engine, "exact", params(max_tokens=32, temperature=1.0), PROMPTS[1:2], [7])[0]
    stop = full.text[20:26]
    assert len(stop) == 6 and full.text.index(stop) >= 10
    for mode in ("exact", "generate"):
        cut = completions(engine, mode, params(max_tokens=32, temperature=1.0, stop=(stop,)), PROMPTS[1:2], [7])[0]
        assert cut.text == full.text[: full.text.index(stop)]
        assert cut.stop_reason == "stop"
        assert cut.output_tokens < full.output_tokens


@pytest.mark.slow
def test_epochs_reuse_the_prompt_prefill(tiny, engine):
    first = completions(engine, "exact", params(), PROMPTS[:2])
    assert (engine.prompts.misses, engine.prompts.hits, len(engine.prompts)) == (2, 0, 2)
    again = completions(engine, "exact", params(), [PROMPTS[1], PROMPTS[0], PROMPTS[1]])
    assert engine.prompts.hits == 2  # the repeated prompt in one batch is prefilled once
    assert again == [first[1], first[0], first[1]]
    fresh = inspect_local.Engine(tiny, "float32", prompt_cache_mb=0)
    try:
        assert completions(fresh, "exact", params(), [PROMPTS[1], PROMPTS[0]]) == [first[1], first[0]]
        assert len(fresh.prompts) == 0
    finally:
        fresh.close()


@pytest.mark.slow
def test_logits_match_generate(engine):
    """The tiny model's greedy text repeats itself, so the logits are checked too: for one prompt
    the exact loop computes generate()'s logits to the last bit at every step; in a padded batch
    (each prompt prefilled alone, where generate() prefills them padded together) and with packed
    attention heads they agree to float32 rounding."""
    import torch

    from teachwhy import decode

    tok, model = engine.tokenizer, engine.loaded.model
    pad = inspect_local._pad_id(tok)
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]

    def ours(batch: list[list[int]], pack: bool) -> list[torch.Tensor]:
        seen: list[torch.Tensor] = []
        greedy = decode.chooser(model, False, max(map(len, batch)), len(batch), pad)

        def choose(input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
            seen.append(logits.clone())
            return greedy(input_ids, logits)

        rows = [decode.prefill(model, x, engine.device) for x in batch]
        decode.decode(model, rows, choose, 8, set(), pad, pack_heads=pack)
        return seen

    def generated(batch: list[list[int]]) -> list[torch.Tensor]:
        width = max(map(len, batch))
        out = model.generate(input_ids=torch.tensor([[pad] * (width - len(x)) + x for x in batch]),
                             attention_mask=torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch]),
                             max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=pad,
                             return_dict_in_generate=True, output_logits=True)
        return list(out.logits)

    with torch.inference_mode():
        for x in ids:
            assert all(torch.equal(a, b) for a, b in zip(ours([x], False), generated([x]), strict=True))
        want = generated(ids)
        for pack in (False, True):
            got = ours(ids, pack)
            assert all(torch.allclose(a, b, rtol=0, atol=1e-4) for a, b in zip(got, want, strict=True))


def test_a_batch_gathers_requests_that_arrive_apart(engine, monkeypatch):
    """With batch_size > 1, requests arriving tens of ms apart (Inspect starting the next samples as
    earlier ones end) share one batch; one that comes after the quiet window gets a batch of its own."""
    import time

    monkeypatch.setattr(inspect_local, "GATHER_QUIET_S", 0.5)
    sizes: list[int] = []
    real = engine._generate

    def spy(prompts, p, seeds):
        sizes.append(len(prompts))
        return real(prompts, p, seeds)

    monkeypatch.setattr(engine, "_generate", spy)
    engine.batch_size = 4
    futures = []
    for prompt in [*PROMPTS, "Good morning"]:
        futures.append(engine.submit(prompt, params(max_tokens=4)))
        time.sleep(0.05)
    assert all(len(f.result(timeout=120).text) >= 0 for f in futures)
    assert sizes == [4]
    first = engine.submit("Alone at first", params(max_tokens=4))
    time.sleep(1.5)  # past the quiet window: the first request is served alone
    later = engine.submit("Then another", params(max_tokens=4))
    first.result(timeout=120), later.result(timeout=120)
    assert sizes == [4, 1, 1]
