"""Decoding for the local engine (teachwhy.inspect_local): the tokens transformers' `generate()` would
choose, with less work per token on the CPU.

- Prefill: each distinct prompt runs alone (no padding) through the model with its own DynamicCache,
  the call `generate()` makes for one prompt. The prompt's keys, values and last logits are kept in a
  PromptCache, so a later request with the same prompt (another epoch of a sample) skips it.
- Decode: the batch's prompts are copied, left-padded, into one cache with room for the new tokens
  (RoomLayer), and one loop feeds a token per row per step. Each token's keys and values are written
  in place (a DynamicCache concatenates the whole cache every step). Attention gets a mask only when
  rows are padded (as `generate()` gives one) or with `pack_heads` (`decode=fast`): with a mask,
  transformers' sdpa folds the query heads onto the key/value heads instead of calling its
  `enable_gqa` kernel; several times faster on the CPU for one query token, but it sums in another
  order, so now and then a greedy token differs from `generate()`'s.
- Each step runs through teachwhy.decode_step.LlamaStep where it applies (a plain or LoRA Llama in
  eval mode): the forward's kernels and numbers, bitwise, without the modules' per-token overhead;
  other models go through their own forward.
- Token choice: the logits processors `generate()` builds for the same settings (temperature, top_k
  (transformers' default 50 when sampling), top_p and whatever the model's generation_config adds),
  then argmax, or torch.multinomial over the softmax, on float32 logits, one draw per row per step.
- A row ends at an end-of-sequence token, when `stop(tokens)` says so (stop strings), or at
  max_new_tokens; ended rows are fed the pad token, as in `generate()`, until every row has ended.

`supported(model)` is False for models whose caches hold anything but plain full-attention layers
(sliding windows, linear attention); the engine sends those through `generate()`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

from teachwhy.decode_step import LlamaStep

Chooser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Prefilled:
    """One prompt after the prefill: its token ids, each layer's keys and values (1, heads, length,
    head_dim) and the float32 logits of its last position (1, vocab)."""

    ids: tuple[int, ...]
    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    logits: torch.Tensor

    @property
    def length(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        tensors = (*self.keys, *self.values, self.logits)
        return sum(t.numel() * t.element_size() for t in tensors)


class PromptCache:
    """Prefilled prompts by prompt text, up to `budget_bytes` in all. Entries are added while they fit
    and are never evicted (the engine's owner clears it): Inspect runs every sample's first epoch
    before any second one, so a least-recently-used cache smaller than the run would never hit,
    while this one hits for the prompts that fit."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: dict[str, Prefilled] = {}

    def get(self, prompt: str) -> Prefilled | None:
        found = self._entries.get(prompt)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, prompt: str, prefilled: Prefilled) -> None:
        size = prefilled.nbytes
        if prompt not in self._entries and self.used_bytes + size <= self.budget_bytes:
            self._entries[prompt] = prefilled
            self.used_bytes += size

    def clear(self) -> None:
        self._entries.clear()
        self.used_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)


def supported(model: Any) -> bool:
    """Whether `model`'s cache is plain full-attention layers, which `prefill` and `decode` handle."""
    try:
        layers = DynamicCache(config=model.config).layers
    except (ValueError, TypeError, AttributeError, KeyError):
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def prefill(model: Any, ids: list[int], device: torch.device) -> Prefilled:
    """Run one prompt through the model, as `generate()` does for a single unpadded prompt."""
    cache = DynamicCache(config=model.config)
    out = model(input_ids=torch.tensor([ids], device=device), cache=cache, use_cache=True, logits_to_keep=1)
    layers: list[Any] = list(cache.layers)  # DynamicLayers (see supported)
    return Prefilled(
        ids=tuple(ids),
        keys=tuple(layer.keys for layer in layers),
        values=tuple(layer.values for layer in layers),
        logits=out.logits[:, -1].to(copy=True, dtype=torch.float32),
    )


def chooser(model: Any, do_sample: bool, prompt_width: int, batch: int, pad_id: int,
            **sampling: Any) -> Chooser:
    """The next-token rule `generate()` uses for these settings: its logits processors over the
    float32 logits, then argmax (greedy) or one multinomial draw per row from the softmax.
    `sampling` holds temperature, top_p and top_k (None: not set)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT model's base
    kwargs = {k: v for k, v in sampling.items() if v is not None}
    config, _ = base._prepare_generation_config(None, do_sample=do_sample, pad_token_id=pad_id, **kwargs)
    device = next(model.parameters()).device
    base._prepare_special_tokens(config, True, device=device, batch_size=batch)
    processors = base._get_logits_processor(generation_config=config, input_ids_seq_length=prompt_width,
                                            device=device)

    def choose(input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        scores = processors(input_ids, logits)
        if do_sample:
            return torch.multinomial(torch.nn.functional.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        return torch.argmax(scores, dim=-1)

    return choose


class RoomLayer(DynamicLayer):
    """A DynamicLayer whose keys and values live in buffers with room for the new tokens, written in
    place (a DynamicLayer concatenates the whole cache per token). Attention gets a view of the
    filled part, the very tensor a DynamicLayer would hold, so the numbers are the same; a
    StaticCache hands attention the whole buffer, masked, which changes the kernel's summation
    order and so, now and then, a greedy token."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        super().__init__()
        self.device, self.is_initialized = keys.device, True
        self.buffers, self.length = (keys, values), length
        self.keys, self.values = keys[:, :, :length], values[:, :, :length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + key_states.shape[-2]
        self.buffers[0][:, :, self.length:end] = key_states
        self.buffers[1][:, :, self.length:end] = value_states
        self.length = end
        self.keys, self.values = self.buffers[0][:, :, :end], self.buffers[1][:, :, :end]
        return self.keys, self.values


def _room_cache(rows: list[Prefilled], width: int, size: int) -> Cache:
    """A cache of `size` positions per row holding each row's prompt right-aligned at `width`."""
    layers: list[Any] = []
    for i, (k0, v0) in enumerate(zip(rows[0].keys, rows[0].values)):
        keys = k0.new_zeros(len(rows), k0.shape[1], size, k0.shape[3])
        values = v0.new_zeros(len(rows), v0.shape[1], size, v0.shape[3])
        for r, row in enumerate(rows):
            keys[r, :, width - row.length:width] = row.keys[i][0]
            values[r, :, width - row.length:width] = row.values[i][0]
        layers.append(RoomLayer(keys, values, width))
    return Cache(layers=layers)


def decode(model: Any, rows: list[Prefilled], choose: Chooser, max_new_tokens: int, eos: set[int],
           pad_id: int, stop: Callable[[list[int]], bool] | None = None,
           pack_heads: bool = False) -> list[list[int]]:
    """The new tokens of each row (the one that ended it included), one decode loop for the batch.

    Attention gets the padding mask as `generate()` gives it: none when no row is padded, which
    transformers' sdpa runs with `enable_gqa`. `pack_heads` always gives the mask, so it folds the
    query heads onto the key/value heads: several times faster on the CPU, but it sums in another
    order, so a greedy token now and then differs from `generate()`'s."""
    device = rows[0].logits.device
    width = max(row.length for row in rows)
    size = width + max_new_tokens
    cache = _room_cache(rows, width, size)
    ids = torch.full((len(rows), size), pad_id, dtype=torch.long, device=device)
    # the 4D mask attention gets as is (for one query token, causality adds nothing to padding)
    mask = torch.zeros((len(rows), 1, 1, size), dtype=torch.bool, device=device)
    for r, row in enumerate(rows):
        ids[r, width - row.length:width] = torch.tensor(row.ids, device=device)
        mask[r, ..., width - row.length:width] = True
    positions = torch.tensor([[row.length] for row in rows], device=device)
    logits = torch.cat([row.logits for row in rows])
    masked = pack_heads or any(row.length < width for row in rows)
    new: list[list[int]] = [[] for _ in rows]
    running = torch.ones(len(rows), dtype=torch.long, device=device)
    lean = LlamaStep.of(model)
    if lean is not None:
        buffers = [cast(RoomLayer, layer).buffers for layer in cache.layers]
        tables = lean.rotary(size, rows[0].keys[0].dtype)
    for step in range(max_new_tokens):
        nxt = choose(ids[:, :width + step], logits) * running + pad_id * (1 - running)
        ids[:, width + step] = nxt
        _record(nxt.tolist(), new, running, eos, stop)
        if not running.any() or step == max_new_tokens - 1:
            break
        end = width + step + 1
        mask[..., end - 1] = True
        if lean is not None:
            logits = lean(nxt, positions[:, 0], buffers, end, mask[..., :end] if masked else None, tables)
        else:
            out = model(input_ids=nxt[:, None], attention_mask=mask[..., :end] if masked else None,
                        position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1)
            logits = out.logits[:, -1].to(dtype=torch.float32)
        positions += 1
    return new


def _record(tokens: list[int], new: list[list[int]], running: torch.Tensor, eos: set[int],
            stop: Callable[[list[int]], bool] | None) -> None:
    """Append each running row's token; a row ends at an end-of-sequence token or a stop."""
    for r, t in enumerate(tokens):
        if not running[r]:
            continue
        new[r].append(t)
        if t in eos or (stop is not None and stop(new[r])):
            running[r] = 0
