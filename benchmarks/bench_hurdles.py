"""The gain of progressive hurdles: candidates judged per hour with and without, and rank agreement.

Runs the same search (same seed, config and warm start; search phase only, in this process
on one core) twice: without hurdles and with ``[hurdle]`` enabled, and prints candidates
judged per hour in each (every proposed candidate that received a fitness: trained,
screened out, rejected by the pre-filters or a cache hit), and their ratio. Then it scores
the screening stage on every distinct child the run without hurdles trained in full, and
prints Spearman's rho between screening score and full fitness (how well the hurdle
ranks children; the issue's goal is rho > 0.8 with a 3x throughput gain).

    python benchmarks/bench_hurdles.py [--budget N] [--evaluator proxy|quadratic] [--seed S]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_eval import spearman


def run_arm(hurdle: bool, args: argparse.Namespace, folder: Path):
    """(campaign, seconds) of one search phase with hurdles on or off."""
    from optdisco.search import config
    from optdisco.search.campaign import Campaign
    from optdisco.cli.commands_search import resolve_warm_start
    from optdisco.search.executors import InProcessExecutor
    from optdisco.search.store import Store
    over = {"budget": args.budget, "seed": args.seed, "fitness.evaluator": args.evaluator,
            "hurdle.enabled": hurdle, "hurdle.quantile": args.quantile, "hurdle.warmup": args.warmup,
            "hurdle.budget": args.screen_budget, "report": False}
    if args.evaluator == "quadratic":
        over.update({"fitness.tasks": [], "hurdle.tasks": []})
    cfg = config.load(None, over)
    store = Store(folder / f"hurdle_{'on' if hurdle else 'off'}.db")
    camp = Campaign(cfg, store, InProcessExecutor(args.evaluator), warm_start=resolve_warm_start(cfg["warm_start"]))
    t = time.perf_counter()
    camp.search()
    return camp, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=60, help="candidates per arm")
    ap.add_argument("--evaluator", default="proxy", choices=("proxy", "quadratic"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quantile", type=float, default=0.5)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--screen-budget", type=float, default=0.1)
    args = ap.parse_args()
    from optdisco.dsl import parse
    from optdisco.search.campaign import screen_settings
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rates = {}
        for hurdle in (False, True):
            camp, secs = run_arm(hurdle, args, folder)
            c, h = camp.store.counts(), camp.store.hurdle_counts()
            rates[hurdle] = c["done"] / secs * 3600
            print(f"hurdles {'on ' if hurdle else 'off'}: {c['done']} judged in {secs:.0f}s = "
                  f"{rates[hurdle]:.0f}/hour; trained in full {c['trained']}, screened {h['screened']}, "
                  f"screened out {h['screened_out']}, rejected {sum(camp.store.rejection_counts().values())}, "
                  f"cache hits {c['hits']}")
            if not hurdle:
                full = camp
        print(f"throughput gain: {rates[True] / rates[False]:.2f}x")
        rows = [r for r in full.top(10 ** 9) if r.mutation != "warm_start"]
        scored = full.evaluate([parse(r.source) for r in rows], "screen_check", screen_settings(full.cfg))
        rho = spearman([s for _, s, _ in scored], [r.fitness for r in rows])
        print(f"rank agreement (Spearman rho, screening score vs full fitness, {len(rows)} children "
              f"trained in full without hurdles): {rho:.3f}")


if __name__ == "__main__":
    main()
