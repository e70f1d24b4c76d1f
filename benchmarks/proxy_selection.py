"""Does the search's fitness rank rules like the held-out suite, on the rules the search makes?

The search optimizes a proxy fitness; what matters is the held-out suite. This script
measures both on one rule set: every found rule (``optdisco/discovered/found``), the top
``--top`` search programs of each campaign store given with ``--store``, and the catalog's
elementwise known rules that train quickly on CPU. It prints, for the current default
fitness and for candidate settings (task set x budget x aggregate), Spearman's rho with
the held-out ranking, the share of rules whose sign against tuned AdamW agrees with the
held-out sign, and the seconds per rule. Parts run as separate processes (one core each)
and meet in a JSON file; both are resumable, each (rule, task) result is written as it
finishes:

    python benchmarks/proxy_selection.py --part heldout --store runs/X.db --top 4 --out sel.json &
    python benchmarks/proxy_selection.py --part proxy --store runs/X.db --top 4 --budgets 0.5 1 --out sel.json
    python benchmarks/proxy_selection.py --report --out sel.json

Selection is fixed before looking (see :func:`choose`): rules are split into a choosing half
and a checking half by a hash of their source; the setting with the highest rho + sign share
on the choosing half, among those costing at most ``--max-cost`` times the current default's
seconds per rule (measured in the same run, so a loaded machine slows both alike), is chosen, and the report prints its numbers on both halves and on all rules.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import itertools
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
from bench_eval import spearman

from optdisco import catalog
from optdisco.evaluators import ADAMW, evaluate, get_task
from optdisco.evaluators.fitness import (WORST_LOG_RATIO, aggregate_fitness, catalog_spreads, log_ratio,
                                         noise_floor_text)
from optdisco.evaluators.tasks import suite_tasks
from optdisco.search.store import Store

#: Elementwise known rules that train quickly on CPU (norm-based and matrix rules left out).
CATALOG = ["sgd", "momentum", "nesterov", "adam", "adamw", "nadamw", "lion", "signum", "adabelief",
           "rmsprop", "adagrad", "yogi", "qhm", "adopt", "amsgrad", "lamb"]
#: The default campaign's fitness before this study (optdisco/search/defaults.toml, 2026-12-02).
OLD_DEFAULT = ["quadratic", "rosenbrock", "logreg", "digits_mlp", "digits_cnn", "mnist1d", "teacher_student",
               "autoencoder"]
TOYS = {"quadratic", "rosenbrock"}
AGGREGATE_NAMES = ("mean", "standardized", "median", "trimmed")
CHUNK = 10  # rules evaluated together (batched) before their results are written


def rule_set(stores: list[Path], top: int) -> dict[str, str]:
    """name -> rule source: found rules, each store's top ``top`` search programs, the catalog subset."""
    groups = [{n: catalog.get(n).source() for n in (e.name for e in catalog.entries() if e.origin == "found")}]
    for path in stores:
        with Store(path, create=False) as st:
            groups.append({f"{path.stem}#{row.id}": row.program().source() for row in st.top_programs(top)})
    groups.append({n: catalog.get(n).source() for n in CATALOG})
    # interleaved, so that a run stopped early still holds rules of every kind
    order = [n for tier in itertools.zip_longest(*(list(g) for g in groups)) for n in tier if n is not None]
    merged = {k: v for g in groups for k, v in g.items()}
    return {n: merged[n] for n in order}


def _program(source: str):
    from optdisco.dsl import parse  # the DSL's parser; only needed to rebuild rules from the JSON
    return parse(source)


def _update(path: Path, fn: Callable[[dict], None]) -> dict:
    """Apply ``fn`` to the JSON file's data under an exclusive lock (two parts write one file)."""
    path.touch()
    with open(path, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        text = f.read()
        data = json.loads(text) if text.strip() else {}
        fn(data)
        f.seek(0)
        f.truncate()
        json.dump(data, f, indent=1)
    return data


def run_part(out: Path, key: str, rules: dict[str, str], tasks: list[str], budget: float, seeds: int) -> None:
    """Per-seed log-ratios of every rule on every task into ``data[key][task][rule]``, resumably.

    Each (chunk of rules, task) is one batched evaluation; its results and its seconds per
    rule are written before the next begins, and pairs already in the file are skipped.
    """
    data = _update(out, lambda d: d.setdefault("rules", {}).update(rules))
    done = data.get(key, {})
    names = list(rules)
    for chunk_start in range(0, len(names), CHUNK):
        chunk = names[chunk_start:chunk_start + CHUNK]
        for task in tasks:
            todo = [n for n in chunk if n not in done.get(task, {})]
            if not todo:
                continue
            evaluate([ADAMW], tasks=[task], seeds=seeds, budget=budget, properties=False, curves=False)
            t = time.perf_counter()
            evs = evaluate([_program(rules[n]) for n in todo], tasks=[task], seeds=seeds, budget=budget,
                           properties=False, curves=False)
            seconds = (time.perf_counter() - t) / len(todo)
            floor = get_task(task).loss_floor
            result = {n: {"ratios": [log_ratio(b, c, floor) for b, c in
                                     zip(e.baseline_losses[task], e.losses[task])], "seconds": seconds,
                          "failure": e.failures.get(task)} for n, e in zip(todo, evs)}

            def put(d: dict, task: str = task, result: dict = result) -> None:
                d.setdefault(key, {}).setdefault(task, {}).update(result)
            done = _update(out, put).get(key, {})
            print(f"{key} {task}: {len(todo)} rules, {seconds:.2f}s per rule", flush=True)


def _ratios(part: dict, rule: str, tasks: list[str]) -> dict[str, list[float]]:
    return {t: part[t][rule]["ratios"] for t in tasks}


def choose(settings: dict[str, tuple[list[str], float, str]], score: Callable[[str, list[str]], tuple[float, float]],
           cost: Callable[[str], float], choosing: list[str], max_cost: float) -> str:
    """The setting maximizing rho + sign share on the ``choosing`` rules, among those costing
    at most ``max_cost`` seconds per rule (the rule is fixed before looking at any result)."""
    affordable = [s for s in settings if cost(s) <= max_cost]
    return max(affordable, key=lambda s: sum(score(s, choosing)))


def report(out: Path, search_budget: float, heldout_aggregate: str, max_cost: float) -> None:
    data = json.loads(out.read_text())
    held_part = data["heldout"]
    held_tasks = [t for t in suite_tasks("heldout") if t in held_part]
    proxy_keys = sorted((k for k in data if k.startswith("proxy@")), key=lambda k: float(k.split("@")[1]))
    # only rules complete everywhere enter the comparison
    names = [n for n in data["rules"] if all(n in held_part[t] for t in held_tasks)
             and all(n in data[k].get(t, {}) for k in proxy_keys for t in data[k])]
    held = {n: aggregate_fitness(_ratios(held_part, n, held_tasks), heldout_aggregate) for n in names}
    floor = held.get("adamw", math.nan)
    print(f"{len(names)} rules complete; held-out suite {len(held_tasks)} tasks, "
          f"{len(held_part[held_tasks[0]][names[0]]['ratios'])} seeds, aggregate {heldout_aggregate}; "
          f"{noise_floor_text(floor)} (catalog adamw against the baseline program)")
    print("held-out, per aggregate (mean / median / trimmed):")
    for n in sorted(names, key=lambda n: -held[n]):
        r = _ratios(held_part, n, held_tasks)
        per = " ".join(f"{aggregate_fitness(r, a):+7.3f}" for a in ("mean", "median", "trimmed"))
        print(f"  {n:28s} {per}   worst task {min(r, key=lambda t: np.mean(r[t]))}")
    sec = {t: float(np.mean([held_part[t][n]["seconds"] for n in names])) for t in held_tasks}
    print("held-out seconds per rule (all seeds): " + ", ".join(f"{t} {s:.1f}" for t, s in sec.items()) +
          f"; total {sum(sec.values()):.0f}")
    target = [held[n] for n in names]
    choosing = sorted(n for n in names if int(hashlib.sha256(data["rules"][n].encode()).hexdigest(), 16) % 2 == 0)
    checking = [n for n in names if n not in choosing]

    for k in proxy_keys:
        part = data[k]
        print(f"\n{k}: per task, rho with the held-out ranking, sign agreement, seconds per rule, spread")
        for t in part:
            v = [float(np.mean(part[t][n]["ratios"])) for n in names]
            signs = np.mean([(a > 0) == (b > 0) for a, b in zip(v, target)])
            print(f"  {t:16s} {spearman(v, target):+.2f}  {signs:4.0%}  "
                  f"{np.mean([part[t][n]['seconds'] for n in names]):5.2f}s  spread {np.std(v):.3f}")

    scales_at = {k: catalog_spreads({t: {n: float(np.mean(data[k][t][n]["ratios"])) for n in CATALOG if n in names}
                                     for t in data[k]}) for k in proxy_keys}
    all_proxy = list(data[proxy_keys[0]])
    task_sets = {"old default (8)": OLD_DEFAULT, "all": all_proxy,
                 "all but toys": [t for t in all_proxy if t not in TOYS],
                 "no toys, no char_lm": [t for t in all_proxy if t not in TOYS | {"char_lm"}],
                 "old default minus toys": [t for t in OLD_DEFAULT if t not in TOYS],
                 "old default minus toys + adding + tabular": [t for t in OLD_DEFAULT if t not in TOYS] +
                 [t for t in ("adding", "tabular") if t in all_proxy],
                 "old default minus toys + tabular": [t for t in OLD_DEFAULT if t not in TOYS] +
                 [t for t in ("tabular",) if t in all_proxy]}
    settings = {f"{label} / {agg} / {k.split('@')[1]}": (tasks, float(k.split("@")[1]), agg)
                for (label, tasks), agg, k in itertools.product(task_sets.items(), AGGREGATE_NAMES, proxy_keys)
                if all(t in data[k] for t in tasks)}

    def fitness(s: str, n: str) -> float:
        tasks, budget, agg = settings[s]
        return aggregate_fitness(_ratios(data[f"proxy@{budget:g}"], n, tasks), agg,
                                 scales=scales_at[f"proxy@{budget:g}"])

    def score(s: str, rules: list[str]) -> tuple[float, float]:
        v = [fitness(s, n) for n in rules]
        t = [held[n] for n in rules]
        return spearman(v, t), float(np.mean([(a > 0) == (b > 0) for a, b in zip(v, t)]))

    def cost(s: str) -> float:
        tasks, budget, _ = settings[s]
        return sum(float(np.mean([data[f"proxy@{budget:g}"][t][n]["seconds"] for n in names])) for t in tasks)

    print(f"\nsettings: rho and sign agreement with the held-out suite on all {len(names)} rules, "
          f"on the choosing half ({len(choosing)}) and the checking half ({len(checking)}); seconds per rule")
    for s in settings:
        (ra, sa), (rc, sc), (rk, sk) = score(s, names), score(s, choosing), score(s, checking)
        print(f"  {s:58s} all {ra:+.2f} {sa:4.0%}  choose {rc:+.2f} {sc:4.0%}  check {rk:+.2f} {sk:4.0%}"
              f"  {cost(s):5.2f}s")
    current = f"old default (8) / standardized / {search_budget:g}"
    chosen = choose(settings, score, cost, choosing, max_cost * cost(current))
    for label, s in (("current default", current), ("chosen", chosen)):
        if s not in settings:
            continue
        (ra, sa), (rk, sk) = score(s, names), score(s, checking)
        print(f"\n{label}: {s}: rho {ra:+.3f}, signs {sa:.0%} on all {len(names)} rules; "
              f"on the checking half rho {rk:+.3f}, signs {sk:.0%}; {cost(s):.2f}s per rule")
        print("  " + ", ".join(f"{n} {fitness(s, n):+.2f}/{held[n]:+.2f}" for n in names))
    print("\nscales of the chosen budget (spread of the catalog rules' log-ratios): " +
          ", ".join(f"{t} {v:.3f}" for t, v in scales_at[f"proxy@{settings[chosen][1]:g}"].items()))
    if any(v <= WORST_LOG_RATIO for v in target):
        print("note: some rules failed a held-out task (log-ratio at the worst value)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("proxy_selection.json"))
    ap.add_argument("--part", choices=["heldout", "proxy"])
    ap.add_argument("--store", type=Path, action="append", default=[], help="a campaign store (repeatable)")
    ap.add_argument("--top", type=int, default=4, help="search programs taken from each store")
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--heldout-budget", type=float, default=1.0)
    ap.add_argument("--heldout-seeds", type=int, default=2)
    ap.add_argument("--heldout-aggregate", default="trimmed", choices=AGGREGATE_NAMES[:1] + AGGREGATE_NAMES[2:])
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--search-budget", type=float, default=0.5)
    ap.add_argument("--max-cost", type=float, default=1.25,
                    help="a chosen setting may cost this many times the current default's seconds per rule")
    args = ap.parse_args()
    if args.part:
        rules = rule_set(args.store, args.top)
        print(f"{len(rules)} rules: {', '.join(rules)}", flush=True)
        if args.part == "heldout":
            run_part(args.out, "heldout", rules, suite_tasks("heldout"), args.heldout_budget, args.heldout_seeds)
        else:
            for b in args.budgets:
                run_part(args.out, f"proxy@{b:g}", rules, suite_tasks("proxy"), b, 1)
    if args.report:
        report(args.out, args.search_budget, args.heldout_aggregate, args.max_cost)


if __name__ == "__main__":
    main()
