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
        for t, g in enumerate(gs, 1):
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
