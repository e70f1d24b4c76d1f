"""The campaign on real local Ray workers: a killed worker and a hung batch cost one evaluation."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from search_helpers import quadratic_config

from optdisco.dsl import parse
from optdisco.search.campaign import Campaign
from optdisco.search.executors import RayExecutor
from optdisco.search.fitness import WORST, quadratic_fitness
from optdisco.search.mutate import SEED_RULE
from optdisco.search.store import Store

pytestmark = pytest.mark.ray


def busy_ray_workers(ray) -> list[int]:
    """Pids of this session's Ray workers running an evaluation right now (by process title).

    Only children of this session's raylet count: other people's Ray jobs on the machine
    are none of this test's business.
    """
    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == raylet and cmd.startswith("ray::evaluate_batch"):
            pids.append(int(entry.name))
    return pids


def test_a_killed_worker_costs_only_its_batch(ray_session, tmp_path):
    cfg = quadratic_config(**{"budget": 60, "fitness.budget": 1.0, "distributed.max_retries": 1,
                              "simplify.enabled": False, "funnel.top_k": 0})
    store = Store(tmp_path / "c.db")
    killed: list[int] = []

    def retried() -> bool:
        with Store(tmp_path / "c.db", create=False) as s:
            return bool(s.db.execute("SELECT COUNT(*) FROM batches WHERE attempts > 1").fetchone()[0])

    def killer():
        # kill a busy worker; if the batch had just finished (no retry follows), try again
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(killed) < 3:
            with Store(tmp_path / "c.db", create=False) as s:
                c = s.counts()
            if c["done"] >= 60:
                return
            pids = busy_ray_workers(ray_session) if c["done"] >= 6 else []
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                time.sleep(1.5)
                if retried():
                    return
            time.sleep(0.02)

    t = threading.Thread(target=killer)
    t.start()
    try:
        Campaign(cfg, store, RayExecutor("quadratic", workers=2), warm_start=parse(SEED_RULE)).run()
    finally:
        t.join()
    assert killed, "no busy Ray worker was found to kill"
    c = store.counts()
    assert c["done"] == 60  # the campaign went on to the end
    rerun = store.db.execute("SELECT id, attempts FROM batches WHERE attempts > 1").fetchall()
    assert rerun, "the killed worker's batch should have been re-run"
    for bid, _ in rerun:
        evs = store.db.execute("SELECT attempt, failure FROM evaluations WHERE batch = ?", (bid,)).fetchall()
        assert evs and all(a == 2 and not (f or "").startswith("batch failed") for a, f in evs)
    assert store.db.execute("SELECT COUNT(*) FROM programs WHERE status IN ('pending', 'queued')").fetchone()[0] == 0


def hangs_on_sgd(programs, settings):
    """The quadratic fitness, except that a batch holding plain SGD never returns (a hung task)."""
    if any(p.source().split("\n", 1)[1].strip() == "return g" for p in programs):
        time.sleep(3600)
    return quadratic_fitness(programs, settings)


def test_a_hung_batch_is_cancelled_and_marked_failed(ray_session, tmp_path):
    cfg = quadratic_config(**{"budget": 10, "distributed.max_retries": 0, "fitness.time_limit": 4.0,
                              "simplify.enabled": False, "funnel.top_k": 0})
    import ray.cloudpickle
    import sys
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    store = Store(tmp_path / "c.db")
    t0 = time.monotonic()
    Campaign(cfg, store, RayExecutor(hangs_on_sgd, workers=2, time_limit=4.0),
             warm_start=parse("def sgd(w, g):\n    return g\n")).run()
    assert time.monotonic() - t0 < 60
    first = store.program(0)
    assert first.status == "failed" and first.fitness == WORST
    assert "timed out" in store.evaluations(0)[0]["failure"]
    assert store.counts()["done"] == 10
    assert any(r.status == "done" for r in store.completed())


def test_one_ray_worker_replays_a_campaign_exactly(ray_session, tmp_path):
    cfg = quadratic_config(**{"budget": 24, "seed": 9, "simplify.enabled": False, "funnel.top_k": 0})

    def campaign(name):
        store = Store(tmp_path / name)
        Campaign(cfg, store, RayExecutor("quadratic", workers=1), warm_start=parse(SEED_RULE)).run()
        return [(r.id, r.source, r.parent, r.mutation, r.cache_of, r.seq, r.fitness) for r in store.programs()]

    assert campaign("a.db") == campaign("b.db")
