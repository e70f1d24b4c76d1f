"""The runs of ``optdisco validate``: contenders against tuned AdamW and Lion, trained with a
real torch loop.

Per contender (a rule, a baseline, or a learned optimizer; :mod:`.targets`) and workload
(a task at "cpu" or "gpu" scale):

1. **Tuning** (identical for every contender): seed 0 at ``tune_budget`` times the
   validation steps, on the log grid ``grid``; then the best rate times and divided by
   ``refine``; while the best is the largest (smallest) rate tried, up to ``extend`` more
   steps outward. The lowest final validation loss wins (ties: the smaller rate). This
   is :func:`optdisco.evaluators.tuning.tune`'s procedure, run one training at a time.
2. **Validation**: seeds 0..N-1 at the full steps and the tuned rate.

Each training (:func:`train_unit`) is an ordinary torch loop: the task's parameters are
leaf tensors (bf16 on GPU by default, with float32 optimizer states) updated by
``optimizer.step()`` of an ``optdisco.Optimizer`` (``backend="auto"``: the Triton
kernels on CUDA, the CPU fast path otherwise), under autocast for 16-bit parameters. It
uses the batched evaluator's initialization, minibatches (same generators), schedule (warmup
then cosine, :func:`optdisco.evaluators.train.schedule`) and divergence rule, so with the
interpreter backend in float32 it reproduces :func:`optdisco.evaluators.train.train` for
the same rule, rate and seed. It records the validation-loss curve at ``n_evals`` points,
the median wall time of ``optimizer.step()`` (with ``torch.cuda.synchronize`` on GPU) and
the bytes of optimizer state.

Every finished training is appended to a results file (JSON lines) keyed by contender
identity (the rule's functional fingerprint, or the learned weights' SHA-256), task,
scale, device type, dtype, backend, steps, seed and rate; a rerun reuses every key it
finds, so an interrupted validation loses at most the training in flight.

Statistics: 95% t-intervals over seeds, mean +- t_{0.975, n-1} s / sqrt(n) (none with one
seed); "steps to match AdamW" is the first recorded step at which a contender's
seed-mean curve reaches AdamW's seed-mean final loss, and the speedup is AdamW's steps
divided by it.

Time to result (AlgoPerf's measure): the steps and the seconds a contender needs to reach
tuned AdamW's final seed-mean validation loss, "never" when its curve does not get there;
the seconds are the median whole training's seconds times the share of its steps taken.
Across workloads they are aggregated by performance profiles (Dolan and More; AlgoPerf):
with ``t[c, w]`` contender c's seconds on workload w (inf for never) and
``r[c, w] = t[c, w] / min_c' t[c', w]``, the profile is
``rho_c(tau) = |{w : r[c, w] <= tau}| / |W|``, and the score is its area
``1/(tau_max - 1) * integral_1^tau_max rho_c(tau) dtau`` (AlgoPerf uses tau_max = 4).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..discovered.optimizer import state_nbytes
from ..evaluators.tasks import Task, get_task
from ..evaluators.train import EXPLODE, schedule, seed_generator
from ..evaluators.tuning import DEFAULT_LR_GRID, REFINE
from .targets import Contender, MakeOptimizer, baselines

#: Version of the training loop and result format; part of every results-file key.
VERSION = 1


@dataclass
class Settings:
    """How a validation runs (every field that changes a training is part of its results-file key)."""

    scale: str = "cpu"
    seeds: int = 3
    budget: float = 1.0          # validation steps = round(task steps * budget)
    tune_budget: float = 0.25    # tuning steps = round(validation steps * tune_budget)
    grid: tuple[float, ...] = DEFAULT_LR_GRID
    refine: float = REFINE
    extend: int = 2
    device: str = "cpu"
    dtype: str = "fp32"          # parameter dtype: "fp32" or "bf16" (states stay float32)
    n_evals: int = 20
    backend: str = "auto"

    def steps(self, task: Task) -> int:
        """Validation steps on ``task``."""
        return max(2, int(round(task.steps * self.budget)))

    def tune_steps(self, task: Task) -> int:
        """Tuning steps on ``task`` (the same for every contender)."""
        return max(2, int(round(self.steps(task) * self.tune_budget)))


@dataclass
class Unit:
    """One finished training: final validation loss (inf if it failed) and what it cost."""

    loss: float
    curve: list[tuple[int, float]]   # (step, validation loss) at the recorded steps
    failure: str | None
    step_seconds: float              # median wall time of optimizer.step()
    state_bytes: int                 # optimizer state (all tensors but the step counts)
    seconds: float                   # the whole training
    steps_done: int


# -- results file ----------------------------------------------------------------------------

def unit_key(contender: Contender, task: Task, settings: Settings, steps: int, seed: int, lr: float,
             n_evals: int) -> str:
    """The results-file key of one training (rates to 10 significant digits)."""
    dev = torch.device(settings.device).type
    return (f"v{VERSION}|{contender.key}|{task.key}|{settings.scale}|{dev}|{settings.dtype}|"
            f"{settings.backend}|n{n_evals}|s{steps}|seed{seed}|lr{lr:.10g}")


class ResultsFile:
    """Finished trainings as JSON lines ``{"key": ..., "unit": {...}}``; appended and flushed
    one at a time, so an interrupted run keeps all but a possibly torn last line (ignored)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.units: dict[str, Unit] = {}
        self._newline = False  # a torn last line must not swallow the next record
        if self.path.exists():
            text = self.path.read_text(encoding="utf-8")
            self._newline = bool(text) and not text.endswith("\n")
            for line in text.splitlines():
                try:
                    rec = json.loads(line)
                    u = rec["unit"]
                    u["curve"] = [tuple(x) for x in u["curve"]]
                    self.units[rec["key"]] = Unit(**u)
                except (ValueError, KeyError, TypeError):
                    continue

    def get(self, key: str) -> Unit | None:
        return self.units.get(key)

    def add(self, key: str, unit: Unit) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            if self._newline:
                f.write("\n")
                self._newline = False
            f.write(json.dumps({"key": key, "unit": asdict(unit)}, allow_nan=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.units[key] = unit


# -- one training ------------------------------------------------------------------------------

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of the optimizer's per-parameter state tensors (step counters excluded)."""
    return state_nbytes(opt)


def train_unit(task: Task, make: MakeOptimizer, lr: float, seed: int, steps: int, *,
               dtype: str = "fp32", n_evals: int = 20,
               on_step: Callable[[int], None] | None = None) -> Unit:
    """Train ``task`` once with the optimizer ``make(params, lr)`` (see the module doc).

    The learning rate at step t is lr * :func:`optdisco.evaluators.train.schedule` (t, steps).
    A run stops as failed when its training loss is non-finite or above EXPLODE times its
    first value, or when its parameters or validation loss become non-finite.
    """
    dev = torch.device(task.device)
    pdtype = _DTYPES[dtype]
    params = [p.to(dev, pdtype).requires_grad_(True) for p in task.init(seed_generator(task, seed, "init"))]
    batches = task.sample(seed_generator(task, seed, "data"), steps).to(dev)
    opt = make(params, lr)
    cuda = dev.type == "cuda"
    autocast = torch.autocast(dev.type, dtype=pdtype, enabled=pdtype != torch.float32)
    eval_at = sorted({max(1, round(steps * (i + 1) / n_evals)) for i in range(n_evals)})
    curve: list[tuple[int, float]] = []
    times: list[float] = []
    failure, first, done = None, None, 0
    t_start = time.perf_counter()
    stacked = lambda: [p.unsqueeze(0) for p in params]  # noqa: E731  (the task's (P, ...) layout, P = 1)
    for t in range(1, steps + 1):
        for group in opt.param_groups:
            group["lr"] = lr * schedule(t, steps)
        with autocast:
            loss = task.train_loss(stacked(), batches[t - 1].unsqueeze(0))[0].float()
        value = float(loss.detach())
        if first is None:
            first = value
        if not math.isfinite(value):
            failure = f"non-finite training loss at step {t}"
            break
        if value > EXPLODE * max(abs(first), 1e-3):
            failure = f"training loss exploded at step {t} (> {EXPLODE:g}x its initial value)"
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cuda:
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        opt.step()
        if cuda:
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t0)
        done = t
        if on_step is not None:
            on_step(t)
        if t in eval_at:
            with torch.no_grad(), autocast:
                vl = float(task.val_loss(stacked())[0].float())
            if not math.isfinite(vl) or not all(bool(torch.isfinite(p).all()) for p in params):
                failure = f"non-finite parameters or validation loss after step {t}"
                break
            curve.append((t, vl))
    warm = times[min(3, len(times) // 2):] or times  # the first steps pay for compilation
    return Unit(loss=curve[-1][1] if failure is None and curve else math.inf, curve=curve, failure=failure,
                step_seconds=statistics.median(warm) if warm else math.nan, state_bytes=state_bytes(opt),
                seconds=time.perf_counter() - t_start, steps_done=done)


# -- statistics -------------------------------------------------------------------------------

# t_{0.975, df} for df = 1..30; beyond that the normal quantile is within 2%.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042)


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95% t-interval mean +- t_{0.975, n-1} s / sqrt(n); low = high = mean
    for one value; all inf if any value is not finite (a failed seed)."""
    n = len(values)
    if n == 0 or not all(math.isfinite(v) for v in values):
        return math.inf, math.inf, math.inf
    mean = sum(values) / n
    if n == 1:
        return mean, mean, mean
    half = (_T975[n - 2] if n - 1 <= len(_T975) else 1.96) * statistics.stdev(values) / math.sqrt(n)
    return mean, mean - half, mean + half


def mean_curve(curves: Sequence[Sequence[tuple[int, float]]]) -> list[tuple[int, float]]:
    """The seed-mean curve over the steps every seed recorded (inf where a seed failed)."""
    if not curves:
        return []
    n = min(len(c) for c in curves)
    return [(curves[0][i][0], sum(c[i][1] for c in curves) / len(curves)) for i in range(n)]


def steps_to_reach(curve: Sequence[tuple[int, float]], target: float) -> int | None:
    """The first recorded step whose loss is at most ``target``; None if never."""
    return next((s for s, v in curve if v <= target), None)


# -- the validation ------------------------------------------------------------------------------

@dataclass
class Workload:
    """One contender on one task: tuned rate, what each rate gave, and the validation seeds."""

    lr: float
    tried: dict[float, float]              # rate -> seed-0 tuning loss
    losses: list[float]                    # final validation loss per seed
    curves: list[list[tuple[int, float]]]  # per seed
    failure: str | None
    step_seconds: float
    state_bytes: int
    steps: int
    seconds: float = math.nan              # median over seeds of the whole training's seconds

    @property
    def interval(self) -> tuple[float, float, float]:
        """(mean, low, high) of the final loss over seeds, :func:`t_interval`."""
        return t_interval(self.losses)


@dataclass
class Validation:
    """Results of :func:`validate`: ``results[(contender name, task name)]``, and how many
    trainings ran now (``trained``) or came from the results file (``reused``)."""

    settings: Settings
    contenders: list[Contender]
    tasks: list[str]
    results: dict[tuple[str, str], Workload] = field(default_factory=dict)
    n_params: dict[str, int] = field(default_factory=dict)
    trained: int = 0
    reused: int = 0
    missing: int = 0

    def speedup(self, contender: str, task: str, reference: str = "adamw") -> tuple[int | None, float | None]:
        """(steps to reach the reference's final seed-mean loss, reference steps / those steps)."""
        ref, me = self.results.get((reference, task)), self.results.get((contender, task))
        if ref is None or me is None or me.failure or ref.failure:
            return None, None
        target = ref.interval[0]
        at = steps_to_reach(mean_curve(me.curves), target)
        return at, (ref.steps / at if at else None)

    def time_to_result(self, contender: str, task: str, reference: str = "adamw") -> tuple[int | None, float | None]:
        """(steps, seconds) to reach the reference's final seed-mean loss, (None, None) for never;
        seconds = the median training's seconds * steps / total steps."""
        at, _ = self.speedup(contender, task, reference)
        me = self.results.get((contender, task))
        if at is None or me is None:
            return None, None
        return at, me.seconds * at / me.steps if math.isfinite(me.seconds) else None

    def summary(self, contender: str) -> dict[str, dict[str, Any]]:
        """Per task: loss mean and 95% interval, AdamW's mean, speedup, tuned rate, ms/step, state bytes."""
        out = {}
        for task in self.tasks:
            w = self.results.get((contender, task))
            if w is None:
                continue
            mean, lo, hi = w.interval
            ref = self.results.get(("adamw", task))
            at, speed = self.speedup(contender, task)
            out[task] = {"loss": mean, "ci": [lo, hi], "adamw_loss": ref.interval[0] if ref else None,
                         "steps_to_match_adamw": at, "speedup": speed, "lr": w.lr,
                         "seconds_to_match_adamw": self.time_to_result(contender, task)[1],
                         "ms_per_step": 1e3 * w.step_seconds, "state_bytes": w.state_bytes,
                         "seeds": len(w.losses), "failure": w.failure}
        return out


#: AlgoPerf's largest ratio to the best time that the profile score integrates to.
PROFILE_TAU_MAX = 4.0


def performance_profiles(val: Validation, taus: Sequence[float]) -> dict[str, list[float]]:
    """Per contender, ``rho(tau)`` at each ``tau``: the share of workloads on which its seconds to
    AdamW's final loss are within ``tau`` times the fastest contender's (never counts as inf)."""
    names = [c.name for c in val.contenders]
    ratios: dict[str, list[float]] = {n: [] for n in names}
    for task in val.tasks:
        times = {}
        for n in names:
            sec = val.time_to_result(n, task)[1]
            times[n] = sec if sec is not None and sec > 0 else math.inf
        best = min(times.values())
        for n in names:
            ratios[n].append(times[n] / best if math.isfinite(best) else math.inf)
    return {n: [sum(r <= tau for r in rs) / len(rs) if rs else 0.0 for tau in taus] for n, rs in ratios.items()}


def profile_scores(val: Validation, tau_max: float = PROFILE_TAU_MAX, points: int = 301) -> dict[str, float]:
    """AlgoPerf's score per contender: the mean of ``rho(tau)`` over ``[1, tau_max]`` (trapezoids on
    ``points`` evenly spaced taus), 1 for a contender fastest on every workload, 0 for never."""
    taus = [1.0 + (tau_max - 1.0) * i / (points - 1) for i in range(points)]
    out = {}
    for n, rho in performance_profiles(val, taus).items():
        area = sum((a + b) / 2 for a, b in zip(rho, rho[1:])) / (points - 1)
        out[n] = area
    return out


def _unique(contenders: Sequence[Contender]) -> list[Contender]:
    """Baselines first; a rule that computes what a contender before it computes is dropped."""
    out, seen = [], set()
    for c in contenders:
        if c.key not in seen:
            seen.add(c.key)
            out.append(c)
    return out


def validate(contenders: Sequence[Contender], tasks: Sequence[str], settings: Settings,
             results_path: str | Path, *, with_baselines: bool = True, train: bool = True,
             console: Any = None, progress: bool = True,
             on_unit: Callable[[str, Unit], None] | None = None) -> Validation:
    """Tune and validate every contender (AdamW and Lion first) on every task (module doc).

    ``train=False`` only reads the results file (missing trainings are counted in
    ``missing`` and left out). ``on_unit(key, unit)`` is called after each training is
    stored. Progress is shown with rich on ``console`` unless ``progress`` is False.
    """
    # the live display only; rich is slow to import
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    everyone = _unique([*(baselines(settings.backend) if with_baselines else []), *contenders])
    store = ResultsFile(results_path)
    val = Validation(settings, everyone, list(tasks))
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console, disable=not progress, transient=False)
    with bar:
        overall = bar.add_task("validate", total=len(everyone) * len(tasks))
        current = bar.add_task("", total=1)
        for name in tasks:
            task = get_task(name, settings.scale, settings.device)
            val.n_params[name] = task.n_params
            for c in everyone:
                bar.update(overall, description=f"{c.name} on {name}")

                def run(lr: float, seed: int, steps: int, n_evals: int, *, c: Contender = c,
                        task: Task = task) -> Unit | None:
                    key = unit_key(c, task, settings, steps, seed, lr, n_evals)
                    unit = store.get(key)
                    if unit is not None:
                        val.reused += 1
                        return unit
                    if not train:
                        val.missing += 1
                        return None
                    bar.update(current, completed=0, total=steps,
                               description=f"  seed {seed}, lr {lr:.3g}, {steps} steps")
                    every = max(1, steps // 100)
                    unit = train_unit(task, c.make, lr, seed, steps, dtype=settings.dtype, n_evals=n_evals,
                                      on_step=lambda t: bar.update(current, completed=t) if t % every == 0 else None)
                    store.add(key, unit)
                    val.trained += 1
                    if on_unit is not None:
                        on_unit(key, unit)
                    return unit

                w = _tune_and_validate(run, settings, task)
                if w is not None:
                    val.results[(c.name, name)] = w
                bar.advance(overall)
    return val


def _tune_and_validate(run: Callable[[float, int, int, int], Unit | None], settings: Settings,
                       task: Task) -> Workload | None:
    """Steps 1 and 2 of the module doc for one contender on one task; None if results are missing."""
    tsteps, steps = settings.tune_steps(task), settings.steps(task)
    tried: dict[float, Unit | None] = {}

    def trial(lr: float) -> None:
        lr = float(f"{lr:.10g}")
        if lr not in tried:
            tried[lr] = run(lr, 0, tsteps, 1)  # tuning needs the final loss only

    def best() -> float | None:
        ok = [(u.loss, lr) for lr, u in tried.items() if u is not None and u.failure is None]
        return min(ok)[1] if ok else None

    for lr in settings.grid:
        trial(lr)
    if settings.refine and best() is not None:
        b = best()
        trial(b / settings.refine)
        trial(b * settings.refine)
        for _ in range(settings.extend):
            b = best()
            if b is None:
                break
            if b >= max(tried):
                trial(b * settings.refine)
            elif b <= min(tried):
                trial(b / settings.refine)
            else:
                break
    if any(u is None for u in tried.values()):
        return None
    losses = {lr: u.loss for lr, u in tried.items()}  # type: ignore[union-attr]
    lr = best()
    if lr is None:
        reason = tried[min(tried)].failure  # type: ignore[union-attr]
        return Workload(math.nan, losses, [math.inf] * settings.seeds, [], f"failed at every rate ({reason})",
                        math.nan, 0, steps)
    units = [run(lr, seed, steps, settings.n_evals) for seed in range(settings.seeds)]
    if any(u is None for u in units):
        return None
    fails = [u.failure for u in units if u.failure]  # type: ignore[union-attr]
    return Workload(lr, losses, [u.loss for u in units], [list(u.curve) for u in units],  # type: ignore[union-attr]
                    f"{len(fails)} of {len(units)} seeds failed: {fails[0]}" if fails else None,
                    statistics.median(u.step_seconds for u in units),  # type: ignore[union-attr]
                    max(u.state_bytes for u in units), steps,  # type: ignore[union-attr]
                    statistics.median(u.seconds for u in units))  # type: ignore[union-attr]
