"""What ``optdisco search`` and ``optdisco report`` call: set up, run with live progress, report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

from ..discovered.optimizer import resolve_rule
from ..dsl.ir import Program
from ..search import config as config_mod
from ..search.campaign import Campaign, Progress, stored_config, update_config
from ..search.store import Store, StoreError

console = Console()

#: Settings a resumed campaign may change (the rest come from the store).
RESUMABLE = ("budget", "workers", "report")


def resolve_warm_start(rule: str) -> Program | None:
    """The warm-start Program: a catalog name, a rule file, ``DB:ID``, or None for ``""``."""
    if not rule:
        return None
    return resolve_rule(rule)


def make_executor(cfg: Mapping[str, Any], address: str | None, workers: int):
    """A RayExecutor on a local Ray (``workers`` CPUs, 0 = all) or on the cluster at ``address``."""
    from ..search.executors import RayExecutor, init_ray
    cpus = init_ray(address or "", workers)
    return RayExecutor(cfg["fitness"]["evaluator"], workers=min(cpus, workers) if workers else cpus,
                       time_limit=cfg["fitness"]["time_limit"])


def _progress_view(p: Progress) -> Panel:
    lines = Text()
    lines.append(f"{p.phase}: ", style="bold")
    lines.append(f"{p.done}/{p.budget} candidates  ")
    lines.append(f"{p.rate:.2f} evals/s ({p.train_rate:.2f} trained/s)  ")
    lines.append(f"cache hit rate {100 * p.hit_rate:.0f}%  ")
    lines.append(f"trained {p.trained}  failed {p.failed}\n")
    if p.best_id is not None:
        lines.append(f"best fitness {p.best_fitness:+.4f} (program {p.best_id}):\n", style="green")
        lines.append(p.best_source.rstrip())
    return Panel(lines, title="optdisco search", expand=False)


def run_campaign(cfg: Mapping[str, Any], store: Store, executor, warm_start: Program | None,
                 live: bool = True) -> list[int]:
    """Run (or continue) the campaign in ``store``, showing live progress; returns found ids."""
    if not live:
        campaign = Campaign(cfg, store, executor, warm_start=warm_start)
        campaign.log = console.print
        return campaign.run()
    with Live(_progress_view(Progress(budget=cfg["budget"])), console=console, refresh_per_second=4,
              transient=False) as view:
        last = [0.0]

        def update(p: Progress) -> None:
            now = time.monotonic()
            if now - last[0] > 0.25 or p.phase == "finished":
                last[0] = now
                view.update(_progress_view(p))

        campaign = Campaign(cfg, store, executor, warm_start=warm_start, on_progress=update)

        def phase_watch(p: Progress) -> None:
            p.phase = store.get_meta("phase") or p.phase
            update(p)

        campaign.on_progress = phase_watch
        campaign.log = console.print  # lines above the live panel: the funnel's long stages
        return campaign.run()


def run_search(config_path: str | None, overrides: Mapping[str, Any], resume: str | None = None,
               address: str | None = None) -> int:
    """``optdisco search``: validate the config, run the campaign on Ray, print the leaderboard,
    write the report; returns the exit code. ``resume`` continues the store at that path."""
    overrides = dict(overrides)
    if resume:
        store = Store(resume, create=False)
        stored = stored_config(store)
        extra = {k: overrides[k] for k in RESUMABLE if k in overrides}
        ignored = sorted(set(overrides) - set(RESUMABLE) - {"preset"})
        if ignored:
            console.print(f"[yellow]resuming {resume}: its stored config holds; ignoring {', '.join(ignored)}")
        cfg = config_mod.validate(config_mod._merge(stored, config_mod.overrides_to_tree(extra)))
        if extra:
            update_config(store, cfg, budget_changed="budget" in extra)
        warm = None
    else:
        if address:
            overrides["address"] = address
        cfg = config_mod.load(config_path, overrides)
        warm = resolve_warm_start(cfg["warm_start"])
        db = cfg["db"] or f"runs/{time.strftime('%Y%m%d-%H%M%S')}.db"
        if Path(db).exists():
            raise StoreError(f"{db} exists; continue it with --resume {db}, or choose another --db")
        store = Store(db)
    executor = make_executor(cfg, address or cfg["distributed"]["address"], cfg["workers"])
    console.print(f"campaign store: {store.path}  ({executor.workers} Ray worker(s), "
                  f"batches of {cfg['distributed']['batch_size']})")
    try:
        found = run_campaign(cfg, store, executor, warm)
    finally:
        executor.shutdown()
    from ..search.leaderboard import rich_table
    console.print(rich_table(store))
    console.print(f"found {len(found)} rule(s) that held up through the funnel: {found}")
    if cfg["report"]:
        out = write_report(str(store.path), str(store.path.with_suffix(".html")))
        console.print(f"report: {out}")
    store.close()
    return 0


def write_report(db: str, out: str) -> Path:
    """``optdisco report DB -o FILE``: write the campaign's self-contained HTML report; returns its path."""
    from ..search.report import write_report as _write
    return _write(db, out)
