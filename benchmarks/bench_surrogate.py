"""The learned fitness predictor: evaluations needed to reach the same best fitness, with and without.

For each seed, the same campaign (regularized evolution warm-started from SGD, the
random-search arm off, search phase only, in-process) runs once plainly and once with
``surrogate = true`` (each child is the best of ``pool`` drawn, as ranked by the
predictor trained online on the campaign's results). The target of a seed is the
lower of the two final best fitnesses, i.e. a fitness both runs reach. For each run we
print the number of candidates proposed (cache hits included) and of candidates
trained (cache hits excluded) until the best-so-far first reaches the target, in
completion order. The last lines give the totals over seeds, the mean best fitness at
the full budget, and the ratio of trained evaluations.

    python benchmarks/bench_surrogate.py [--budget 120] [--seeds 0 1 2] [--pool 8] [--evaluator quadratic|proxy]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def run(seed: int, budget: int, evaluator: str, surrogate: bool, folder: Path, pool: int = 8) -> tuple[list, float]:
    """[(fitness, was_trained)] in completion order, and the seconds the search took."""
    import optdisco
    from optdisco.search import config
    from optdisco.search.campaign import Campaign
    from optdisco.search.executors import InProcessExecutor
    from optdisco.search.store import Store

    over = {"budget": budget, "seed": seed, "report": False, "surrogate": surrogate,
            "fitness.evaluator": evaluator, "evolution.random_fraction": 0.0,
            "simplify.enabled": False, "funnel.top_k": 0}
    if evaluator == "quadratic":
        over.update({"fitness.budget": 0.25, "fitness.tasks": [], "evolution.population": 8,
                     "evolution.tournament": 3, "distributed.batch_size": 2})
    cfg = config.load(None, over)
    store = Store(folder / f"s{seed}-{int(surrogate)}.db")
    campaign = Campaign(cfg, store, InProcessExecutor(evaluator), warm_start=optdisco.catalog.get("sgd"))
    if surrogate:
        campaign.strategy.pool = pool
    t0 = time.perf_counter()
    campaign.search()
    secs = time.perf_counter() - t0
    rows = store.completed()
    return [(r.fitness, r.cache_of is None) for r in rows], secs


def needed(results: list, target: float) -> tuple[int, int]:
    """(proposed, trained) candidates until the best-so-far first reaches ``target``."""
    trained = 0
    for i, (f, was_trained) in enumerate(results):
        trained += was_trained
        if f is not None and f >= target - 1e-12:
            return i + 1, trained
    return len(results), trained


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=120)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--pool", type=int, default=8, help="children drawn per proposal with the surrogate")
    ap.add_argument("--evaluator", default="quadratic", choices=["quadratic", "proxy"])
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench_surrogate_"))
    tot = {False: [0, 0, 0.0, 0.0], True: [0, 0, 0.0, 0.0]}
    print(f"evaluator={args.evaluator} budget={args.budget} pool={args.pool} (proposed/trained until the common best)")
    for seed in args.seeds:
        res = {s: run(seed, args.budget, args.evaluator, s, folder, args.pool) for s in (False, True)}
        best = {s: max(f for f, _ in r if f is not None) for s, (r, _) in res.items()}
        target = min(best.values())
        line = [f"seed {seed}: target {target:+.4f} (best plain {best[False]:+.4f}, surrogate {best[True]:+.4f})"]
        for s in (False, True):
            p, t = needed(res[s][0], target)
            tot[s][0] += p
            tot[s][1] += t
            tot[s][2] += res[s][1]
            tot[s][3] += best[s] / len(args.seeds)
            line.append(f"{'surrogate' if s else 'plain'} {p}/{t} in {res[s][1]:.0f}s")
        print(" | ".join(line), flush=True)
    for s in (False, True):
        print(f"total {'surrogate' if s else 'plain    '}: proposed {tot[s][0]}, trained {tot[s][1]}, "
              f"search seconds {tot[s][2]:.0f}, mean best fitness at the full budget {tot[s][3]:+.4f}")
    print(f"trained evaluations, surrogate / plain: {tot[True][1] / max(1, tot[False][1]):.2f}")


if __name__ == "__main__":
    main()
