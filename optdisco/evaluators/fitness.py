"""Fitness against the baseline: log loss ratios, a stratified bootstrap, probability of beating it.

Per task and seed, r = log(max(L_base, floor) / max(L_cand, floor)), clamped to
[WORST_LOG_RATIO, BEST_LOG_RATIO]; a failed candidate run scores WORST_LOG_RATIO.
Positive is better than the baseline. Fitness aggregates the per-task seed means
rbar_t over tasks (:func:`aggregate_fitness`): their mean (the default), their mean after
dividing each by the task's catalog spread ("standardized"), their median, or their
trimmed mean (the best and worst n // 5 tasks dropped), so that no single task decides.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

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
    # added 2026-12-02 (spread of 8 catalog rules at budget 0.5, benchmarks/proxy_selection.py)
    "adding": 0.800, "tabular": 0.064,
}
AGGREGATES = ("mean", "standardized", "median", "trimmed")


def standardized(ratios: Mapping[str, Sequence[float]],
                 scales: Mapping[str, float] | None = None) -> dict[str, list[float]]:
    """Each task's log-ratios divided by its catalog spread (``scales``, default :data:`TASK_SCALES`),
    clamped: r_t / s_t in [WORST_LOG_RATIO, BEST_LOG_RATIO]; a failure stays WORST_LOG_RATIO."""
    scales = TASK_SCALES if scales is None else scales
    return {t: [WORST_LOG_RATIO if r <= WORST_LOG_RATIO else
                float(min(max(r / scales.get(t, 1.0), WORST_LOG_RATIO), BEST_LOG_RATIO)) for r in v]
            for t, v in ratios.items()}


def mean_fitness(ratios: Mapping[str, Sequence[float]]) -> float:
    """Mean over tasks of the mean over seeds of the log ratios."""
    return float(np.mean([np.mean(v) for v in ratios.values()])) if ratios else WORST_LOG_RATIO


def trimmed_mean(values: Sequence[float]) -> float:
    """Mean of ``values`` without their n // 5 smallest and n // 5 largest (n = len(values)).

    With 5-9 tasks one task is dropped at each end, so neither the best nor the worst task
    moves the result by itself; below 5 it is the plain mean.
    """
    v = sorted(values)
    k = len(v) // 5
    return float(np.mean(v[k:len(v) - k])) if v else WORST_LOG_RATIO


def aggregate_fitness(ratios: Mapping[str, Sequence[float]], aggregate: str = "mean", *,
                      scales: Mapping[str, float] | None = None) -> float:
    """One number from per-task, per-seed log-ratios; rbar_t is task t's seed mean.

    "mean": mean_t rbar_t. "standardized": mean_t of r / s_t (:func:`standardized`, ``scales``
    or :data:`TASK_SCALES`). "median": median_t rbar_t. "trimmed": :func:`trimmed_mean` of
    the rbar_t.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, not {aggregate!r}")
    if not ratios:
        return WORST_LOG_RATIO
    if aggregate == "standardized":
        return mean_fitness(standardized(ratios, scales))
    per_task = [float(np.mean(v)) for v in ratios.values()]
    if aggregate == "median":
        return float(np.median(per_task))
    if aggregate == "trimmed":
        return trimmed_mean(per_task)
    return float(np.mean(per_task))


def catalog_spreads(per_task: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Each task's spread: the standard deviation over rules of their log-ratios there,
    s_t = std_rules(rbar_t); ``per_task`` maps task -> rule -> log-ratio (as :data:`TASK_SCALES`)."""
    return {t: float(np.std(list(v.values()))) for t, v in per_task.items() if v}


def noise_floor_text(floor: float) -> str:
    """How a result cites the noise floor: "noise floor +-|f|", f being AdamW against itself."""
    return f"noise floor ±{abs(floor):.3f}"


def bootstrap_ci(ratios: Mapping[str, Sequence[float]], *, n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0, statistic: Callable[[Sequence[float]], float] | None = None) -> tuple[float, float]:
    """Percentile CI of an aggregate over tasks under a bootstrap stratified by task.

    Each replicate resamples the seeds of every task with replacement (the task set is
    the fixed strata), takes each task's seed mean and applies ``statistic`` over tasks
    (the mean, :func:`mean_fitness`, when None). With one seed per task the interval
    collapses to the point estimate.
    """
    if not ratios:
        return WORST_LOG_RATIO, WORST_LOG_RATIO
    rng = np.random.default_rng(seed)
    per_task = np.zeros((len(ratios), n_boot))
    for i, v in enumerate(ratios.values()):
        v = np.asarray(v, dtype=float)
        idx = rng.integers(0, len(v), size=(n_boot, len(v)))
        per_task[i] = v[idx].mean(axis=1)
    if statistic is None:
        reps = per_task.mean(axis=0)
    else:
        reps = np.array([statistic(list(per_task[:, j])) for j in range(n_boot)])
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
