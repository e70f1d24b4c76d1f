"""The batched evaluator under the norm-test batch-size controller: a batch that never grows
trains bit for bit as the fixed batch, a growing one equals the controller driven by hand in
plain torch, and the setting is checked."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

import optdisco
from optdisco.evaluators import ADAMW, Run, evaluate, get_task, train
from optdisco.evaluators.train import seed_generator
from optdisco.training import BatchSizeSpec, per_sample_gradients

GROWING = "norm_test:eta=1,start=0.25,growth=8"


def _under(name: str, spec: str):
    return dataclasses.replace(get_task(name), batch_schedule=spec)


def test_a_batch_that_never_grows_trains_bit_for_bit_as_the_fixed_batch():
    fixed = get_task("logreg")
    never = _under("logreg", "norm_test:eta=1e9,start=1,growth=1")
    assert never.key != fixed.key
    progs = [ADAMW, optdisco.catalog.get("sgd")]
    runs = [Run(0, 1e-2, 0), Run(1, 0.3, 1), Run(0, 3e-2, 1)]
    a = train(fixed, progs, runs, steps=12, n_evals=4)
    b = train(never, progs, runs, steps=12, n_evals=4)
    for x, y in zip(a, b):
        assert x.curve == y.curve and x.loss == y.loss and torch.equal(x.params, y.params)
        assert y.batch_sizes == [64] * 12 and y.steps_done == 12


def test_growing_batches_see_the_fixed_budget_and_do_not_depend_on_the_runs_beside_them():
    task = _under("logreg", GROWING)
    sgd = optdisco.catalog.get("sgd")
    (alone,) = train(task, [ADAMW], [Run(0, 1e-2, 1)], steps=16, n_evals=4)
    together = train(task, [sgd, ADAMW], [Run(0, 0.5, 0), Run(1, 1e-2, 1)], steps=16, n_evals=4)
    assert together[1].curve == alone.curve and together[1].batch_sizes == alone.batch_sizes
    for r in together:
        assert r.failure is None and sum(r.batch_sizes) == 16 * 64 and len(r.curve) == 4
        assert r.batch_sizes[0] == 16 and r.steps_done == len(r.batch_sizes)
    assert max(together[0].batch_sizes[:-1]) > 16, "the seeded task must make some batch grow"
    assert together[0].batch_sizes != together[1].batch_sizes, "each run has its own controller"


def _by_hand(rule: str, lr: float, spec: str, steps: int, n_evals: int = 8) -> tuple[list[float], list[int]]:
    """AdaGradNorm (or ``rule``) on logreg in plain torch (nn.Linear, F.cross_entropy) under the
    controller: batches taken in order from the seed's example stream, the norm test on each
    batch's per-example gradients before the step, lr_t = lr * s(n_t / 64) with n_t the examples
    seen after step t and s linear warmup over round(0.05 T) steps, then cosine to 0 at T.
    Returns the validation curve (at t * 64 examples for the fixed run's validation steps t)
    and the batch sizes."""
    task = get_task("logreg")
    data = task.dataset()
    w, b = task.init(seed_generator(task, 0, "init"))
    model = torch.nn.Linear(64, 10)
    with torch.no_grad():
        model.weight.copy_(w)
        model.bias.copy_(b)
    stream = task.sample(seed_generator(task, 0, "data"), steps).reshape(-1)
    budget, tw = len(stream), max(1, round(0.05 * steps))
    marks = [t * 64 for t in sorted({max(1, round(steps * (i + 1) / n_evals)) for i in range(n_evals)})]
    opt = optdisco.Optimizer(model.parameters(), rule, lr=lr, backend="eager")
    ctl = BatchSizeSpec.parse(spec).controller(64)
    seen, curve, sizes = 0, [], []
    while seen < budget:
        n = min(ctl.batch_size, budget - seen)
        idx = stream[seen:seen + n]
        x, y = data.x_train[idx], data.y_train[idx]
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        if seen + n < budget:
            ctl.update(per_sample_gradients(model, F.cross_entropy, x, y))
        t = (seen + n) / 64
        factor = t / tw if t <= tw else 0.5 * (1 + math.cos(math.pi * (t - tw) / (steps - tw)))
        opt.param_groups[0]["lr"] = lr * factor
        opt.step()
        sizes.append(n)
        with torch.no_grad():
            val = float(F.cross_entropy(model(data.x_val), data.y_val))
        curve += [val] * sum(seen < m <= seen + n for m in marks)
        seen += n
    return curve, sizes


@pytest.mark.parametrize("variant", ["norm", "coordinate"])
def test_evaluate_under_the_norm_test_equals_the_controller_driven_by_hand(tmp_path, variant):
    spec = f"{GROWING},variant={variant}"
    rule = optdisco.catalog.get("adagradnorm")
    (ev,) = evaluate([rule], tasks=["logreg"], budget=0.3, cache_dir=tmp_path, lr_grid=(0.3, 1.0), refine=None,
                     properties=False, batch_size=spec)
    assert ev.failure is None and math.isfinite(ev.fitness)
    curve, sizes = _by_hand("adagradnorm", ev.tuned_lr["logreg"], spec, steps=30)
    assert max(sizes[:-1]) > 16, "the batch must grow for the comparison to mean something"
    assert ev.curves is not None and len(ev.curves["logreg"]) == len(curve) == 8
    assert ev.curves["logreg"] == pytest.approx(curve, rel=1e-6)
    assert ev.losses["logreg"][0] == pytest.approx(curve[-1], rel=1e-6)
    (base,) = (tmp_path / "baselines").iterdir()
    assert "norm_test" in base.name, "the baseline trains under the controller too, cached apart"


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size="norm_test:eta=0"), "out of range"),
    (dict(batch_size="norm_test:variant=l1"), "variant"),
    (dict(batch_size="growing"), "batch-size control"),
    (dict(batch_size="fixed:eta=1"), "takes nothing"),
    (dict(batch_size="norm_test", tasks=["quadratic", "logreg"]), "quadratic"),
    (dict(batch_size="norm_test", gradients="rge:queries=2"), "backprop"),
])
def test_bad_batch_size_settings_are_refused_before_training(kwargs, match):
    with pytest.raises(ValueError, match=match):
        evaluate([ADAMW], **{"tasks": ["logreg"], **kwargs})
