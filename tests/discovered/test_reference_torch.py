"""Catalog rules that torch.optim implements give torch.optim's iterates (float64, 50 steps, 1e-10)."""

from __future__ import annotations

import pytest
import torch

import optdisco.catalog as catalog

from reference_problems import PROBLEMS, assert_paths_close, assert_rule_matches_reference, rule_path

STEPS = 50

# (rule, rule hyperparameters, torch optimizer, its keyword arguments, lr)
CASES = [
    ("sgd", {}, torch.optim.SGD, {}, 0.05),
    ("sgd", {"wd": 0.1}, torch.optim.SGD, {"weight_decay": 0.1}, 0.05),
    ("momentum", {}, torch.optim.SGD, {"momentum": 0.9}, 0.02),
    ("momentum", {"momentum": 0.8, "dampening": 0.3, "wd": 0.05}, torch.optim.SGD,
     {"momentum": 0.8, "dampening": 0.3, "weight_decay": 0.05}, 0.05),
    ("nesterov", {}, torch.optim.SGD, {"momentum": 0.9, "nesterov": True}, 0.02),
    ("nesterov", {"momentum": 0.7, "wd": 0.1}, torch.optim.SGD,
     {"momentum": 0.7, "nesterov": True, "weight_decay": 0.1}, 0.05),
    ("adam", {}, torch.optim.Adam, {}, 0.01),
    ("adam", {"beta1": 0.8, "beta2": 0.95, "eps": 1e-6, "wd": 0.1}, torch.optim.Adam,
     {"betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.1}, 0.02),
    ("adamw", {}, torch.optim.AdamW, {}, 0.01),
    ("adamw", {"beta1": 0.85, "beta2": 0.99, "eps": 1e-7, "wd": 0.3}, torch.optim.AdamW,
     {"betas": (0.85, 0.99), "eps": 1e-7, "weight_decay": 0.3}, 0.02),
    ("nadam", {}, torch.optim.NAdam, {}, 0.01),
    ("nadam", {"beta1": 0.85, "beta2": 0.99, "eps": 1e-7, "wd": 0.1, "momentum_decay": 0.01},
     torch.optim.NAdam, {"betas": (0.85, 0.99), "eps": 1e-7, "weight_decay": 0.1,
                         "momentum_decay": 0.01}, 0.02),
    ("nadamw", {}, torch.optim.NAdam, {"decoupled_weight_decay": True, "weight_decay": 0.01}, 0.01),
    ("nadamw", {"beta1": 0.8, "beta2": 0.95, "wd": 0.2, "momentum_decay": 0.02}, torch.optim.NAdam,
     {"decoupled_weight_decay": True, "betas": (0.8, 0.95), "weight_decay": 0.2,
      "momentum_decay": 0.02}, 0.02),
    ("radam", {}, torch.optim.RAdam, {}, 0.01),  # rho_t crosses 5 at step 6: both branches run
    ("radam", {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "wd": 0.1}, torch.optim.RAdam,
     {"betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}, 0.02),
    ("radam", {"wd": 0.2}, torch.optim.RAdam, {"decoupled_weight_decay": False, "weight_decay": 0.2},
     0.01),
    ("adamax", {}, torch.optim.Adamax, {}, 0.01),
    ("adamax", {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "wd": 0.1}, torch.optim.Adamax,
     {"betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}, 0.02),
    ("amsgrad", {}, torch.optim.Adam, {"amsgrad": True}, 0.01),
    ("amsgrad", {"beta1": 0.8, "beta2": 0.95, "eps": 1e-6, "wd": 0.1}, torch.optim.Adam,
     {"amsgrad": True, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.1}, 0.02),
    ("rmsprop", {}, torch.optim.RMSprop, {"alpha": 0.9}, 0.005),
    ("rmsprop", {"alpha": 0.99, "eps": 1e-6, "wd": 0.1}, torch.optim.RMSprop,
     {"alpha": 0.99, "eps": 1e-6, "weight_decay": 0.1}, 0.01),
    ("adagrad", {}, torch.optim.Adagrad, {}, 0.1),
    ("adagrad", {"eps": 1e-8, "wd": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.5},
     torch.optim.Adagrad, {"eps": 1e-8, "weight_decay": 0.1, "lr_decay": 0.01,
                           "initial_accumulator_value": 0.5}, 0.2),
]


def torch_path(opt_cls, kwargs: dict, w0: torch.Tensor, grad, steps: int, lr: float,
               schedule=None) -> list[torch.Tensor]:
    """torch.optim's iterates, with the gradient set from the current parameter each step."""
    p = torch.nn.Parameter(w0.clone())
    # torch keeps scalar state (NAdam's mu_product, step counters) in the default dtype:
    # float64 here, or NAdam's running product alone differs from float64 math by ~1e-8.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return _run_torch(opt_cls([p], lr=lr, foreach=False, **kwargs), p, grad, steps, schedule)
    finally:
        torch.set_default_dtype(previous)


def _run_torch(opt, p, grad, steps, schedule):
    sched = schedule(opt) if schedule else None
    out = []
    for t in range(1, steps + 1):
        p.grad = grad(p.detach().clone(), t)
        opt.step()
        if sched:
            sched.step()
        out.append(p.detach().clone())
    return out


def case_id(case) -> str:
    name, hyper = case[0], case[1]
    return name + ("-" + "-".join(f"{k}={v}" for k, v in hyper.items()) if hyper else "-defaults")


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_rule_matches_torch_optim(case, problem):
    name, hyper, opt_cls, kwargs, lr = case
    assert_rule_matches_reference(catalog.get(name), hyper,
                                  lambda w0, grad: torch_path(opt_cls, kwargs, w0, grad, STEPS, lr),
                                  problem, STEPS, lr, rtol=1e-10, stable_rtol=1e-12)


def test_learning_rate_schedule_matches_torch_lr_scheduler():
    w0, grad = PROBLEMS["least_squares"]()
    want = torch_path(torch.optim.AdamW, {"weight_decay": 0.1}, w0, grad, STEPS, 0.02,
                      schedule=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 10, gamma=0.5))
    got = rule_path(catalog.get("adamw"), w0, grad, STEPS, lambda t: 0.02 * 0.5 ** ((t - 1) // 10),
                    {"wd": 0.1})
    assert_paths_close(got, want)


def test_a_wrong_hyperparameter_is_caught():
    # The comparison is sharp enough to notice a small change in one hyperparameter.
    w0, grad = PROBLEMS["quadratic"]()
    want = torch_path(torch.optim.Adam, {"betas": (0.9, 0.999)}, w0, grad, STEPS, 0.01)
    got = rule_path(catalog.get("adam"), w0, grad, STEPS, 0.01, {"beta2": 0.9991})
    with pytest.raises(AssertionError):
        assert_paths_close(got, want)


def test_every_rule_listed_as_a_torch_twin_is_tested_here():
    from test_reference_papers import TORCH_TWINS
    assert {c[0] for c in CASES} == TORCH_TWINS
