import math

import pytest
import torch

from optdisco.dsl import Program
from optdisco.dsl.ir import Assign, Call, Name
from optdisco.evaluators import ADAMW, Run, get_task, train
from optdisco.evaluators.train import schedule



def test_schedule_warms_up_and_decays_to_zero():
    assert schedule(1, 100) < schedule(5, 100)
    assert schedule(5, 100) == 1.0
    assert abs(schedule(100, 100)) < 1e-12
    assert all(schedule(t, 100) >= schedule(t + 1, 100) for t in range(5, 100))


def test_batched_equals_one_at_a_time(rules):
    LION, SGD, NORMED = rules['lion'], rules['sgd'], rules['normed']
    task = get_task("digits_mlp")
    progs = [ADAMW, LION, SGD, NORMED]
    runs = [Run(k, lr, s) for k, lr in [(0, 1e-2), (1, 1e-3), (2, 0.1), (3, 1e-2)] for s in (0, 1)]
    runs += [Run(0, 3e-3, 0)]
    batched = train(task, progs, runs, steps=25)
    for r, b in zip(runs, batched):
        (alone,) = train(task, progs, [r], steps=25)
        assert b.failure is None and alone.failure is None
        assert math.isclose(b.loss, alone.loss, rel_tol=1e-4, abs_tol=1e-6), (r, b.loss, alone.loss)
        assert torch.allclose(b.params, alone.params, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("task_name", ["digits_cnn", "mnist1d", "ho_digits_cnn"])
def test_a_rule_trains_the_same_beside_others_as_alone_even_multithreaded(task_name, rules):
    # Fitness compares a candidate trained in a batch with a baseline trained in another
    # (and cached): the numbers must not depend on the batch's composition, bit for bit,
    # whatever the process's thread count (AdamW at a high rate amplifies any rounding).
    torch.set_num_threads(2)
    task = get_task(task_name)
    alone = train(task, [ADAMW], [Run(0, 0.1, 0)], steps=12)[0]
    beside = train(task, [ADAMW, rules["lion"]], [Run(0, 0.1, 0), Run(0, 0.01, 0), Run(1, 1e-3, 0)], steps=12)[0]
    assert torch.equal(alone.params, beside.params)
    assert alone.curve == beside.curve
    assert torch.get_num_threads() == 2  # restored after training


def test_same_seed_same_numbers_and_seeds_differ():
    task = get_task("char_lm")
    a = train(task, [ADAMW], [Run(0, 1e-2, 0), Run(0, 1e-2, 1)], steps=10)
    b = train(task, [ADAMW], [Run(0, 1e-2, 0), Run(0, 1e-2, 1)], steps=10)
    assert [r.loss for r in a] == [r.loss for r in b]
    assert a[0].loss != a[1].loss


def test_divergent_candidate_does_not_spoil_others(rules):
    EXPLODER, SGD = rules['exploder'], rules['sgd']
    task = get_task("logreg")
    runs = [Run(0, 1e-2, 0), Run(1, 1e-2, 0), Run(0, 1e6, 0), Run(2, 0.1, 0)]
    res = train(task, [ADAMW, EXPLODER, SGD], runs, steps=30)
    assert res[1].failure and ("exploded" in res[1].failure or "non-finite" in res[1].failure)
    assert res[1].loss == math.inf
    assert res[2].failure is not None  # AdamW at lr 1e6 diverges too
    clean = train(task, [ADAMW, SGD], [Run(0, 1e-2, 0), Run(1, 0.1, 0)], steps=30)
    assert res[0].failure is None and res[3].failure is None
    assert math.isclose(res[0].loss, clean[0].loss, rel_tol=1e-4)
    assert math.isclose(res[3].loss, clean[1].loss, rel_tol=1e-4)


def test_rule_error_is_reported_not_raised():
    # A program the parser would reject (it reads an undefined name), as a buggy mutation might build.
    broken = Program(name="broken", state_names=(), hyperparameters=(),
                     body=(Assign("u", Call("mul", (Name("g"), Name("nowhere")))),), update=Name("u"))
    task = get_task("quadratic")
    res = train(task, [broken, ADAMW], [Run(0, 0.1, 0), Run(1, 0.1, 0)], steps=10)
    assert res[0].failure.startswith("rule error at step 1") and "nowhere" in res[0].failure
    assert res[1].failure is None and math.isfinite(res[1].loss)


def test_time_limit_stops_a_program():
    task = get_task("digits_mlp")
    res = train(task, [ADAMW], [Run(0, 1e-2, 0)], steps=200, time_limit=0.01)
    assert res[0].failure and "time limit" in res[0].failure


def _trained_by_hand(task, program, lr, steps):
    """The trainer's arithmetic written out for one run: a plain loop over the task's tensors
    with the reference interpreter applied tensor by tensor (float32, seed 0)."""
    from optdisco.dsl import run
    from optdisco.evaluators.train import seed_generator
    params = [p.float() for p in task.init(seed_generator(task, 0, "init"))]
    batches = task.sample(seed_generator(task, 0, "data"), steps)
    states = [[torch.zeros(1, *p.shape) for _ in program.state_names] for p in params]
    for t in range(1, steps + 1):
        leaves = [p.unsqueeze(0).requires_grad_(True) for p in params]
        grads = torch.autograd.grad(task.train_loss(leaves, batches[t - 1].unsqueeze(0)).sum(), leaves)
        lr_t = torch.tensor([[lr]]) * schedule(t, steps)
        for i, (leaf, g) in enumerate(zip(leaves, grads)):
            lr_b = lr_t.view(1, *[1] * params[i].dim())
            u, states[i] = run(program, leaf.detach(), g, states[i], step=float(t), lr=lr_b, batch_dims=1)
            params[i] = (leaf.detach() - lr_b * u)[0]
    return torch.cat([p.reshape(-1) for p in params]), float(task.val_loss([p.unsqueeze(0) for p in params]))


@pytest.mark.parametrize("rule", ["adamw", "normed", "keeps_w"])
def test_training_equals_a_plain_loop_over_the_interpreter(rule, rules):
    # keeps_w's state is w itself: the trainer's in-place update must not change that state.
    from optdisco import parse
    keeps_w = parse('''
def keeps_w(w, g, prev):
    """Gradient step pulled toward the previous weights."""
    u = g + 0.5 * (w - prev)
    prev = w
    return u, prev
''')
    program = {"adamw": ADAMW, "normed": rules["normed"], "keeps_w": keeps_w}[rule]
    task = get_task("digits_mlp")
    (res,) = train(task, [program], [Run(0, 3e-2, 0)], steps=6)
    params, val = _trained_by_hand(task, program, 3e-2, 6)
    assert res.failure is None
    assert torch.allclose(res.params, params, rtol=1e-5, atol=1e-7)
    assert math.isclose(res.loss, val, rel_tol=1e-5)


def test_two_threads_train_bit_for_bit_like_one(rules):
    from optdisco.evaluators.train import _deal_programs
    task = get_task("digits_cnn")
    progs = [ADAMW, rules["lion"], rules["sgd"], rules["normed"]]
    runs = [Run(k, lr, s) for k in range(4) for lr in (1e-3, 1e-2) for s in (0, 1)] + [Run(0, 0.3, 1)]
    before = torch.get_num_threads()
    one = train(task, progs, runs, steps=15, threads=1)
    two = train(task, progs, runs, steps=15, threads=2)
    assert torch.get_num_threads() == before
    for a, b in zip(one, two):
        assert a.curve == b.curve and a.failure == b.failure
        assert (a.params is None and b.params is None) or torch.equal(a.params, b.params)
    parts = _deal_programs(runs, 2)
    assert sorted(i for p in parts for i in p) == list(range(len(runs)))
    assert all(len({runs[i].program for i in p} & {runs[j].program for j in q}) == 0
               for p in parts for q in parts if p is not q)


def test_one_program_uses_one_core_whatever_threads_says():
    # one program's runs stay together, so more threads cannot help it; torch's own
    # threading would change the rounding, so it is not used either
    # (ho_char_lm's products are big enough for torch to split them: it rounds differently)
    task = get_task("ho_char_lm")
    runs = [Run(0, 0.01, 0), Run(0, 0.1, 0), Run(0, 0.003, 1)]
    one = train(task, [ADAMW], runs, steps=10, n_evals=2, threads=1)
    two = train(task, [ADAMW], runs, steps=10, n_evals=2, threads=2)
    assert all(torch.equal(a.params, b.params) for a, b in zip(one, two))


def test_evaluate_gives_the_same_numbers_on_two_cores(rules, tmp_path):
    from optdisco.evaluators import evaluate
    progs = [rules["lion"], rules["sgd"], rules["normed"]]
    a = evaluate(progs, tasks=["logreg"], budget=0.3, properties=False, cache_dir=tmp_path)
    b = evaluate(progs, tasks=["logreg"], budget=0.3, properties=False, cache_dir=tmp_path, threads=2)
    assert [e.per_task for e in a] == [e.per_task for e in b] and [e.tuned_lr for e in a] == [e.tuned_lr for e in b]


def test_a_task_built_by_hand_trains_in_threads_with_the_same_numbers(rules):
    # workers rebuild tasks by name; a task that is not registered stays in this process
    import dataclasses

    from optdisco.evaluators import workers
    task = dataclasses.replace(get_task("logreg"), name="my_logreg")
    assert workers.task_ref(task) is None and workers.task_ref(get_task("logreg")) is not None
    progs = [ADAMW, rules["lion"], rules["sgd"]]
    runs = [Run(k, lr, 0) for k in range(3) for lr in (1e-3, 1e-2)]
    one = train(task, progs, runs, steps=12, threads=1)
    two = train(task, progs, runs, steps=12, threads=2)
    assert all(torch.equal(a.params, b.params) for a, b in zip(one, two))


def test_a_worker_process_that_dies_costs_time_not_results(rules):
    import os
    import signal

    from optdisco.evaluators import workers
    task = get_task("logreg")
    progs = [ADAMW, rules["lion"], rules["sgd"]]
    runs = [Run(k, lr, 0) for k in range(3) for lr in (1e-3, 1e-2)]
    one = train(task, progs, runs, steps=12, threads=1)
    train(task, progs, runs, steps=2, threads=2)          # the pool is up
    for proc in list(workers.pool(1)._processes.values()):  # and now its worker is gone
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(5)
    two = train(task, progs, runs, steps=12, threads=2)
    assert all(torch.equal(a.params, b.params) for a, b in zip(one, two))
    again = train(task, progs, runs, steps=12, threads=2)  # and a fresh pool serves the next call
    assert all(torch.equal(a.params, b.params) for a, b in zip(one, again))
