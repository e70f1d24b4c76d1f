"""The batched evaluator on zeroth-order gradients: it learns, it is batch-independent, and
every rule and the baseline see the same estimates."""

from __future__ import annotations

import dataclasses
import math

import pytest

import optdisco
from optdisco.evaluators import ADAMW, Run, evaluate, get_task, train


def _zo(name: str, spec: str):
    return dataclasses.replace(get_task(name), gradients=spec)


def test_rge_training_learns_and_a_run_does_not_depend_on_the_runs_beside_it():
    task = _zo("logreg", "rge:queries=4,mu=0.001")
    assert task.key != get_task("logreg").key
    sgd = optdisco.catalog.get("sgd")
    (alone,) = train(task, [ADAMW], [Run(0, 1e-2, 1)], steps=40, n_evals=4)
    together = train(task, [sgd, ADAMW], [Run(0, 0.5, 0), Run(1, 1e-2, 1), Run(1, 1e-2, 0)], steps=40, n_evals=4)
    assert together[1].curve == alone.curve, "batching must not change a run's directions"
    (start,) = train(task, [ADAMW], [Run(0, 0.0, 1)], steps=2, n_evals=1)
    assert alone.failure is None and alone.loss < 0.9 * start.loss


def test_cge_at_full_density_follows_backprop_on_the_quadratic():
    back = get_task("quadratic")
    zo = _zo("quadratic", "cge:mu=1e-5")
    (b,) = train(back, [ADAMW], [Run(0, 0.05, 0)], steps=30, n_evals=3)
    (z,) = train(zo, [ADAMW], [Run(0, 0.05, 0)], steps=30, n_evals=3)
    assert z.failure is None
    assert z.curve == pytest.approx(b.curve, rel=0.05)


def test_sparse_cge_in_worker_processes_gives_the_same_numbers_as_one_process():
    task = _zo("logreg", "cge:density=0.05,mu=0.001")
    progs = [ADAMW, optdisco.catalog.get("lion")]
    runs = [Run(0, 1e-2, 0), Run(1, 1e-3, 0)]
    one = train(task, progs, runs, steps=10, n_evals=2, threads=1)
    two = train(task, progs, runs, steps=10, n_evals=2, threads=2)
    assert [r.curve for r in one] == [r.curve for r in two]
    assert all(math.isfinite(r.loss) for r in one)


def test_evaluate_on_zeroth_order_gradients_keeps_its_own_baseline(tmp_path):
    (ev,) = evaluate([optdisco.catalog.get("sgd")], tasks=["logreg"], budget=0.2, cache_dir=tmp_path,
                     lr_grid=(1e-2, 1e-1), refine=None, properties=False, gradients="rge:queries=2")
    assert math.isfinite(ev.fitness) and "logreg" in ev.per_task
    names = [p.name for p in (tmp_path / "baselines").iterdir()]
    assert len(names) == 1 and "rge:mu=0.001,queries=2" in names[0]
    with pytest.raises(ValueError, match="gradient"):
        evaluate([ADAMW], tasks=["logreg"], gradients="finite-differences")
