"""The free pre-filters on real programs, and in a campaign with the real store: rejected
children are counted, carry their reason and the worst fitness, and are never trained."""

from __future__ import annotations

import io

import pytest
from search_helpers import quadratic_config

from optdisco.discovered import catalog
from optdisco.dsl import parse
from optdisco.search.campaign import Campaign
from optdisco.search.executors import InProcessExecutor
from optdisco.search.fitness import WORST
from optdisco.search.leaderboard import rejections_text, rich_table
from optdisco.search.mutate import SEED_RULE
from optdisco.search.prefilter import BLOWS_UP, NO_GRADIENT, NON_FINITE, ZERO, screen
from optdisco.search.store import Store


def rule(body: str, states: str = "") -> str:
    return f"def r(w, g{states}):\n" + "".join(f"    {line}\n" for line in body.strip().splitlines())


def test_every_catalog_rule_passes():
    rejected = {n: screen(catalog.get(n)) for n in catalog.names()}
    assert not {n: why for n, why in rejected.items() if why}, rejected


def test_constant_and_gradient_free_updates_are_rejected():
    assert screen(parse(rule("return 0.0 * g"))) == ZERO
    assert screen(parse(rule("return relu(-(g * g))"))) == ZERO
    assert screen(parse(rule("return w + 1.0"))) == NO_GRADIENT
    assert screen(parse(rule("return lr + 0.0 * w"))) == NO_GRADIENT
    assert screen(parse(rule("return randn()"))) == NO_GRADIENT
    # a state that never sees g: a constant in disguise
    assert screen(parse(rule("m = interp(w, m, 0.9)\nreturn m + step, m", ", m"))) == NO_GRADIENT


def test_non_finite_and_exploding_updates_are_rejected():
    assert screen(parse(rule("return g / (g - g)"))) == NON_FINITE
    assert screen(parse(rule("return exp(g * 100.0) * 1e30"))) in (NON_FINITE, BLOWS_UP)
    assert screen(parse(rule("return exp(g * 1e4)"))) == NON_FINITE
    assert screen(parse(rule("v = interp(g * g, v, 0.9)\nreturn g / sqrt(v - v), v", ", v"))) == NON_FINITE
    # finite on the first steps, but it grows like e^step on the quadratic
    assert screen(parse(rule("return g * exp(step)"))) == BLOWS_UP
    assert screen(parse(rule("return -100.0 * g"))) == BLOWS_UP


def test_junk_that_depends_on_g_is_left_to_training():
    # these are poor rules, not broken ones: only training can say how poor
    assert screen(parse(rule("return g + lr"))) is None
    assert screen(parse(rule("return maximum(0.0, g)"))) is None
    assert screen(parse(rule("return -g"))) is None  # ascent, slowly at lr 0.01: not a blow-up


def test_a_campaign_counts_rejections_and_never_trains_them(tmp_path):
    cfg = quadratic_config(**{"budget": 40, "simplify.enabled": False, "funnel.top_k": 0,
                              "evolution.random_fraction": 0.5, "space.macro_weight": 0.5})
    store = Store(tmp_path / "c.db")
    Campaign(cfg, store, InProcessExecutor("quadratic"), warm_start=parse(SEED_RULE)).run()
    rejected = store.programs("status = 'rejected'")
    assert rejected, "40 random and mutated programs and none rejected: the screen is not wired in"
    counts = store.rejection_counts()
    assert sum(counts.values()) == len(rejected)
    for row in rejected:
        assert row.fitness == WORST and row.seq is not None
        assert not store.evaluations(row.id), f"rejected program {row.id} was trained"
        assert store.rejection(row.id) == screen(parse(row.source))
    c = store.counts()
    assert c["done"] == 40 and c["trained"] + c["hits"] + len(rejected) == 40
    assert f"rejected untrained by the pre-filters: {len(rejected)}" in rejections_text(store)
    from rich.console import Console
    out = io.StringIO()
    Console(file=out, width=140).print(rich_table(store))
    assert "rejected untrained" in out.getvalue()
    from optdisco.search.report import write_report
    html = write_report(tmp_path / "c.db", tmp_path / "c.html").read_text()
    assert rejections_text(store) in html.replace("&#x27;", "'")


def test_prefilter_off_trains_everything_and_old_configs_resume_without_it(tmp_path):
    cfg = quadratic_config(**{"budget": 20, "simplify.enabled": False, "funnel.top_k": 0,
                              "evolution.random_fraction": 0.5, "space.prefilter": False})
    store = Store(tmp_path / "off.db")
    Campaign(cfg, store, InProcessExecutor("quadratic"), warm_start=parse(SEED_RULE)).run()
    assert not store.programs("status = 'rejected'") and not store.rejection_counts()
    from optdisco.search import config
    old = config.dumps(cfg).replace("prefilter = false\n", "").replace("macro_weight = 0.3\n", "")
    old = "\n".join(ln for ln in old.splitlines() if not ln.startswith("macro_weights"))
    import tomllib
    again = config.validate(tomllib.loads(old))
    assert again["space"]["prefilter"] is False and again["space"]["macro_weight"] == 0.0


class _Stop(Exception):
    pass


def test_rejections_survive_an_interrupted_campaign(tmp_path):
    """Stopped mid-search (an exception out of the progress callback, the store left as it was)
    and resumed from the store alone, a campaign rejects and records exactly what an
    uninterrupted one does. test_search_resume covers SIGKILL with the same defaults."""
    import tomllib

    from optdisco.search import config
    cfg = quadratic_config(**{"budget": 40, "seed": 3, "simplify.enabled": False, "funnel.top_k": 0,
                              "evolution.random_fraction": 0.5})
    whole = Store(tmp_path / "whole.db")
    Campaign(cfg, whole, InProcessExecutor("quadratic"), warm_start=parse(SEED_RULE)).run()

    def stop_at_20(progress):
        if progress.done >= 20:
            raise _Stop

    cut = Store(tmp_path / "cut.db")
    with pytest.raises(_Stop):  # the campaign really was interrupted, not run to its end
        Campaign(cfg, cut, InProcessExecutor("quadratic"), warm_start=parse(SEED_RULE),
                 on_progress=stop_at_20).run()
    assert 20 <= cut.counts()["done"] < 40
    stored = config.validate(tomllib.loads(cut.get_meta("config")))
    Campaign(stored, cut, InProcessExecutor("quadratic")).run()

    def rows(s):
        return ([(r.id, r.source, r.status, r.seq, r.fitness) for r in s.programs()],
                [tuple(r) for r in s.db.execute("SELECT program, reason FROM rejections ORDER BY program")])
    assert whole.rejection_counts() and rows(cut) == rows(whole)
