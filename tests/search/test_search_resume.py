"""A campaign killed with SIGKILL resumes with nothing lost and ends where an uninterrupted one does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import tomllib

from search_helpers import quadratic_config

from optdisco.search import config
from optdisco.search.campaign import Campaign
from optdisco.search.executors import InProcessExecutor
from optdisco.search.store import Store

SETTINGS = {"budget": 60, "seed": 5, "fitness.budget": 1.0, "funnel.threshold": -100.0, "funnel.top_k": 2,
            "simplify.top_k": 1}

CHILD = textwrap.dedent("""
    import json, sys
    from optdisco.dsl import parse
    from optdisco.search.campaign import Campaign
    from optdisco.search.executors import InProcessExecutor
    from optdisco.search.mutate import SEED_RULE
    from optdisco.search.store import Store
    cfg = json.loads(sys.argv[2])
    Campaign(cfg, Store(sys.argv[1]), InProcessExecutor("quadratic"), warm_start=parse(SEED_RULE)).run()
""")


def snapshot(store: Store):
    progs = [(r.id, r.source, r.fingerprint, r.parent, r.mutation, r.arm, r.phase, r.status, r.cache_of,
              r.seq, r.fitness) for r in store.programs()]
    evs = [(e["program"], e["stage"], e["settings"], e["fitness"], e["failure"]) for e in store.evaluations()]
    evs.sort()
    meta = {k: store.get_meta(k) for k in ("found", "funnel", "phase", "config")}
    return progs, evs, meta


def test_sigkill_then_resume_ends_exactly_like_an_uninterrupted_campaign(tmp_path):
    cfg = quadratic_config(**SETTINGS)
    whole = Store(tmp_path / "whole.db")
    from optdisco.dsl import parse
    from optdisco.search.mutate import SEED_RULE
    Campaign(cfg, whole, InProcessExecutor("quadratic"), warm_start=parse(SEED_RULE)).run()

    path = tmp_path / "killed.db"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), json.dumps(cfg)])
    done = 0
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if path.exists():
                try:
                    with Store(path, create=False) as s:
                        done = s.counts()["done"]
                except Exception:  # noqa: BLE001 - the child may be creating the schema
                    done = 0
            if done >= 20:
                break
            assert proc.poll() is None, "the campaign ended before it could be killed"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with Store(path, create=False) as s:
        before = s.counts()
        finished_before = {(e["program"], e["fitness"]) for e in s.evaluations()}
        assert 20 <= before["done"] < SETTINGS["budget"]
        assert s.open_batches(), "the kill should have caught batches in flight"

    # resume from the store alone: its own config copy, its own warm start
    store = Store(path, create=False)
    stored = config.validate(tomllib.loads(store.get_meta("config")))
    assert stored == cfg
    Campaign(stored, store, InProcessExecutor("quadratic")).run()
    after = {(e["program"], e["fitness"]) for e in store.evaluations()}
    assert finished_before <= after  # nothing finished was lost
    assert snapshot(store) == snapshot(whole)
