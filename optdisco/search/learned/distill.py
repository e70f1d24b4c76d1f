"""Symbolic distillation: search rule programs that imitate the learned optimizer.

1. :func:`record`: run the learned optimizer on tasks (the evaluators' init and data,
   seed 0) and keep, per parameter tensor, the sequence of parameters ``W_t``,
   gradients ``G_t`` and learned updates ``U_t`` (a :class:`Recording`, saved as plain
   arrays with ``numpy.savez``).
2. :func:`explained_variance`: replay a rule on the recorded ``(W_t, G_t)`` from zero
   states (teacher forcing: the rule sees exactly the learned optimizer's trajectory)
   and compare its updates ``u_t`` with ``U_t``. The learning rate is free, so each
   trajectory k gets its best scale ``c_k = <U, u> / <u, u>``; then

       EV = 1 - sum_k ||U_k - c_k u_k||^2 / sum_k ||U_k - mean(U_k)||^2

   (1 = the rule explains the learned updates exactly, up to its learning rate).
3. :func:`distill`: the project's own campaign driver (regularized evolution, the
   store, the cache; resumable) searches programs with EV as fitness, warm-started
   from a catalog rule; then the ``top_k`` by EV are scored by task fitness (the
   evaluators, LR-tuned against AdamW) and the best by task fitness among them wins.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ...dsl import Program, run, zero_states
from ...evaluators import get_task, steps_for
from .es import atomic_savez, new_inner, unroll
from .mlp_optimizer import MLPOptimizer


@dataclass
class Recording:
    """Trajectories ``(label, W (T, *shape), G, U, lr (T,))`` of one learned optimizer."""

    trajectories: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    meta: dict = field(default_factory=dict)

    def save(self, path: "str | Path") -> Path:
        """Plain arrays (no pickle): ``k/W``, ``k/G``, ``k/U``, ``k/lr`` and a JSON ``meta``."""
        arrays = {"meta": np.array(json.dumps({**self.meta, "labels": [t[0] for t in self.trajectories]}))}
        for k, (_, W, G, U, lr) in enumerate(self.trajectories):
            arrays[f"{k}/W"], arrays[f"{k}/G"], arrays[f"{k}/U"], arrays[f"{k}/lr"] = W, G, U, lr
        atomic_savez(path, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: "str | Path") -> "Recording":
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            trajs = [(lab, z[f"{k}/W"], z[f"{k}/G"], z[f"{k}/U"], z[f"{k}/lr"])
                     for k, lab in enumerate(meta.pop("labels"))]
        return cls(trajs, meta)


def record(mlp: MLPOptimizer, theta: torch.Tensor, tasks: Sequence[str], *, lr: float = 0.01,
           budget: float = 0.5, max_elements: int = 2048) -> Recording:
    """Run the learned optimizer on ``tasks`` (seed 0, ``lr`` peak) and record its updates.

    Whole tensors are kept (so rules with reductions replay exactly); tensors with more
    than ``max_elements`` entries are skipped to keep the search cheap.
    """
    trajs = []
    for name in tasks:
        task = get_task(name)
        steps = steps_for(task, budget)
        inner = new_inner(task, 1, -1, 0, 1)
        log: list = []
        unroll(mlp, theta.float().reshape(1, -1), task, inner, steps=steps, horizon=steps, lr=lr, seed=0,
               record=log)
        for j, (pname, shape) in enumerate(task.shapes):
            rows = [e for e in log if e[0] == j]
            if not rows or int(np.prod(shape)) > max_elements:
                continue
            W = np.stack([e[3][0].double().numpy() for e in rows])
            G = np.stack([e[4][0].double().numpy() for e in rows])
            U = np.stack([e[5][0].double().numpy() for e in rows])
            L = np.array([float(e[2][0]) for e in rows])
            trajs.append((f"{name}/{pname}", W, G, U, L))
    return Recording(trajs, {"tasks": list(tasks), "lr": lr, "budget": budget})


def explained_variance(program: Program, rec: Recording) -> float:
    """EV of the learned updates by ``program``'s (see the module doc); -10 for a failing rule."""
    sse = sst = 0.0
    try:
        for _, W, G, U, L in rec.trajectories:
            w = torch.from_numpy(W)
            g = torch.from_numpy(G)
            states = zero_states(program, w[0])
            us = []
            for t in range(len(W)):
                u, states = run(program, w[t], g[t], states, step=float(t + 1), lr=float(L[t]),
                                generator=torch.Generator().manual_seed(t))
                us.append(u)
            u = torch.stack(us).numpy()
            if not np.isfinite(u).all():
                return -10.0
            denom = float((u * u).sum())
            c = float((U * u).sum()) / denom if denom > 0 else 0.0
            sse += float(((U - c * u) ** 2).sum())
            sst += float(((U - U.mean()) ** 2).sum())
    except Exception:  # noqa: BLE001 - a rule that fails to run imitates nothing
        return -10.0
    return float(max(-10.0, 1.0 - sse / sst)) if sst > 0 else -10.0


@functools.lru_cache(maxsize=4)
def _load(path: str) -> Recording:
    return Recording.load(path)


def imitation_fitness(programs: Sequence[Program], settings: Mapping[str, Any], *, recording: str) -> list:
    """A search fitness function: EV against the recording at path ``recording``."""
    from ..fitness import Result
    rec = _load(str(recording))
    out = []
    for p in programs:
        ev = explained_variance(p, rec)
        out.append(Result(fitness=ev, per_task={"explained_variance": ev},
                          failure="rule does not run on the recording" if ev <= -10.0 else None))
    return out


@dataclass
class DistillResult:
    """The best rule and how it compares (fitness is against tuned AdamW; 0 = as good)."""

    program: Program
    explained_variance: float
    task_fitness: float
    candidates: list[tuple[str, float, float]]   # (source, EV, task fitness) of the top-k
    store: str


def distill(recording: "str | Path", store: "str | Path", *, budget: int = 64, seed: int = 0,
            warm_start: Program | None = None, top_k: int = 3, tasks: Sequence[str] = ("quadratic",),
            fitness_budget: float = 0.5, cache_dir: str | None = None, progress=None) -> DistillResult:
    """Search rules by EV with the campaign driver (resumes from ``store``), then rank the
    ``top_k`` by task fitness on ``tasks`` (see the module doc)."""
    from ...discovered import catalog
    from ...evaluators import evaluate
    from .. import config
    from ..campaign import Campaign
    from ..executors import InProcessExecutor
    from ..store import Store

    cfg = config.load(None, {"budget": budget, "seed": seed, "report": False, "simplify.enabled": False,
                             "funnel.top_k": 0, "fitness.tasks": [], "evolution.random_fraction": 0.1})
    fit = functools.partial(imitation_fitness, recording=str(Path(recording).resolve()))
    st = Store(store)
    camp = Campaign(cfg, st, InProcessExecutor(fit), on_progress=progress,
                    warm_start=warm_start or catalog.get("adam"))
    camp.search()
    top = camp.top(top_k)
    progs = [camp.parse_row(r) for r in top]
    evs = evaluate(progs, tasks=list(tasks), budget=fitness_budget, cache_dir=cache_dir, properties=False)
    cands = [(p.source(), float(r.fitness), float(e.fitness)) for p, r, e in zip(progs, top, evs)]
    k = int(np.argmax([c[2] for c in cands]))
    best = replace(progs[k], name="distilled", docstring=None, metadata=()).with_metadata(
        Origin="found", Campaign=f"{store}:{top[k].id} (distilled from a learned optimizer)")
    return DistillResult(best, cands[k][1], cands[k][2], cands, str(store))
