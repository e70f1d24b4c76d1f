"""The learned optimizer on a suite, scored exactly like a rule: LR-tuned, against tuned AdamW.

Per task (steps = round(task steps x budget)): every learning rate of the evaluators'
grid trains at once (one particle each) from the evaluators' own initialization and
minibatches of seed 0; the best validation loss picks the rate; the other seeds train at
it. The per-seed log ratios against the cached tuned-AdamW entry give the fitness (mean
over tasks of log(L_AdamW / L_learned)), as :func:`optdisco.evaluators.evaluate` does
for rules. A run that diverges scores the worst ratio.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ...evaluators import DEFAULT_LR_GRID, baseline_entry, get_task, log_ratio, steps_for, suite_tasks
from .es import new_inner, unroll
from .mlp_optimizer import MLPOptimizer


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
