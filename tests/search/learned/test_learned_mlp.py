"""The MLP optimizer: features, its Adam-like start, weight files without pickle, Optimizer(learned=)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import optdisco
from optdisco.search.learned.features import (ADAM_FEATURE, FEATURE_NAMES, FeatureState,
                                              update_and_features)
from optdisco.search.learned.mlp_optimizer import MLPConfig, MLPOptimizer, init_theta, load, save


def test_adam_feature_is_bias_corrected_adam_direction():
    torch.manual_seed(0)
    w = torch.randn(2, 5, 3)
    st = FeatureState.zeros(w)
    m = torch.zeros_like(w)
    v = torch.zeros_like(w)
    for t in range(1, 6):
        g = torch.randn_like(w)
        feats, st = update_and_features(w, g, st, t)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        expect = (m / (1 - 0.9 ** t)) / torch.sqrt(v / (1 - 0.999 ** t))
        assert feats.shape == (2, 5, 3, len(FEATURE_NAMES))
        torch.testing.assert_close(feats[..., ADAM_FEATURE], expect, rtol=1e-4, atol=1e-5)


def test_factored_statistics_are_rank_one_for_matrices():
    w = torch.zeros(1, 4, 6)
    g = torch.outer(torch.arange(1.0, 5.0), torch.arange(1.0, 7.0)).unsqueeze(0)
    feats, st = update_and_features(w, g, FeatureState.zeros(w), 1)
    # for a rank-one g^2 the factored estimate is exact: g * rsqrt(V) = sign(g) = 1
    torch.testing.assert_close(feats[..., FEATURE_NAMES.index("g_rsqrt_factored")],
                               torch.ones(1, 4, 6), rtol=1e-3, atol=1e-3)


def test_untrained_mlp_is_adam_when_the_output_layer_is_zero():
    opt = MLPOptimizer()
    theta = init_theta(opt.cfg)
    o = 0
    for name, shape in opt.cfg.sizes:  # zero W2 and b2: only the skip remains
        n = int(np.prod(shape))
        if name in ("W2", "b2"):
            theta[o:o + n] = 0
        o += n
    w = torch.randn(1, 10)
    g = torch.randn(1, 10)
    u, _ = opt.updates(theta, w, g, opt.init_state(w), 1)
    torch.testing.assert_close(u, g / (g.abs() + 1e-8), rtol=1e-4, atol=1e-4)  # Adam's first step


def test_weights_round_trip_without_pickle(tmp_path):
    cfg = MLPConfig(hidden=8)
    theta = init_theta(cfg, seed=3)
    save(tmp_path / "w.npz", cfg, theta, provenance={"lr": 0.02})
    cfg2, theta2, prov = load(tmp_path / "w.npz")
    assert cfg2 == cfg and prov == {"lr": 0.02}
    torch.testing.assert_close(theta2, theta)
    np.savez(tmp_path / "bad.npz", theta=np.array([object()], dtype=object), meta=np.array("{}"))
    with pytest.raises(ValueError):  # object arrays would need pickle: refused
        load(tmp_path / "bad.npz")


def _model_and_data():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    x = torch.randn(64, 4)
    return model, x, x.sum(1, keepdim=True)


def _train(model, opt, x, y, steps):
    for _ in range(steps):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
    return float(((model(x) - y) ** 2).mean().detach())


def test_optimizer_runs_learned_weights_and_resumes_exactly(tmp_path):
    cfg = MLPConfig()
    save(tmp_path / "l.npz", cfg, init_theta(cfg), provenance={"lr": 0.02})
    model, x, y = _model_and_data()
    start = float(((model(x) - y) ** 2).mean().detach())
    opt = optdisco.Optimizer(model.parameters(), learned=tmp_path / "l.npz")
    assert isinstance(opt, optdisco.Optimizer) and opt.param_groups[0]["lr"] == 0.02
    mid = _train(model, opt, x, y, 30)
    assert mid < 0.5 * start
    sd = copy.deepcopy(opt.state_dict())  # as torch.save would: the live dict shares tensors
    snapshot = [p.detach().clone() for p in model.parameters()]
    end_a = _train(model, opt, x, y, 10)
    with torch.no_grad():
        for p, s in zip(model.parameters(), snapshot):
            p.copy_(s)
    opt2 = optdisco.Optimizer(model.parameters(), learned=tmp_path / "l.npz")
    opt2.load_state_dict(sd)
    assert _train(model, opt2, x, y, 10) == end_a

    other = MLPConfig()
    save(tmp_path / "o.npz", other, init_theta(other, seed=9))
    with pytest.raises(ValueError, match="not made by this learned optimizer"):
        optdisco.Optimizer(model.parameters(), learned=tmp_path / "o.npz").load_state_dict(sd)
    with pytest.raises(TypeError, match="learned=PATH"):
        optdisco.Optimizer(model.parameters())
