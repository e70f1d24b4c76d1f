"""Hand-batched convolutions equal torch's per-problem convolutions (CPU im2col path and the
grouped path that CUDA takes), with per-problem and shared inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from optdisco.evaluators.layers import _grouped_conv, conv1d, conv2d

GEN = torch.Generator().manual_seed(0)
P, N, C, O = 3, 4, 2, 5


def _rand(*shape):
    return torch.randn(*shape, generator=GEN, dtype=torch.float64)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("padding", [0, 1])
def test_conv2d_is_a_convolution_per_problem(shared, padding):
    x, w, b = _rand(P, N, C, 8, 7), _rand(P, O, C, 3, 3), _rand(P, O)
    xin = x[0] if shared else x
    ref = torch.stack([F.conv2d(x[0] if shared else x[p], w[p], b[p], padding=padding) for p in range(P)])
    torch.testing.assert_close(conv2d(xin, w, b, padding=padding), ref)
    torch.testing.assert_close(_grouped_conv(F.conv2d, xin, w, b, padding, shared), ref)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("padding", [1, 2])
def test_conv1d_is_a_convolution_per_problem(shared, padding):
    x, w = _rand(P, N, C, 40), _rand(P, O, C, 5)
    xin = x[0] if shared else x
    ref = torch.stack([F.conv1d(x[0] if shared else x[p], w[p], None, padding=padding) for p in range(P)])
    torch.testing.assert_close(conv1d(xin, w, None, padding=padding), ref)
    torch.testing.assert_close(_grouped_conv(F.conv1d, xin, w, None, padding, shared), ref)


def test_conv2d_gradients_match_torch():
    x, w = _rand(P, N, C, 6, 6), _rand(P, O, C, 3, 3).requires_grad_(True)
    (g,) = torch.autograd.grad(conv2d(x, w).square().sum(), w)
    w2 = w.detach().clone().requires_grad_(True)
    ref = torch.stack([F.conv2d(x[p], w2[p], padding=1) for p in range(P)])
    (g2,) = torch.autograd.grad(ref.square().sum(), w2)
    torch.testing.assert_close(g, g2)


@pytest.mark.parametrize("classes", [3, 10, 96])
@pytest.mark.parametrize("shared_labels", [True, False])
def test_cross_entropy_matches_torch_in_value_and_gradient(classes, shared_labels):
    from optdisco.evaluators.layers import cross_entropy
    gen = torch.Generator().manual_seed(classes)
    logits = (3 * torch.randn(4, 6, 5, classes, generator=gen, dtype=torch.float64)).requires_grad_(True)
    y = torch.randint(0, classes, (6, 5) if shared_labels else (4, 6, 5), generator=gen)
    ours = cross_entropy(logits, y)
    ref = torch.stack([torch.nn.functional.cross_entropy(logits[p].reshape(-1, classes),
                                                         torch.broadcast_to(y, (4, 6, 5))[p].reshape(-1))
                       for p in range(4)])
    assert torch.allclose(ours, ref, rtol=1e-12)
    g_ours, = torch.autograd.grad(ours.sum(), logits)
    g_ref, = torch.autograd.grad(ref.sum(), logits)
    assert torch.allclose(g_ours, g_ref, rtol=1e-10, atol=1e-14)
