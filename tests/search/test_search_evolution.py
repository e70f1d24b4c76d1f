"""The search loop on the in-process executor with a real (small) fitness: the noisy quadratic."""

from __future__ import annotations

import json

from search_helpers import quadratic_config

from optdisco.dsl import parse
from optdisco.search.cache import fingerprint, settings_key
from optdisco.search.campaign import Campaign
from optdisco.search.executors import InProcessExecutor
from optdisco.search.fitness import WORST, evaluate_batch
from optdisco.search.mutate import SEED_RULE
from optdisco.search.store import Store


def run(tmp_path, name="c.db", warm=SEED_RULE, **overrides):
    cfg = quadratic_config(**overrides)
    store = Store(tmp_path / name)
    found = Campaign(cfg, store, InProcessExecutor("quadratic"),
                     warm_start=parse(warm) if warm else None).run()
    return store, found


def test_evolution_improves_on_its_warm_start(tmp_path):
    store, _ = run(tmp_path, **{"budget": 80, "evolution.random_fraction": 0.0})
    start = store.program(0)
    assert start.mutation == "warm_start" and start.fitness is not None
    best = max(r.fitness for r in store.completed())
    assert best > start.fitness + 0.5, (start.fitness, best)
    # the best rule descends from the warm start through recorded mutations
    (top,) = store.programs("phase = 'search' AND seq IS NOT NULL", order="fitness DESC, seq LIMIT 1")
    chain = store.lineage(top.id)
    assert chain[-1].id == 0 and all(r.mutation for r in chain)


def test_same_seed_same_campaign_and_random_arm_is_separate(tmp_path):
    a, _ = run(tmp_path, "a.db", **{"budget": 30, "simplify.enabled": False, "funnel.top_k": 0})
    b, _ = run(tmp_path, "b.db", **{"budget": 30, "simplify.enabled": False, "funnel.top_k": 0})
    rows = lambda s: [(r.source, r.parent, r.mutation, r.arm, r.fitness, r.seq) for r in s.programs()]
    assert rows(a) == rows(b)
    arms = {r.arm for r in a.programs("phase = 'search'")}
    assert arms == {"evolution", "random"}
    assert all(r.parent is None for r in a.programs("arm = 'random'"))


def test_random_strategy_has_no_parents(tmp_path):
    store, _ = run(tmp_path, warm="", **{"budget": 12, "strategy": "random", "simplify.enabled": False,
                                         "funnel.top_k": 0})
    rows = store.programs("phase = 'search'")
    assert len(rows) == 12 and all(r.parent is None and r.arm == "random" for r in rows)


def test_cache_never_trains_an_equivalent_program_twice(tmp_path):
    store, _ = run(tmp_path, **{"budget": 60, "evolution.population": 4, "evolution.tournament": 2,
                                 "space.max_statements": 1, "space.max_states": 0})
    c = store.counts()
    rejected = sum(store.rejection_counts().values())  # screened out by the pre-filters, untrained
    assert c["hits"] > 0 and c["trained"] + c["hits"] + rejected == c["done"] == 60
    seen = {}
    for ev in store.evaluations():
        key = (store.program(ev["program"]).fingerprint, ev["settings"])
        assert key not in seen, f"program {ev['program']} re-trained an equivalent of {seen.get(key)}"
        seen[key] = ev["program"]
    for hit in store.programs("cache_of IS NOT NULL"):
        src = store.program(hit.cache_of)
        assert hit.fingerprint == src.fingerprint and hit.fitness == src.fitness
        assert not store.evaluations(hit.id)


def test_equivalent_programs_share_a_fingerprint():
    a = parse("def r(w, g, m):\n    m = interp(g, m, 0.9)\n    t = m * 2.0\n    return 2.0 * m, m\n")
    b = parse("def q(w, g, v):\n    v = interp(g, v, 0.9)\n    return v * 2.0, v\n")
    c = parse("def q(w, g, v):\n    v = interp(g, v, 0.8)\n    return v * 2.0, v\n")
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)


def test_a_diverging_candidate_gets_the_worst_score_and_spoils_nothing(tmp_path):
    diverge = "def boom(w, g):\n    return exp(g * 100.0) * 1e30\n"
    results = evaluate_batch([diverge, SEED_RULE], {"seeds": 1, "budget": 0.25}, "quadratic")
    assert results[0]["fitness"] == WORST and "diverged" in results[0]["failure"]
    alone = evaluate_batch([SEED_RULE], {"seeds": 1, "budget": 0.25}, "quadratic")
    assert results[1]["fitness"] == alone[0]["fitness"] and results[1]["failure"] is None
    # as a campaign's warm start: recorded as failed, and the campaign goes on
    store, _ = run(tmp_path, warm=diverge, **{"budget": 16, "simplify.enabled": False, "funnel.top_k": 0})
    first = store.program(0)
    assert first.status == "failed" and first.fitness == WORST
    assert "diverged" in store.evaluations(0)[0]["failure"]
    assert store.counts()["done"] == 16
    assert max(r.fitness for r in store.completed()) > WORST


def test_simplify_and_funnel_record_their_work(tmp_path):
    store, found = run(tmp_path, **{"budget": 40, "funnel.threshold": -100.0, "funnel.top_k": 2})
    simplified = [json.loads(v) for (v,) in store.db.execute(
        "SELECT value FROM meta WHERE key LIKE 'simplified:%'")]
    assert simplified and all(parse(s["source"]) for s in simplified)
    funnel = json.loads(store.get_meta("funnel"))
    assert [s["stage"] for s in funnel] == ["seeds", "budget", "heldout"]
    assert {r["name"] for r in funnel[0]["rows"] if r["reference"]} == {"adamw", "lion"}
    assert found and store.get_meta("phase") == "finished"
    for stage in funnel:  # every stage was really evaluated with its own settings
        for r in stage["rows"]:
            assert store.cached_evaluation(store.program(r["id"]).fingerprint, settings_key(stage["settings"]))


def test_restart_point_follows_stagnation():
    from types import SimpleNamespace

    from optdisco.search.evolution import Evolution
    from optdisco.search.mutate import Space
    ev = Evolution(seed=0, space=Space(), restart_after=3)
    hist = [SimpleNamespace(fitness=f) for f in [0.0, 1.0, 0.5, 0.5, 0.5, 2.0, 2.5, 0.0]]
    # best 1.0 at index 1, then three results without improvement: restart after index 4
    assert ev.restart_point(hist) == 5
    assert Evolution(seed=0, space=Space(), restart_after=0).restart_point(hist) == 0


def test_restarts_draw_fresh_random_programs(tmp_path):
    store, _ = run(tmp_path, **{"budget": 60, "evolution.restart_after": 6, "evolution.random_fraction": 0.0,
                                "simplify.enabled": False, "funnel.top_k": 0})
    restarts = store.programs("mutation = 'restart'")
    assert restarts and all(r.parent is None and r.arm == "evolution" for r in restarts)
    # children after a restart descend from the restarted population, not only the warm start
    assert any(store.lineage(r.id)[-1].mutation == "restart" for r in store.programs("parent IS NOT NULL"))


def test_found_rules_become_catalog_files(tmp_path):
    from optdisco.discovered.catalog import load_text
    from optdisco.search.found import write_found
    store, found = run(tmp_path, **{"budget": 30, "funnel.threshold": -100.0, "funnel.top_k": 1})
    assert found
    paths = write_found(store.path, tmp_path / "found")
    assert len(paths) == len(found)
    rule = load_text(paths[0].stem, paths[0].read_text(), "found", str(paths[0]))
    assert rule.meta["Origin"] == "found" and f":{found[0]}" in rule.meta["Campaign"]
    assert {"StageSeeds", "StageBudget", "StageHeldout"} <= set(rule.meta)
    # a usable learning rate, and the stored program it was tidied from, equivalent to it
    from optdisco.dsl import equivalent
    from optdisco.search.found import parse_searched_form
    assert float(rule.meta["Defaults"].split(",")[0].removeprefix("lr=")) > 0
    assert equivalent(rule, parse_searched_form(rule.meta["Searched"])).equal


def test_a_found_rule_made_by_simplification_reports_the_simplification_score(tmp_path):
    # A simplified winner is a new program: it has no search fitness, only the score the
    # simplification stage gave it (campaign adamw_v3's found rule 402 was one).
    from optdisco.search.found import found_rules
    store, found = run(tmp_path, **{"budget": 20, "funnel.threshold": -100.0, "funnel.top_k": 1})
    with Store(store.path) as st:
        p = parse("def simpler(w, g, m):\n    m = interp(g, m, 0.5)\n    return m, m\n")
        pid = st.add_program(p, "fp-simpler", parent=found[0], mutation="simplify", arm="simplify",
                             phase="simplify", status="done")
        st.add_evaluation(pid, "simplify", "{}", {"fitness": 0.25})
        st.set_meta("found", json.dumps([pid]))
    (rule,) = found_rules(store.path)
    assert rule["id"] == pid and rule["facts"]["Fitness"].startswith("+0.2500 (simplification stage")
