"""``evaluate``: candidates against the tuned baseline on a suite of tasks.

For each task (steps = round(default steps * budget)): the baseline's tuned entry comes
from the on-disk cache or is computed once; all candidates are tuned together with the
same learning-rate budget (:func:`.tuning.tune`, one batched computation per stage); the
per-seed validation losses give log ratios, fitness, a bootstrap CI and the probability
of beating the baseline (:mod:`.fitness`). Nothing here raises for a bad rule: failures
become WORST_LOG_RATIO with a reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..dsl import Program
from ..training import BatchSizeSpec, GradientSpec
from . import cache
from .baseline import baseline_program
from .fitness import (AGGREGATES, aggregate_fitness, bootstrap_ci, log_ratio, prob_beats, standardized,
                      trimmed_mean)
from .properties import solution_properties
from .tasks import Task, get_task, suite_tasks
from .tuning import DEFAULT_LR_GRID, REFINE, tune
from .train import train, Run

#: A cheap subset, one task of each kind (0.24 s per rule at budget 0.5, rules evaluated together).
#: Campaigns default to a wider set, see ``optdisco/search/defaults.toml``.
QUICK_TASKS = ["quadratic", "logreg", "digits_mlp", "teacher_student"]
#: Seeds per judgment when a caller does not say: a single-seed held-out result carries
#: noise of the size of the effects it judges (catalog AdamW scored +0.17 on one task, one seed).
DEFAULT_SEEDS = {"proxy": 1, "heldout": 2}


#: The statistic over tasks each aggregate's bootstrap recomputes (the mean when absent).
_STATISTICS = {"median": np.median, "trimmed": trimmed_mean}


@dataclass
class Evaluation:
    """A candidate's result on a suite (see the module doc for how each number is computed)."""

    fitness: float                     # mean over tasks of log(baseline_loss / candidate_loss)
    per_task: dict[str, float]         # task -> log ratio (seed-mean)
    ci_low: float
    ci_high: float                     # 95% stratified bootstrap CI (= fitness with one seed)
    p_beats_baseline: float
    tuned_lr: dict[str, float]         # task -> tuned peak learning rate (nan if failed)
    losses: dict[str, list[float]]     # task -> final validation loss per seed
    failure: str | None                # why it diverged/failed on some task (None if fine)
    seconds: float
    curves: dict[str, list[float]] | None = None        # task -> validation curve at the tuned lr
    baseline_losses: dict[str, list[float]] = field(default_factory=dict)
    baseline_lr: dict[str, float] = field(default_factory=dict)
    properties: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> solution properties
    failures: dict[str, str] = field(default_factory=dict)                  # task -> reason


def steps_for(task: Task, budget: float) -> int:
    """Number of updates at ``budget`` (a multiple of the task's default)."""
    return max(2, int(round(task.steps * budget)))


def baseline_entry(task: Task, *, steps: int, seeds: Sequence[int], rule: "str | Program" = "adamw",
                   grid: Sequence[float] = DEFAULT_LR_GRID, refine: float | None = REFINE,
                   scale: str = "cpu", cache_dir: "str | Path | None" = None,
                   properties: bool = True) -> dict:
    """The tuned baseline on ``task`` at ``steps``: {"lr", "losses": {seed: loss}, "curve", "properties"}.

    Read from the cache when present; missing seeds are trained at the cached learning
    rate and added; a miss tunes from scratch and stores the entry.
    """
    prog = baseline_program(rule)
    where = scale if task.device == "cpu" else f"{scale}-{torch.device(task.device).type}"
    path = cache.entry_path(cache.cache_root(cache_dir), task, prog, steps, grid, refine, where)
    entry = cache.load(path)
    if entry is None:
        (tuned,) = tune(task, [prog], seeds=list(seeds), steps=steps, grid=grid, refine=refine)
        props = solution_properties(task, [tuned.params], seeds[:1])[0] if properties and tuned.ok else {}
        entry = {"task": task.key, "rule": prog.name, "steps": steps, "lr": tuned.lr,
                 "losses": {str(s): l for s, l in zip(seeds, tuned.losses)}, "curve": tuned.curve,
                 "properties": props, "failure": tuned.failure, "first_seed": seeds[0]}
        cache.store(path, entry)
        return entry
    missing = [s for s in seeds if str(s) not in entry["losses"]]
    if missing and math.isfinite(entry["lr"]):
        res = train(task, [prog], [Run(0, entry["lr"], s) for s in missing], steps=steps, keep_params=False)
        entry["losses"].update({str(s): r.loss for s, r in zip(missing, res)})
        cache.store(path, entry)
    return entry


def evaluate(programs: Sequence[Program], *, suite: str = "proxy", tasks: Sequence[str] | None = None,
             seeds: int = 1, budget: float = 1.0, lr_grid: Sequence[float] = DEFAULT_LR_GRID,
             time_limit: float | None = None, cache_dir: "str | Path | None" = None,
             baseline: "str | Program" = "adamw", scale: str = "cpu", refine: float | None = REFINE,
             properties: bool = True, curves: bool = True, device: str = "cpu",
             aggregate: str = "mean", threads: int = 1, gradients: str = "backprop",
             batch_size: str = "fixed") -> list[Evaluation]:
    """Evaluate each program on the tasks of ``suite`` (or ``tasks``) against the tuned baseline.

    ``aggregate``: "mean" (fitness = mean over tasks of the log-ratios), "standardized"
    (each task's log-ratios first divided by its catalog spread, :func:`fitness.standardized`),
    "median" or "trimmed" (over tasks, :func:`fitness.aggregate_fitness`); ``per_task``
    stays in plain log-ratios either way.

    ``seeds`` seeds 0..seeds-1; ``budget`` scales each task's default steps; ``time_limit``
    is seconds per program for the whole evaluation (a program over it fails the remaining
    tasks). All programs train together, batched, on ``device``; on CPU, ``threads`` cores
    train different programs side by side (the numbers do not change with it).
    ``gradients``: "backprop", or a zeroth-order estimator (:class:`optdisco.training.GradientSpec`
    text, e.g. "rge:queries=8,mu=0.001"); every program and the baseline then train on the
    same estimates (the same random directions per seed).
    ``batch_size``: "fixed", or the norm test growing every run's batch
    (:class:`optdisco.training.BatchSizeSpec` text, e.g. "norm_test:eta=1,start=0.25"): every
    program and the baseline then train under their own controllers until they have seen the
    fixed runs' number of examples (:mod:`.train`). Returns one :class:`Evaluation` per program.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, not {aggregate!r}")
    gradients = GradientSpec.parse(gradients).text()
    batch_size = BatchSizeSpec.parse(batch_size).text()
    names = list(tasks) if tasks else suite_tasks(suite)
    if batch_size != "fixed":
        if gradients != "backprop":
            raise ValueError("batch_size = norm_test needs per-example gradients, so gradients must be backprop")
        no_examples = [n for n in names if not get_task(n, scale, device).example_batches]
        if no_examples:
            raise ValueError(f"batch_size = norm_test grows minibatches of examples, which "
                             f"{', '.join(no_examples)} do not have; leave them out of the tasks")
    t_start = time.perf_counter()
    seed_list = list(range(max(1, seeds)))
    K = len(programs)
    ratios: list[dict[str, list[float]]] = [{} for _ in range(K)]
    results = [Evaluation(0.0, {}, 0.0, 0.0, 0.0, {}, {}, None, 0.0, {} if curves else None) for _ in range(K)]
    base_losses: dict[str, list[float]] = {}
    dead: dict[int, str] = {}   # program -> reason it fails every remaining task
    spent = [0.0] * K

    for name in names:
        task = get_task(name, scale, device)
        if gradients != "backprop" or batch_size != "fixed":
            task = dataclasses.replace(task, gradients=gradients, batch_schedule=batch_size)
        steps = steps_for(task, budget)
        entry = baseline_entry(task, steps=steps, seeds=seed_list, rule=baseline, grid=lr_grid,
                               refine=refine, scale=scale, cache_dir=cache_dir, properties=properties)
        b_losses = [entry["losses"][str(s)] for s in seed_list]
        base_losses[name] = b_losses
        live = [k for k in range(K) if k not in dead]
        t0 = time.perf_counter()
        limit = None
        if time_limit is not None and live:
            limit = max(0.0, time_limit - max(spent[k] for k in live))
        tuned = tune(task, [programs[k] for k in live], seeds=seed_list, steps=steps, grid=lr_grid,
                     refine=refine, time_limit=limit, threads=threads) if live else []
        ok = [(k, t) for k, t in zip(live, tuned) if t.ok]
        props = solution_properties(task, [t.params for _, t in ok], seed_list[:1]) if properties else []
        for k in live:
            spent[k] += (time.perf_counter() - t0) / max(1, len(live))
        by_k = dict(zip(live, tuned))
        props_by_k = {k: p for (k, _), p in zip(ok, props)}
        for k in range(K):
            ev = results[k]
            ev.baseline_losses[name] = b_losses
            ev.baseline_lr[name] = entry["lr"]
            t = by_k.get(k)
            if t is None:
                ev.failures[name] = dead[k]
                ev.losses[name] = [math.inf] * len(seed_list)
                ev.tuned_lr[name] = math.nan
            else:
                ev.losses[name] = t.losses
                ev.tuned_lr[name] = t.lr
                if t.failure:
                    ev.failures[name] = t.failure
                    if t.failure.startswith(("rule error", "time limit")):
                        dead[k] = t.failure
                elif any(not math.isfinite(l) for l in t.losses):
                    ev.failures[name] = "diverged at the tuned learning rate on some seed"
                if ev.curves is not None:
                    ev.curves[name] = t.curve
                if k in props_by_k:
                    ev.properties[name] = props_by_k[k]
            ratios[k][name] = [log_ratio(b, c, task.loss_floor) for b, c in zip(b_losses, ev.losses[name])]

    wall = time.perf_counter() - t_start
    for k, ev in enumerate(results):
        ev.per_task = {t: float(sum(v) / len(v)) for t, v in ratios[k].items()}
        scored = standardized(ratios[k]) if aggregate == "standardized" else ratios[k]
        ev.fitness = aggregate_fitness(ratios[k], aggregate)
        ev.ci_low, ev.ci_high = bootstrap_ci(scored, statistic=_STATISTICS.get(aggregate))
        if len(seed_list) == 1:
            ev.ci_low = ev.ci_high = ev.fitness
        ev.p_beats_baseline = prob_beats(base_losses, ev.losses)
        ev.seconds = wall / max(1, K)
        if ev.failures:
            ev.failure = "; ".join(f"{t}: {r}" for t, r in ev.failures.items())
    return results


@dataclass
class NoiseFloor:
    """AdamW against itself: the fitness of the catalog's AdamW rule against the baseline program.

    The two compute the same update with a different rounding order, so any fitness a rule
    shows within ``abs(fitness)`` of zero is indistinguishable from AdamW on these settings.
    """

    fitness: float
    per_task: dict[str, float]
    settings: dict

    @property
    def margin(self) -> float:
        """|fitness|: results closer than this to 0 are within the noise floor."""
        return abs(self.fitness)


def noise_floor(*, suite: str = "heldout", tasks: Sequence[str] | None = None, seeds: int = 2,
                budget: float = 1.0, aggregate: str = "mean", scale: str = "cpu",
                cache_dir: "str | Path | None" = None) -> NoiseFloor:
    """The noise floor of a result on these settings: :func:`evaluate` of the catalog's
    ``adamw`` rule (a different program, same mathematics) against the tuned baseline,
    fitness = aggregate_t mean_s log(L_baseline / L_catalog_adamw). Cached on disk beside the
    baselines (one rule's evaluation the first time, free afterwards)."""
    from ..discovered import catalog  # the catalog loads every rule file; only this path needs it
    rule = catalog.get("adamw")
    names = list(tasks) if tasks else suite_tasks(suite)
    settings = {"tasks": [get_task(n, scale).key for n in names], "seeds": max(1, seeds), "budget": budget,
                "aggregate": aggregate, "scale": scale}
    ident = json.dumps([settings, rule.source(), baseline_program("adamw").source()])
    path = cache.cache_root(cache_dir) / "noise_floor" / f"{hashlib.sha256(ident.encode()).hexdigest()[:16]}.json"
    entry = cache.load(path)
    if entry is None:
        (ev,) = evaluate([rule], tasks=names, seeds=seeds, budget=budget, cache_dir=cache_dir, scale=scale,
                         aggregate=aggregate, properties=False, curves=False)
        entry = {"fitness": ev.fitness, "per_task": ev.per_task, "settings": settings}
        cache.store(path, entry)
    return NoiseFloor(entry["fitness"], entry["per_task"], entry["settings"])
