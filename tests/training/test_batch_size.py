"""The norm-test batch-size controller against the algorithm written out here in numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import optdisco
from optdisco.training import BatchSizeSpec, NormTestBatchSize, per_sample_gradients

N, D = 4000, 6


def _problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D))
    theta = rng.standard_normal(D)
    y = X @ theta + 0.5 * rng.standard_normal(N)
    return X, y


def reference_adagradnorm_with_norm_test(X, y, *, b0, eta_lr, eta_test, batch0, max_batch, steps, seed,
                                         coordinate=False):
    """AdaGradNorm (b_k^2 = b_{k-1}^2 + ||g||^2, theta -= eta / b_k * g) on 1/2 (x.theta - y)^2,
    its batch grown by the norm test (or the coordinate-wise test) after each step."""
    rng = np.random.default_rng(seed)
    theta, acc, b = np.zeros(D), 0.0, batch0
    sizes = []
    for _ in range(steps):
        idx = rng.choice(N, size=b, replace=False)
        G = (X[idx] @ theta - y[idx])[:, None] * X[idx]      # per-example gradients
        g = G.mean(axis=0)
        var = ((G - g) ** 2).sum(axis=0) / (b - 1)
        acc += float(g @ g)
        theta = theta - eta_lr / math.sqrt(b0 ** 2 + acc) * g
        sizes.append(b)
        if coordinate:
            ok = np.all(var / b <= eta_test ** 2 * g ** 2)
            need = b if ok else math.ceil(np.max(var / (eta_test ** 2 * g ** 2)))
        else:
            ok = var.sum() / b <= eta_test ** 2 * (g @ g)
            need = b if ok else math.ceil(var.sum() / (eta_test ** 2 * (g @ g)))
        b = min(max_batch, max(b, need))
    return sizes, theta


@pytest.mark.parametrize("variant", ["norm", "coordinate"])
def test_batch_sizes_and_adagradnorm_trajectory_match_the_written_out_algorithm(variant):
    X, y = _problem()
    kw = dict(b0=0.01, eta_lr=0.5, eta_test=0.5, batch0=8, max_batch=2048, steps=30, seed=3)
    sizes_ref, theta_ref = reference_adagradnorm_with_norm_test(X, y, coordinate=variant == "coordinate", **kw)
    assert sizes_ref[-1] > sizes_ref[0], "the seeded problem must make the batch grow"

    model = torch.nn.Linear(D, 1, bias=False).double()
    torch.nn.init.zeros_(model.weight)
    opt = optdisco.Optimizer(model.parameters(), "adagradnorm", lr=kw["eta_lr"], b0=kw["b0"], backend="eager")
    ctl = NormTestBatchSize(kw["batch0"], eta=kw["eta_test"], variant=variant, max_batch=kw["max_batch"])
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    rng = np.random.default_rng(kw["seed"])

    def loss_fn(out, target):
        return 0.5 * ((out.reshape(-1) - target) ** 2).mean()

    for _ in range(kw["steps"]):
        idx = torch.as_tensor(rng.choice(N, size=ctl.batch_size, replace=False))
        xb, yb = Xt[idx], yt[idx]
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        grads = per_sample_gradients(model, loss_fn, xb, yb)
        opt.step()
        ctl.update(grads)
    assert ctl.history == sizes_ref
    np.testing.assert_allclose(model.weight.detach().numpy().reshape(-1), theta_ref, rtol=1e-10, atol=1e-12)


def test_per_sample_gradients_average_to_the_batch_gradient():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).double()
    x, y = torch.randn(11, 5, dtype=torch.float64), torch.randint(0, 3, (11,))
    grads = per_sample_gradients(model, torch.nn.functional.cross_entropy, x, y)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    for p, g in zip(model.parameters(), grads):
        assert g.shape == (11, *p.shape)
        torch.testing.assert_close(g.mean(dim=0), p.grad, rtol=1e-12, atol=1e-14)


def test_the_batch_never_shrinks_and_is_capped_and_tests_only_every_k_steps():
    noisy = [torch.randn(64, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)]
    ctl = NormTestBatchSize(64, eta=0.01, max_batch=100, every=2)
    assert ctl.update(noisy) == 64          # not tested on step 1
    assert ctl.update(noisy) == 100         # tested: needs far more, capped
    clean = [torch.ones(100, 10, dtype=torch.float64)]
    assert ctl.required(clean) == 100 and ctl.update(clean) == 100 and ctl.update(clean) == 100
    assert ctl.history == [64, 64, 100, 100]


@pytest.mark.parametrize("kwargs", [dict(variant="l2"), dict(initial=1), dict(initial=64, max_batch=32),
                                    dict(eta=0.0), dict(every=0)])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        NormTestBatchSize(**{"initial": 8, **kwargs})


def test_the_batch_size_spec_round_trips_and_builds_the_controller_it_describes():
    spec = BatchSizeSpec.parse(" norm_test: eta=0.5, variant=coordinate, start=0.5, growth=4, every=3")
    assert BatchSizeSpec.parse(spec.text()) == spec
    assert spec.text() == "norm_test:eta=0.5,variant=coordinate,start=0.5,growth=4,every=3"
    ctl = spec.controller(64)
    assert (ctl.batch_size, ctl.max_batch, ctl.eta, ctl.variant, ctl.every) == (32, 256, 0.5, "coordinate", 3)
    assert BatchSizeSpec.parse("fixed").text() == "fixed"
    assert BatchSizeSpec.parse("norm_test").controller(4).batch_size == 2, "never below 2 examples"


@pytest.mark.parametrize("text", ["norm", "fixed:eta=1", "norm_test:eta=0", "norm_test:start=2,growth=1",
                                  "norm_test:every=0", "norm_test:variant=l1", "norm_test:size=3", "norm_test:eta=x"])
def test_bad_batch_size_specs_are_refused(text):
    with pytest.raises(ValueError):
        BatchSizeSpec.parse(text)


def test_a_tested_step_needs_the_per_example_gradients():
    ctl = NormTestBatchSize(8, every=2)
    assert not ctl.tests_next and ctl.update(None) == 8
    assert ctl.tests_next
    with pytest.raises(ValueError, match="per-example"):
        ctl.update(None)
