"""How the proxy suite's aggregate should weigh its tasks: Spearman correlation with the
held-out ranking of 12 catalog rules for several aggregates of the per-task log-ratios.

    python benchmarks/rank_aggregates.py

The proxy per-task log-ratios are recomputed (budget 1.0); the held-out fitnesses are the
ones ``bench_eval.py --rank`` printed on 2026-11-29 04:35 UTC, after the batch-independence
fix (recomputing them takes another ~4 minutes; rerun ``bench_eval.py --rank`` to check).
"""

from __future__ import annotations

import numpy as np
from bench_eval import spearman

from optdisco import catalog
from optdisco.evaluators import evaluate

HELDOUT = {"nesterov": -0.073, "momentum": -0.112, "adamw": 0.0, "adam": 0.090, "adabelief": 0.152,
           "nadamw": 0.224, "rmsprop": 0.286, "signum": 0.014, "adagrad": -0.140, "lamb": 0.006,
           "sgd": -0.334, "lion": -0.474}
DEFAULT_CAMPAIGN_TASKS = ["quadratic", "logreg", "digits_mlp", "teacher_student"]


def main() -> None:
    names = list(HELDOUT)
    evs = evaluate([catalog.get(n) for n in names], suite="proxy", budget=1.0, properties=False)
    per = {n: e.per_task for n, e in zip(names, evs)}
    held = [HELDOUT[n] for n in names]
    tasks = list(per[names[0]])

    def rho(aggregate) -> float:
        return round(spearman([aggregate(per[n]) for n in names], held), 3)

    for c in (None, 2.0, 1.0, 0.5, 0.25):
        print("clip", c, "rho", rho(lambda r: np.mean([np.clip(r[t], -c, c) if c else r[t] for t in tasks])))
    spread = {t: float(np.std([per[n][t] for n in names])) for t in tasks}
    for t in tasks:
        print(t, "spread", round(spread[t], 3))
    print("standardized mean (each task divided by its spread) rho",
          rho(lambda r: np.mean([r[t] / spread[t] for t in tasks])))
    print("mean without rosenbrock rho", rho(lambda r: np.mean([r[t] for t in tasks if t != "rosenbrock"])))
    print("median rho", rho(lambda r: np.median([r[t] for t in tasks])))
    print("mean of the default campaign's 4 tasks rho", rho(lambda r: np.mean([r[t] for t in DEFAULT_CAMPAIGN_TASKS])))


if __name__ == "__main__":
    main()
