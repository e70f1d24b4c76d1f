"""Batched training of rules with group built-ins (issue 13): a task's tensors are one param
group per run, equal to optdisco.dsl.run_group over the tensors by hand, and independent of the
other runs in the batch."""

from __future__ import annotations

import math

import torch

from optdisco import catalog
from optdisco.dsl import run_group, zero_states
from optdisco.evaluators import ADAMW, Run, get_task, train
from optdisco.evaluators.tape import ReferenceStep, flat_layout, make_step, state_widths
from optdisco.evaluators.train import schedule, seed_generator


def _trained_by_hand(task, program, lr, steps):
    """The trainer's arithmetic for one run (float32, seed 0): run_group over the task's tensors."""
    params = [p.float() for p in task.init(seed_generator(task, 0, "init"))]
    batches = task.sample(seed_generator(task, 0, "data"), steps)
    states = [zero_states(program, p) for p in params]
    for t in range(1, steps + 1):
        leaves = [p.requires_grad_(True) for p in (p.detach().clone() for p in params)]
        grads = torch.autograd.grad(task.train_loss([x.unsqueeze(0) for x in leaves],
                                                    batches[t - 1].unsqueeze(0)).sum(), leaves)
        lr_t = float(torch.tensor(lr, dtype=torch.float32) * schedule(t, steps))
        us, states = run_group(program, [x.detach() for x in leaves], list(grads), states,
                               step=float(t), lr=lr_t)
        params = [x.detach() - lr_t * u for x, u in zip(leaves, us)]
    return torch.cat([p.reshape(-1) for p in params]), float(task.val_loss([p.unsqueeze(0) for p in params]))


def test_group_states_take_one_entry_per_tensor_and_run_on_the_reference_step():
    layout = flat_layout([(4, 3), (3,)])
    assert state_widths(catalog.get("prodigy"), layout) == [15, 15, 15, 15, 2, 2]
    assert isinstance(make_step(catalog.get("dadapt_adam"), layout), ReferenceStep)


def test_training_equals_run_group_over_the_tasks_tensors_and_runs_stay_apart():
    task = get_task("digits_mlp")
    program = catalog.get("prodigy")
    runs = [Run(0, 1.0, 0), Run(1, 1e-2, 0), Run(0, 0.5, 0)]
    batched = train(task, [program, ADAMW], runs, steps=4)
    params, val = _trained_by_hand(task, program, 1.0, 4)
    assert all(r.failure is None for r in batched), [r.failure for r in batched]
    torch.testing.assert_close(batched[0].params, params, rtol=1e-5, atol=1e-6)
    assert math.isclose(batched[0].loss, val, rel_tol=1e-5)
    (alone,) = train(task, [program], [Run(0, 0.5, 0)], steps=4)
    torch.testing.assert_close(batched[2].params, alone.params, rtol=1e-5, atol=1e-6)
