"""Cross-entropy through the LM head without holding every position's logits at once.

With a 49,152-token vocabulary, the float32 logits of 500 loss-bearing positions take 98 MB, and the
plain path keeps three tensors of that size (logits, log-softmax for backward, its gradient) alive
through the backward pass. Here the head runs on `chunk` rows at a time: the forward keeps only the
summed loss, the backward recomputes each chunk's logits (one extra LM-head matmul on the loss
positions, about 1% of a step) and turns them into gradients at once.

Numerics match the plain path: the head's matmul runs in the autocast dtype when autocast is on (as
`nn.Linear` would), the softmax in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK = 256  # rows per chunk: 256 x 49,152 float32 logits are 50 MB


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    dev = t.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return t.dtype


class _ChunkedNLL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk, dtype):
        nll = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.long, device=hidden.device)
        w = weight.to(dtype)
        with torch.autocast(hidden.device.type, enabled=False):
            for s in range(0, hidden.shape[0], chunk):
                logits = F.linear(hidden[s:s + chunk].to(dtype), w).float()
                tgt = targets[s:s + chunk]
                nll += (torch.logsumexp(logits, -1) - logits.gather(-1, tgt[:, None]).squeeze(-1)).sum()
                correct += (logits.argmax(-1) == tgt).sum()
        ctx.save_for_backward(hidden, weight, targets)
        ctx.chunk, ctx.dtype = chunk, dtype
        ctx.mark_non_differentiable(correct)
        return nll, correct

    @staticmethod
    def backward(ctx, grad_nll, _grad_correct):
        hidden, weight, targets = ctx.saved_tensors
        dtype, chunk = ctx.dtype, ctx.chunk
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        w = weight.to(dtype)
        with torch.autocast(hidden.device.type, enabled=False):
            for s in range(0, hidden.shape[0], chunk):
                h = hidden[s:s + chunk].to(dtype)
                logits = F.linear(h, w).float()
                g = torch.softmax(logits, -1)
                g[torch.arange(g.shape[0], device=g.device), targets[s:s + chunk]] -= 1.0
                g = (g * grad_nll).to(dtype)
                if grad_h is not None:
                    grad_h[s:s + chunk] = (g @ w).to(hidden.dtype)
                if grad_w is not None:
                    grad_w += (g.t() @ h).float()
        return grad_h, (grad_w.to(weight.dtype) if grad_w is not None else None), None, None, None


def lm_head_nll(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token negative log-likelihood of `targets` (n,) given final hidden states `hidden`
    (n, d) and the LM head's weight (vocab, d), and how many targets are the argmax. Gradients flow
    to `hidden` and, when it requires them, `weight`."""
    return _ChunkedNLL.apply(hidden, weight, targets, chunk, _compute_dtype(hidden))
