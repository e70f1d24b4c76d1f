"""Fitness functions the search can call, and the batch entry point workers run.

A fitness function maps a list of Programs and evaluation settings to one
:class:`Result` per program, higher fitness being better. Two are built in:

- ``proxy``: :func:`optdisco.evaluators.evaluate`, the project's proxy suite against
  tuned AdamW (fitness = mean over tasks of log(AdamW loss / candidate loss)).
- ``quadratic``: :func:`quadratic_fitness`, an ill-conditioned noisy quadratic trained
  for a few hundred steps in one batched computation, against AdamW tuned on the same
  learning-rate grid. It is a real (if small) fitness, used by tests and smoke runs.

:func:`evaluate_batch` is what a Ray worker (or the in-process executor) runs: it takes
rule *texts* (parsed, never executed), so a batch is a small, plain message.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from ..discovered.references import adamw
from ..dsl import DSLError, parse, run, zero_states
from ..dsl.ir import Program
from ..evaluators import WORST_LOG_RATIO as WORST  # the evaluators define the worst score


@dataclass
class Result:
    """One program's evaluation, in plain data (JSON-able) so it can be stored and shipped."""

    fitness: float
    ci_low: float | None = None
    ci_high: float | None = None
    p_beats_baseline: float | None = None
    tuned_lr: Any = None
    per_task: dict[str, float] = field(default_factory=dict)
    losses: Any = None
    curves: Any = None
    failure: str | None = None
    seconds: float = 0.0
    worker: str = ""

    @classmethod
    def from_evaluation(cls, ev: Any) -> "Result":
        """A Result from an :class:`optdisco.evaluators.Evaluation` (or anything with its fields)."""
        def plain(x: Any) -> Any:
            if isinstance(x, torch.Tensor):
                return x.tolist()
            if hasattr(x, "tolist"):
                return x.tolist()
            if isinstance(x, Mapping):
                return {str(k): plain(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [plain(v) for v in x]
            if isinstance(x, float) and not math.isfinite(x):
                return None
            return x

        fit = float(ev.fitness)
        return cls(fitness=fit if math.isfinite(fit) else WORST,
                   ci_low=_opt_float(getattr(ev, "ci_low", None)),
                   ci_high=_opt_float(getattr(ev, "ci_high", None)),
                   p_beats_baseline=_opt_float(getattr(ev, "p_beats_baseline", None)),
                   tuned_lr=plain(getattr(ev, "tuned_lr", None)),
                   per_task=plain(getattr(ev, "per_task", None) or {}),
                   losses=plain(getattr(ev, "losses", None)),
                   curves=plain(getattr(ev, "curves", None)),
                   failure=getattr(ev, "failure", None),
                   seconds=float(getattr(ev, "seconds", 0.0) or 0.0))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _opt_float(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


FitnessFn = Callable[[Sequence[Program], Mapping[str, Any]], list[Result]]


# -- the built-in noisy quadratic ----------------------------------------------------------------

# The reference AdamW without weight decay: the quadratic's optimum is not at zero.
QUADRATIC_BASELINE = adamw(wd=0.0)
LR_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
_baseline_cache: dict[tuple, float] = {}


def _quadratic_losses(p: Program, *, dim: int, steps: int, seed: int, noise: float,
                      lrs: Sequence[float], record_every: int = 0):
    """Final losses (one per learning rate) of ``p`` on f(w) = 1/2 sum h_i (w_i - c_i)^2, noisy gradients.

    The optimum c is random (at 0, decaying the weights would solve the task); h_i are
    log-spaced in [0.01, 10] (condition number 1000); gradients are h*(w - c) plus
    ``noise`` times standard normal noise; the learning rate decays as a cosine to 0.
    Every learning rate trains at once (batch dimension 0). A run whose loss is not
    finite or grows past 1e6 x its start counts as diverged (inf).
    """
    gen = torch.Generator().manual_seed(seed)
    h = torch.logspace(-2, 1, dim, dtype=torch.float64)
    w0 = torch.randn(dim, generator=gen, dtype=torch.float64)
    c = torch.randn(dim, generator=gen, dtype=torch.float64)
    L = len(lrs)
    w = w0.expand(L, dim).clone()
    lr0 = torch.tensor(lrs, dtype=torch.float64).reshape(L, 1)
    states = zero_states(p, w, batch_dims=1)
    start = float(0.5 * (h * (w0 - c) ** 2).sum())
    dead = torch.zeros(L, dtype=torch.bool)
    curve = []
    for t in range(1, steps + 1):
        g = h * (w - c) + noise * torch.randn(dim, generator=gen, dtype=torch.float64)
        lr_t = lr0 * 0.5 * (1.0 + math.cos(math.pi * (t - 1) / steps))
        u, states = run(p, w, g, states, step=float(t), lr=lr_t, batch_dims=1, generator=gen)
        w = w - lr_t * u
        loss = 0.5 * (h * (w - c) ** 2).sum(dim=1)
        dead |= ~torch.isfinite(loss) | (loss > 1e6 * start)
        if dead.all():
            break
        w = torch.where(dead[:, None], torch.zeros_like(w), w)  # keep dead rows from overflowing
        if record_every and t % record_every == 0:
            curve.append(loss.tolist())
    loss = 0.5 * (h * (w - c) ** 2).sum(dim=1)
    loss = torch.where(dead | ~torch.isfinite(loss), torch.full_like(loss, math.inf), loss)
    return loss.tolist(), curve


def quadratic_fitness(programs: Sequence[Program], settings: Mapping[str, Any]) -> list[Result]:
    """Fitness on the noisy quadratic: mean over seeds of log(tuned AdamW loss / tuned candidate loss).

    Each program's learning rate is tuned on :data:`LR_GRID` (the best final loss wins),
    exactly as AdamW's is. ``settings['budget']`` scales the 200 default steps;
    ``settings['seeds']`` is the number of seeds. Divergence on every learning rate gives
    the worst score with the reason.
    """
    seeds = int(settings.get("seeds", 1))
    steps = max(10, int(round(200 * float(settings.get("budget", 1.0)))))
    dim, noise = 16, 0.05
    out = []
    for p in programs:
        t0 = time.perf_counter()
        ratios, lrs_best, curves, failure = [], [], [], None
        for seed in range(seeds):
            key = (steps, seed, dim, noise)
            if key not in _baseline_cache:
                base, _ = _quadratic_losses(QUADRATIC_BASELINE, dim=dim, steps=steps, seed=seed,
                                            noise=noise, lrs=LR_GRID)
                _baseline_cache[key] = min(base)
            try:
                losses, curve = _quadratic_losses(p, dim=dim, steps=steps, seed=seed, noise=noise,
                                                  lrs=LR_GRID, record_every=max(1, steps // 20))
            except (DSLError, RuntimeError, ValueError) as e:
                failure = f"{type(e).__name__}: {e}"
                break
            best = min(range(len(LR_GRID)), key=lambda i: losses[i])
            if not math.isfinite(losses[best]):
                failure = "diverged at every learning rate"
                break
            ratios.append(math.log(max(_baseline_cache[key], 1e-300) / max(losses[best], 1e-300)))
            lrs_best.append(LR_GRID[best])
            curves.append([row[best] for row in curve])
        secs = time.perf_counter() - t0
        if failure is not None:
            out.append(Result(fitness=WORST, failure=failure, seconds=secs))
            continue
        fit = sum(ratios) / len(ratios)
        out.append(Result(fitness=max(fit, WORST), ci_low=min(ratios), ci_high=max(ratios),
                          p_beats_baseline=sum(r > 0 for r in ratios) / len(ratios),
                          tuned_lr=lrs_best, per_task={"quadratic": fit},
                          curves={"quadratic": curves[0]}, seconds=secs))
    return out


def proxy_fitness(programs: Sequence[Program], settings: Mapping[str, Any]) -> list[Result]:
    """Fitness from :func:`optdisco.evaluators.evaluate` with the given suite, tasks, seeds and budget."""
    from ..evaluators import evaluate  # type: ignore[attr-defined]
    kwargs = {k: settings[k] for k in ("suite", "tasks", "seeds", "budget", "time_limit", "cache_dir", "aggregate",
                                       "gradients", "batch_size") if settings.get(k) not in (None, [], "")}
    return [Result.from_evaluation(ev) for ev in evaluate(list(programs), **kwargs)]


FITNESS: dict[str, FitnessFn] = {"proxy": proxy_fitness, "quadratic": quadratic_fitness}


def evaluate_batch(sources: Sequence[str], settings: Mapping[str, Any],
                   fitness: str | FitnessFn = "proxy") -> list[dict[str, Any]]:
    """Evaluate rule texts together; one result dict per text, never an exception.

    If the batch as a whole raises, each program is evaluated alone so that one bad rule
    gets the worst score with its reason and spoils nothing else.
    """
    fn = FITNESS[fitness] if isinstance(fitness, str) else fitness
    torch.set_num_threads(1)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    t0 = time.perf_counter()
    programs = []
    for text in sources:
        try:
            programs.append(parse(text))
        except DSLError as e:
            programs.append(e)
    results: list[Result | None] = [None] * len(sources)
    good = [i for i, p in enumerate(programs) if isinstance(p, Program)]
    for i, p in enumerate(programs):
        if not isinstance(p, Program):
            results[i] = Result(fitness=WORST, failure=f"DSLError: {p}")
    try:
        for i, r in zip(good, fn([programs[i] for i in good], settings)):
            results[i] = r
    except Exception:  # noqa: BLE001 - isolate the rule that fails, below
        for i in good:
            try:
                (results[i],) = fn([programs[i]], settings)
            except Exception as e:  # noqa: BLE001 - a rule's own failure is its score, not a crash
                results[i] = Result(fitness=WORST, failure=f"{type(e).__name__}: {e}")
    elapsed = time.perf_counter() - t0
    out = []
    for r in results:
        assert r is not None
        r.worker = worker
        if not r.seconds:
            r.seconds = elapsed / max(1, len(sources))
        out.append(r.to_dict())
    return out
