"""Hand-batched functional layers: every weight has a leading problem dimension P.

A problem is one (rule, learning rate, seed) training run; P of them train as one
computation. Inputs are either per problem, ``(P, N, ...)``, or shared, ``(N, ...)``
(broadcast, as for a validation set). Weights follow torch's layouts after the P
dimension (a linear weight is ``(P, out, in)``), so matrix built-ins see the usual matrix.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """y = x W^T + b per problem: x (P, ..., in) or shared (..., in), w (P, out, in), b (P, out)."""
    if x.dim() == 2 or x.shape[0] != w.shape[0]:
        x = x.unsqueeze(0)
    lead = x.shape[1:-1]
    x3 = x.reshape(x.shape[0], -1, x.shape[-1])
    y = torch.matmul(x3, w.mT)
    if b is not None:
        y = y + b.unsqueeze(1)
    return y.reshape(w.shape[0], *lead, w.shape[1])


def conv2d(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, padding: int = 1) -> torch.Tensor:
    """2-D convolution per problem as one grouped convolution.

    x (P, N, C, H, W) or shared (N, C, H, W); w (P, O, C, k, k); b (P, O) -> (P, N, O, H', W').
    """
    P, O, C = w.shape[:3]
    if x.dim() == 4:
        x = x.unsqueeze(0).expand(P, *x.shape)
    N, H, W_ = x.shape[1], x.shape[3], x.shape[4]
    xg = x.permute(1, 0, 2, 3, 4).reshape(N, P * C, H, W_)
    y = F.conv2d(xg, w.reshape(P * O, C, *w.shape[3:]), None if b is None else b.reshape(P * O),
                 padding=padding, groups=P)
    return y.view(N, P, O, *y.shape[2:]).permute(1, 0, 2, 3, 4)


def conv1d(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, padding: int = 1) -> torch.Tensor:
    """1-D convolution per problem: x (P, N, C, L) or shared (N, C, L); w (P, O, C, k) -> (P, N, O, L')."""
    P, O, C = w.shape[:3]
    if x.dim() == 3:
        x = x.unsqueeze(0).expand(P, *x.shape)
    N, L = x.shape[1], x.shape[3]
    xg = x.permute(1, 0, 2, 3).reshape(N, P * C, L)
    y = F.conv1d(xg, w.reshape(P * O, C, w.shape[3]), None if b is None else b.reshape(P * O),
                 padding=padding, groups=P)
    return y.view(N, P, O, y.shape[-1]).permute(1, 0, 2, 3)


def layer_norm(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """(x - mean) / sqrt(var + 1e-5) * gain over the last dim; x (P, ..., d), gain (P, d)."""
    y = F.layer_norm(x, x.shape[-1:], eps=1e-5)
    return y * gain.view(gain.shape[0], *([1] * (x.dim() - 2)), gain.shape[1])


def causal_attention(x: torch.Tensor, w_qkv: torch.Tensor, w_out: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head causal self-attention per problem: x (P, N, T, d), w_qkv (P, 3d, d), w_out (P, d, d).

    softmax(q k^T / sqrt(d_head) + causal mask) v, written out (not fused) so that
    Hessian-vector products (the sharpness estimate) can differentiate it twice.
    """
    P, N, T, d = x.shape
    dh = d // heads
    qkv = linear(x, w_qkv).view(P, N, T, 3, heads, dh)
    q, k, v = (qkv[:, :, :, i].transpose(2, 3) for i in range(3))  # (P, N, heads, T, dh)
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
    mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
    y = scores.masked_fill(mask, float("-inf")).softmax(-1) @ v
    return linear(y.transpose(2, 3).reshape(P, N, T, d), w_out)


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per problem: logits (P, ..., C), labels (P, ...) or shared (...) -> (P,)."""
    P, C = logits.shape[0], logits.shape[-1]
    y = torch.broadcast_to(y, logits.shape[:-1])
    return F.cross_entropy(logits.reshape(-1, C), y.reshape(-1), reduction="none").view(P, -1).mean(1)


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per problem: pred (P, ...), target broadcastable -> (P,)."""
    return (pred - target).square().reshape(pred.shape[0], -1).mean(1)


def fan_in_normal(gen: torch.Generator, shape: tuple[int, ...], fan_in: int | None = None,
                  gain: float = 1.0) -> torch.Tensor:
    """Weights ~ N(0, gain^2 / fan_in), fan_in = prod(shape[1:]) unless given."""
    fan = fan_in if fan_in is not None else math.prod(shape[1:])
    return torch.randn(shape, generator=gen) * (gain / math.sqrt(max(fan, 1)))
