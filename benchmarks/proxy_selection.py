"""Which proxy tasks, budget and aggregate predict the held-out ranking of the catalog?

The search optimizes the proxy fitness; what matters is the held-out suite. This script
measures, for 12 catalog rules, the held-out fitness (budget 1.0) and every proxy task's
log-ratio at the given budgets, then prints Spearman's rho between the held-out ranking
and each proxy task, and each candidate campaign setting (task set x aggregate x budget),
with its cost (seconds to evaluate one rule). Parts run as separate processes (one core
each) and meet in a JSON file:

    python benchmarks/proxy_selection.py --part heldout --out sel.json &
    python benchmarks/proxy_selection.py --part proxy --budgets 0.5 1 --out sel.json
    python benchmarks/proxy_selection.py --report --out sel.json

The selection rule is fixed before looking: keep the proxy tasks whose own rho at the
search budget is at least ``--min-rho`` (0.5). With 12 rules, a rho has a standard error of
about 0.25, so differences smaller than that between settings are noise.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import time
from pathlib import Path

import numpy as np
from bench_eval import spearman

from optdisco import catalog
from optdisco.evaluators import ADAMW, evaluate
from optdisco.evaluators.fitness import standardized
from optdisco.evaluators.tasks import suite_tasks

RULES = ["sgd", "momentum", "nesterov", "adam", "adamw", "nadamw", "lion", "signum", "adabelief",
         "rmsprop", "adagrad", "lamb"]
CURRENT_DEFAULT = ["quadratic", "logreg", "digits_mlp", "teacher_student"]


def _merge(path: Path, key: str, value) -> None:
    """Store ``value`` under ``key`` in the JSON file, safely beside another process."""
    path.touch()
    with open(path, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        text = f.read()
        data = json.loads(text) if text.strip() else {}
        data[key] = value
        f.seek(0)
        f.truncate()
        json.dump(data, f, indent=1)


def heldout_part(out: Path, budget: float) -> None:
    t = time.perf_counter()
    evs = evaluate([catalog.get(n) for n in RULES], suite="heldout", budget=budget, properties=False)
    _merge(out, "heldout", {n: e.fitness for n, e in zip(RULES, evs)})
    print(f"held-out done in {time.perf_counter() - t:.0f}s")


def proxy_part(out: Path, budgets: list[float]) -> None:
    progs = [catalog.get(n) for n in RULES]
    for budget in budgets:
        per: dict[str, dict[str, float]] = {n: {} for n in RULES}
        cost: dict[str, float] = {}
        for task in suite_tasks("proxy"):
            evaluate([ADAMW], tasks=[task], budget=budget, properties=False)  # baseline tuned and cached
            t = time.perf_counter()
            evs = evaluate(progs, tasks=[task], budget=budget, properties=False)
            cost[task] = (time.perf_counter() - t) / len(progs)
            for n, e in zip(RULES, evs):
                per[n][task] = e.per_task[task]
            print(f"budget {budget:g} {task}: {cost[task]:.2f}s per rule")
        _merge(out, f"proxy@{budget:g}", {"per_task": per, "seconds_per_rule": cost})


def report(out: Path, min_rho: float, search_budget: float) -> None:
    data = json.loads(out.read_text())
    held = [data["heldout"][n] for n in RULES]
    budgets = sorted(float(k.split("@")[1]) for k in data if k.startswith("proxy@"))
    print(f"{len(RULES)} catalog rules; held-out fitness: " +
          ", ".join(f"{n} {data['heldout'][n]:+.3f}" for n in RULES))
    rho_at: dict[float, dict[str, float]] = {}
    for b in budgets:
        d = data[f"proxy@{b:g}"]
        tasks = list(d["seconds_per_rule"])
        rho_at[b] = {t: spearman([d["per_task"][n][t] for n in RULES], held) for t in tasks}
        print(f"\nbudget {b:g}: per task, rho with the held-out ranking, seconds per rule, and the "
              f"spread of the rules' log-ratios (fitness.TASK_SCALES holds those of budget 1)")
        for t in tasks:
            spread = float(np.std([d["per_task"][n][t] for n in RULES]))
            print(f"  {t:16s} {rho_at[b][t]:+.2f}  {d['seconds_per_rule'][t]:5.2f}s  spread {spread:.3f}")

    b0 = search_budget if search_budget in rho_at else budgets[0]
    selected = [t for t, r in rho_at[b0].items() if r >= min_rho]
    print(f"\nselected (rho >= {min_rho:g} at budget {b0:g}): {', '.join(selected)}")
    print("\nsetting: tasks / aggregate / budget -> rho, seconds per rule")
    for b in budgets:
        d = data[f"proxy@{b:g}"]
        for label, tasks in [("all", list(d["seconds_per_rule"])), ("current default", CURRENT_DEFAULT),
                             ("selected", selected)]:
            for aggregate in ("mean", "standardized"):
                def fit(n: str, d: dict = d, tasks: list = tasks, aggregate: str = aggregate) -> float:
                    ratios = {t: [d["per_task"][n][t]] for t in tasks}
                    if aggregate == "standardized":
                        ratios = standardized(ratios)
                    return float(np.mean([v[0] for v in ratios.values()]))
                rho = spearman([fit(n) for n in RULES], held)
                cost = sum(d["seconds_per_rule"][t] for t in tasks)
                print(f"  {label:16s} {aggregate:12s} {b:<4g} rho {rho:+.3f}  {cost:5.2f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("proxy_selection.json"))
    ap.add_argument("--part", choices=["heldout", "proxy"])
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--heldout-budget", type=float, default=1.0)
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--min-rho", type=float, default=0.5)
    ap.add_argument("--search-budget", type=float, default=0.5)
    args = ap.parse_args()
    if args.part == "heldout":
        heldout_part(args.out, args.heldout_budget)
    elif args.part == "proxy":
        proxy_part(args.out, args.budgets)
    if args.report:
        report(args.out, args.min_rho, args.search_budget)


if __name__ == "__main__":
    main()
