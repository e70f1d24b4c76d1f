"""Schedule-free AdamW against pytorch_optimizer's ScheduleFreeAdamW, with train()/eval() swaps."""

from __future__ import annotations

import pytest
import torch
from reference_problems import PROBLEMS, assert_paths_close, rule_path

import optdisco
from optdisco import catalog
from optdisco.discovered.optimizer import swap_programs
from optdisco.dsl import DSLError, parse

pytorch_optimizer = pytest.importorskip("pytorch_optimizer")

STEPS = 40
CASES = [({}, {}, 0.01),
         ({"beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "wd": 0.1, "warmup": 10.0, "r": 1.0,
           "weight_lr_power": 1.0},
          {"betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1, "warmup_steps": 10, "r": 1.0,
           "weight_lr_power": 1.0}, 0.05)]


def peer_run(kwargs, w0, grad, lr):
    """The peer's training iterates y_t and, after each step, its evaluation point x_t."""
    p = torch.nn.Parameter(w0.clone())
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        opt = pytorch_optimizer.ScheduleFreeAdamW([p], lr=lr, **kwargs)
        ys, xs = [], []
        for t in range(1, STEPS + 1):
            opt.train()
            p.grad = grad(p.detach().clone(), t)
            opt.step()
            ys.append(p.detach().clone())
            opt.eval()
            xs.append(p.detach().clone())
        return ys, xs
    finally:
        torch.set_default_dtype(previous)


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("hyper,kwargs,lr", CASES)
def test_trajectory_and_evaluation_point_match_the_peer(hyper, kwargs, lr, problem):
    w0, grad = PROBLEMS[problem]()
    want_y, want_x = peer_run(kwargs, w0, grad, lr)
    assert_paths_close(rule_path(catalog.get("schedulefree_adamw"), w0, grad, STEPS, lr, hyper), want_y, 1e-8)
    # the same through optdisco.Optimizer, swapping to x and back around every step
    p = torch.nn.Parameter(w0.clone())
    opt = optdisco.Optimizer([p], "schedulefree_adamw", lr=lr, backend="eager", **hyper)
    got_y, got_x = [], []
    for t in range(1, STEPS + 1):
        opt.train()
        p.grad = grad(p.detach().clone(), t)
        opt.step()
        got_y.append(p.detach().clone())
        opt.eval()
        got_x.append(p.detach().clone())
    assert_paths_close(got_y, want_y, 1e-8)
    assert_paths_close(got_x, want_x, 1e-8)
    assert (want_x[-1] - want_y[-1]).abs().max() > 1e-3, "x and y barely differ: a weak test"


def test_eval_mode_refuses_a_step_and_survives_a_checkpoint():
    w0, grad = PROBLEMS["quadratic"]()
    p = torch.nn.Parameter(w0.clone())
    opt = optdisco.Optimizer([p], "schedulefree_adamw", lr=0.01)
    opt.eval()  # before any step: both points are w0
    assert torch.equal(p.detach(), w0)
    opt.train()
    for t in range(1, 6):
        p.grad = grad(p.detach().clone(), t)
        opt.step()
    y = p.detach().clone()
    opt.eval()
    opt.eval()  # twice is once
    x = p.detach().clone()
    assert (x - y).abs().max() > 1e-6
    with pytest.raises(RuntimeError, match="train()"):
        opt.step()
    q = torch.nn.Parameter(x.clone())
    restored = optdisco.Optimizer([q], "schedulefree_adamw", lr=0.01)
    restored.load_state_dict(opt.state_dict())
    assert not restored.train_mode
    restored.train()
    torch.testing.assert_close(q.detach(), y, rtol=1e-12, atol=1e-12)


def test_other_rules_train_and_eval_without_moving_anything():
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = optdisco.Optimizer([p], "adam", lr=0.1)
    p.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    before = p.detach().clone()
    opt.eval()
    assert torch.equal(p.detach(), before) and not opt.train_mode
    opt.train()
    assert opt.train_mode


def test_a_rule_with_eval_but_no_train_is_a_dsl_error():
    text = ('def half(w, g, m, *, beta=0.5):\n    """Half.\n\n    Eval: w + m\n    """\n'
            "    m = interp(g, m, beta)\n    return m, m\n")
    with pytest.raises(DSLError, match="Train"):
        swap_programs(parse(text))
    bad = text.replace("    Eval: w + m\n", "    Eval: w + q\n    Train: w - m\n")
    with pytest.raises(DSLError, match="Eval"):
        swap_programs(parse(bad))


def test_a_learned_optimizer_inherits_train_and_eval_as_mode_switches():
    learned = pytest.importorskip("optdisco.search.learned.torch_optimizer")
    opt = object.__new__(learned.LearnedOptimizer)  # no weights file here: only the mode logic
    opt.eval()
    assert not opt.train_mode
    opt.train()
    assert opt.train_mode
