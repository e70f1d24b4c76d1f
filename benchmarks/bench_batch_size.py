"""AdaGradNorm with and without the norm-test batch-size controller, at equal examples seen.

For each held-out task (CPU scale), each learning rate of a grid and each seed: the fixed
arm trains the catalog's ``adagradnorm`` at the task's batch size for its default steps;
the adaptive arm starts at a quarter of that batch and grows it by
:class:`optdisco.training.NormTestBatchSize` (norm test, each of ``--etas``) until it has seen the
same number of examples. Each arm reports its validation loss at its best learning rate
(mean over seeds, with the seeds' range), its steps and its last batch size.

    python benchmarks/bench_batch_size.py                      # ho_digits_deep, ho_mnist1d_cnn
"""

from __future__ import annotations

import argparse
import time

import torch

import optdisco
from optdisco.evaluators.tasks import get_task
from optdisco.training import NormTestBatchSize


def _per_example_grads(task, params, x, y):
    def one(ps, xi, yi):
        return task._loss(list(ps), xi.unsqueeze(0).unsqueeze(0), yi.unsqueeze(0).unsqueeze(0))[0]

    return torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))(tuple(params), x, y)


def run(task, *, lr: float, seed: int, adaptive: bool, eta: float) -> tuple[float, int, int]:
    """(validation loss, steps, last batch size) of one run."""
    gen = torch.Generator().manual_seed(seed)
    params = [p.clone().requires_grad_(True) for p in task.init(gen)]
    data = task.dataset()
    n = len(data.x_train)
    budget = task.steps * task.batch_size
    opt = optdisco.Optimizer(params, "adagradnorm", lr=lr, backend="eager")
    ctl = NormTestBatchSize(max(2, task.batch_size // 4), eta=eta, max_batch=16 * task.batch_size)
    seen, steps = 0, 0
    while seen < budget:
        b = min(ctl.batch_size if adaptive else task.batch_size, budget - seen)
        if b < 2:
            break
        idx = torch.randint(0, n, (b,), generator=gen)
        x, y = data.x_train[idx], data.y_train[idx]
        opt.zero_grad()
        loss = task._loss([p.unsqueeze(0) for p in params], x.unsqueeze(0), y.unsqueeze(0))[0]
        if not torch.isfinite(loss):
            return float("inf"), steps, b
        loss.backward()
        if adaptive:
            ctl.update(_per_example_grads(task, [p.detach().unsqueeze(0) for p in params], x, y))
        opt.step()
        seen, steps = seen + b, steps + 1
    with torch.no_grad():
        val = float(task.val_loss([p.unsqueeze(0) for p in params])[0])
    return val, steps, b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["ho_digits_deep", "ho_mnist1d_cnn"])
    ap.add_argument("--lrs", nargs="+", type=float, default=[0.1, 0.3, 1.0, 3.0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--etas", nargs="+", type=float, default=[1.0, 2.0], help="the norm test's tolerances")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| task | arm | best lr | val loss (mean [min, max] over seeds) | steps | last batch |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.tasks:
        task = get_task(name)
        for eta in [None, *args.etas]:
            adaptive = eta is not None
            t0 = time.time()
            best = None
            for lr in args.lrs:
                res = [run(task, lr=lr, seed=s, adaptive=adaptive, eta=eta or 1.0) for s in range(args.seeds)]
                mean = sum(r[0] for r in res) / len(res)
                if best is None or mean < best[0]:
                    best = (mean, lr, res)
            assert best is not None
            mean, lr, res = best
            arm = f"norm test (eta {eta:g})" if adaptive else f"fixed batch {task.batch_size}"
            vals = [r[0] for r in res]
            print(f"| {name} | {arm} | {lr:g} | {mean:.4f} [{min(vals):.4f}, {max(vals):.4f}] | "
                  f"{res[0][1]} | {res[0][2]} |  ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
