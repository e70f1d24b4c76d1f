"""Which catalog rules do best on zeroth-order gradients? A ranking against tuned AdamW on the
same estimates, beside the same ranking on backprop gradients.

Every rule (SGD among them) and the AdamW baseline train on the same RGE estimates (the same
random directions per seed; :func:`optdisco.evaluators.evaluate` with ``gradients=``), each
with its learning rate tuned on the usual grid. Fitness is the mean log-ratio against tuned
AdamW (positive: better than AdamW), with the seed interval.

    python benchmarks/bench_zeroth_order.py                    # RGE q=16 on logreg, teacher_student
    python benchmarks/bench_zeroth_order.py --gradients cge:density=0.1
    python benchmarks/bench_zeroth_order.py --rules sgd adamw /work/runs/zo_campaign_s0.db:98

A rule is a catalog name, a rule file or ``DB:ID`` (a campaign's program, e.g. the winners of
``benchmarks/zeroth_order_campaign.toml``).
"""

from __future__ import annotations

import argparse
import time

from optdisco.discovered.optimizer import resolve_rule
from optdisco.evaluators import evaluate

RULES = ["sgd", "momentum", "nesterov", "signum", "adam", "adamw", "nadamw", "rmsprop", "adabelief", "adagrad",
         "lion", "lamb", "adan"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["logreg", "teacher_student"])
    ap.add_argument("--rules", nargs="+", default=RULES)
    ap.add_argument("--gradients", default="rge:queries=16,mu=0.001")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--budget", type=float, default=1.0)
    args = ap.parse_args()
    programs = [resolve_rule(n) for n in args.rules]
    table = {}
    for source in ("backprop", args.gradients):
        t0 = time.time()
        evs = evaluate(programs, tasks=args.tasks, seeds=args.seeds, budget=args.budget, gradients=source,
                       properties=False, curves=False)
        table[source] = evs
        print(f"{source}: {time.time() - t0:.0f} s", flush=True)
    zo = table[args.gradients]
    order = sorted(range(len(programs)), key=lambda k: -zo[k].fitness)
    print(f"\n| rule | {args.gradients} vs AdamW [interval] | backprop vs AdamW | per task ({args.gradients}) |")
    print("|---|---:|---:|---|")
    for k in order:
        z, b = zo[k], table["backprop"][k]
        per = ", ".join(f"{t} {v:+.3f}" for t, v in z.per_task.items())
        print(f"| {args.rules[k]} | {z.fitness:+.3f} [{z.ci_low:+.3f}, {z.ci_high:+.3f}] | {b.fitness:+.3f} | {per} |")


if __name__ == "__main__":
    main()
