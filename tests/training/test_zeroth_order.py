"""Zeroth-order gradient estimates: convergence to the true gradient, exact evaluation counts."""

from __future__ import annotations

import pytest
import torch

import optdisco
from optdisco.training import ZerothOrderGradients, cge_estimate, cge_rows, rge_estimate, rge_rows


def _smooth_problem():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    calls = [0]

    def f():
        calls[0] += 1
        return (torch.sin(a) * a).sum() + (b ** 3).sum() / 3 + (a.sum() * b.sum()) ** 2 / 10

    f()
    f_val = f()
    f_val.backward()
    true = [a.grad.clone(), b.grad.clone()]
    calls[0] = 0
    return [a, b], f, true, calls


def test_cge_converges_to_the_true_gradient_as_mu_shrinks_and_counts_evaluations_exactly():
    params, f, true, calls = _smooth_problem()
    before = [p.detach().clone() for p in params]
    errors = []
    for mu in (1e-1, 1e-2, 1e-3, 1e-4):
        calls[0] = 0
        est, base, n = cge_estimate(f, params, mu=mu)
        assert n == calls[0] == 1 + 12 + 5
        errors.append(max(float((e - t).abs().max()) for e, t in zip(est, true)))
        assert all(torch.equal(p.detach(), q) for p, q in zip(params, before)), "parameters restored exactly"
    assert errors[-1] < 1e-3
    assert all(later < 0.2 * earlier for earlier, later in zip(errors, errors[1:])), errors  # O(mu)


def test_rge_averages_to_the_true_gradient_and_counts_one_plus_q():
    params, f, true, calls = _smooth_problem()
    g = torch.Generator().manual_seed(0)
    est, _, n = rge_estimate(f, params, mu=1e-4, queries=4000, generator=g)
    assert n == calls[0] == 4001
    flat_est = torch.cat([e.reshape(-1) for e in est])
    flat_true = torch.cat([t.reshape(-1) for t in true])
    cos = float(flat_est @ flat_true / (flat_est.norm() * flat_true.norm()))
    assert cos > 0.95, cos


def test_sparse_masks_zero_the_other_coordinates_and_fill_sets_grads_with_exact_counts():
    params, f, true, calls = _smooth_problem()
    zo = ZerothOrderGradients(params, method="cge", mu=1e-6, density=[0.5, 1.0], seed=3)
    assert zo.evaluations_per_step() == 1 + 6 + 5
    for step in range(1, 4):
        calls[0] = 0
        zo.fill(f)
        assert calls[0] == zo.evaluations_per_step()
        assert zo.evaluations == step * zo.evaluations_per_step()
        a_grad = params[0].grad
        assert int((a_grad != 0).sum()) == 6
        kept = a_grad != 0
        torch.testing.assert_close(a_grad[kept], true[0][kept], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(params[1].grad, true[1], rtol=1e-4, atol=1e-5)


def test_any_catalog_rule_trains_on_zeroth_order_gradients():
    torch.manual_seed(0)
    X = torch.randn(64, 4, dtype=torch.float64)
    y = X @ torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    model = torch.nn.Linear(4, 1).double()

    def loss():
        return ((model(X).reshape(-1) - y) ** 2).mean()

    start = float(loss().detach())
    for method in ("cge", "rge"):
        opt = optdisco.Optimizer(model.parameters(), "adam", lr=0.05, backend="eager")
        zo = ZerothOrderGradients(model, method=method, mu=1e-4, queries=8, seed=1)
        for _ in range(150):
            zo.fill(loss)
            opt.step()
        assert float(loss()) < 0.1 * start, method
    assert zo.evaluations == 150 * 9


@pytest.mark.parametrize("kwargs", [dict(method="fd"), dict(density=0.0), dict(density=[0.5]), dict(mu=0.0)])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        ZerothOrderGradients([torch.zeros(3), torch.zeros(2)], **kwargs)


def test_row_estimators_equal_the_per_problem_ones_row_by_row():
    torch.manual_seed(2)
    A = torch.randn(3, 6, dtype=torch.float64)

    def rows_loss(x, a=A):                  # (P, N) -> (P,)
        return (torch.sin(x) * a).sum(dim=1) + (x ** 2).sum(dim=1)

    x = torch.randn(3, 6, dtype=torch.float64)
    coords = torch.tensor([0, 2, 5])
    est, base, n = cge_rows(rows_loss, x, mu=1e-4, coords=coords)
    assert n == 4
    for i in range(3):
        p = x[i].clone()
        mask = torch.zeros(6, dtype=torch.bool)
        mask[coords] = True
        one, one_base, _ = cge_estimate(lambda p=p, i=i: rows_loss(p.unsqueeze(0), A[i:i + 1])[0], [p], mu=1e-4,
                                        masks=[mask])
        torch.testing.assert_close(est[i], one[0], rtol=1e-9, atol=1e-12)
        assert float(base[i]) == one_base
    est_r, _, n_r = rge_rows(rows_loss, x, mu=1e-5, queries=3000, generator=torch.Generator().manual_seed(0))
    assert n_r == 3001
    true = torch.cos(x) * A + 2 * x
    cos = torch.nn.functional.cosine_similarity(est_r, true, dim=1)
    assert bool((cos > 0.9).all()), cos


def test_gradient_specs_parse_print_and_refuse_bad_text():
    from optdisco.training import GradientSpec
    assert GradientSpec.parse("backprop") == GradientSpec()
    rge = GradientSpec.parse("rge:queries=4, mu=1e-4")
    assert (rge.method, rge.queries, rge.mu) == ("rge", 4, 1e-4) and rge.evaluations(100) == 5
    assert GradientSpec.parse(rge.text()) == rge
    cge = GradientSpec.parse("cge:density=0.1")
    assert cge.evaluations(100) == 11 and GradientSpec.parse(cge.text()) == cge
    for bad in ("sgd", "rge:q=4", "rge:queries=x", "cge:density=0", "backprop:mu=1", "rge:mu"):
        with pytest.raises(ValueError):
            GradientSpec.parse(bad)
