"""What the ``optdisco learn`` command calls; each function prints with rich and returns its result.

- :func:`learn_rule`: ``optdisco learn RULE [--suite proxy]`` (ES over constants).
- :func:`learn_mlp`: ``optdisco learn --mlp -o W.npz`` (meta-train the MLP optimizer).
- :func:`learn_residual`: ``optdisco learn --residual [--preset hour] -o W.npz`` (meta-train the
  residual optimizer, AdamW plus a learned correction; checkpointed, resumable, HTML curves).
- :func:`distill_mlp`: ``optdisco learn --distill W.npz`` (a rule that imitates it).
- :func:`eval_learned`: the learned optimizer on a suite, for ``optdisco eval --learned W.npz``.

Ray: ``address`` joins a cluster ("auto" or host:port); ``workers > 0`` starts a local
Ray with that many CPUs; otherwise everything runs in this process.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ..search.learned.constants import (
    ConstantLearner,
    LearnConfig,
    LearnResult,
    rule_text,
)
from ..search.learned.distill import DistillResult, distill, record
from ..search.learned.es import ESConfig, MetaTrainer
from ..search.learned.learned_eval import evaluate_learned, evaluate_residual
from ..search.learned.mlp_optimizer import MLPOptimizer, load, save
from ..search.learned.residual import is_residual_weights, load_theta, resolve_weights, save_theta
from ..search.learned.residual_meta import (
    PRESETS,
    ResidualESConfig,
    ResidualMetaTrainer,
    cycle_means,
    write_meta_report,
)


def _ray(address: str | None, workers: int) -> None:
    if address or workers > 0:
        from ..search.executors import init_ray
        init_ray(address or "", workers)


def learn_rule(rule: str, *, suite: str = "proxy", tasks: Sequence[str] = (), pairs: int = 4,
               sigma: float = 0.3, meta_lr: float = 0.1, iterations: int = 8, seed: int = 0,
               seeds: int = 1, budget: float = 0.5, heldout_suite: str = "heldout",
               heldout_tasks: Sequence[str] = (), heldout_budget: float = 0.25,
               checkpoint: str | None = None, out: str | None = None, address: str | None = None,
               workers: int = 0, cache_dir: str | None = None, console: Console | None = None,
               progress: bool = True) -> LearnResult:
    """ES over RULE's constants; writes ``out`` (default ``<rule>_learned.rule``); checkpoint
    ``<out>.ckpt.npz`` unless given (rerun the same command to resume)."""
    from ..discovered.optimizer import resolve_rule
    console = console or Console()
    program = resolve_rule(rule)
    out_path = Path(out or f"{program.name}_learned.rule")
    ckpt = checkpoint or str(out_path) + ".ckpt.npz"
    _ray(address, workers)
    cfg = LearnConfig(pairs=pairs, sigma=sigma, meta_lr=meta_lr, iterations=iterations, seed=seed, suite=suite,
                      tasks=tuple(tasks), seeds=seeds, budget=budget, heldout_suite=heldout_suite,
                      heldout_tasks=tuple(heldout_tasks), heldout_budget=heldout_budget, cache_dir=cache_dir)
    learner = ConstantLearner(program, cfg, ckpt)
    if learner.iteration:
        console.print(f"resuming from {ckpt} at iteration {learner.iteration}")
    learner.train(progress=progress, on_step=lambda e: console.print(
        f"iteration {e['iteration']}: fitness of the mean {e['mean_fitness']:+.4f}, best member {e['best_member']:+.4f}"))
    res = learner.result()
    out_path.write_text(rule_text(res), encoding="utf-8")
    table = Table(title=f"{program.name}: learned constants")
    for col in ("value", "paper default", "learned"):
        table.add_column(col)
    for n, a, b in zip(res.names, res.before, res.after):
        table.add_row(n, f"{a:g}", f"{b:g}")
    console.print(table)
    console.print(f"fitness vs tuned AdamW, defaults -> learned: {suite} {res.proxy_fitness[0]:+.4f} -> "
                  f"{res.proxy_fitness[1]:+.4f}; {heldout_suite} {res.heldout_fitness[0]:+.4f} -> "
                  f"{res.heldout_fitness[1]:+.4f}")
    console.print(f"beats the paper defaults on {heldout_suite}: {'yes' if res.beats_defaults_heldout else 'no'}")
    console.print(f"wrote {out_path}")
    return res


def learn_mlp(out: str, *, tasks: Sequence[str] = ("quadratic", "logreg"), iterations: int = 50, pairs: int = 8,
              sigma: float = 0.05, meta_lr: float = 0.01, truncation: int = 10, horizon: int = 0,
              lr: float = 0.01, estimator: str = "pes", seed: int = 0, hidden: int = 16,
              checkpoint: str | None = None, address: str | None = None, workers: int = 0,
              console: Console | None = None, progress: bool = True) -> Path:
    """Meta-train the MLP optimizer by ES; writes weights to ``out`` (``.npz``, no pickle);
    checkpoint ``<out>.ckpt.npz`` unless given (rerun the same command to resume)."""
    console = console or Console()
    _ray(address, workers)
    cfg = ESConfig(tasks=tuple(tasks), pairs=pairs, sigma=sigma, meta_lr=meta_lr, truncation=truncation,
                   horizon=horizon, lr=lr, iterations=iterations, estimator=estimator, seed=seed, hidden=hidden)
    trainer = MetaTrainer(cfg, checkpoint or out + ".ckpt.npz")
    if trainer.iteration:
        console.print(f"resuming at iteration {trainer.iteration}")
    theta = trainer.train(progress=progress)
    path = save(out, trainer.mlp.cfg, torch.from_numpy(theta),
                provenance={"lr": lr, "es": {k: (list(v) if isinstance(v, tuple) else v)
                                             for k, v in vars(cfg).items()},
                            "last": trainer.history[-1] if trainer.history else None})
    console.print(f"wrote {path} ({trainer.mlp.cfg.dim} weights, {trainer.iteration} ES iterations)")
    return path


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)  # Python writes floats, nan and inf the way TOML reads them
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))  # a JSON string is a TOML basic string


def provenance_toml(sections: dict[str, dict]) -> str:
    """TOML text of ``{section: {key: value}}`` (strings, numbers, booleans and lists of them)."""
    lines = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
        lines.append("")
    return "\n".join(lines)


def learn_residual(out: str, *, preset: str = "hour", tasks: Sequence[str] = (), iterations: int | None = None,
                   pairs: int | None = None, seed: int = 0, checkpoint: str | None = None,
                   address: str | None = None, workers: int = 0, cache_dir: str | None = None,
                   command: str = "", console: Console | None = None) -> Path:
    """Meta-train the residual optimizer by ES (:mod:`optdisco.search.learned.residual_meta`);
    writes ``out`` (theta, ``.npz``, no pickle), ``<out>.toml`` (provenance) and ``<out>.html``
    (curves); checkpoint ``<out>.ckpt.npz`` unless given (rerun the same command to resume)."""
    if preset not in PRESETS:
        raise SystemExit(f"optdisco learn --residual: unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    console = console or Console()
    settings = dict(PRESETS[preset], seed=seed)
    settings.update({k: v for k, v in {"tasks": tuple(tasks) or None, "iterations": iterations,
                                       "pairs": pairs}.items() if v is not None})
    cfg = ResidualESConfig(**settings)
    _ray(address, workers)
    ckpt = checkpoint or out + ".ckpt.npz"
    trainer = ResidualMetaTrainer(cfg, ckpt, cache_dir=cache_dir)
    if trainer.iteration:
        console.print(f"resuming from {ckpt} at iteration {trainer.iteration}/{cfg.iterations}")
    started = time.time()

    def show(e: dict) -> None:
        console.print(f"iteration {e['iteration']}/{cfg.iterations} {e['task']}: mean theta vs AdamW "
                      f"{e['mean_vs_adamw']:+.4f} (best member {e['best_member_vs_adamw']:+.4f}, "
                      f"{e['diverged']} diverged) in {e['seconds']:.1f} s", highlight=False, soft_wrap=True)

    theta = trainer.train(on_step=show)
    save_theta(out, theta.astype(np.float32), hidden=cfg.hidden, alpha=cfg.alpha, base=cfg.base)
    cycles = cycle_means(trainer.history, len(cfg.tasks))
    meta = {"command": command or "optdisco learn --residual", "preset": preset, "seed": seed,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "iterations": trainer.iteration,
            "seconds_this_run": round(time.time() - started, 1),
            "seconds_total": round(sum(h["seconds"] for h in trainer.history), 1),
            "inner_runs": trainer.iteration * (2 * cfg.pairs + 2)}
    es = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    training = {"last_cycle_mean_vs_adamw": cycles[-1][1] if cycles else None,
                "first_cycle_mean_vs_adamw": cycles[0][1] if cycles else None}
    Path(out + ".toml").write_text(provenance_toml({"provenance": meta, "es": es, "training": training}),
                                   encoding="utf-8")
    report = write_meta_report(trainer.history, cfg, out + ".html")
    console.print(f"wrote {out} ({len(theta)} weights, {trainer.iteration} ES iterations), {out}.toml, {report}")
    return Path(out)


def eval_learned(weights: str, *, suite: str = "proxy", tasks: Sequence[str] = (), seeds: int = 1,
                 budget: float = 1.0, cache_dir: str | None = None, console: Console | None = None) -> dict:
    """The learned optimizer's fitness against tuned AdamW, per task and overall; ``weights`` is a
    path or the name of shipped weights ("default"), residual or MLP."""
    console = console or Console()
    path = resolve_weights(weights)
    if is_residual_weights(path):
        w = load_theta(path)
        res = evaluate_residual(w["theta"], hidden=w["hidden"], alpha=w["alpha"], base=w["base"], suite=suite,
                                tasks=list(tasks) or None, seeds=seeds, budget=budget, cache_dir=cache_dir,
                                on_task=lambda t, f, lr: console.print(f"{t}: {f:+.4f} (tuned lr {lr:g})",
                                                                       highlight=False))
        kind = "residual"
    else:
        cfg, theta, _ = load(path)
        res = evaluate_learned(MLPOptimizer(cfg), theta, suite=suite, tasks=list(tasks) or None, seeds=seeds,
                               budget=budget, cache_dir=cache_dir)
        kind = "MLP"
    table = Table(title=f"learned {kind} optimizer {weights} vs tuned AdamW ({suite}, budget {budget:g})")
    for col in ("task", "log(L_AdamW / L)", "tuned lr"):
        table.add_column(col)
    for t, f in res["per_task"].items():
        table.add_row(t, f"{f:+.4f}", f"{res['tuned_lr'][t]:g}")
    console.print(table)
    ci = res.get("ci")
    console.print(f"fitness {res['fitness']:+.4f}" + (f" [{ci[0]:+.4f}, {ci[1]:+.4f}] (95% bootstrap over "
                                                       f"{seeds} seeds)" if ci else ""), highlight=False)
    return res


def distill_mlp(weights: str, store: str, *, tasks: Sequence[str] = ("quadratic", "logreg"),
                budget: int = 64, seed: int = 0, record_budget: float = 0.25, fitness_budget: float = 0.5,
                heldout_tasks: Sequence[str] = (), heldout_budget: float = 0.25,
                out: str | None = None, cache_dir: str | None = None,
                console: Console | None = None) -> tuple[DistillResult, dict]:
    """Record the learned optimizer on ``tasks``, search an imitating rule (store ``store``,
    resumable), and compare it with the learned optimizer and AdamW on held-out tasks
    (``heldout_tasks``; the whole held-out suite when empty)."""
    from ..evaluators import evaluate
    console = console or Console()
    cfg, theta, prov = load(weights)
    mlp = MLPOptimizer(cfg)
    rec_path = Path(store).with_suffix(".recording.npz")
    if not rec_path.exists():
        record(mlp, theta, tasks, lr=float(prov.get("lr", 0.01)), budget=record_budget).save(rec_path)
    res = distill(rec_path, store, budget=budget, seed=seed, tasks=tasks, fitness_budget=fitness_budget,
                  cache_dir=cache_dir)
    held = list(heldout_tasks) or None
    held_rule = evaluate([res.program], suite="heldout", tasks=held, budget=heldout_budget, cache_dir=cache_dir,
                         properties=False)[0].fitness
    held_mlp = evaluate_learned(mlp, theta, suite="heldout", tasks=held, budget=heldout_budget,
                                cache_dir=cache_dir)["fitness"]
    cmp = {"distilled": held_rule, "learned": held_mlp, "adamw": 0.0}
    console.print(res.program.source())
    console.print(f"explains {res.explained_variance:.4f} of the learned optimizer's update variance; "
                  f"task fitness {res.task_fitness:+.4f}")
    console.print(f"held-out fitness vs tuned AdamW: distilled {held_rule:+.4f}, learned {held_mlp:+.4f}, AdamW +0")
    if out:
        from ..discovered.catalog import rule_file_text
        facts = {"Formula": "see the rule body", "Defaults": ", ".join(
            f"{n}={v:g}" for n, v in res.program.hyperparameters) or "none", "Origin": "found",
            "Campaign": res.program.meta["Campaign"],
            "Validation": (f"explained variance {res.explained_variance:.4f}; held-out fitness distilled "
                           f"{held_rule:+.4f}, learned {held_mlp:+.4f}, AdamW +0")}
        Path(out).write_text(rule_file_text(res.program, "A rule distilled from a learned MLP optimizer", facts),
                             encoding="utf-8")
        console.print(f"wrote {out}")
    return res, cmp
