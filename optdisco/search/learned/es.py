"""Evolution strategies: antithetic sampling, fitness shaping, truncated unrolls and PES.

The generic estimator (:func:`es_gradient`): with a mean ``theta``, unit perturbations
``eps_i`` (i = 1..N) and losses ``L+_i = L(theta + sigma eps_i)``, ``L-_i = L(theta - sigma eps_i)``,

    grad ~= 1 / (2 N sigma) * sum_i (L+_i - L-_i) * xi_i

where ``xi_i = eps_i`` for plain and truncated ES. With fitness shaping the 2N losses
are first replaced by centered ranks in [-0.5, 0.5] (Salimans et al., 2017).

Meta-training the MLP optimizer (:class:`MetaTrainer`) unrolls inner training in
truncations of K steps. Each particle (2N of them, in antithetic pairs) keeps its own
inner state between truncations. With ``estimator="pes"`` (Persistent ES, Vicol et al.,
2021) ``xi_i`` is the sum of the particle's perturbations since its inner problem began,
which makes the estimate unbiased for the loss summed over whole episodes (without
shaping); ``"tes"`` uses the current perturbation only (truncated ES, biased). The
truncation loss is the mean over its K steps of ``log(L_train(t) / L_train(0))``.

Every step is checkpointed (``numpy.savez``, no pickle, atomic rename) with the meta
weights, the meta-optimizer state and every particle's inner state, so a run killed at
any point resumes where it stopped and ends exactly where an uninterrupted run would.
When Ray is initialized the particles are split into chunks run as ``ray.remote`` tasks.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ...evaluators.tasks import Task, get_task
from ...evaluators.train import EXPLODE, schedule, seed_generator
from .features import FeatureState
from .mlp_optimizer import MLPConfig, MLPOptimizer, init_theta

DIVERGED_LOSS = math.log(EXPLODE)  # the truncation loss of a particle whose inner run blew up


# -- the generic estimator ---------------------------------------------------------------------

def centered_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks of ``x`` scaled to [-0.5, 0.5] (ties broken by order); fitness shaping."""
    x = np.asarray(x, dtype=float).ravel()
    ranks = np.empty(len(x))
    ranks[np.argsort(x, kind="stable")] = np.arange(len(x))
    return ranks / max(1, len(x) - 1) - 0.5


def es_gradient(loss_plus: np.ndarray, loss_minus: np.ndarray, xi: np.ndarray, sigma: float,
                shaping: bool = True) -> np.ndarray:
    """Antithetic estimate of d E[L] / d theta: ``sum_i (L+_i - L-_i) xi_i / (2 N sigma)``.

    ``xi`` is ``(N, D)`` (unit-scale perturbations, accumulated for PES). Non-finite losses
    count as the worst of the batch. With ``shaping`` the losses become centered ranks.
    """
    lp, lm = np.asarray(loss_plus, float), np.asarray(loss_minus, float)
    both = np.concatenate([lp, lm])
    finite = np.isfinite(both)
    worst = both[finite].max() if finite.any() else 0.0
    both = np.where(finite, both, worst + 1.0)
    if shaping:
        both = centered_ranks(both)
    n = len(lp)
    diff = both[:n] - both[n:]
    return (diff[:, None] * np.asarray(xi, float)).sum(axis=0) / (2 * n * sigma)


@dataclass
class Adam:
    """Adam on a numpy vector (the meta-optimizer); its state is plain arrays."""

    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    m: np.ndarray | None = None
    v: np.ndarray | None = None
    t: int = 0

    def step(self, theta: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """theta - lr * mhat / (sqrt(vhat) + eps) with Adam's bias-corrected moments."""
        if self.m is None:
            self.m, self.v = np.zeros_like(theta), np.zeros_like(theta)
        self.t += 1
        self.m = self.beta1 * self.m + (1 - self.beta1) * grad
        self.v = self.beta2 * self.v + (1 - self.beta2) * grad * grad
        mhat = self.m / (1 - self.beta1 ** self.t)
        vhat = self.v / (1 - self.beta2 ** self.t)
        return theta - self.lr * mhat / (np.sqrt(vhat) + self.eps)


def atomic_savez(path: "str | os.PathLike", **arrays: np.ndarray) -> None:
    """``numpy.savez`` to a temporary file, then rename: a reader never sees half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


# -- inner problems --------------------------------------------------------------------------

@dataclass
class Inner:
    """The inner training state of every particle on one task (params and statistics per tensor)."""

    t: int                               # steps done in the current episode
    episode: int                         # which episode (seeds the init and the data)
    params: list[torch.Tensor]           # per tensor, (P, *shape)
    stats: list[FeatureState]
    loss0: torch.Tensor                  # (P,) training loss at the episode's first step
    dead: torch.Tensor                   # (P,) bool: diverged in this episode
    xi: np.ndarray                       # (N, D) PES accumulated perturbations of the + particles


def _episode_seed(seed: int, episode: int) -> int:
    # episode -1 means "the evaluators' own seed": the init and data :func:`train` uses
    return seed if episode < 0 else seed * 100003 + episode


def new_inner(task: Task, particles: int, episode: int, seed: int, dim: int) -> Inner:
    """Every particle at the same initial point of episode ``episode`` (common random numbers).

    Episode -1 uses the evaluators' initialization and minibatches for ``seed``, so a
    learned optimizer sees exactly what the tuned baseline saw.
    """
    gen = seed_generator(task, _episode_seed(seed, episode), "init")
    init = task.init(gen)
    params = [p.unsqueeze(0).repeat(particles, *([1] * p.dim())).float() for p in init]
    return Inner(0, episode, params, [FeatureState.zeros(p) for p in params],
                 torch.full((particles,), float("nan")), torch.zeros(particles, dtype=torch.bool),
                 np.zeros((particles // 2, dim)))


def unroll(mlp: MLPOptimizer, thetas: torch.Tensor, task: Task, inner: Inner, *, steps: int,
           horizon: int, lr: "float | torch.Tensor", seed: int,
           record: list | None = None) -> np.ndarray:
    """Advance ``inner`` by ``steps`` updates, particle p using weights ``thetas[p]``.

    ``record``, when a list, receives ``(tensor index, t, lr_t, w, g, u)`` for every update.
    ``lr`` is one peak learning rate or one per particle. The learning rate follows the evaluators' warmup-cosine schedule over the episode
    (``horizon`` steps). Returns each particle's truncation loss: the mean over the steps
    of ``log(L_train(t) / L_train(0))`` (DIVERGED_LOSS for a particle that diverged).
    """
    P = thetas.shape[0]
    data = task.sample(seed_generator(task, _episode_seed(seed, inner.episode), "data"), horizon)
    lr_rows = torch.as_tensor(lr, dtype=torch.float32).reshape(-1).expand(P)
    total = torch.zeros(P)
    n = 0
    for _ in range(steps):
        if inner.t >= horizon:
            break
        inner.t += 1
        x = [p.detach().requires_grad_(True) for p in inner.params]
        batch = data[inner.t - 1].unsqueeze(0).expand(P, *data.shape[1:])
        losses = task.train_loss(x, batch)
        grads = torch.autograd.grad(losses.sum(), x)
        ld = losses.detach()
        if inner.t == 1:
            inner.loss0 = ld.clone()
        bad = ~torch.isfinite(ld) | (ld > EXPLODE * inner.loss0.abs().clamp_min(1e-3))
        inner.dead |= bad
        ratio = torch.log(ld.clamp_min(1e-30) / inner.loss0.clamp_min(1e-30))
        total += torch.where(inner.dead, torch.full_like(ratio, DIVERGED_LOSS), ratio)
        n += 1
        lr_t = lr_rows * schedule(inner.t, horizon)
        with torch.no_grad():
            for j, (w, g) in enumerate(zip(inner.params, grads)):
                u, inner.stats[j] = mlp.updates(thetas, w, g, inner.stats[j], inner.t)
                if record is not None:
                    record.append((j, inner.t, lr_t.clone(), w.clone(), g.clone(), u.clone()))
                keep = inner.dead.view(P, *([1] * (w.dim() - 1)))
                new = w - lr_t.view(P, *([1] * (w.dim() - 1))) * u
                inner.params[j] = torch.where(keep | ~torch.isfinite(new), w, new)
    return (total / max(1, n)).numpy()


def _unroll_chunk(cfg: dict, thetas: torch.Tensor, task_name: str, inner: Inner, steps: int,
                  horizon: int, lr: float, seed: int) -> tuple[np.ndarray, Inner]:
    """A chunk of particles, as a Ray task would run it (module-level so Ray can ship it)."""
    torch.set_num_threads(1)
    mlp = MLPOptimizer(MLPConfig(hidden=cfg["hidden"], features=tuple(cfg["features"]),
                                 exp_mult=cfg["exp_mult"]))
    out = unroll(mlp, thetas, get_task(task_name), inner, steps=steps, horizon=horizon, lr=lr, seed=seed)
    return out, inner


# -- meta-training ---------------------------------------------------------------------------

@dataclass
class ESConfig:
    """Meta-training settings: N antithetic pairs, noise sigma, meta Adam lr, truncation K,
    episode horizon (inner steps; the task's default if 0), inner lr, tasks, steps."""

    tasks: tuple[str, ...] = ("quadratic",)
    pairs: int = 4
    sigma: float = 0.05
    meta_lr: float = 0.01
    truncation: int = 10
    horizon: int = 0
    lr: float = 0.01
    iterations: int = 10
    estimator: str = "pes"        # "pes" or "tes"
    shaping: bool = True
    seed: int = 0
    hidden: int = 16

    def __post_init__(self) -> None:
        if self.estimator not in ("pes", "tes"):
            raise ValueError(f"estimator must be 'pes' or 'tes', not {self.estimator!r}")
        if self.pairs < 1 or self.truncation < 1:
            raise ValueError("pairs and truncation must be at least 1")


class MetaTrainer:
    """ES meta-training of the MLP optimizer with checkpoints (see the module doc)."""

    def __init__(self, cfg: ESConfig, checkpoint: "str | os.PathLike | None" = None) -> None:
        self.cfg = cfg
        self.mlp = MLPOptimizer(MLPConfig(hidden=cfg.hidden))
        self.theta = init_theta(self.mlp.cfg, cfg.seed).double().numpy()
        self.adam = Adam(cfg.meta_lr)
        self.iteration = 0
        self.inner: dict[str, Inner] = {}
        self.history: list[dict] = []
        self.checkpoint = Path(checkpoint) if checkpoint else None
        if self.checkpoint is not None and self.checkpoint.exists():
            self._load()

    def horizon(self, task: Task) -> int:
        return self.cfg.horizon or task.steps

    def step(self) -> dict:
        """One ES iteration on the next task of the cycle; returns its log entry."""
        cfg, i = self.cfg, self.iteration
        name = cfg.tasks[i % len(cfg.tasks)]
        task = get_task(name)
        H = self.horizon(task)
        D, N = len(self.theta), cfg.pairs
        inner = self.inner.get(name)
        if inner is None or inner.t >= H:
            inner = new_inner(task, 2 * N, 0 if inner is None else inner.episode + 1, cfg.seed, D)
        eps = np.random.default_rng([cfg.seed, i]).standard_normal((N, D))
        xi = inner.xi + eps if cfg.estimator == "pes" else eps
        pert = np.concatenate([eps, -eps]) * cfg.sigma
        thetas = torch.from_numpy(self.theta[None] + pert).float()
        losses, inner = self._run(thetas, name, inner, H)
        inner.xi = xi
        grad = es_gradient(losses[:N], losses[N:], xi, cfg.sigma, cfg.shaping)
        self.theta = self.adam.step(self.theta, grad)
        self.inner[name] = inner
        self.iteration += 1
        entry = {"iteration": self.iteration, "task": name, "inner_step": inner.t, "episode": inner.episode,
                 "loss": float(np.mean(losses)), "grad_norm": float(np.linalg.norm(grad))}
        self.history.append(entry)
        if self.checkpoint is not None:
            self._save()
        return entry

    def _run(self, thetas: torch.Tensor, name: str, inner: Inner, H: int) -> tuple[np.ndarray, Inner]:
        args = dict(steps=self.cfg.truncation, horizon=H, lr=self.cfg.lr, seed=self.cfg.seed)
        try:
            # optional (the search extra); only Ray runs need it
            import ray
            use_ray = ray.is_initialized()
        except ImportError:  # pragma: no cover - ray is a dependency
            use_ray = False
        if not use_ray:
            return unroll(self.mlp, thetas, get_task(name), inner, **args), inner
        return _run_on_ray(self.mlp.cfg, thetas, name, inner, **args)

    def train(self, on_step: Callable[[dict], None] | None = None, progress: bool = True) -> np.ndarray:
        """Run until ``cfg.iterations`` (from wherever a checkpoint left off); returns theta."""
        # the live display only; rich is slow to import
        from rich.progress import Progress
        with Progress(disable=not progress, transient=True) as bar:
            job = bar.add_task("meta-training (ES)", total=self.cfg.iterations, completed=self.iteration)
            while self.iteration < self.cfg.iterations:
                entry = self.step()
                bar.update(job, completed=self.iteration,
                           description=f"meta-training (ES) {entry['task']} loss {entry['loss']:+.3f}")
                if on_step:
                    on_step(entry)
        return self.theta

    # -- checkpoints ------------------------------------------------------------------------
    def _save(self) -> None:
        arrays: dict[str, np.ndarray] = {"theta": self.theta}
        if self.adam.m is not None:
            arrays["adam_m"], arrays["adam_v"] = self.adam.m, self.adam.v
        inner_meta = {}
        for name, inn in self.inner.items():
            inner_meta[name] = {"t": inn.t, "episode": inn.episode, "n": len(inn.params)}
            arrays[f"{name}/loss0"] = inn.loss0.numpy()
            arrays[f"{name}/dead"] = inn.dead.numpy()
            arrays[f"{name}/xi"] = inn.xi
            for j, (p, s) in enumerate(zip(inn.params, inn.stats)):
                arrays[f"{name}/p{j}"] = p.numpy()
                for k, v in s.tensors().items():
                    arrays[f"{name}/s{j}/{k}"] = v.numpy()
        meta = {"config": asdict(self.cfg), "iteration": self.iteration, "adam_t": self.adam.t,
                "inner": inner_meta, "history": self.history}
        arrays["meta"] = np.array(json.dumps(meta))
        atomic_savez(self.checkpoint, **arrays)

    def _load(self) -> None:
        with np.load(self.checkpoint, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            saved = dict(meta["config"], tasks=tuple(meta["config"]["tasks"]))
            mine = asdict(self.cfg)
            diff = {k for k in saved if k != "iterations" and saved[k] != mine[k]}
            if diff:
                raise ValueError(f"checkpoint {self.checkpoint} was made with other settings ({sorted(diff)}); "
                                 "use another checkpoint path or the same settings")
            self.theta = z["theta"].copy()
            self.iteration, self.history = meta["iteration"], meta["history"]
            self.adam.t = meta["adam_t"]
            if "adam_m" in z:
                self.adam.m, self.adam.v = z["adam_m"].copy(), z["adam_v"].copy()
            for name, im in meta["inner"].items():
                params = [torch.from_numpy(z[f"{name}/p{j}"].copy()) for j in range(im["n"])]
                stats = [FeatureState(**{k: torch.from_numpy(z[f"{name}/s{j}/{k}"].copy())
                                         for k in ("m", "v", "row", "col")}) for j in range(im["n"])]
                self.inner[name] = Inner(im["t"], im["episode"], params, stats,
                                         torch.from_numpy(z[f"{name}/loss0"].copy()),
                                         torch.from_numpy(z[f"{name}/dead"].copy()), z[f"{name}/xi"].copy())


def _slice_inner(inner: Inner, rows: Sequence[int]) -> Inner:
    idx = torch.tensor(list(rows))
    return Inner(inner.t, inner.episode, [p[idx] for p in inner.params],
                 [FeatureState(s.m[:, idx], s.v[idx], s.row[idx], s.col[idx]) for s in inner.stats],
                 inner.loss0[idx] if inner.loss0.numel() == len(inner.dead) else inner.loss0,
                 inner.dead[idx], inner.xi)


def _run_on_ray(cfg: MLPConfig, thetas: torch.Tensor, name: str, inner: Inner, **args
                ) -> tuple[np.ndarray, Inner]:
    """Split the particles into chunks (one per CPU Ray offers) and unroll them as Ray tasks."""
    # optional (the search extra); only Ray runs need it
    import ray
    P = thetas.shape[0]
    chunks = max(1, min(P, int(ray.cluster_resources().get("CPU", 1))))
    bounds = np.array_split(np.arange(P), chunks)
    remote = ray.remote(num_cpus=1)(_unroll_chunk)
    refs = [remote.remote(asdict(cfg), thetas[b], name, _slice_inner(inner, b), args["steps"],
                          args["horizon"], args["lr"], args["seed"]) for b in bounds if len(b)]
    results = ray.get(refs)
    losses = np.concatenate([r[0] for r in results])
    parts = [r[1] for r in results]
    merged = Inner(parts[0].t, inner.episode, [torch.cat([p.params[j] for p in parts]) for j in range(len(inner.params))],
                   [FeatureState(*(torch.cat([getattr(p.stats[j], k) for p in parts], dim=1 if k == "m" else 0)
                                   for k in ("m", "v", "row", "col"))) for j in range(len(inner.stats))],
                   torch.cat([p.loss0 for p in parts]), torch.cat([p.dead for p in parts]), inner.xi)
    return losses, merged
