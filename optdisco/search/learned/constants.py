"""Meta-learning a rule's constants: evolution strategies over its hyperparameters and literals.

The searched vector ``z`` holds every hyperparameter default and every literal constant
of the rule except the structural ones (``STRUCTURAL``: 0, +-1, 2, 0.5), each in a space
where a unit step means the same thing everywhere: ``logit(x)`` for 0 < x < 1 (betas,
small eps), ``log(x)`` for x >= 1, negative values mirrored, and ``x / 0.01`` for a zero. A rule with values ``x(z)`` is scored by
the evaluators (LR-tuned on every task, against tuned AdamW); ES maximizes that fitness
with antithetic pairs, rank shaping and Adam on the mean (:mod:`.es`). Candidates are
evaluated as rule *texts* through :func:`optdisco.search.fitness.evaluate_batch`, on Ray
(``ray.remote``) when Ray is initialized, in-process otherwise. Every iteration is
checkpointed; a rerun with the same checkpoint resumes.

The result is a catalog-ready rule (``Origin: found`` with the learned values and their
provenance) and its comparison with the paper defaults on a held-out suite.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ...dsl.ir import Assign, Call, Const, Expr, Program
from .es import Adam, atomic_savez, es_gradient

STRUCTURAL = (0.0, 1.0, -1.0, 2.0, 0.5)


# -- the constants of a program ------------------------------------------------------------

def _const_sites(e: Expr, path: tuple[int, ...] = ()) -> list[tuple[tuple[int, ...], float]]:
    if isinstance(e, Const):
        return [] if e.value in STRUCTURAL else [(path, e.value)]
    if isinstance(e, Call):
        return [s for i, a in enumerate(e.args) for s in _const_sites(a, path + (i,))]
    return []


def _set(e: Expr, path: tuple[int, ...], value: float) -> Expr:
    if not path:
        return Const(value)
    assert isinstance(e, Call)
    args = list(e.args)
    args[path[0]] = _set(args[path[0]], path[1:], value)
    return Call(e.fn, tuple(args))


def parameters_of(p: Program) -> list[tuple[str, float]]:
    """``[(label, value)]``: the hyperparameters by name, then literals as ``line<i>.c<j>``/``update.c<j>``."""
    out = list(p.hyperparameters)
    for i, stmt in enumerate(p.body):
        out += [(f"{stmt.target}@{i}.c{j}", v) for j, (_, v) in enumerate(_const_sites(stmt.expr))]
    out += [(f"update.c{j}", v) for j, (_, v) in enumerate(_const_sites(p.update))]
    return out


def with_parameters(p: Program, values: Sequence[float]) -> Program:
    """``p`` with the values of :func:`parameters_of` replaced, in the same order."""
    values = [float(v) for v in values]
    n = len(parameters_of(p))
    if n != len(values):
        raise ValueError(f"rule '{p.name}' has {n} learnable values, got {len(values)}")
    nh = len(p.hyperparameters)
    q = p.with_hyperparameters(dict(zip(p.hyperparameter_names, values[:nh])))
    k = nh
    body = []
    for stmt in q.body:
        e = stmt.expr
        for path, _ in _const_sites(stmt.expr):
            e = _set(e, path, values[k])
            k += 1
        body.append(Assign(stmt.target, e, stmt.line))
    upd = q.update
    for path, _ in _const_sites(q.update):
        upd = _set(upd, path, values[k])
        k += 1
    return replace(q, body=tuple(body), update=upd)


def kind_of(x: float) -> str:
    """Which transform a value uses: ``zero``, ``unit`` (0, 1), ``log`` [1, inf), negatives mirrored."""
    if x == 0.0:
        return "zero"
    sign = "-" if x < 0 else ""
    return sign + ("unit" if abs(x) < 1.0 else "log")


def from_z(z: float, kind: str) -> float:
    """Inverse of :func:`to_z` for a value of ``kind``."""
    if kind == "zero":
        return 0.01 * z
    if kind.startswith("-"):
        return -from_z(-z, kind[1:])
    if kind == "unit":
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))
    return math.exp(max(min(z, 50.0), -50.0))


def to_z(x: float) -> float:
    """The search coordinate of a value: logit in (0, 1), log from 1, mirrored for negatives, 0 at 0."""
    if x == 0.0:
        return 0.0
    if x < 0:
        return -to_z(-x)
    return math.log(x / (1.0 - x)) if x < 1.0 else math.log(x)


def _round(v: float) -> float:
    return float(f"{v:.4g}")


# -- ES over them ---------------------------------------------------------------------------

@dataclass
class LearnConfig:
    """ES settings: pairs, sigma (in z units), meta lr, iterations, and the fitness settings."""

    pairs: int = 4
    sigma: float = 0.3
    meta_lr: float = 0.1
    iterations: int = 8
    seed: int = 0
    suite: str = "proxy"
    tasks: tuple[str, ...] = ()
    seeds: int = 1
    budget: float = 0.5
    heldout_suite: str = "heldout"
    heldout_tasks: tuple[str, ...] = ()
    heldout_budget: float = 0.25
    cache_dir: str | None = None

    def settings(self, heldout: bool = False) -> dict[str, Any]:
        """Fitness settings for :func:`optdisco.search.fitness.evaluate_batch`."""
        if heldout:
            return {"suite": self.heldout_suite, "tasks": list(self.heldout_tasks), "seeds": self.seeds,
                    "budget": self.heldout_budget, "cache_dir": self.cache_dir}
        return {"suite": self.suite, "tasks": list(self.tasks), "seeds": self.seeds, "budget": self.budget,
                "cache_dir": self.cache_dir}


def evaluate_sources(sources: Sequence[str], settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Fitness of rule texts: one Ray task per text when Ray is initialized, one batch otherwise."""
    from ..fitness import evaluate_batch
    try:
        # optional (the search extra); only Ray runs need it
        import ray
        on_ray = ray.is_initialized()
    except ImportError:  # pragma: no cover
        on_ray = False
    if not on_ray:
        return evaluate_batch(list(sources), settings, "proxy")
    remote = ray.remote(num_cpus=1)(evaluate_batch)
    return [r[0] for r in ray.get([remote.remote([s], settings, "proxy") for s in sources])]


@dataclass
class LearnResult:
    """What :func:`learn_constants` found: the rule, the values, fitness before/after, provenance."""

    program: Program
    names: list[str]
    before: list[float]
    after: list[float]
    proxy_fitness: tuple[float, float]       # (paper defaults, learned) on the training suite
    heldout_fitness: tuple[float, float]     # (paper defaults, learned) on the held-out suite
    history: list[dict] = field(default_factory=list)

    @property
    def beats_defaults_heldout(self) -> bool:
        return self.heldout_fitness[1] > self.heldout_fitness[0]


class ConstantLearner:
    """ES over the learnable values of ``program`` with checkpoints (see the module doc)."""

    def __init__(self, program: Program, cfg: LearnConfig, checkpoint: "str | os.PathLike | None" = None,
                 evaluate: Callable[[Sequence[str], dict], list[dict]] = evaluate_sources) -> None:
        self.program, self.cfg, self.evaluate = program, cfg, evaluate
        params = parameters_of(program)
        if not params:
            raise ValueError(f"rule '{program.name}' has no hyperparameters or constants to learn")
        self.names = [n for n, _ in params]
        self.x0 = [v for _, v in params]
        self.kinds = [kind_of(v) for v in self.x0]
        self.z = np.array([to_z(v) for v in self.x0])
        self.adam = Adam(cfg.meta_lr)
        self.iteration = 0
        self.history: list[dict] = []
        self.checkpoint = Path(checkpoint) if checkpoint else None
        if self.checkpoint is not None and self.checkpoint.exists():
            self._load()

    def values(self, z: np.ndarray) -> list[float]:
        """The rule's values at search coordinates ``z``."""
        return [from_z(float(zi), k) for zi, k in zip(z, self.kinds)]

    def program_at(self, z: np.ndarray, rounded: bool = False) -> Program:
        vals = self.values(z)
        return with_parameters(self.program, [_round(v) for v in vals] if rounded else vals)

    def step(self) -> dict:
        """One ES iteration: 2N perturbed rules and the mean, evaluated together."""
        cfg = self.cfg
        eps = np.random.default_rng([cfg.seed, self.iteration]).standard_normal((cfg.pairs, len(self.z)))
        zs = [self.z + cfg.sigma * e for e in eps] + [self.z - cfg.sigma * e for e in eps] + [self.z]
        results = self.evaluate([self.program_at(z).source() for z in zs], cfg.settings())
        fit = np.array([r["fitness"] for r in results], dtype=float)
        loss = -fit[:-1]
        grad = es_gradient(loss[:cfg.pairs], loss[cfg.pairs:], eps, cfg.sigma, shaping=True)
        self.z = self.adam.step(self.z, grad)
        self.iteration += 1
        entry = {"iteration": self.iteration, "mean_fitness": float(fit[-1]), "best_member": float(fit[:-1].max()),
                 "values": self.values(self.z)}
        self.history.append(entry)
        if self.checkpoint is not None:
            self._save()
        return entry

    def train(self, progress: bool = True, on_step: Callable[[dict], None] | None = None) -> np.ndarray:
        """Iterate to ``cfg.iterations`` (from a checkpoint's iteration); returns z."""
        # the live display only; rich is slow to import
        from rich.progress import Progress
        with Progress(disable=not progress, transient=True) as bar:
            job = bar.add_task(f"learning {self.program.name}", total=self.cfg.iterations, completed=self.iteration)
            while self.iteration < self.cfg.iterations:
                e = self.step()
                bar.update(job, completed=self.iteration,
                           description=f"learning {self.program.name}: fitness {e['mean_fitness']:+.3f}")
                if on_step:
                    on_step(e)
        return self.z

    def result(self) -> LearnResult:
        """Evaluate paper defaults and learned values on the training and held-out suites."""
        from ..found import default_lr
        learned = self.program_at(self.z, rounded=True)
        base = self.program
        proxy = self.evaluate([base.source(), learned.source()], self.cfg.settings())
        held = self.evaluate([base.source(), learned.source()], self.cfg.settings(heldout=True))
        pf = (proxy[0]["fitness"], proxy[1]["fitness"])
        hf = (held[0]["fitness"], held[1]["fitness"])
        after = [v for _, v in parameters_of(learned)]
        facts = {
            "Formula": base.meta.get("Formula", "as in " + base.name),
            # a catalog rule states its learning rate: the learned rule's tuned rates on the held-out tasks
            "Defaults": ", ".join([f"lr={default_lr([held[1].get('tuned_lr') or {}])!r}"]
                                  + [f"{n}={v:g}" for n, v in learned.hyperparameters]),
            "Origin": "found",
            "Campaign": (f"optdisco learn {base.name}: ES ({self.cfg.pairs} antithetic pairs, sigma {self.cfg.sigma}, "
                         f"{self.iteration} iterations, seed {self.cfg.seed}) on suite {self.cfg.suite}"),
            "Learned": "; ".join(f"{n}: {a:g} -> {b:g}" for n, a, b in zip(self.names, self.x0, after)),
            "Date": time.strftime("%Y-%m-%d", time.gmtime()),
            "Validation": (f"fitness vs tuned AdamW, paper defaults -> learned: {self.cfg.suite} "
                           f"{pf[0]:+.3f} -> {pf[1]:+.3f}; {self.cfg.heldout_suite} {hf[0]:+.3f} -> {hf[1]:+.3f}"),
        }
        prog = replace(learned, name=f"{base.name}_learned").with_metadata(**facts)
        return LearnResult(prog, self.names, self.x0, after, pf, hf, self.history)

    def _save(self) -> None:
        arrays = {"z": self.z, "meta": np.array(json.dumps({
            "source": self.program.source(), "config": asdict(self.cfg), "iteration": self.iteration,
            "adam_t": self.adam.t, "history": self.history}))}
        if self.adam.m is not None:
            arrays["adam_m"], arrays["adam_v"] = self.adam.m, self.adam.v
        atomic_savez(self.checkpoint, **arrays)

    def _load(self) -> None:
        with np.load(self.checkpoint, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta["source"] != self.program.source():
                raise ValueError(f"checkpoint {self.checkpoint} belongs to another rule")
            self.z = z["z"].copy()
            self.iteration, self.history, self.adam.t = meta["iteration"], meta["history"], meta["adam_t"]
            if "adam_m" in z:
                self.adam.m, self.adam.v = z["adam_m"].copy(), z["adam_v"].copy()


def rule_text(result: LearnResult) -> str:
    """The catalog file text (``found/<name>.rule``) of a learned rule."""
    from ...discovered.catalog import rule_file_text
    meta = result.program.meta
    summary = f"{result.program.name}: the {result.program.name[:-len('_learned')]} rule with meta-learned constants"
    keys = ("Formula", "Defaults", "Origin", "Campaign", "Learned", "Date", "Validation")
    return rule_file_text(result.program, summary, {k: meta[k] for k in keys if k in meta})
