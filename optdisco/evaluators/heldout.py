"""The held-out suite: tasks the search never sees, for checking that proxy rankings transfer.

Other architectures and longer budgets than the proxy suite: deeper MLPs, CNNs, a
transformer LM, an autoencoder, a recurrent network (GRU on the adding problem) and tabular
data with label noise. Each task has a "cpu" size
(seconds, for CI and for rank-correlation checks) and a "gpu" size for validation at
scale (issue 6): a pre-norm transformer LM of ~25M parameters, a six-layer CNN, wider
MLPs and longer runs.
"""

from __future__ import annotations

import torch

from . import data as D
from .tasks import (CharLM, NoisyQuadratic, Supervised, Task, cnn, cnn_shapes, conv1d_net,
                    conv1d_shapes, gru_net, gru_shapes, mlp, mlp_shapes, register)


def _gpu(scale: str) -> bool:
    return scale == "gpu"


@register("ho_quadratic", "heldout")
def _ho_quadratic(scale: str) -> Task:
    d = 4096 if _gpu(scale) else 400
    return NoisyQuadratic("ho_quadratic", f"rotated noisy quadratic, d={d}, cond 1e4", suite="heldout",
                          steps=2000 if _gpu(scale) else 400, batch_size=1, shapes=[("w", (d,))],
                          dim=d, cond=1e4, noise=0.5)


@register("ho_digits_deep", "heldout")
def _ho_digits_deep(scale: str) -> Task:
    sizes = [64, 1024, 1024, 1024, 10] if _gpu(scale) else [64, 128, 128, 10]
    return Supervised("ho_digits_deep", f"tanh MLP {'-'.join(map(str, sizes))} on 8x8 digits", suite="heldout",
                      steps=2000 if _gpu(scale) else 300, batch_size=128 if _gpu(scale) else 64,
                      shapes=mlp_shapes(sizes), dataset=D.digits, model=lambda p, x: mlp(p, x, torch.tanh))


@register("ho_digits_cnn", "heldout")
def _ho_digits_cnn(scale: str) -> Task:
    ch = [1, 64, 64, 128, 128, 256, 256] if _gpu(scale) else [1, 16, 32]
    return Supervised("ho_digits_cnn", f"CNN {len(ch) - 1} conv layers {ch[1:]} on 8x8 digits", suite="heldout",
                      steps=2000 if _gpu(scale) else 200, batch_size=256 if _gpu(scale) else 32,
                      shapes=cnn_shapes(ch, 8), dataset=D.digits, model=cnn)


@register("ho_mnist1d_cnn", "heldout")
def _ho_mnist1d_cnn(scale: str) -> Task:
    c = 128 if _gpu(scale) else 16
    return Supervised("ho_mnist1d_cnn", f"1-D CNN ({c} channels) on MNIST-1D-style sequences", suite="heldout",
                      steps=2000 if _gpu(scale) else 300, batch_size=128 if _gpu(scale) else 64,
                      shapes=conv1d_shapes(c), dataset=D.mnist1d, model=conv1d_net)


@register("ho_char_lm", "heldout")
def _ho_char_lm(scale: str) -> Task:
    if _gpu(scale):
        return CharLM("ho_char_lm", "8-layer transformer LM (d=512, ctx 256, ~25M params)", suite="heldout",
                      steps=2000, batch_size=32, shapes=[], context=256, width=512, layers=8, heads=8,
                      n_val=256)
    return CharLM("ho_char_lm", "2-layer transformer LM (d=48, ctx 48)", suite="heldout", steps=150,
                  batch_size=8, shapes=[], context=48, width=48, layers=2, heads=4)


@register("ho_autoencoder", "heldout")
def _ho_autoencoder(scale: str) -> Task:
    sizes = [64, 1024, 256, 16, 256, 1024, 64] if _gpu(scale) else [64, 128, 32, 4, 32, 128, 64]
    return Supervised("ho_autoencoder", f"relu autoencoder {'-'.join(map(str, sizes))} on 8x8 digits",
                      suite="heldout", steps=2000 if _gpu(scale) else 300, batch_size=128,
                      shapes=mlp_shapes(sizes), dataset=D.digits, model=mlp, loss="ae")


@register("ho_gru_adding", "heldout")
def _ho_gru_adding(scale: str) -> Task:
    length, hidden = (64, 256) if _gpu(scale) else (10, 16)
    return Supervised("ho_gru_adding", f"GRU ({hidden} units) on the adding problem, {length} steps",
                      suite="heldout", steps=2000 if _gpu(scale) else 150, batch_size=128 if _gpu(scale) else 32,
                      shapes=gru_shapes(2, hidden), dataset=lambda: D.adding(length, 2000, 500, stream=0),
                      model=gru_net, loss="mse")


@register("ho_tabular", "heldout")
def _ho_tabular(scale: str) -> Task:
    sizes = [16, 1024, 1024, 3] if _gpu(scale) else [16, 64, 64, 3]
    return Supervised("ho_tabular", f"relu MLP {'-'.join(map(str, sizes))} on mixed tabular columns, "
                      "20% flipped training labels", suite="heldout", steps=2000 if _gpu(scale) else 300,
                      batch_size=256 if _gpu(scale) else 64, shapes=mlp_shapes(sizes),
                      dataset=lambda: D.noisy_tabular(16, 3, 2000, 1000, 0.2, stream=0), model=mlp)
