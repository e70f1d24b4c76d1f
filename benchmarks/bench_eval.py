"""Candidate evaluations per second on the digits MLP: batched against one at a time.

A candidate evaluation here is one rule trained on ``digits_mlp`` at each of the 5
learning rates of the default grid for the task's default steps (the first stage of LR
tuning). 32 candidates (the catalog's rules, which are 32 different programs) are
evaluated three ways with the same trainer and the same seeds:

* unbatched: every (rule, learning rate) run on its own, as a plain training loop would
  (timed on the first ``--sample`` candidates and extrapolated to 32);
* per candidate: one call per rule, its 5 learning rates batched;
* batched: all 32 x 5 runs as one batched computation.

With ``--threads N``, ``train(threads=N)`` deals the programs to N cores, one torch thread
each; a single program gets one core (faster than torch's threads on runs this small, so
the one-at-a-time modes are not handicapped), and only the batched mode can use more.
``--cores N`` also times the batched mode alone on 1 core and on N cores, interleaved, and
prints the ratio (the scaling goal: 2 cores >= 2x one core).

It checks that the modes give the same final losses (rules that draw ``randn()`` noise
excepted: their draws depend on how rows are grouped), then prints the rates. With
``--rank`` it also ranks the catalog rules by fitness on the proxy and held-out suites
(CPU sizes) and prints Spearman's rank correlation. Run: python benchmarks/bench_eval.py
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from optdisco import catalog
from optdisco.evaluators import DEFAULT_LR_GRID, Run, evaluate, get_task, train


def candidates(n: int = 32):
    progs = [catalog.get(name) for name in catalog.names()]
    return progs[:n]


def same(a: float, b: float) -> bool:
    return (math.isinf(a) and math.isinf(b)) or math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6)


def batched_rate(threads: int) -> float:
    """Candidate evaluations per second of the batched mode (all 160 runs in one ``train()``
    call) with ``train(threads=threads)``: that many cores, one torch thread each."""
    torch.set_num_threads(1)
    task = get_task("digits_mlp")
    progs = candidates()
    runs = [Run(k, lr, 0) for k in range(len(progs)) for lr in DEFAULT_LR_GRID]
    train(task, progs, runs, steps=3, threads=threads)  # warm-up, worker processes included
    t = time.perf_counter()
    train(task, progs, runs, keep_params=False, threads=threads)
    return len(progs) / (time.perf_counter() - t)


def throughput(threads: int, sample: int) -> float:
    torch.set_num_threads(threads)
    task = get_task("digits_mlp")
    progs = candidates()
    runs = [Run(k, lr, 0) for k in range(len(progs)) for lr in DEFAULT_LR_GRID]
    # warm up data, code paths and the worker processes (with the batched call's shapes)
    train(task, progs, runs, steps=3, threads=threads)

    t = time.perf_counter()
    batched = train(task, progs, runs, keep_params=False, threads=threads)
    t_batched = time.perf_counter() - t

    t = time.perf_counter()
    per_cand = []
    for k in range(len(progs)):
        per_cand += train(task, progs, [r for r in runs if r.program == k], keep_params=False, threads=threads)
    t_per_cand = time.perf_counter() - t

    sampled = [r for r in runs if r.program < sample]
    t = time.perf_counter()
    alone = [train(task, progs, [r], keep_params=False, threads=threads)[0] for r in sampled]
    t_alone = (time.perf_counter() - t) * len(progs) / sample

    noisy = {k for k, p in enumerate(progs) if p.uses("randn")}
    mismatches = [(progs[r.program].name, r.lr, a.loss, b.loss) for r, a, b in zip(sampled, alone, batched)
                  if r.program not in noisy and not same(a.loss, b.loss)]
    mismatches += [(progs[r.program].name, r.lr, a.loss, b.loss) for r, a, b in zip(runs, per_cand, batched)
                   if r.program not in noisy and not same(a.loss, b.loss)]
    n = len(progs)
    failed = sum(r.failure is not None for r in batched)
    print(f"digits_mlp, {n} candidates x {len(DEFAULT_LR_GRID)} learning rates, {task.steps} steps, "
          f"{threads} thread(s); {failed} of {len(runs)} runs diverged or failed (same in every mode)")
    print(f"runs on: one-at-a-time modes 1 core (one torch thread); batched {threads} core(s) "
          f"({'this process' if threads == 1 else f'this process + {threads - 1} spawned worker(s)'}, "
          f"one torch thread each)")
    print(f"unbatched (each run alone):          {n / t_alone:7.2f} candidate-evaluations/s "
          f"({t_alone:.1f}s, extrapolated from {sample} candidates)")
    print(f"per candidate (its LRs batched):     {n / t_per_cand:7.2f} candidate-evaluations/s ({t_per_cand:.1f}s)")
    print(f"batched (all {len(runs)} runs at once):      {n / t_batched:7.2f} candidate-evaluations/s ({t_batched:.1f}s)")
    print(f"same losses in all three modes (excluding {len(noisy)} noise rule(s)): {'yes' if not mismatches else 'NO'}"
          + (f" ({len(mismatches)} differ, e.g. {mismatches[0]})" if mismatches else ""))
    print(f"batched vs per-candidate calls: {t_per_cand / t_batched:.2f}x")
    return t_alone / t_batched


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def rank_correlation(names: list[str], budget: float) -> None:
    progs = [catalog.get(n) for n in names]
    t = time.perf_counter()
    proxy = evaluate(progs, suite="proxy", budget=budget, properties=False)
    held = evaluate(progs, suite="heldout", budget=budget, properties=False)
    print(f"rank correlation of {len(names)} catalog rules, proxy vs held-out (budget {budget:g}, "
          f"{time.perf_counter() - t:.0f}s):")
    for n, p, h in sorted(zip(names, proxy, held), key=lambda x: -x[1].fitness):
        print(f"  {n:14s} proxy {p.fitness:+7.3f}  held-out {h.fitness:+7.3f}")
    held_fit = [e.fitness for e in held]
    print("  per proxy task, spearman rho of its ranking with the held-out ranking: " + ", ".join(
        f"{t} {spearman([e.per_task[t] for e in proxy], held_fit):+.2f}" for t in proxy[0].per_task))
    print(f"spearman rho: {spearman([e.fitness for e in proxy], held_fit):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1,
                    help="cores for train() (1 by default: the search runs one evaluation per core)")
    ap.add_argument("--sample", type=int, default=8, help="candidates timed in the unbatched mode")
    ap.add_argument("--rank", nargs="*", metavar="RULE", default=None,
                    help="also rank these catalog rules (default set if none given) on both suites")
    ap.add_argument("--rank-budget", type=float, default=1.0)
    ap.add_argument("--cores", type=int, default=0,
                    help="also time the batched mode on 1 core and on this many cores, interleaved")
    args = ap.parse_args()
    if args.rank is not None:
        rank_correlation(args.rank or ["sgd", "momentum", "nesterov", "adam", "adamw", "nadamw", "lion",
                                       "signum", "adabelief", "rmsprop", "adagrad", "lamb"], args.rank_budget)
    speedup = throughput(args.threads, args.sample)
    print(f"batched speedup: {speedup:.1f}" + (" (per core: both sides on 1 core; goal >= 10)" if args.threads == 1
                                                else f" (batched on {args.threads} cores, one-at-a-time on 1)"))
    if args.cores:
        rates = {}
        for _ in range(3):  # interleaved rounds, median: the machine is shared
            for c in (1, args.cores):
                rates.setdefault(c, []).append(batched_rate(c))
        one, many = (sorted(rates[c])[1] for c in (1, args.cores))
        print(f"batched on 1 core: {one:.2f} candidate-evaluations/s; on {args.cores} cores: {many:.2f} "
              f"(median of 3 interleaved rounds)")
        print(f"batched {args.cores} cores vs 1 core: {many / one:.2f}x (goal >= 2 on 2 cores)")


if __name__ == "__main__":
    main()
