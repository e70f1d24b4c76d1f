"""What ``optdisco eval`` prints: the evaluation table and the task list (the CLI stays thin)."""

from __future__ import annotations

import math

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..dsl import Program
from ..evaluators.evaluate import DEFAULT_SEEDS, evaluate, noise_floor, steps_for  # noqa: F401 (cmd_eval reads it)
from ..evaluators.fitness import noise_floor_text
from ..evaluators.tasks import SUITES, get_task


def _fmt(x: float, digits: int = 4) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def eval_command(rule: Program, tasks: list[str] | None, suite: str, seeds: int, budget: float,
                 cache_dir: str | None = None) -> Group:
    """Evaluate ``rule`` against tuned AdamW; a table per task (losses, log ratio, tuned lrs) and a summary.

    Log ratio = log(L_AdamW / L_rule): positive means the rule reached a lower validation loss.
    """
    (ev,) = evaluate([rule], suite=suite, tasks=tasks, seeds=seeds, budget=budget, cache_dir=cache_dir)
    table = Table(title=f"{rule.name} vs tuned AdamW ({suite if not tasks else ', '.join(tasks)}; "
                        f"{seeds} seed{'s' if seeds != 1 else ''}, budget {budget:g})")
    for col in ("task", "rule loss", "AdamW loss", "log ratio", "rule lr", "AdamW lr", "note"):
        table.add_column(col, justify="left" if col in ("task", "note") else "right")
    for task, r in ev.per_task.items():
        mean = lambda v: sum(v) / len(v)  # noqa: E731
        style = "green" if r > 0 else ("red" if r < 0 else None)
        table.add_row(task, _fmt(mean(ev.losses[task])), _fmt(mean(ev.baseline_losses[task])),
                      Text(f"{r:+.3f}", style=style or ""), _fmt(ev.tuned_lr[task], 3),
                      _fmt(ev.baseline_lr[task], 3), ev.failures.get(task, "")[:60])
    floor = ""
    if suite == "heldout":  # a held-out judgment is read against AdamW's own rounding noise
        nf = noise_floor(suite=suite, tasks=tasks, seeds=seeds, budget=budget, cache_dir=cache_dir)
        floor = f"  {noise_floor_text(nf.fitness)}"
    summary = Text(f"fitness {ev.fitness:+.3f}  95% CI [{ev.ci_low:+.3f}, {ev.ci_high:+.3f}]  "
                   f"P(beats AdamW) {ev.p_beats_baseline:.2f}{floor}  ({ev.seconds:.1f}s)")
    return Group(table, summary)


def list_tasks_table() -> Table:
    """Every task with its suite, parameter count (cpu and gpu sizes), default steps and batch size."""
    table = Table(title="evaluation tasks")
    for col in ("task", "suite", "params", "gpu params", "steps", "batch", "description"):
        table.add_column(col, justify="right" if col in ("params", "gpu params", "steps", "batch") else "left")
    for suite, names in SUITES.items():
        for name in names:
            t = get_task(name)
            gpu = get_task(name, "gpu").n_params if suite != "proxy" else None
            table.add_row(name, suite, f"{t.n_params:,}", f"{gpu:,}" if gpu else "-",
                          str(steps_for(t, 1.0)), str(t.batch_size), t.description)
    return table
