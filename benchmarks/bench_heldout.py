"""Rules on the held-out suite against tuned AdamW, at one or more budgets, with intervals.

    python benchmarks/bench_heldout.py [RULE ...] [--budgets 0.25 1.0] [--seeds 2]

Defaults: every found rule in the catalog, Lion, and ``baseline``: the evaluator's own AdamW
program (which must score exactly 0: a check that a rule trained in a batch matches its
cached baseline; the catalog's ``adamw`` writes the bias corrections in another order and
differs by rounding, which chaotic training amplifies, e.g. +0.027 on ho_mnist1d_cnn at
budget 1). Each rule is a catalog name, a rule file, DB:ID or ``baseline``. Prints, per
budget, the mean fitness with its 95% bootstrap interval, the probability of beating
AdamW and the per-task log-ratios.
"""

from __future__ import annotations

import argparse
import time

from optdisco import catalog
from optdisco.discovered.optimizer import resolve_rule
from optdisco.evaluators import ADAMW, evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rules", nargs="*")
    ap.add_argument("--budgets", nargs="+", type=float, default=[0.25, 1.0])
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    names = args.rules or [e.name for e in catalog.entries() if e.origin == "found"] + ["lion", "baseline"]
    programs = [ADAMW if n == "baseline" else resolve_rule(n) for n in names]
    for budget in args.budgets:
        t = time.time()
        evs = evaluate(programs, suite="heldout", budget=budget, seeds=args.seeds, properties=False)
        print(f"held-out suite, budget {budget:g}, {args.seeds} seed(s) ({time.time() - t:.0f}s):")
        for n, e in zip(names, evs):
            per = " ".join(f"{k.removeprefix('ho_')} {v:+.3f}" for k, v in e.per_task.items())
            print(f"  {n:24s} {e.fitness:+.3f} [{e.ci_low:+.3f}, {e.ci_high:+.3f}]  "
                  f"p(beats AdamW) {e.p_beats_baseline:.2f} | {per}")


if __name__ == "__main__":
    main()
