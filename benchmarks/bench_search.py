"""Search throughput on Ray: candidate evaluations per second with 1 and with 2 workers.

Runs the same short campaign (same seed, same config, search phase only) on a local Ray
started with 1 CPU, then with 2, and prints evaluations per second (trained candidates
per wall-clock second of the search loop, Ray start-up and worker warm-up excluded) and
the scaling efficiency = rate(2) / (2 x rate(1)). Cache hits are not counted as
evaluations. The last line is ``scaling efficiency: X``.

    python benchmarks/bench_search.py [--budget N] [--evaluator proxy|quadratic]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def campaign_rate(workers: int, budget: int, evaluator: str, seed: int) -> tuple[float, int, float, float]:
    """(trained evaluations per second, trained evaluations, seconds, mean worker seconds per
    evaluation) of a search on ``workers`` Ray CPUs."""
    import ray

    from optdisco.search import config
    from optdisco.search.campaign import Campaign
    from optdisco.cli.commands_search import resolve_warm_start
    from optdisco.search.executors import RayExecutor, init_ray
    from optdisco.search.fitness import evaluate_batch
    from optdisco.search.store import Store

    cfg = config.load(None, {"budget": budget, "seed": seed, "workers": workers, "report": False,
                             "fitness.evaluator": evaluator, "simplify.enabled": False,
                             "funnel.top_k": 0})
    init_ray("", workers)
    try:
        # warm every worker up (imports, baselines cached on disk) before the clock starts
        warm = ray.remote(num_cpus=1)(evaluate_batch)
        tmp = Path(tempfile.mkdtemp(prefix="bench_search_"))
        settings = {k: v for k, v in cfg["fitness"].items() if k != "evaluator"}
        settings["cache_dir"] = str(tmp / ".baselines")
        ray.get([warm.remote(["def sgd(w, g):\n    return g\n"], settings, evaluator) for _ in range(workers)])
        store = Store(tmp / "bench.db")
        campaign = Campaign(cfg, store, RayExecutor(evaluator, workers=workers,
                                                    time_limit=cfg["fitness"]["time_limit"]),
                            warm_start=resolve_warm_start(cfg["warm_start"]))
        t0 = time.perf_counter()
        campaign.search()
        secs = time.perf_counter() - t0
        trained = store.counts()["trained"]
        per_eval = store.db.execute("SELECT AVG(seconds) FROM evaluations").fetchone()[0] or 0.0
        store.close()
        return trained / secs, trained, secs, per_eval
    finally:
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=48, help="candidates per campaign")
    ap.add_argument("--evaluator", default="proxy", choices=["proxy", "quadratic"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    print(f"search throughput: {args.budget} candidates, evaluator '{args.evaluator}', "
          f"{os.cpu_count()} CPU(s) on this machine", flush=True)
    rates = {}
    for workers in (1, 2):
        load = os.getloadavg()[0]
        rate, trained, secs, per_eval = campaign_rate(workers, args.budget, args.evaluator, args.seed)
        rates[workers] = rate
        # other processes on the machine take cores from the workers: say how busy it was, and
        # how long one evaluation took inside a worker (it grows when workers share a core)
        print(f"{workers} worker(s): {trained} evaluations in {secs:.1f} s = {rate:.2f} evals/s, "
              f"{per_eval:.2f} s per evaluation in a worker (load average before: {load:.1f})", flush=True)
    print(f"scaling efficiency: {rates[2] / (2 * rates[1]):.2f}")


if __name__ == "__main__":
    sys.exit(main())
