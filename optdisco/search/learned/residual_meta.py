"""Meta-training the residual learned optimizer by antithetic ES over the proxy suite's tasks.

Iteration i takes task ``tasks[i mod K]`` and a fresh training seed ``s_i`` (never one of
the evaluation seeds 0, 1, ...), draws N unit perturbations ``eps_j`` (from the seed and i
alone) and trains, as one batched computation (:func:`~.residual_batched.train_residual`),
2N + 2 runs from the same initialization and minibatches (common random numbers):
``theta + sigma eps_j``, ``theta - sigma eps_j``, the mean ``theta`` and ``0`` (exactly
AdamW), all at AdamW's tuned learning rate for the task and the episode's steps
``round(steps x budget)``. A run's meta-loss is ``log max(L_val, floor)`` at the episode's
end. The gradient estimate is :func:`~.es.es_gradient` (centered ranks by default) over the
antithetic pairs; Adam (:class:`~.es.Adam`) moves theta. The logged progress is the mean's
``log(L_AdamW / L_theta)`` on that episode: the fitness of the current theta against the
exact base rule on a run neither has seen.

Full-episode ES has no truncation bias (each meta-loss is the quantity the evaluation
scores), at the cost of one whole inner run per particle and iteration; the tasks are small.

After each iteration the trainer writes its checkpoint (``numpy.savez``, no pickle, atomic
rename): theta, the meta-optimizer's state, the iteration and the history. Everything an
iteration does follows from the config and the iteration number, so a run killed at any
point and resumed ends with the same theta as an uninterrupted one. With Ray initialized
the particles are split into chunks (one per CPU) run as Ray tasks. On some tasks the
batched matrix products round a row differently with the batch size (the evaluators'
training does too), so chunking can change a loss's last bit; with fitness shaping theta
depends only on the losses' ranks, and a resumed run chunks as the first one did.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ...evaluators import baseline_entry, get_task, log_ratio, steps_for, suite_tasks
from .es import Adam, atomic_savez, es_gradient
from .residual import theta_size
from .residual_batched import train_residual

#: Training seeds start here so that meta-training never sees an evaluation seed.
TRAIN_SEED_OFFSET = 10_000


@dataclass
class ResidualESConfig:
    """ES settings: tasks (the proxy suite if empty), N antithetic pairs, noise sigma, meta Adam lr,
    iterations, inner budget (x each task's steps), residual shape (hidden, alpha), base rule, seed."""

    tasks: tuple[str, ...] = ()
    pairs: int = 4
    sigma: float = 0.1
    meta_lr: float = 0.02
    iterations: int = 18
    budget: float = 0.5
    hidden: int = 8
    alpha: float = 0.1
    base: str = "adamw"
    shaping: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pairs < 1 or self.iterations < 0 or not self.sigma > 0 or not self.budget > 0:
            raise ValueError("pairs must be >= 1, iterations >= 0, sigma and budget > 0")
        self.tasks = tuple(self.tasks) or tuple(suite_tasks("proxy"))


#: ``smoke``: seconds, for tests; ``hour``: about an hour on 2 cores (the 9 proxy tasks at their
#: full steps, 16 cycles of 18 runs each; measured in BENCHMARKS.md).
PRESETS: dict[str, dict] = {
    "smoke": {"tasks": ("quadratic", "teacher_student"), "pairs": 2, "iterations": 4, "budget": 0.1,
              "hidden": 4},
    "hour": {"pairs": 8, "iterations": 144, "budget": 1.0, "hidden": 8},
}


def _train_chunk(task_name: str, thetas: np.ndarray, lrs: list[float], seeds: list[int], steps: int,
                 hidden: int, alpha: float, base: str) -> list[float]:
    """Validation losses of a chunk of particles (module-level so Ray can ship it)."""
    return train_residual(get_task(task_name), thetas, lrs, seeds, steps=steps, hidden=hidden, alpha=alpha,
                          base=base).val_loss


def _run_particles(task_name: str, thetas: np.ndarray, lr: float, seed: int, steps: int, hidden: int,
                   alpha: float, base: str, use_ray: bool | None) -> list[float]:
    P = thetas.shape[0]
    if use_ray is None:
        try:
            # optional (the search extra); only Ray runs need it
            import ray
            use_ray = ray.is_initialized()
        except ImportError:  # pragma: no cover - ray is a dependency
            use_ray = False
    if not use_ray:
        return _train_chunk(task_name, thetas, [lr] * P, [seed] * P, steps, hidden, alpha, base)
    # optional (the search extra); only Ray runs need it
    import ray
    chunks = max(1, min(P, int(ray.cluster_resources().get("CPU", 1))))
    remote = ray.remote(num_cpus=1)(_train_chunk)
    refs = [remote.remote(task_name, thetas[b], [lr] * len(b), [seed] * len(b), steps, hidden, alpha, base)
            for b in np.array_split(np.arange(P), chunks) if len(b)]
    return [v for part in ray.get(refs) for v in part]


class ResidualMetaTrainer:
    """ES meta-training of the residual optimizer with a checkpoint after every iteration."""

    def __init__(self, cfg: ResidualESConfig, checkpoint: "str | os.PathLike | None" = None,
                 cache_dir: str | None = None, use_ray: bool | None = None) -> None:
        self.cfg = cfg
        self.use_ray = use_ray  # None: on Ray when it is initialized
        self.cache_dir = cache_dir
        self.theta = np.zeros(theta_size(cfg.hidden))
        self.adam = Adam(cfg.meta_lr)
        self.iteration = 0
        self.history: list[dict] = []
        self.checkpoint = Path(checkpoint) if checkpoint else None
        if self.checkpoint is not None and self.checkpoint.exists():
            self._load()

    def adamw_lr(self, task_name: str) -> float:
        """AdamW's tuned peak learning rate on the task at the episode's steps (the evaluators' cache)."""
        task = get_task(task_name)
        entry = baseline_entry(task, steps=steps_for(task, self.cfg.budget), seeds=[0], cache_dir=self.cache_dir,
                               properties=False)
        return float(entry["lr"])

    def step(self) -> dict:
        """One ES iteration (see the module doc); returns its log entry."""
        cfg, i = self.cfg, self.iteration
        t0 = time.perf_counter()
        name = cfg.tasks[i % len(cfg.tasks)]
        task = get_task(name)
        steps = steps_for(task, cfg.budget)
        lr = self.adamw_lr(name)
        seed = TRAIN_SEED_OFFSET + 1000 * cfg.seed + i
        N, D = cfg.pairs, len(self.theta)
        eps = np.random.default_rng([cfg.seed, i]).standard_normal((N, D))
        thetas = np.concatenate([self.theta + cfg.sigma * eps, self.theta - cfg.sigma * eps,
                                 self.theta[None], np.zeros((1, D))])
        val = _run_particles(name, thetas, lr, seed, steps, cfg.hidden, cfg.alpha, cfg.base, self.use_ray)
        meta_loss = np.array([math.log(max(v, task.loss_floor, 1e-30)) if math.isfinite(v) else math.inf
                              for v in val])
        grad = es_gradient(meta_loss[:N], meta_loss[N:2 * N], eps, cfg.sigma, cfg.shaping)
        mean_vs_adamw = log_ratio(val[-1], val[-2], task.loss_floor)
        best = max(log_ratio(val[-1], v, task.loss_floor) for v in val[:2 * N])
        self.theta = self.adam.step(self.theta, grad)
        self.iteration += 1
        entry = {"iteration": self.iteration, "task": name, "seed": seed, "lr": lr, "steps": steps,
                 "mean_vs_adamw": mean_vs_adamw, "best_member_vs_adamw": best,
                 "diverged": int(sum(not math.isfinite(v) for v in val)),
                 "grad_norm": float(np.linalg.norm(grad)), "theta_norm": float(np.linalg.norm(self.theta)),
                 "seconds": time.perf_counter() - t0}
        self.history.append(entry)
        if self.checkpoint is not None:
            self._save()
        return entry

    def train(self, on_step: Callable[[dict], None] | None = None) -> np.ndarray:
        """Run until ``cfg.iterations`` (from wherever the checkpoint left off); returns theta."""
        while self.iteration < self.cfg.iterations:
            entry = self.step()
            if on_step:
                on_step(entry)
        return self.theta

    def _save(self) -> None:
        arrays: dict[str, np.ndarray] = {"theta": self.theta}
        if self.adam.m is not None and self.adam.v is not None:
            arrays["adam_m"], arrays["adam_v"] = self.adam.m, self.adam.v
        meta = {"config": asdict(self.cfg), "iteration": self.iteration, "adam_t": self.adam.t,
                "history": self.history}
        arrays["meta"] = np.array(json.dumps(meta))
        assert self.checkpoint is not None
        atomic_savez(self.checkpoint, **arrays)

    def _load(self) -> None:
        assert self.checkpoint is not None
        with np.load(self.checkpoint, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            saved = dict(meta["config"], tasks=tuple(meta["config"]["tasks"]))
            mine = asdict(self.cfg)
            diff = sorted(k for k in saved if k != "iterations" and saved[k] != mine.get(k))
            if diff:
                raise ValueError(f"checkpoint {self.checkpoint} was made with other settings ({diff}); "
                                 "use another checkpoint path or the same settings")
            self.theta = z["theta"].copy()
            if "adam_m" in z:
                self.adam.m, self.adam.v = z["adam_m"].copy(), z["adam_v"].copy()
        self.iteration, self.history, self.adam.t = meta["iteration"], meta["history"], meta["adam_t"]


def cycle_means(history: Sequence[dict], tasks: int) -> list[tuple[int, float]]:
    """``(last iteration, mean of mean_vs_adamw)`` over each complete cycle of ``tasks`` iterations."""
    out = []
    for end in range(tasks, len(history) + 1, tasks):
        out.append((history[end - 1]["iteration"],
                    float(np.mean([h["mean_vs_adamw"] for h in history[end - tasks:end]]))))
    return out


def write_meta_report(history: Sequence[dict], cfg: ResidualESConfig, out: "str | os.PathLike",
                      results: dict | None = None) -> Path:
    """One self-contained HTML file: the meta-training curves (PNG inline) and the per-iteration table.

    Plots: the mean theta's ``log(L_AdamW / L_theta)`` per iteration (one colour per task) with
    its mean over each cycle through the tasks, and the norms of the ES gradient and of theta."""
    import html

    from ..plots import png_img, pyplot
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    for name in cfg.tasks:
        pts = [(h["iteration"], h["mean_vs_adamw"]) for h in history if h["task"] == name]
        if pts:
            ax1.plot(*zip(*pts), "o", ms=4, label=name)
    cyc = cycle_means(history, len(cfg.tasks))
    if cyc:
        ax1.plot(*zip(*cyc), "ko-", lw=2, label="mean over a cycle")
    ax1.axhline(0.0, color="grey", lw=1)
    ax1.set_xlabel("ES iteration")
    ax1.set_ylabel("log(L_AdamW / L_theta), unseen seed")
    ax1.legend(fontsize=7, ncol=2)
    its = [h["iteration"] for h in history]
    ax2.plot(its, [h["grad_norm"] for h in history], label="|ES gradient|")
    ax2.plot(its, [h["theta_norm"] for h in history], label="|theta|")
    ax2.set_xlabel("ES iteration")
    ax2.legend()
    img = png_img(fig)
    rows = "".join(
        f"<tr><td>{h['iteration']}</td><td>{html.escape(h['task'])}</td><td>{h['lr']:g}</td>"
        f"<td>{h['mean_vs_adamw']:+.4f}</td><td>{h['best_member_vs_adamw']:+.4f}</td><td>{h['diverged']}</td>"
        f"<td>{h['seconds']:.1f}</td></tr>" for h in history)
    res = f"<h2>Results</h2><pre>{html.escape(json.dumps(results, indent=1))}</pre>" if results else ""
    text = (f"<!doctype html><html><head><meta charset='utf-8'><title>residual meta-training</title></head>"
            f"<body><h1>Residual learned optimizer: meta-training</h1>"
            f"<p>{html.escape(json.dumps(asdict(cfg)))}</p>{img}{res}"
            f"<table border='1'><tr><th>iteration</th><th>task</th><th>AdamW lr</th><th>mean vs AdamW</th>"
            f"<th>best member</th><th>diverged</th><th>s</th></tr>{rows}</table></body></html>")
    path = Path(out)
    path.write_text(text, encoding="utf-8")
    return path
