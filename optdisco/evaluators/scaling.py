"""Data-equivalent speedup over AdamW, as in "Fantastic Pretraining Optimizers" (Wen et al., 2025).

Tuned AdamW is trained at several budgets, each with its own fully decayed schedule (never
a mid-run checkpoint); its final losses are fit with L(D) = a * D^-b + c, D the number of
training examples (tokens for the LM) seen. For a candidate's final loss L_cand at data D,
D_eff = (a / (L_cand - c))^(1/b) is the data AdamW would need to reach it, and the speedup
is D_eff / D (infinite when L_cand is below AdamW's fitted asymptote c).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..dsl import Program
from .evaluate import baseline_entry, steps_for
from .tasks import get_task
from .tuning import DEFAULT_LR_GRID, REFINE, tune


@dataclass(frozen=True)
class PowerLaw:
    """L(D) = a * D^-b + c."""

    a: float
    b: float
    c: float

    def __call__(self, d: float) -> float:
        return self.a * d ** -self.b + self.c

    def data_for(self, loss: float) -> float:
        """The D with L(D) = loss: (a / (loss - c))^(1/b); inf at or below c, nan without a fit."""
        if not (self.b > 0 and self.a > 0) or not math.isfinite(loss):
            return math.nan
        if loss <= self.c:
            return math.inf
        return (self.a / (loss - self.c)) ** (1.0 / self.b)


def fit_power_law(data: Sequence[float], losses: Sequence[float], n_grid: int = 400) -> PowerLaw:
    """Least squares of log(L - c) = log a - b log D over a grid of c in [0, min L).

    For each c the fit is linear in (log a, b); the c with the smallest squared error in
    log space wins. Returns b = 0 (no fit) when the losses do not fall with D.
    """
    D = np.asarray(data, dtype=float)
    L = np.asarray(losses, dtype=float)
    ok = np.isfinite(L) & (L > 0)
    D, L = D[ok], L[ok]
    if len(D) < 3:
        return PowerLaw(math.nan, 0.0, math.nan)
    lo = L.min()
    best = None
    for q in np.concatenate([[1.0], np.logspace(-6, 0, n_grid, endpoint=False)]):
        c = lo * (1.0 - q)
        y = np.log(L - c)
        X = np.stack([np.ones_like(D), -np.log(D)], axis=1)
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        if coef[1] <= 0:
            continue
        sse = float(np.sum((X @ coef - y) ** 2))
        if best is None or sse < best[0]:
            best = (sse, PowerLaw(float(math.exp(coef[0])), float(coef[1]), float(c)))
    return best[1] if best else PowerLaw(math.nan, 0.0, math.nan)


@dataclass
class Speedup:
    """AdamW's losses at each budget, the fit, and the candidate's data-equivalent speedup."""

    task: str
    budgets: list[float]
    data: list[float]
    adamw_losses: list[float]
    fit: PowerLaw
    candidate_loss: float
    candidate_data: float
    d_eff: float
    speedup: float      # D_eff / D


def data_equivalent_speedup(program: Program, task: str, *, budgets: Sequence[float] = (0.5, 1.0, 2.0, 4.0),
                            candidate_budget: float = 1.0, seeds: int = 1,
                            lr_grid: Sequence[float] = DEFAULT_LR_GRID, cache_dir: "str | Path | None" = None,
                            scale: str = "cpu") -> Speedup:
    """D_eff / D of ``program`` on ``task`` against tuned AdamW (module doc); losses are seed means."""
    t = get_task(task, scale)
    seed_list = list(range(max(1, seeds)))
    data, losses = [], []
    for b in budgets:
        steps = steps_for(t, b)
        entry = baseline_entry(t, steps=steps, seeds=seed_list, grid=lr_grid, refine=REFINE, scale=scale,
                               cache_dir=cache_dir, properties=False)
        data.append(float(steps * t.examples_per_step))
        losses.append(float(np.mean([entry["losses"][str(s)] for s in seed_list])))
    fit = fit_power_law(data, losses)
    steps = steps_for(t, candidate_budget)
    (tuned,) = tune(t, [program], seeds=seed_list, steps=steps, grid=lr_grid)
    cand = float(np.mean(tuned.losses)) if tuned.ok else math.inf
    d = float(steps * t.examples_per_step)
    d_eff = fit.data_for(cand) if tuned.ok else 0.0
    return Speedup(task, list(budgets), data, losses, fit, cand, d, d_eff, d_eff / d)
