"""The attention function SFT trains with: transformers' SDPA, with grouped key/value heads repeated
to one per query head while gradients are recorded.

transformers passes grouped heads to `scaled_dot_product_attention` with `enable_gqa` whenever there
is no mask, which is every SFT micro-batch here (one record each, causal). On the CPU the kernel's
backward is slower that way than on heads repeated beforehand (the embedded model: 9 query heads on
3 key/value heads, a 1,356-token record, bf16, forward and backward of one layer: 64.7 against
59.9 ms); the repeat's own backward is a sum over 3 heads. The values are the same
(tests/test_train_attention.py). Without gradients (generation, the eval points while training)
nothing changes: forward alone is no faster repeated, and decoding keeps its one-query packing.
"""

from __future__ import annotations

from typing import Any

NAME = "teachwhy_sdpa_train"


def _train_sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any):
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward, use_gqa_in_sdpa

    groups = getattr(module, "num_key_value_groups", 1)
    # only where SDPA would get the grouped heads (with a mask transformers repeats them itself)
    if groups > 1 and torch.is_grad_enabled() and query.shape[2] > 1 and use_gqa_in_sdpa(attention_mask, key, value):
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def register() -> str:
    """Register the function (and SDPA's mask builder) under NAME; idempotent. Returns NAME."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, _train_sdpa)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


def use_for_training(model: Any) -> bool:
    """Switch a model that attends with SDPA to NAME; any other implementation is left as it is.
    Returns whether it switched."""
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    model.set_attn_implementation(register())
    return True
