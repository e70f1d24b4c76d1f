"""Fitness against the baseline: log loss ratios, a stratified bootstrap, probability of beating it.

Per task and seed, r = log(max(L_base, floor) / max(L_cand, floor)), clamped to
[WORST_LOG_RATIO, BEST_LOG_RATIO]; a failed candidate run scores WORST_LOG_RATIO.
Positive is better than the baseline. Fitness is the mean over tasks of the per-task
seed means.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

WORST_LOG_RATIO = -10.0
BEST_LOG_RATIO = 10.0


def log_ratio(baseline_loss: float, candidate_loss: float, floor: float = 0.0) -> float:
    """log(max(L_b, floor) / max(L_c, floor)), clamped; WORST_LOG_RATIO if L_c is not finite."""
    if not math.isfinite(candidate_loss):
        return WORST_LOG_RATIO
    if not math.isfinite(baseline_loss):
        return BEST_LOG_RATIO
    b, c = max(baseline_loss, floor, 1e-30), max(candidate_loss, floor, 1e-30)
    return float(min(max(math.log(b / c), WORST_LOG_RATIO), BEST_LOG_RATIO))


#: Spread (standard deviation) of 12 catalog rules' log-ratios on each proxy task at budget
#: 1.0, measured 2026-11-29 (benchmarks/proxy_selection.py prints them). Dividing by it puts tasks on
#: one scale: the plain mean is ruled by rosenbrock (spread 1.7) while the tasks that
#: predict the held-out ranking best spread 0.03. Tasks not listed keep scale 1.
TASK_SCALES: dict[str, float] = {
    "quadratic": 0.271, "rosenbrock": 1.706, "logreg": 0.232, "digits_mlp": 0.457, "digits_cnn": 0.275,
    "mnist1d": 0.084, "char_lm": 0.029, "teacher_student": 0.044, "autoencoder": 0.025,
}
AGGREGATES = ("mean", "standardized")


def standardized(ratios: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
    """Each task's log-ratios divided by its catalog spread (:data:`TASK_SCALES`), clamped:
    r_t / s_t in [WORST_LOG_RATIO, BEST_LOG_RATIO]; a failure stays WORST_LOG_RATIO."""
    return {t: [WORST_LOG_RATIO if r <= WORST_LOG_RATIO else
                float(min(max(r / TASK_SCALES.get(t, 1.0), WORST_LOG_RATIO), BEST_LOG_RATIO)) for r in v]
            for t, v in ratios.items()}


def mean_fitness(ratios: Mapping[str, Sequence[float]]) -> float:
    """Mean over tasks of the mean over seeds of the log ratios."""
    return float(np.mean([np.mean(v) for v in ratios.values()])) if ratios else WORST_LOG_RATIO


def bootstrap_ci(ratios: Mapping[str, Sequence[float]], *, n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile CI of :func:`mean_fitness` under a bootstrap stratified by task.

    Each replicate resamples the seeds of every task with replacement (the task set is
    the fixed strata) and recomputes the mean over tasks of seed means. With one seed per
    task the interval collapses to the point estimate.
    """
    if not ratios:
        return WORST_LOG_RATIO, WORST_LOG_RATIO
    rng = np.random.default_rng(seed)
    reps = np.zeros(n_boot)
    for v in ratios.values():
        v = np.asarray(v, dtype=float)
        idx = rng.integers(0, len(v), size=(n_boot, len(v)))
        reps += v[idx].mean(axis=1)
    reps /= len(ratios)
    alpha = (1 - level) / 2
    return float(np.quantile(reps, alpha)), float(np.quantile(reps, 1 - alpha))


def prob_beats(baseline: Mapping[str, Sequence[float]], candidate: Mapping[str, Sequence[float]]) -> float:
    """Probability of improvement (Agarwal et al., 2021), averaged over tasks.

    Per task: P(L_cand < L_base) over all (candidate seed, baseline seed) pairs, ties
    counting one half; failed (non-finite) candidate runs lose.
    """
    per_task = []
    for t, c in candidate.items():
        b = baseline[t]
        wins = 0.0
        for x in c:
            for y in b:
                x_ = x if math.isfinite(x) else math.inf
                wins += 1.0 if x_ < y else (0.5 if x_ == y else 0.0)
        per_task.append(wins / (len(c) * len(b)))
    return float(np.mean(per_task)) if per_task else 0.0
