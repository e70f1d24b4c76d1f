"""AdaGradNorm with and without the norm-test batch-size controller, at equal examples seen.

For each held-out task (CPU scale, batch ``B``, ``T`` steps) three kinds of arm train the
catalog's ``adagradnorm`` with the evaluators' batched trainer (:mod:`optdisco.evaluators.train`:
warmup then cosine decay over the examples seen, every learning rate of ``--lrs`` and every
seed in one batched computation per arm):

- **fixed B**: the task's batch for its ``T`` steps;
- **norm test (eta)**: :class:`optdisco.training.BatchSizeSpec` ``norm_test:eta=...`` (start at
  ``B/4``, grow up to ``16 B``, test every ``--every`` steps) until it has seen the same
  ``T * B`` examples;
- **fixed at the mean**: a fixed batch ``m`` equal to the norm-test arm's mean batch (``T * B``
  over its mean number of steps, at its best learning rate) for ``round(T * B / m)`` steps: the
  same examples and the same number of steps as the controller, without the controller.

Each arm reports its validation loss at its best learning rate (mean over seeds, with the
seeds' range), its steps and its batch sizes (mean and largest, for the best learning rate).

    python benchmarks/bench_batch_size.py                      # ho_digits_deep, ho_mnist1d_cnn
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from optdisco import catalog
from optdisco.evaluators import Run, get_task, train

RULE = "adagradnorm"


def arm(task, lrs: list[float], seeds: int) -> tuple[float, float, list[float], list]:
    """(best lr, mean loss there, per-seed losses there, per-seed results there) of one arm."""
    runs = [Run(0, lr, s) for lr in lrs for s in range(seeds)]
    results = train(task, [catalog.get(RULE)], runs, keep_params=False)
    best = None
    for i, lr in enumerate(lrs):
        res = results[i * seeds:(i + 1) * seeds]
        mean = sum(r.loss for r in res) / seeds
        if best is None or mean < best[1]:
            best = (lr, mean, [r.loss for r in res], res)
    assert best is not None
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["ho_digits_deep", "ho_mnist1d_cnn"])
    ap.add_argument("--lrs", nargs="+", type=float, default=[0.3, 1.0, 3.0, 10.0, 30.0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--etas", nargs="+", type=float, default=[1.0], help="the norm test's tolerances")
    ap.add_argument("--every", type=int, default=4, help="test every this many steps (per-example gradients "
                                                         "cost most of the time)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| task | arm | best lr | val loss (mean [min, max] over seeds) | steps | batch mean / max |")
    print("|---|---|---:|---:|---:|---:|")

    def row(name: str, label: str, best, t0: float) -> None:
        lr, mean, losses, res = best
        sizes = [r.batch_sizes for r in res if r.batch_sizes]
        steps = sum(r.steps_done for r in res) / len(res)
        batch = (f"{sum(map(sum, sizes)) / sum(map(len, sizes)):.0f} / {max(map(max, sizes))}" if sizes
                 else f"{label.split()[-1]} / {label.split()[-1]}")
        print(f"| {name} | {label} | {lr:g} | {mean:.4f} [{min(losses):.4f}, {max(losses):.4f}] | {steps:.0f} | "
              f"{batch} |  ({time.time() - t0:.0f} s)", flush=True)

    for name in args.tasks:
        task = get_task(name)
        t0 = time.time()
        row(name, f"fixed batch {task.batch_size}", arm(task, args.lrs, args.seeds), t0)
        for eta in args.etas:
            t0 = time.time()
            grown = dataclasses.replace(task, batch_schedule=f"norm_test:eta={eta:g},start=0.25,growth=16,every={args.every}")
            best = arm(grown, args.lrs, args.seeds)
            row(name, f"norm test (eta {eta:g}, every {args.every})", best, t0)
            examples = task.steps * task.batch_size
            mean_steps = sum(r.steps_done for r in best[3]) / len(best[3])
            m = max(2, round(examples / mean_steps))
            t0 = time.time()
            at_mean = dataclasses.replace(task, batch_size=m, steps=max(2, round(examples / m)))
            row(name, f"fixed at the mean, batch {m}", arm(at_mean, args.lrs, args.seeds), t0)


if __name__ == "__main__":
    main()
