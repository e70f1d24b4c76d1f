"""Held-out architectures that only ``optdisco validate`` runs: a ResNet and an MLP-mixer.

They are registered in their own suite, "validate", not in "heldout": the search's funnel
ends on the whole held-out suite, and these would slow every campaign without changing
what the funnel learns from the six held-out tasks. ``optdisco validate`` runs both
suites (see :data:`VALIDATE_TASKS`). Both models train on :func:`.data.patterns`
(generated colour gratings, 10 classes): at "cpu" scale tiny (8x8 images, a few thousand
weights, for CI), at "gpu" scale 32x32 images and a few million weights, sized so that a
validation run of one rule takes minutes on one H200 in bf16.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from . import data as D
from .layers import conv2d, layer_norm, linear
from .tasks import Params, Shapes, Supervised, Task, pool2, default_init, register, suite_tasks


def _gpu(scale: str) -> bool:
    return scale == "gpu"


def _images(x: torch.Tensor, side: int) -> torch.Tensor:
    """Flat images (..., 3*side*side) as (..., 3, side, side)."""
    return x.reshape(*x.shape[:-1], 3, side, side)


# -- ResNet -------------------------------------------------------------------------------

def resnet_shapes(widths: list[int], blocks: int, classes: int = 10) -> Shapes:
    """A pre-activation ResNet: 3x3 stem, ``blocks`` residual blocks per stage of ``widths``
    channels (2x2 average pool entering each later stage, 1x1 projection where the width
    changes), final norm, global average pool, linear head."""
    shapes: Shapes = [("stem", (widths[0], 3, 3, 3))]
    c_in = widths[0]
    for s, c in enumerate(widths):
        for b in range(blocks):
            if c != c_in:
                shapes.append((f"proj.{s}.{b}", (c, c_in, 1, 1)))
            shapes += [(f"g_a.{s}.{b}", (c_in,)), (f"conv_a.{s}.{b}", (c, c_in, 3, 3)),
                       (f"g_b.{s}.{b}", (c,)), (f"conv_b.{s}.{b}", (c, c, 3, 3))]
            c_in = c
    return shapes + [("g_final", (c_in,)), ("head", (classes, c_in)), ("b_head", (classes,))]


def _norm2d(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """Layer norm over (C, H, W) of each example, then a per-channel gain: x (P, N, C, H, W), gain (P, C)."""
    y = F.layer_norm(x, x.shape[-3:], eps=1e-5)
    return y * gain.view(gain.shape[0], 1, gain.shape[1], 1, 1)


def resnet(params: Params, x: torch.Tensor, shapes: Shapes, side: int) -> torch.Tensor:
    """Forward pass of :func:`resnet_shapes`'s network; x (P, N, 3*side^2) or shared (N, 3*side^2)."""
    p = {name: t for (name, _), t in zip(shapes, params)}
    h = conv2d(_images(x, side), p["stem"])
    stage = 0
    while f"conv_a.{stage}.0" in p:
        b = 0
        while f"conv_a.{stage}.{b}" in p:
            if stage > 0 and b == 0:
                h = pool2(h)
            k = f"{stage}.{b}"
            y = conv2d(torch.relu(_norm2d(h, p[f"g_a.{k}"])), p[f"conv_a.{k}"])
            y = conv2d(torch.relu(_norm2d(y, p[f"g_b.{k}"])), p[f"conv_b.{k}"])
            h = (conv2d(h, p[f"proj.{k}"], padding=0) if f"proj.{k}" in p else h) + y
            b += 1
        stage += 1
    h = torch.relu(_norm2d(h, p["g_final"])).mean((-1, -2))
    return linear(h, p["head"], p["b_head"])


class ResNetTask(Supervised):
    """:func:`resnet` on generated gratings; the last conv of each block starts scaled by
    1/sqrt(blocks in all), so that the residual stream's variance stays near 1 at init."""

    def init(self, gen: torch.Generator) -> Params:
        out = default_init(gen, self.shapes)
        n_blocks = sum(1 for name, _ in self.shapes if name.startswith("conv_b."))
        return [t / math.sqrt(n_blocks) if name.startswith("conv_b.") else t
                for (name, _), t in zip(self.shapes, out)]


@register("ho_resnet", "validate")
def _ho_resnet(scale: str) -> Task:
    if _gpu(scale):
        widths, blocks, side, n_train, n_val, batch, steps = [64, 128, 256], 2, 32, 20000, 2000, 128, 2000
    else:
        widths, blocks, side, n_train, n_val, batch, steps = [4, 8], 1, 8, 1000, 200, 32, 150
    shapes = resnet_shapes(widths, blocks)
    return ResNetTask("ho_resnet", f"pre-activation ResNet ({blocks} blocks x widths {widths}) on "
                      f"{side}x{side} generated gratings", suite="validate", steps=steps, batch_size=batch,
                      shapes=shapes, dataset=functools.partial(D.patterns, side, n_train, n_val),
                      model=lambda ps, x: resnet(ps, x, shapes, side))


# -- MLP-mixer -----------------------------------------------------------------------------

def mixer_shapes(side: int, patch: int, dim: int, token_hidden: int, channel_hidden: int, depth: int,
                 classes: int = 10) -> Shapes:
    """An MLP-mixer (Tolstikhin et al., 2021): patch embedding, ``depth`` blocks of token-mixing
    and channel-mixing MLPs (pre-norm, residual), final norm, mean over tokens, linear head."""
    tokens = (side // patch) ** 2
    shapes: Shapes = [("embed", (dim, 3 * patch * patch)), ("b_embed", (dim,))]
    for i in range(depth):
        shapes += [(f"g_tok.{i}", (dim,)), (f"tok1.{i}", (token_hidden, tokens)), (f"b_tok1.{i}", (token_hidden,)),
                   (f"tok2.{i}", (tokens, token_hidden)), (f"b_tok2.{i}", (tokens,)),
                   (f"g_ch.{i}", (dim,)), (f"ch1.{i}", (channel_hidden, dim)), (f"b_ch1.{i}", (channel_hidden,)),
                   (f"ch2.{i}", (dim, channel_hidden)), (f"b_ch2.{i}", (dim,))]
    return shapes + [("g_final", (dim,)), ("head", (classes, dim)), ("b_head", (classes,))]


def _patches(x: torch.Tensor, side: int, patch: int) -> torch.Tensor:
    """Images (..., 3*side^2) as non-overlapping patches (..., tokens, 3*patch^2)."""
    lead, n = x.shape[:-1], side // patch
    k = len(lead)
    y = x.reshape(*lead, 3, n, patch, n, patch)
    y = y.permute(*range(k), k + 1, k + 3, k, k + 2, k + 4)
    return y.reshape(*lead, n * n, 3 * patch * patch)


def mixer(params: Params, x: torch.Tensor, side: int, patch: int, depth: int) -> torch.Tensor:
    """Forward pass of :func:`mixer_shapes`'s network; x (P, N, 3*side^2) or shared (N, 3*side^2)."""
    h = linear(_patches(x, side, patch), params[0], params[1])      # (P, N, T, D)
    i = 2
    for _ in range(depth):
        g_tok, t1, bt1, t2, bt2, g_ch, c1, bc1, c2, bc2 = params[i:i + 10]
        y = layer_norm(h, g_tok).transpose(-1, -2)                  # (P, N, D, T): mix tokens
        y = linear(F.gelu(linear(y, t1, bt1)), t2, bt2).transpose(-1, -2)
        h = h + y
        h = h + linear(F.gelu(linear(layer_norm(h, g_ch), c1, bc1)), c2, bc2)
        i += 10
    h = layer_norm(h, params[i]).mean(-2)
    return linear(h, params[i + 1], params[i + 2])


@register("ho_mixer", "validate")
def _ho_mixer(scale: str) -> Task:
    if _gpu(scale):
        side, patch, dim, th, ch, depth, n_train, n_val, batch, steps = 32, 4, 256, 256, 1024, 8, 20000, 2000, 128, 2000
    else:
        side, patch, dim, th, ch, depth, n_train, n_val, batch, steps = 8, 2, 16, 16, 32, 2, 1000, 200, 32, 150
    return Supervised("ho_mixer", f"MLP-mixer (depth {depth}, width {dim}, {patch}x{patch} patches) on "
                      f"{side}x{side} generated gratings", suite="validate", steps=steps, batch_size=batch,
                      shapes=mixer_shapes(side, patch, dim, th, ch, depth),
                      dataset=functools.partial(D.patterns, side, n_train, n_val),
                      model=lambda ps, x: mixer(ps, x, side, patch, depth))


def validate_tasks() -> list[str]:
    """What ``optdisco validate`` runs by default: the held-out suite, then the "validate" suite."""
    return suite_tasks("heldout") + suite_tasks("validate")

