"""The residual learned optimizer: AdamW bit for bit at theta = 0, scale-free features, checkpoints."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import optdisco
from optdisco.search.learned.residual import (N_FEATURES, ResidualLearnedOptimizer, features,
                                              load_theta, save_theta, theta_size)


def _model(dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2)).to(dtype)


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int, start: int = 0) -> None:
    for t in range(start, start + steps):
        gen = torch.Generator().manual_seed(t)
        x = torch.randn(16, 5, generator=gen, dtype=next(model.parameters()).dtype)
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_theta_is_the_catalog_adamw_bit_for_bit(dtype):
    a, b = _model(dtype), _model(dtype)
    _train(a, optdisco.Optimizer(a.parameters(), "adamw", lr=3e-3), 25)
    _train(b, ResidualLearnedOptimizer(b.parameters(), lr=3e-3), 25)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_zero_theta_matches_torch_adamw():
    a, b = _model(torch.float64), _model(torch.float64)
    _train(a, torch.optim.AdamW(a.parameters(), lr=3e-3, weight_decay=0.01), 25)
    _train(b, ResidualLearnedOptimizer(b.parameters(), lr=3e-3), 25)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-10, atol=1e-12)


def test_nonzero_theta_moves_away_from_adamw_by_a_bounded_fraction():
    theta = np.random.default_rng(0).normal(size=theta_size(8)).astype(np.float32)
    a, b, c = _model(torch.float64), _model(torch.float64), _model(torch.float64)
    _train(a, ResidualLearnedOptimizer(a.parameters(), lr=1e-2), 1)
    _train(b, ResidualLearnedOptimizer(b.parameters(), lr=1e-2, theta=theta, alpha=0.1), 1)
    p0 = list(c.parameters())
    for pa, pb, pc in zip(a.parameters(), b.parameters(), p0):
        diff = (pb - pa).abs().max().item()
        assert diff > 0
        # |residual| <= alpha * scale * sum|w2|; at step 1 scale = 1 (m_hat / sqrt(v_hat) = sign g)
        assert diff <= 1e-2 * 0.1 * 1.0001 * np.abs(theta[-8:]).sum()
        assert (pa - pc).abs().max() > 0


def test_features_are_invariant_to_gradient_scale():
    torch.manual_seed(1)
    w = torch.randn(4, 6, dtype=torch.float64)
    gs = [torch.randn(4, 6, dtype=torch.float64) for _ in range(3)]

    def run(c):
        ms = [torch.zeros_like(w) for _ in range(3)]
        v = torch.zeros_like(w)
        for g in gs:
            g = c * g
            ms = [b * m + (1 - b) * g for m, b in zip(ms, (0.5, 0.9, 0.99))]
            v = 0.999 * v + 0.001 * g * g
        return features(w, g, ms, v, len(gs))

    (x1, s1), (x2, s2) = run(1.0), run(1e3)
    assert x1.shape == (24, N_FEATURES)
    torch.testing.assert_close(x1, x2, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(s1, s2, rtol=1e-6, atol=1e-8)


def test_state_dict_round_trip_resumes_the_same_trajectory():
    theta = np.random.default_rng(2).normal(size=theta_size(8)).astype(np.float32)
    a = _model()
    opt_a = ResidualLearnedOptimizer(a.parameters(), lr=3e-3, theta=theta)
    _train(a, opt_a, 12)

    b = _model()
    opt_b = ResidualLearnedOptimizer(b.parameters(), lr=3e-3, theta=theta)
    _train(b, opt_b, 5)
    saved_model, saved_opt = copy.deepcopy(b.state_dict()), copy.deepcopy(opt_b.state_dict())
    c = _model()
    c.load_state_dict(saved_model)
    opt_c = ResidualLearnedOptimizer(c.parameters(), lr=3e-3, theta=theta)
    opt_c.load_state_dict(saved_opt)
    _train(c, opt_c, 7, start=5)
    for pa, pc in zip(a.parameters(), c.parameters()):
        assert torch.equal(pa, pc)
    with pytest.raises(ValueError, match="other learned weights"):
        ResidualLearnedOptimizer(_model().parameters(), lr=3e-3).load_state_dict(saved_opt)


def test_weights_file_round_trip_without_pickle(tmp_path):
    theta = np.arange(theta_size(4), dtype=np.float32)
    path = tmp_path / "w.npz"
    save_theta(path, theta, hidden=4, alpha=0.05)
    got = load_theta(path)
    assert np.array_equal(got["theta"], theta) and got["hidden"] == 4
    assert got["alpha"] == 0.05 and got["base"] == "adamw"
    with pytest.raises(ValueError, match="needs"):
        ResidualLearnedOptimizer(_model().parameters(), theta=theta, hidden=8)


def _reference_steps(w0: np.ndarray, grads: list[np.ndarray], theta: np.ndarray, lr: float, alpha: float,
                     hidden: int) -> np.ndarray:
    """AdamW (catalog defaults) plus the residual, written out in float64 numpy."""
    w = w0.copy()
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    fm = [np.zeros_like(w) for _ in range(3)]
    fv = np.zeros_like(w)
    eps = 1e-8
    for t, g in enumerate(grads, 1):
        fm = [b * a + (1 - b) * g for a, b in zip(fm, (0.5, 0.9, 0.99))]
        fv = 0.999 * fv + 0.001 * g * g
        sv = np.sqrt(fv / (1 - 0.999 ** t)) + eps
        cols = [a / (1 - b ** t) / sv for a, b in zip(fm, (0.5, 0.9, 0.99))]
        scale = np.sqrt(np.mean(cols[1] ** 2))
        cols += [g / sv, w / (np.sqrt(np.mean(w ** 2)) + eps),
                 np.log(np.abs(g) + eps) - np.log(np.sqrt(np.mean(g ** 2)) + eps)]
        x = np.stack([c.ravel() for c in cols], 1)
        x = x / (np.sqrt(np.mean(x ** 2, axis=0, keepdims=True)) + eps)
        const = [np.tanh(t / T) for T in (10.0, 100.0, 1000.0)] + [np.tanh(np.log10(np.sqrt(np.mean(w ** 2)) + eps))]
        x = np.concatenate([x, np.tile(const, (x.shape[0], 1))], 1)
        f = x.shape[1]
        w1, b1, w2 = theta[:f * hidden].reshape(f, hidden), theta[f * hidden:f * hidden + hidden], theta[-hidden:]
        r = (np.tanh(x @ w1 + b1) @ w2).reshape(w.shape)
        m = 0.1 * g + 0.9 * m
        v = 0.001 * g * g + 0.999 * v
        base = m / (1 - 0.9 ** t) / (np.sqrt(v) / np.sqrt(1 - 0.999 ** t) + eps) + 0.01 * w
        w = w - lr * base - lr * alpha * scale * r
    return w


def test_residual_step_matches_a_float64_reference():
    rng = np.random.default_rng(3)
    theta = rng.normal(size=theta_size(8)).astype(np.float32)
    w0 = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) * 10.0 ** k for k in range(4)]
    p = torch.nn.Parameter(torch.tensor(w0))
    opt = ResidualLearnedOptimizer([p], lr=1e-2, theta=theta, alpha=0.2)
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
    expect = _reference_steps(w0, grads, theta.astype(np.float64), 1e-2, 0.2, 8)
    np.testing.assert_allclose(p.detach().numpy(), expect, rtol=1e-6, atol=1e-9)
