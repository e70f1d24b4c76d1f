"""Learning-rate tuning with the same budget for every rule: a log grid, then one refinement.

Stage 1 trains every program at each grid learning rate (seed 0 of the seeds asked for);
stage 2 tries the best point times and divided by ``refine`` (half a decade by default);
while a program's best is the largest (smallest) rate it tried, up to ``extend`` more
stages step outward by ``refine``; the lowest validation loss wins. Stage 3 trains the remaining seeds at the tuned rate.
All programs of a stage train as one batched computation. A program none of whose
learning rates gives a finite loss fails on the task, with the reason of its smallest
learning rate (a rule error is reported as such).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..dsl import Program
from .tasks import Task
from .train import Run, RunResult, train

DEFAULT_LR_GRID: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
REFINE = 10 ** 0.5


@dataclass
class Tuned:
    """A program tuned on one task: learning rate, loss per seed, curve and weights of seed 0."""

    lr: float
    losses: list[float]
    curve: list[float]
    failure: str | None
    params: torch.Tensor | None = None
    tried: dict[float, float] = field(default_factory=dict)  # lr -> seed-0 loss

    @property
    def ok(self) -> bool:
        return self.failure is None


def tune(task: Task, programs: Sequence[Program], *, seeds: Sequence[int], steps: int,
         grid: Sequence[float] = DEFAULT_LR_GRID, refine: float | None = REFINE,
         time_limit: float | None = None, extend: int = 2, threads: int = 1) -> list[Tuned]:
    """Tune each program's peak learning rate on ``task`` and train ``seeds`` at it (see module
    doc); ``threads`` CPU cores (:func:`optdisco.evaluators.train.train`: the same numbers)."""
    K, s0 = len(programs), seeds[0]
    results: list[list[tuple[float, RunResult]]] = [[] for _ in range(K)]

    def stage(runs: list[Run]) -> None:
        if runs:
            for r, res in zip(runs, train(task, programs, runs, steps=steps, time_limit=time_limit,
                                                threads=threads)):
                results[r.program].append((r.lr, res))

    def best(k: int) -> tuple[float, RunResult] | None:
        ok = [(lr, r) for lr, r in results[k] if r.failure is None]
        return min(ok, key=lambda x: (x[1].loss, x[0])) if ok else None

    def rule_error(k: int) -> bool:
        return any(r.failure and r.failure.startswith(("rule error", "time limit")) for _, r in results[k])

    stage([Run(k, lr, s0) for k in range(K) for lr in grid])
    if refine:
        runs = []
        for k in range(K):
            b = best(k)
            if b is not None and not rule_error(k):
                runs += [Run(k, b[0] / refine, s0), Run(k, b[0] * refine, s0)]
        stage(runs)
        for _ in range(extend):  # the best at the edge of what was tried: step outward
            runs = []
            for k in range(K):
                b = best(k)
                if b is None or rule_error(k):
                    continue
                tried = [lr for lr, _ in results[k]]
                if b[0] >= max(tried):
                    runs.append(Run(k, b[0] * refine, s0))
                elif b[0] <= min(tried):
                    runs.append(Run(k, b[0] / refine, s0))
            if not runs:
                break
            stage(runs)

    out: list[Tuned] = []
    for k in range(K):
        b = best(k)
        tried = {lr: r.loss for lr, r in results[k]}
        if b is None or rule_error(k):
            failed = sorted(results[k], key=lambda x: x[0])
            reason = next((r.failure for _, r in failed if r.failure and r.failure.startswith(("rule", "time"))),
                          failed[0][1].failure if failed else "no runs")
            out.append(Tuned(math.nan, [math.inf] * len(seeds), [], reason, None, tried))
        else:
            out.append(Tuned(b[0], [b[1].loss], b[1].curve, None, b[1].params, tried))
    extra = [Run(k, out[k].lr, s) for k in range(K) if out[k].ok for s in seeds[1:]]
    if extra:
        for r, res in zip(extra, train(task, programs, extra, steps=steps, time_limit=time_limit,
                                        keep_params=False, threads=threads)):
            out[r.program].losses.append(res.loss)
    return out
