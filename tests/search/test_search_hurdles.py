"""Progressive hurdles: children screened on a cheap stage, only the good ones trained in full.

Real campaigns on the built-in noisy quadratic (real training, seconds), the real store."""

from __future__ import annotations

import io
import tomllib

import pytest
from search_helpers import quadratic_config

from optdisco.dsl import parse
from optdisco.search import config
from optdisco.search.cache import settings_key
from optdisco.search.campaign import Campaign, hurdle_threshold, screen_settings
from optdisco.search.executors import InProcessExecutor
from optdisco.search.fitness import WORST, evaluate_batch
from optdisco.search.leaderboard import rejections_text, rich_table
from optdisco.search.mutate import SEED_RULE
from optdisco.search.store import Store

HURDLE = {"hurdle.enabled": True, "hurdle.budget": 0.1, "hurdle.quantile": 0.5, "hurdle.warmup": 4}


def _cfg(**extra):
    base = {"budget": 40, "simplify.enabled": False, "funnel.top_k": 0, "evolution.random_fraction": 0.25,
            **HURDLE}
    base.update(extra)
    return quadratic_config(**base)


def test_threshold_is_the_linear_quantile():
    assert hurdle_threshold([3.0, 1.0, 2.0], 0.5) == 2.0
    assert hurdle_threshold([1.0, 2.0], 0.25) == pytest.approx(1.25)
    assert hurdle_threshold([1.0, 2.0, 4.0, 8.0], 1.0) == 8.0
    assert hurdle_threshold([5.0], 0.9) == 5.0


def test_a_campaign_with_hurdles_screens_out_children_and_never_trains_them_in_full(tmp_path):
    cfg = _cfg()
    store = Store(tmp_path / "h.db")
    Campaign(cfg, store, InProcessExecutor("quadratic"), warm_start=parse(SEED_RULE)).run()
    out = store.programs("status = 'screened_out'")
    assert out, "40 candidates, hurdle at the median, and none screened out: the hurdle is not wired in"
    screen_key = settings_key(screen_settings(cfg))
    for row in out:
        assert row.fitness == WORST and row.seq is not None
        evs = store.evaluations(row.id)
        assert [e["stage"] for e in evs] == ["screen"] and evs[0]["settings"] == screen_key
        h = store.hurdle(row.id)
        assert h is not None and not h["passed"] and h["score"] == evs[0]["fitness"]
        assert h["threshold"] is not None and h["score"] < h["threshold"]
    # every decision is the quantile of the scores before it, the first `warmup` always pass
    decisions = store.db.execute("SELECT * FROM hurdles ORDER BY n").fetchall()
    scores = [d["score"] for d in decisions]
    for d in decisions:
        if d["n"] < 4:
            assert d["threshold"] is None and d["passed"]
        else:
            assert d["threshold"] == pytest.approx(hurdle_threshold(scores[:d["n"]], 0.5))
            assert bool(d["passed"]) == (d["score"] >= d["threshold"])
            if d["passed"]:  # went on: trained on the full fitness after its screening
                assert [e["stage"] for e in store.evaluations(d["program"])] == ["screen", "search"]
    # the warm start skips the screen; the screen is the real cheap training (20 steps, not 50)
    ws = store.programs("mutation = 'warm_start'")[0]
    assert [e["stage"] for e in store.evaluations(ws.id)] == ["search"]
    first = decisions[0]
    again = evaluate_batch([store.program(first["program"]).source], screen_settings(cfg), "quadratic")
    assert again[0]["fitness"] == pytest.approx(first["score"])
    c = store.counts()
    rejected = len(store.programs("status = 'rejected'"))
    assert c["done"] == 40 and c["trained"] + c["hits"] + rejected + len(out) == 40
    assert store.hurdle_counts() == {"screened": len(decisions), "passed": len(decisions) - len(out),
                                     "screened_out": len(out)}
    line = rejections_text(store)
    assert f"screened out by the hurdle: {len(out)} of {len(decisions)} screened" in line
    from rich.console import Console
    buf = io.StringIO()
    Console(file=buf, width=200).print(rich_table(store))
    assert f"screened out by the hurdle: {len(out)} of" in " ".join(buf.getvalue().split())  # caption wraps
    from optdisco.search.report import write_report
    html = write_report(tmp_path / "h.db", tmp_path / "h.html").read_text()
    assert line in html.replace("&#x27;", "'")


def test_hurdles_off_screen_nothing_and_old_configs_resume_without_them(tmp_path):
    cfg = _cfg(**{"budget": 16, "hurdle.enabled": False})
    store = Store(tmp_path / "off.db")
    Campaign(cfg, store, InProcessExecutor("quadratic"), warm_start=parse(SEED_RULE)).run()
    assert store.hurdle_counts()["screened"] == 0 and not store.evaluations(stage="screen")
    assert "screened out" not in rejections_text(store)
    old = tomllib.loads(config.dumps(cfg))
    del old["hurdle"]  # a store from before hurdles
    again = config.validate(old)
    assert again["hurdle"]["enabled"] is False
    assert config.load()["hurdle"]["enabled"] is False  # the shipped default: see defaults.toml
    with pytest.raises(config.ConfigError, match="hurdle.quantile"):
        quadratic_config(**{"hurdle.quantile": 1.5})
    with pytest.raises(config.ConfigError, match="hurdle.tasks"):
        quadratic_config(**{"hurdle.tasks": [1]})


class _Stop(Exception):
    pass


@pytest.mark.parametrize("stop_at", [5, 23])  # in the warmup; past it, with children screened out
def test_hurdle_decisions_survive_an_interrupted_campaign(tmp_path, stop_at):
    """Stopped mid-search (an exception out of the progress callback, the store left as it was)
    and resumed from the store alone, a campaign screens, decides and records exactly what an
    uninterrupted one does: the store holds the screening scores the hurdle is computed from."""
    cfg = _cfg(seed=3)
    whole = Store(tmp_path / "whole.db")
    Campaign(cfg, whole, InProcessExecutor("quadratic"), warm_start=parse(SEED_RULE)).run()
    calls = {"n": 0}

    def stop(progress):  # after some number of committed steps, screening ones included
        calls["n"] += 1
        if calls["n"] >= stop_at:
            raise _Stop

    cut = Store(tmp_path / "cut.db")
    with pytest.raises(_Stop):
        Campaign(cfg, cut, InProcessExecutor("quadratic"), warm_start=parse(SEED_RULE), on_progress=stop).run()
    assert cut.counts()["done"] < 40
    assert "screen" in [b["stage"] for b in cut.open_batches()], "stopped with no screening in flight"
    stored = config.validate(tomllib.loads(cut.get_meta("config")))
    Campaign(stored, cut, InProcessExecutor("quadratic")).run()

    def rows(s):
        return ([(r.id, r.source, r.status, r.seq, r.fitness) for r in s.programs()],
                [tuple(r) for r in s.db.execute("SELECT program, n, score, threshold, passed FROM hurdles")],
                [(e["program"], e["stage"], e["fitness"]) for e in s.evaluations()])
    assert whole.hurdle_counts()["screened_out"] > 0
    assert rows(cut) == rows(whole)
