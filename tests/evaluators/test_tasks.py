import math

import pytest
import torch

from optdisco.evaluators import ADAMW, FACTORIES, SUITES, Run, get_task, suite_tasks, train
from optdisco.evaluators.train import seed_generator

PROXY_REQUIRED = {"quadratic", "rosenbrock", "logreg", "digits_mlp", "digits_cnn", "mnist1d", "char_lm",
                  "teacher_student", "autoencoder"}


def test_suites_are_disjoint_and_complete():
    assert PROXY_REQUIRED <= set(suite_tasks("proxy"))
    assert len(suite_tasks("heldout")) >= 5
    assert not set(SUITES["proxy"]) & set(SUITES["heldout"])
    with pytest.raises(KeyError, match="quadratic"):
        get_task("quadratik")


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_task_losses_finite_and_batched(name):
    task = get_task(name)
    p0 = task.init(seed_generator(task, 0, "init"))
    p1 = task.init(seed_generator(task, 1, "init"))
    assert [tuple(p.shape) for p in p0] == [s for _, s in task.shapes]
    params = [torch.stack([a, b]) for a, b in zip(p0, p1)]
    batch = task.sample(seed_generator(task, 0, "data"), 2)
    tr = task.train_loss(params, torch.stack([batch[0], batch[0]]))
    va = task.val_loss(params)
    assert tr.shape == va.shape == (2,)
    assert torch.isfinite(tr).all() and torch.isfinite(va).all()
    # problem 0 alone gives the same loss as inside the batch
    alone = task.val_loss([p[:1] for p in params])
    assert torch.allclose(alone, va[:1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(SUITES["proxy"]))
def test_adamw_reduces_validation_loss(name):
    task = get_task(name)
    init = task.val_loss([p.unsqueeze(0) for p in task.init(seed_generator(task, 0, "init"))]).item()
    (res,) = train(task, [ADAMW], [Run(0, 1e-2, 0)], steps=min(task.steps, 60))
    assert res.failure is None and math.isfinite(res.loss)
    assert res.loss < init


def test_gpu_sizes_are_large():
    assert get_task("ho_char_lm", "gpu").n_params > 10_000_000
    assert get_task("ho_digits_cnn", "gpu").n_params > get_task("ho_digits_cnn").n_params * 10
    assert len([s for s in get_task("ho_digits_cnn", "gpu").shapes if s[0].startswith("conv")]) >= 6


def test_validate_suite_has_resnet_and_mixer_outside_the_funnel():
    from optdisco.evaluators.heldout_scale import validate_tasks
    assert {"ho_resnet", "ho_mixer"} <= set(suite_tasks("validate"))
    assert not set(SUITES["validate"]) & (set(SUITES["heldout"]) | set(SUITES["proxy"]))
    assert validate_tasks()[:len(SUITES["heldout"])] == SUITES["heldout"]
    assert any(name.startswith("proj.") for name, _ in get_task("ho_resnet").shapes)  # residual stages
    for name in ("ho_resnet", "ho_mixer"):
        assert get_task(name).n_params < 5_000                        # cpu size stays tiny
        assert 1_000_000 < get_task(name, "gpu").n_params < 100_000_000
