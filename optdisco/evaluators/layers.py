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


def _conv_cols(w: torch.Tensor, cols: torch.Tensor, shared: bool, b: torch.Tensor | None) -> torch.Tensor:
    """(P, N, O, L) outputs from im2col columns: ``cols`` (P*N or N, C*k*k, L), w (P, O, C*k*k)."""
    P, O = w.shape[0], w.shape[1]
    if shared:  # one product per example with every problem's filters stacked: no P copies of cols
        y = torch.matmul(w.reshape(P * O, -1), cols)                    # (N, P*O, L)
        y = y.view(cols.shape[0], P, O, -1).transpose(0, 1)
    else:
        N = cols.shape[0] // P
        y = torch.matmul(w.unsqueeze(1), cols.view(P, N, *cols.shape[1:]))  # (P, N, O, L)
    if b is not None:
        y = y + b.view(P, 1, O, 1)
    return y


def _grouped_conv(conv, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, padding: int,
                  shared: bool) -> torch.Tensor:
    """Every problem's convolution as one grouped convolution (groups=P), (P, N, O, ...) out."""
    P, O, C = w.shape[:3]
    if shared:
        x = x.unsqueeze(0).expand(P, *x.shape)
    N = x.shape[1]
    xg = x.transpose(0, 1).reshape(N, P * C, *x.shape[3:])
    y = conv(xg, w.reshape(P * O, C, *w.shape[3:]), None if b is None else b.reshape(P * O),
             padding=padding, groups=P)
    return y.view(N, P, O, *y.shape[2:]).transpose(0, 1)


def conv2d(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, padding: int = 1) -> torch.Tensor:
    """2-D convolution per problem, as im2col and batched matrix products.

    x (P, N, C, H, W) or shared (N, C, H, W); w (P, O, C, k, k); b (P, O) -> (P, N, O, H', W').
    y[p, n, o] = sum_{c,i,j} w[p, o, c, i, j] * x_pad[p, n, c, . + i, . + j] + b[p, o].
    """
    # Not a grouped convolution (groups=P): its algorithm, and so its rounding, depends on
    # P, so a rule trained beside others drifted from the same rule trained alone (AdamW's
    # sign-like first steps amplify rounding). Matrix products compute each problem's
    # numbers the same way whatever P is, so results do not depend on the batch. On CUDA
    # (validation, one run at a time) the grouped convolution is kept for speed.
    P, O, C, k = w.shape[0], w.shape[1], w.shape[2], w.shape[3]
    shared = x.dim() == 4
    if x.is_cuda:  # GPU sizes (validation): cuDNN's grouped convolution, far faster there
        return _grouped_conv(F.conv2d, x, w, b, padding, shared)
    H, W_ = x.shape[-2], x.shape[-1]
    cols = F.unfold(x.reshape(-1, C, H, W_), k, padding=padding)      # (P*N or N, C*k*k, L)
    y = _conv_cols(w.reshape(P, O, C * k * k), cols, shared, b)
    return y.reshape(P, -1, O, H + 2 * padding - k + 1, W_ + 2 * padding - k + 1)


def conv1d(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, padding: int = 1) -> torch.Tensor:
    """1-D convolution per problem: x (P, N, C, L) or shared (N, C, L); w (P, O, C, k) -> (P, N, O, L').

    The im2col path of :func:`conv2d` with a height of 1 (see there for why not a grouped conv).
    """
    P, O, C, k = w.shape[0], w.shape[1], w.shape[2], w.shape[3]
    if x.is_cuda:
        return _grouped_conv(F.conv1d, x, w, b, padding, x.dim() == 3)
    L = x.shape[-1]
    xs = F.pad(x.reshape(-1, C, 1, L), (padding, padding))
    cols = F.unfold(xs, (1, k))                                          # (P*N or N, C*k, L')
    return _conv_cols(w.reshape(P, O, C * k), cols, x.dim() == 3, b)


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


#: Below this many classes cross_entropy computes log-sum-exp itself (see there).
SMALL_CLASSES = 32


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per problem: logits (P, ..., C), labels (P, ...) or shared (...) -> (P,)."""
    P, C = logits.shape[0], logits.shape[-1]
    y = torch.broadcast_to(y, logits.shape[:-1])
    if C >= SMALL_CLASSES:
        return F.cross_entropy(logits.reshape(-1, C), y.reshape(-1), reduction="none").view(P, -1).mean(1)
    # log-sum-exp written out: torch's CPU log_softmax over a short last dimension is ~4x slower
    # (forward and backward); the max is a constant shift, so it carries no gradient
    m = logits.detach().amax(-1, keepdim=True)
    lse = (logits - m).exp().sum(-1).log() + m.squeeze(-1)
    picked = logits.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    return (lse - picked).reshape(P, -1).mean(1)


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per problem: pred (P, ...), target broadcastable -> (P,)."""
    return (pred - target).square().reshape(pred.shape[0], -1).mean(1)


def fan_in_normal(gen: torch.Generator, shape: tuple[int, ...], fan_in: int | None = None,
                  gain: float = 1.0) -> torch.Tensor:
    """Weights ~ N(0, gain^2 / fan_in), fan_in = prod(shape[1:]) unless given."""
    fan = fan_in if fan_in is not None else math.prod(shape[1:])
    return torch.randn(shape, generator=gen) * (gain / math.sqrt(max(fan, 1)))


def gru(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The last hidden state of a GRU run over the sequence, per problem.

    x (P, N, T, in) or shared (N, T, in); w_ih (P, 3H, in), w_hh (P, 3H, H), b (P, 3H).
    With input projections [a_r, a_z, a_n] = x_t W_ih^T + b and [c_r, c_z, c_n] = h W_hh^T:
    r = sigmoid(a_r + c_r), z = sigmoid(a_z + c_z), n = tanh(a_n + r * c_n),
    h' = (1 - z) n + z h, from h = 0. Returns h_T, (P, N, H).
    """
    P, H = w_ih.shape[0], w_hh.shape[-1]
    if x.dim() == 3:  # shared inputs: one projection per problem without P copies of x
        a = torch.einsum("ntc,pgc->pntg", x, w_ih)
    else:
        a = torch.einsum("pntc,pgc->pntg", x, w_ih)
    a = a + b.view(P, 1, 1, 3 * H)
    h = a.new_zeros(P, a.shape[1], H)
    w_hh_t = w_hh.mT
    for t in range(a.shape[2]):
        c = torch.matmul(h, w_hh_t)
        a_t = a[:, :, t]
        r = torch.sigmoid(a_t[..., :H] + c[..., :H])
        z = torch.sigmoid(a_t[..., H:2 * H] + c[..., H:2 * H])
        n = torch.tanh(a_t[..., 2 * H:] + r * c[..., 2 * H:])
        h = (1 - z) * n + z * h
    return h
