"""Batched training of rules with matrix states (issue 13): factor and per-row states laid out
per tensor in the trainer's flat state rows, equal to the interpreter run tensor by tensor."""

from __future__ import annotations

import math

import pytest
import torch

from optdisco import catalog
from optdisco.dsl import run, zero_states
from optdisco.evaluators import ADAMW, Run, get_task, train
from optdisco.evaluators.tape import ReferenceStep, flat_layout, make_step, state_widths
from optdisco.evaluators.train import schedule, seed_generator


def _trained_by_hand(task, program, lr, steps):
    """The trainer's arithmetic for one run (float32, seed 0): the interpreter per tensor,
    each state at its declared storage shape."""
    params = [p.float() for p in task.init(seed_generator(task, 0, "init"))]
    batches = task.sample(seed_generator(task, 0, "data"), steps)
    states = [zero_states(program, p.unsqueeze(0), batch_dims=1) for p in params]
    for t in range(1, steps + 1):
        leaves = [p.unsqueeze(0).requires_grad_(True) for p in params]
        grads = torch.autograd.grad(task.train_loss(leaves, batches[t - 1].unsqueeze(0)).sum(), leaves)
        lr_t = torch.tensor([[lr]]) * schedule(t, steps)
        for i, (leaf, g) in enumerate(zip(leaves, grads)):
            lr_b = lr_t.view(1, *[1] * params[i].dim())
            u, states[i] = run(program, leaf.detach(), g, states[i], step=float(t), lr=lr_b, batch_dims=1)
            params[i] = (leaf.detach() - lr_b * u)[0]
    return torch.cat([p.reshape(-1) for p in params]), float(task.val_loss([p.unsqueeze(0) for p in params]))


def test_state_rows_are_as_wide_as_the_states():
    layout = flat_layout([(4, 3), (3,)])
    # soap: m, v like w (15), L 4x4 + 1x1, R 3x3 + 3x3, QL, QR alike
    assert state_widths(catalog.get("soap"), layout) == [15, 15, 17, 18, 17, 18]
    assert state_widths(catalog.get("adam_mini"), layout) == [15, 5]
    assert isinstance(make_step(catalog.get("shampoo"), layout), ReferenceStep)


@pytest.mark.parametrize("name,lr", [("shampoo", 3e-3), ("soap", 3e-3), ("adam_mini", 3e-3)])
def test_training_equals_a_plain_loop_over_the_interpreter(name, lr):
    program = catalog.get(name)
    task = get_task("digits_mlp")
    (res,) = train(task, [program], [Run(0, lr, 0)], steps=5)
    params, val = _trained_by_hand(task, program, lr, 5)
    assert res.failure is None, res.failure
    if name == "soap":
        # SOAP's first eigenbasis is of a rank-1 Gram matrix: any basis of its null space is
        # one, so float32 rounding differences move single coordinates far; the loss agrees
        assert math.isclose(res.loss, val, rel_tol=1e-3)
        return
    torch.testing.assert_close(res.params, params, rtol=1e-5, atol=1e-6)
    assert math.isclose(res.loss, val, rel_tol=1e-5)


def test_matrix_rules_train_beside_others_as_alone():
    task = get_task("digits_mlp")
    progs = [ADAMW, catalog.get("soap"), catalog.get("adam_mini"), catalog.get("shampoo")]
    runs = [Run(0, 1e-2, 0), Run(1, 3e-3, 0), Run(1, 1e-3, 0), Run(2, 1e-3, 0), Run(3, 1e-3, 0)]
    batched = train(task, progs, runs, steps=5)
    for r, b in zip(runs, batched):
        (alone,) = train(task, progs, [r], steps=5)
        assert b.failure is None and alone.failure is None
        if r.program == 1:  # SOAP: a rank-1 factor's eigenbasis (see the test above)
            assert math.isclose(b.loss, alone.loss, rel_tol=1e-3)
            continue
        torch.testing.assert_close(b.params, alone.params, rtol=1e-4, atol=1e-5)
