"""The search benchmark: does each search arm rediscover an adaptive rule from SGD in fixed wall time?

Arms, each from the same start (``--warm-start``, default the catalog's SGD) and each for
the same wall time per seed (``--minutes``, default 15), the search phase in this process on
one core:

- ``evolution``: regularized evolution with the macro mutations and progressive hurdles;
- ``atomic``: the same evolution with atomic mutations only (``space.macro_weight = 0``);
- ``random``: random search (``strategy = "random"``).

When an arm-seed's time is up, its distinct scored programs that are adaptive (an update
normalized by a second-moment state, :func:`optdisco.search.classify.is_adaptive`, decided
from the rule's updates, not its fitness) are ranked by search fitness, and the best
``--judge`` of them are evaluated on the held-out suite (``--heldout-budget``, one seed)
beside Adam. The arm-seed *rediscovers* when one of them has held-out fitness within
``--tolerance`` (0.05) of Adam's or above it. Each finished arm-seed is written to the
results JSON at once (``--results``), so a rerun skips what is done: the benchmark can be
spread over several sittings. Per arm it prints the share of seeds that rediscovered, the
trained evaluations and the minutes; the last line is
``rediscovery: evolution K/N, atomic A/N, random J/N``.

    python benchmarks/bench_discovery.py [--minutes 15] [--seeds 5] [--results FILE]
    python benchmarks/bench_discovery.py --smoke     # seconds: the noisy quadratic, 1 seed
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

ARMS: dict[str, dict[str, Any]] = {
    "evolution": {"hurdle.enabled": True},
    "atomic": {"hurdle.enabled": True, "space.macro_weight": 0.0},
    "random": {"strategy": "random"},
}


class WallTimeUp(Exception):
    """Raised from the progress callback when an arm-seed's wall time is spent."""


def arm_config(arm: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The validated campaign config of one arm-seed (the search phase is all that runs)."""
    from optdisco.search import config
    over: dict[str, Any] = {"budget": 1_000_000, "seed": seed, "warm_start": args.warm_start,
                            "fitness.evaluator": args.evaluator, "report": False, **ARMS[arm]}
    if args.evaluator == "quadratic":
        over.update({"fitness.tasks": [], "fitness.budget": 0.25, "hurdle.tasks": []})
    return config.load(None, over)


def run_search(arm: str, seed: int, args: argparse.Namespace, folder: Path):
    """The arm-seed's search for ``args.minutes`` of wall time; returns (store, seconds)."""
    from optdisco.cli.commands_search import resolve_warm_start
    from optdisco.search.campaign import Campaign
    from optdisco.search.executors import InProcessExecutor
    from optdisco.search.store import Store
    cfg = arm_config(arm, seed, args)
    store = Store(folder / f"{arm}_s{seed}.db")
    deadline = time.monotonic() + 60.0 * args.minutes

    def stop_when_due(_progress) -> None:
        if time.monotonic() >= deadline:
            raise WallTimeUp

    camp = Campaign(cfg, store, InProcessExecutor(args.evaluator), warm_start=resolve_warm_start(cfg["warm_start"]),
                    on_progress=stop_when_due)
    t0 = time.monotonic()
    try:
        camp.search()
    except WallTimeUp:  # every result so far is committed; the batches in flight are dropped
        pass
    return store, time.monotonic() - t0


def heldout_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What the judgment runs on: the held-out suite at ``--heldout-budget``, one seed (in
    ``--smoke``, the quadratic with two seeds, which is all that evaluator has)."""
    if args.evaluator == "quadratic":
        return {"seeds": 2, "budget": 0.5}
    return {"suite": "heldout", "tasks": [], "seeds": 1, "budget": args.heldout_budget,
            "aggregate": "standardized", "cache_dir": str(Path(args.results).resolve().parent / ".baselines")}


def heldout_fitness(sources: list[str], args: argparse.Namespace) -> list[float]:
    """Held-out fitness (against tuned AdamW) of rule texts, evaluated together in this process."""
    from optdisco.search.fitness import evaluate_batch
    return [float(r["fitness"]) for r in evaluate_batch(sources, heldout_settings(args), args.evaluator)]


def judge(store, adam: float, args: argparse.Namespace) -> dict[str, Any]:
    """The arm-seed's best adaptive rules on the held-out suite, and whether one rediscovers."""
    from optdisco.search.classify import is_adaptive
    adaptive: list[tuple[int, str, float]] = []
    for row in store.top_programs():
        if row.fitness is None or len(adaptive) >= args.judge:
            continue
        try:
            if is_adaptive(row.program()):
                adaptive.append((row.id, row.source, float(row.fitness)))
        except Exception:  # noqa: BLE001 - a rule the probe cannot run is not adaptive
            continue
    held = heldout_fitness([s for _, s, _ in adaptive], args) if adaptive else []
    judged = [{"id": pid, "search_fitness": f, "heldout": h, "source": s}
              for (pid, s, f), h in zip(adaptive, held)]
    best = max(judged, key=lambda j: j["heldout"], default=None)
    return {"adaptive_judged": judged, "best_heldout": None if best is None else best["heldout"],
            "rediscovered": best is not None and best["heldout"] >= adam - args.tolerance}


def load_results(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The results file, or a new one; its settings must be the run's (else the numbers mix)."""
    settings = {k: getattr(args, k) for k in ("minutes", "warm_start", "evaluator", "heldout_budget", "tolerance",
                                              "judge")}
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["settings"] != settings:
            raise SystemExit(f"{path} holds results made with other settings ({data['settings']}); "
                             f"use another --results")
        return data
    return {"settings": settings, "adam_heldout": None, "runs": {}}


def save(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=15.0, help="wall time per arm and seed")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset of " + ", ".join(ARMS))
    ap.add_argument("--warm-start", default="sgd")
    ap.add_argument("--evaluator", default="proxy", choices=("proxy", "quadratic"))
    ap.add_argument("--heldout-budget", type=float, default=1.0)
    ap.add_argument("--tolerance", type=float, default=0.05, help="held-out fitness this close to Adam's counts")
    ap.add_argument("--judge", type=int, default=3, help="adaptive rules per arm-seed judged on held-out")
    ap.add_argument("--results", default="bench_discovery.json")
    ap.add_argument("--smoke", action="store_true", help="seconds per arm, one seed, the noisy quadratic")
    args = ap.parse_args()
    if args.smoke:
        args.minutes, args.seeds, args.evaluator, args.judge = 0.05, 1, "quadratic", 2
    arms = [a for a in args.arms.split(",") if a]
    path = Path(args.results)
    data = load_results(path, args)
    from optdisco.discovered import catalog
    if data["adam_heldout"] is None:
        data["adam_heldout"] = heldout_fitness([catalog.get("adam").source()], args)[0]
        save(path, data)
    adam = data["adam_heldout"]
    print(f"Adam held-out fitness {adam:+.4f}; an adaptive rule within {args.tolerance} of it rediscovers")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for arm in arms:
                key = f"{arm}/{seed}"
                if key in data["runs"]:
                    print(f"{key}: done before ({'rediscovered' if data['runs'][key]['rediscovered'] else 'no'})")
                    continue
                store, secs = run_search(arm, seed, args, Path(tmp))
                counts = store.counts()
                result = {"arm": arm, "seed": seed, "minutes": secs / 60.0, "trained": counts["trained"],
                          "proposed": counts["proposed"], **judge(store, adam, args)}
                store.close()
                data["runs"][key] = result
                save(path, data)
                best = result["best_heldout"]
                print(f"{key}: {result['trained']} trained evaluations in {result['minutes']:.1f} min; "
                      f"{len(result['adaptive_judged'])} adaptive rule(s) judged, best held-out "
                      f"{'none' if best is None else f'{best:+.4f}'}; "
                      f"{'rediscovered' if result['rediscovered'] else 'not rediscovered'}", flush=True)
    shares = {}
    for arm in ARMS:
        runs = [r for k, r in data["runs"].items() if r["arm"] == arm]
        shares[arm] = (sum(r["rediscovered"] for r in runs), len(runs))
        if runs:
            print(f"{arm}: {shares[arm][0]}/{len(runs)} seeds rediscovered; "
                  f"{sum(r['trained'] for r in runs) / len(runs):.0f} trained evaluations and "
                  f"{sum(r['minutes'] for r in runs) / len(runs):.1f} minutes per seed")
    print("rediscovery: " + ", ".join(f"{a} {k}/{n}" for a, (k, n) in shares.items()))


if __name__ == "__main__":
    main()
