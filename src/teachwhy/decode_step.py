"""One decode step of a Llama-family model in plain tensor ops, with the numbers of transformers' own
forward: the same kernels on the same operands in the same order, so the logits are bitwise those
of `model(input_ids=..., cache=...)` (tests/test_decode_step.py pins that in bf16 and float32, with
and without a mask).

What it saves is the work around the kernels, per token: the modules' Python and hooks, and the
mask and rotary tables built each step. The rotary cosines and sines come from the model's rotary
module once per decode call, for every position it needs. The weights are the model's own tensors,
each projection its own product: laying the query, key and value weights end to end would save a
product or two a layer, but the matrix-vector kernels then sum some shapes in another order (the
tiny test model's, in float32), so the numbers would no longer be the forward's.

A PEFT model's LoRA adapters are applied as PEFT applies them (each adapter's B(A(x)) * scaling added
in the adapter's dtype, then cast back).
`LlamaStep.of(model)` is None for anything else (another architecture, biases, DoRA or other LoRA
variants, merged adapters, a rotary scaling that changes with the length, attention other than sdpa,
a model in training mode); teachwhy.decode then calls the model itself.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

# rotary types whose frequencies change with the sequence length (transformers' dynamic_rope_update)
_LENGTH_DEPENDENT_ROPE = ("dynamic", "longrope")


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm's arithmetic: float32 statistics, the weight applied in the input's dtype."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return (x * cos) + (torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin)


Delta = tuple[torch.Tensor, torch.Tensor, float, bool]  # LoRA A, B, scaling, cast the input to A's dtype


def _parts(linear: Any) -> tuple[torch.nn.Linear, list[Delta]] | None:
    """A projection as its bias-free base linear and its LoRA deltas (PEFT's vanilla LoRA, unmerged,
    adapters on), or None for anything else (biases, DoRA and other variants, merged weights)."""
    if type(linear) is torch.nn.Linear:
        return (linear, []) if linear.bias is None else None
    from peft.tuners.lora.layer import Linear as LoraLinear

    if type(linear) is not LoraLinear or linear.merged or linear.disable_adapters:
        return None
    base = linear.base_layer
    if type(base) is not torch.nn.Linear or base.bias is not None:
        return None
    deltas: list[Delta] = []
    for name in linear.active_adapters:
        if name not in linear.lora_A:
            continue
        a, b = linear.lora_A[name], linear.lora_B[name]
        if (name in linear.lora_variant or type(a) is not torch.nn.Linear or type(b) is not torch.nn.Linear
                or a.bias is not None or b.bias is not None
                or type(linear.lora_dropout[name]) not in (torch.nn.Identity, torch.nn.Dropout)):
            return None
        deltas.append((a.weight, b.weight, linear.scaling[name], getattr(linear, "cast_input_dtype_enabled", True)))
    return base, deltas


def _linear(x: torch.Tensor, weight: torch.Tensor, deltas: list[Delta]) -> torch.Tensor:
    """The projection as nn.Linear computes it, then PEFT's LoRA forward: each adapter's B(A(x)) *
    scaling added in the adapter's dtype, and the sum cast back to the base output's dtype."""
    out = F.linear(x, weight)
    if not deltas:
        return out
    dtype = out.dtype
    for a, b, scaling, cast in deltas:
        xa = x.to(dtype=a.dtype) if cast and x.dtype != a.dtype else x
        out = out + F.linear(F.linear(xa, a), b) * scaling
    return out.to(dtype)


def _projections(layer: Any) -> list[Any]:
    attn, mlp = layer.self_attn, layer.mlp
    return [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]


def _llama(model: Any) -> Any | None:
    """The LlamaForCausalLM inside `model` (itself, or a PEFT model's base) when every module around
    the projections is the plain transformers module the step reproduces, in eval mode; else None."""
    from transformers.models.llama import modeling_llama as ml

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if type(base) is not ml.LlamaForCausalLM or config is None or model.training:
        return None
    rope = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    inner = base.model
    plain = (config.hidden_act == "silu" and rope not in _LENGTH_DEPENDENT_ROPE
             and config._attn_implementation == "sdpa"
             and type(inner.embed_tokens) is torch.nn.Embedding and type(inner.norm) is ml.LlamaRMSNorm
             and type(inner.rotary_emb) is ml.LlamaRotaryEmbedding
             and type(base.lm_head) is torch.nn.Linear and base.lm_head.bias is None
             and all(type(layer) is ml.LlamaDecoderLayer and type(layer.self_attn) is ml.LlamaAttention
                     and type(layer.mlp) is ml.LlamaMLP and type(layer.input_layernorm) is ml.LlamaRMSNorm
                     and type(layer.post_attention_layernorm) is ml.LlamaRMSNorm
                     for layer in inner.layers))
    return base if plain else None


class LlamaStep:
    """Decode steps of one Llama model (with its LoRA adapters, if any): one new token per row on a
    cache of per-layer key/value buffers (batch, key/value heads, positions, head dim) whose first
    `end - 1` positions hold the context."""

    def __init__(self, base: Any, projections: list[list[tuple[torch.nn.Linear, list[Delta]]]]) -> None:
        config = base.config
        self.base = base
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = config.rms_norm_eps
        self.scaling = self.head_dim ** -0.5
        self.layers = []
        for layer, parts in zip(base.model.layers, projections):
            self.layers.append((layer.input_layernorm.weight, layer.post_attention_layernorm.weight,
                                [(lin.weight, deltas) for lin, deltas in parts]))
        self.embed = base.model.embed_tokens.weight
        self.norm = base.model.norm.weight
        self.head = base.lm_head.weight

    @classmethod
    def of(cls, model: Any) -> LlamaStep | None:
        """A stepper for the model as it is now (built per decode call: it only gathers references, and
        so follows a change of adapters or mode), or None where it does not apply."""
        base = _llama(model)
        if base is None:
            return None
        projections = [[_parts(lin) for lin in _projections(layer)] for layer in base.model.layers]
        if any(p is None for parts in projections for p in parts):
            return None  # a projection the step does not reproduce (a bias, a LoRA variant, merged weights)
        return cls(base, projections)  # type: ignore[arg-type]

    def rotary(self, size: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosines and sines (size, head dim) for positions 0..size-1, from the model's rotary module."""
        probe = self.embed.new_zeros((1, 1, 1), dtype=dtype)
        positions = torch.arange(size, device=self.embed.device)[None]
        cos, sin = self.base.model.rotary_emb(probe, positions)
        return cos[0], sin[0]

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, buffers: list[tuple[torch.Tensor, torch.Tensor]],
                 end: int, mask: torch.Tensor | None, tables: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Float32 logits (rows, vocab) after feeding `tokens` (rows,) at `positions` (rows,). Their keys
        and values go to position `end - 1` of `buffers`; attention covers positions [0, end). With
        `mask` (rows, 1, 1, end), as transformers' sdpa is given one, the query heads are folded onto
        the key/value heads; without, the grouped kernel runs (`enable_gqa`)."""
        rows, heads, kv_heads, dim = tokens.shape[0], self.heads, self.kv_heads, self.head_dim
        cos, sin = tables[0][positions][:, None, None, :], tables[1][positions][:, None, None, :]
        x = F.embedding(tokens[:, None], self.embed)
        for (w_in, w_post, projections), (keys, values) in zip(self.layers, buffers):
            (w_q, d_q), (w_k, d_k), (w_v, d_v), (w_o, d_o), (w_g, d_g), (w_u, d_u), (w_d, d_d) = projections
            h = _rms(x, w_in, self.eps)
            q = _rotate(_linear(h, w_q, d_q).view(rows, 1, heads, dim).transpose(1, 2), cos, sin)
            keys[:, :, end - 1:end] = _rotate(_linear(h, w_k, d_k).view(rows, 1, kv_heads, dim).transpose(1, 2),
                                              cos, sin)
            values[:, :, end - 1:end] = _linear(h, w_v, d_v).view(rows, 1, kv_heads, dim).transpose(1, 2)
            if mask is None:
                o = F.scaled_dot_product_attention(q, keys[:, :, :end], values[:, :, :end], scale=self.scaling,
                                                   enable_gqa=heads != kv_heads)
            else:
                o = F.scaled_dot_product_attention(q.reshape(rows, kv_heads, heads // kv_heads, dim),
                                                   keys[:, :, :end], values[:, :, :end], attn_mask=mask,
                                                   scale=self.scaling)
            o = o.reshape(rows, -1, 1, dim).transpose(1, 2).contiguous().reshape(rows, 1, -1).contiguous()
            x = x + _linear(o, w_o, d_o)
            h = _rms(x, w_post, self.eps)
            inner = F.silu(_linear(h, w_g, d_g)) * _linear(h, w_u, d_u)
            x = x + _linear(inner, w_d, d_d)
        x = _rms(x, self.norm, self.eps)
        return F.linear(x, self.head)[:, -1].to(dtype=torch.float32)
