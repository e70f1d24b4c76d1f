"""Evaluators: proxy and held-out tasks, batched training, fair LR tuning, fitness against AdamW.

``evaluate(programs, suite="proxy")`` is the search's entry point; see :mod:`.evaluate`.
"""

from .baseline import ADAMW, ADAMW_SOURCE, baseline_program
from .evaluate import DEFAULT_SEEDS, QUICK_TASKS, Evaluation, NoiseFloor, baseline_entry, evaluate, noise_floor, steps_for
from .fitness import (BEST_LOG_RATIO, WORST_LOG_RATIO, aggregate_fitness, bootstrap_ci, log_ratio, mean_fitness,
                      prob_beats, trimmed_mean)
from .properties import solution_properties
from .tasks import FACTORIES, SUITES, Task, get_task, suite_tasks
from .train import Run, RunResult, train
from .tuning import DEFAULT_LR_GRID, tune

# Importing the held-out suites registers them in the task registry; they live in their own
# modules (the search never uses them) and import tasks.py, so tasks.py cannot import them.
from . import heldout as _heldout  # noqa: F401
from . import heldout_scale as _heldout_scale  # noqa: F401

__all__ = ["WORST_LOG_RATIO", "BEST_LOG_RATIO", "Evaluation", "evaluate", "QUICK_TASKS", "ADAMW",
           "DEFAULT_SEEDS", "NoiseFloor", "noise_floor", "aggregate_fitness", "trimmed_mean",
           "ADAMW_SOURCE", "baseline_program", "baseline_entry", "steps_for", "bootstrap_ci",
           "log_ratio", "mean_fitness", "prob_beats", "solution_properties", "FACTORIES", "SUITES",
           "Task", "get_task", "suite_tasks", "Run", "RunResult", "train", "DEFAULT_LR_GRID", "tune"]
