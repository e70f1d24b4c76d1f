"""The learned optimizers on a suite, scored exactly like a rule: LR-tuned, against tuned AdamW.

:func:`evaluate_residual` (the residual optimizer) tunes the learning rate with the
evaluators' protocol (:mod:`optdisco.evaluators.tuning`, :func:`tune_lr` here): the grid
``DEFAULT_LR_GRID`` on seed 0, then the best times and divided by ``REFINE``, then up to
``extend`` steps outward while the best is at an edge; the lowest validation loss wins
(ties to the smaller rate) and the other seeds train at it. Its per-seed log ratios against
the cached tuned-AdamW entry give the fitness with a bootstrap interval over seeds.

:func:`evaluate_learned` (the MLP optimizer):

Per task (steps = round(task steps x budget)): every learning rate of the evaluators'
grid trains at once (one particle each) from the evaluators' own initialization and
minibatches of seed 0; the best validation loss picks the rate; the other seeds train at
it. The per-seed log ratios against the cached tuned-AdamW entry give the fitness (mean
over tasks of log(L_AdamW / L_learned)), as :func:`optdisco.evaluators.evaluate` does
for rules. A run that diverges scores the worst ratio.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from ...evaluators import DEFAULT_LR_GRID, baseline_entry, bootstrap_ci, get_task, log_ratio, steps_for, suite_tasks
from ...evaluators.tuning import REFINE
from .es import new_inner, unroll
from .mlp_optimizer import MLPOptimizer
from .residual_batched import train_residual


def _final_losses(mlp: MLPOptimizer, theta: torch.Tensor, task, lrs: Sequence[float], steps: int,
                  seed: int) -> list[float]:
    inner = new_inner(task, len(lrs), -1, seed, 1)
    thetas = theta.float().expand(len(lrs), -1)
    unroll(mlp, thetas, task, inner, steps=steps, horizon=steps, lr=torch.tensor(lrs), seed=seed)
    with torch.no_grad():
        val = task.val_loss(inner.params)
    return [float(v) if (not d and math.isfinite(float(v))) else math.inf for v, d in zip(val, inner.dead)]


def evaluate_learned(mlp: MLPOptimizer, theta: torch.Tensor, *, suite: str = "proxy",
                     tasks: Sequence[str] | None = None, seeds: int = 1, budget: float = 1.0,
                     grid: Sequence[float] = DEFAULT_LR_GRID, cache_dir: str | None = None) -> dict:
    """``{"fitness", "per_task", "tuned_lr", "losses"}`` of the learned optimizer (see the module doc)."""
    names = list(tasks) if tasks else suite_tasks(suite)
    per_task, tuned, losses = {}, {}, {}
    for name in names:
        task = get_task(name)
        steps = steps_for(task, budget)
        seed_list = list(range(max(1, seeds)))
        base = baseline_entry(task, steps=steps, seeds=seed_list, cache_dir=cache_dir, properties=False)
        first = _final_losses(mlp, theta, task, list(grid), steps, 0)
        k = int(np.argmin(first))
        lr = float(grid[k])
        mine = [first[k]] + [_final_losses(mlp, theta, task, [lr], steps, s)[0] for s in seed_list[1:]]
        ratios = [log_ratio(base["losses"][str(s)], l, task.loss_floor) for s, l in zip(seed_list, mine)]
        per_task[name] = float(np.mean(ratios))
        tuned[name] = lr if math.isfinite(first[k]) else math.nan
        losses[name] = mine
    return {"fitness": float(np.mean(list(per_task.values()))), "per_task": per_task,
            "tuned_lr": tuned, "losses": losses}


def tune_lr(losses_at: Callable[[list[float], int], list[float]], seeds: Sequence[int], *,
            grid: Sequence[float] = DEFAULT_LR_GRID, refine: float | None = REFINE,
            extend: int = 2) -> tuple[float, list[float], dict[float, float]]:
    """The evaluators' tuning protocol (see the module doc) over ``losses_at(lrs, seed)``, which
    trains one run per rate; returns ``(lr, loss per seed, {lr: seed-0 loss})`` (nan, infs if
    every rate failed)."""
    s0 = seeds[0]
    tried: dict[float, float] = {}

    def stage(lrs: list[float]) -> None:
        lrs = [lr for lr in lrs if lr not in tried]
        if lrs:
            tried.update(zip(lrs, losses_at(lrs, s0)))

    def best() -> float | None:
        ok = [(loss, lr) for lr, loss in tried.items() if math.isfinite(loss)]
        return min(ok)[1] if ok else None

    stage(list(grid))
    if refine and best() is not None:
        b = best()
        assert b is not None
        stage([b / refine, b * refine])
        for _ in range(extend):  # the best at the edge of what was tried: step outward
            b = best()
            assert b is not None
            if b >= max(tried):
                stage([b * refine])
            elif b <= min(tried):
                stage([b / refine])
            else:
                break
    lr = best()
    if lr is None:
        return math.nan, [math.inf] * len(seeds), tried
    rest = [losses_at([lr], s)[0] for s in seeds[1:]]
    return lr, [tried[lr], *rest], tried


def evaluate_residual(theta: "np.ndarray | torch.Tensor", *, hidden: int, alpha: float, base: str = "adamw",
                      suite: str = "proxy", tasks: Sequence[str] | None = None, seeds: int = 1,
                      budget: float = 1.0, grid: Sequence[float] = DEFAULT_LR_GRID,
                      refine: float | None = REFINE, cache_dir: str | None = None,
                      on_task: Callable[[str, float, float], None] | None = None) -> dict:
    """``{"fitness", "ci", "per_task", "ratios", "tuned_lr", "losses"}`` of the residual optimizer
    with weights ``theta`` against tuned AdamW: fitness = mean over tasks of the mean over seeds
    of ``log(L_AdamW / L)``; ``ci`` the 95% bootstrap interval (:func:`bootstrap_ci`)."""
    names = list(tasks) if tasks else suite_tasks(suite)
    th = np.asarray(theta, dtype=np.float32).reshape(1, -1)
    seed_list = list(range(max(1, seeds)))
    ratios: dict[str, list[float]] = {}
    tuned, losses = {}, {}
    for name in names:
        task = get_task(name)
        steps = steps_for(task, budget)
        ref = baseline_entry(task, steps=steps, seeds=seed_list, grid=grid, refine=refine, cache_dir=cache_dir,
                             properties=False)

        def losses_at(lrs: list[float], seed: int, task=task, steps=steps) -> list[float]:
            return train_residual(task, np.repeat(th, len(lrs), axis=0), lrs, [seed] * len(lrs), steps=steps,
                                  hidden=hidden, alpha=alpha, base=base).val_loss

        lr, mine, _ = tune_lr(losses_at, seed_list, grid=grid, refine=refine)
        ratios[name] = [log_ratio(ref["losses"][str(s)], loss, task.loss_floor) for s, loss in zip(seed_list, mine)]
        tuned[name], losses[name] = lr, mine
        if on_task:
            on_task(name, float(np.mean(ratios[name])), lr)
    per_task = {n: float(np.mean(r)) for n, r in ratios.items()}
    return {"fitness": float(np.mean(list(per_task.values()))), "ci": bootstrap_ci(ratios), "per_task": per_task,
            "ratios": ratios, "tuned_lr": tuned, "losses": losses}
