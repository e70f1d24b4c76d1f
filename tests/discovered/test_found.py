"""Found rules in the catalog: each computes what its campaign stored, and what the method it
rediscovered computes (written here in plain PyTorch, independently of the rule)."""

from __future__ import annotations

import pytest
import torch

import optdisco
from optdisco.discovered import catalog
from optdisco.dsl import equivalent
from optdisco.search.found import parse_searched_form

FOUND = [e.name for e in catalog.entries() if e.origin == "found"]
SEARCHED = [n for n in FOUND if "Searched" in catalog.get(n).meta]   # from a campaign
LEARNED = [n for n in FOUND if "Learned" in catalog.get(n).meta]     # from optdisco learn


def test_the_catalog_holds_found_rules():
    assert {"found_qh_momentum", "found_qh_momentum_b95", "found_ema_momentum_b05"} <= set(FOUND)


def test_every_found_rule_comes_from_a_campaign_or_from_learning():
    assert set(SEARCHED) | set(LEARNED) == set(FOUND) and LEARNED


@pytest.mark.parametrize("name", SEARCHED)
def test_found_rule_is_its_searched_program(name):
    # the body was tidied for reading; it must still compute the stored program's updates
    rule = catalog.get(name)
    searched = parse_searched_form(rule.meta["Searched"])
    verdict = equivalent(rule, searched)
    assert verdict.equal, verdict.detail


@pytest.mark.parametrize("name", LEARNED)
def test_learned_rule_provenance_and_its_source_rule(name):
    rule = catalog.get(name)
    meta = rule.meta
    for key in ("Campaign", "Learned", "Validation", "Date"):
        assert meta.get(key), f"{name}: no {key}"
    # the same program as the rule it was learned from, with other constants
    base = catalog.get(name.removesuffix("_learned"))
    assert rule.body == base.body and rule.update == base.update
    assert rule.hyperparameter_names == base.hyperparameter_names


@pytest.mark.parametrize("name", SEARCHED)
def test_found_rule_provenance(name):
    meta = catalog.get(name).meta
    for key in ("Campaign", "Fitness", "Date", "StageHeldout", "Searched"):
        assert meta.get(key), f"{name}: no {key}"
    # "held up": the funnel's last stage (the held-out suite) passed its threshold (-0.1)
    assert float(meta["StageHeldout"].split()[0]) >= -0.1


def _qhm(params, grads_fn, lr, beta, nu, steps):
    """Quasi-hyperbolic momentum (Ma & Yarats 2019): g_buf <- beta g_buf + (1 - beta) g;
    theta <- theta - lr ((1 - nu) g + nu g_buf)."""
    buf = torch.zeros_like(params)
    for t in range(steps):
        g = grads_fn(params, t)
        buf = beta * buf + (1 - beta) * g
        params = params - lr * ((1 - nu) * g + nu * buf)
    return params


def _grads(x, t):
    return (x - 1.0) * (1 + 0.1 * t) + 0.3 * x ** 3


def _run_rule(name, x0, lr, steps):
    p = torch.nn.Parameter(x0.clone())
    opt = optdisco.Optimizer([p], name, lr=lr, backend="eager")
    for t in range(steps):
        p.grad = _grads(p.detach(), t)
        opt.step()
    return p.detach()


@pytest.mark.parametrize("name,lr_scale,nu_qhm", [
    ("found_qh_momentum_b95", 1.0, 0.5),
    # u = m + nu g = (1 + nu) * QHM(nu_qhm = 1 / (1 + nu)): the same steps at lr * (1 + nu)
    ("found_qh_momentum", 1.501, 1 / 1.501),
    ("found_ema_momentum_b05", 1.0, 1.0),
    ("found_ema_momentum_b046", 1.0, 1.0),
    ("found_ema_momentum_b069", 1.0, 1.0),
])
def test_found_rule_matches_the_method_it_rediscovered(name, lr_scale, nu_qhm):
    rule = catalog.get(name)
    beta = rule.hyperparameter_defaults["beta"]
    x0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = _run_rule(name, x0, 0.01, 40)
    ref = _qhm(x0.clone(), _grads, 0.01 * lr_scale, beta, nu_qhm, 40)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)




def test_found_adamw_nobc_is_adamw_without_bias_correction():
    # its Notes: AdamW without bias correction at lr / wd, decoupled decay beta1 * wd
    rule = catalog.get("found_adamw_nobc")
    h = rule.hyperparameter_defaults
    x0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = _run_rule("found_adamw_nobc", x0, 1e-3, 40)
    lr, decay = 1e-3 / h["wd"], h["beta1"] * h["wd"]
    x, m, v = x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0)
    for t in range(40):
        g = _grads(x, t)
        m = h["beta1"] * m + (1 - h["beta1"]) * g
        v = h["beta2"] * v + (1 - h["beta2"]) * g * g
        x = x - lr * (m / ((v / h["beta2"]).sqrt() + h["eps"]) + decay * x)
    torch.testing.assert_close(ours, x, rtol=1e-9, atol=1e-12)
