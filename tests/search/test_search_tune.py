"""The funnel's ES stage: survivors' constants tuned by `optdisco learn`'s ES before the later
stages judge them, stored in the campaign store, and the same after a SIGKILL mid-stage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import tomllib

import pytest
from search_helpers import quadratic_config

from optdisco.search import config
from optdisco.search.campaign import Campaign
from optdisco.search.executors import InProcessExecutor
from optdisco.search.found import found_rules
from optdisco.search.learned.constants import parameters_of
from optdisco.search.store import Store

STAGES = [{"name": "tune", "kind": "es", "pairs": 1, "iterations": 3, "sigma": 0.5, "meta_lr": 0.3},
          {"name": "final", "budget": 0.5}]
SETTINGS = {"budget": 6, "seed": 3, "funnel.threshold": -100.0, "funnel.top_k": 1, "simplify.enabled": False,
            "funnel.stages": STAGES}
# the warm start has a constant the ES can move: momentum with a poor beta
WARM = textwrap.dedent("""
    def heavy(w, g, m, *, beta=0.2):
        m = beta * m + g
        return m, m
""")


def _campaign(path, cfg):
    from optdisco.dsl import parse
    return Campaign(cfg, Store(path), InProcessExecutor("quadratic"), warm_start=parse(WARM))


def test_es_stage_settings_are_checked():
    with pytest.raises(config.ConfigError, match="only a stage with kind"):
        quadratic_config(**{"funnel.stages": [{"name": "x", "pairs": 2}]})
    with pytest.raises(config.ConfigError, match="choose one of"):
        quadratic_config(**{"funnel.stages": [{"name": "x", "kind": "cma"}]})
    cfg = quadratic_config(**{"funnel.stages": [{"name": "t", "kind": "es", "iterations": 1}]})
    assert cfg["funnel"]["stages"][0]["kind"] == "es"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One whole campaign with the tune stage (the classification of its found rule is most
    of its cost, so both tests share it): the campaign, its found ids and its log lines."""
    camp = _campaign(tmp_path_factory.mktemp("tune") / "whole.db", quadratic_config(**SETTINGS))
    lines: list[str] = []
    camp.log = lines.append
    found = camp.run()
    return camp, found, lines


def test_tune_stage_tunes_stores_and_the_next_stage_judges_the_tuned_rule(uninterrupted):
    camp, found, lines = uninterrupted
    store = camp.store
    funnel = json.loads(store.get_meta("funnel"))
    assert [s["stage"] for s in funnel] == ["tune", "final"]
    tuned_rows = [r for r in funnel[0]["rows"] if not r["reference"]]
    assert len(tuned_rows) == 1
    t = tuned_rows[0]["tuning"]
    done = store.tuning(t["original"], "tune")
    assert done is not None and done["tuned"] == t["tuned"] == tuned_rows[0]["id"]
    # 3 iterations of a pair and the mean, each one stored evaluation on the tune stage's settings
    assert len(done["history"]) == 3
    tune_evals = store.evaluations(stage="tune")
    assert len({e["program"] for e in tune_evals}) >= 5
    assert any("iteration 3/3" in ln for ln in lines)
    # the later stage judged what the tune stage handed on
    assert [r["id"] for r in funnel[1]["rows"] if not r["reference"]] == [done["tuned"]]
    if done["adopted"]:
        assert done["fitness_after"] >= done["fitness_before"]
        assert done["after"] != done["before"]
        tuned = store.program(done["tuned"]).program()
        assert [v for _, v in parameters_of(tuned)] == done["after"]
        assert found == [done["tuned"]]
        facts = found_rules(store.path)[0]["facts"]
        assert facts["Tuned"].startswith(f"from #{done['original']} by funnel stage 'tune'")
        assert "StageTune" in facts and "StageFinal" in facts
        assert f"beta={done['after'][0]!r}" in facts["Defaults"]
    else:  # the untuned rule goes on, and the record says why
        assert done["tuned"] == done["original"] and "not adopted" in done["line"]


CHILD = textwrap.dedent("""
    import json, os, signal, sys
    from optdisco.dsl import parse
    from optdisco.search.campaign import Campaign
    from optdisco.search.executors import InProcessExecutor
    from optdisco.search.store import Store

    class DiesMidTune(InProcessExecutor):
        # a SIGKILL once the ES stage has stored some of its evaluations, not at a stage boundary
        def wait(self, timeout):
            out = super().wait(timeout)
            with Store(sys.argv[1], create=False) as s:
                if len(s.evaluations(stage="tune")) >= 4:
                    os.kill(os.getpid(), signal.SIGKILL)
            return out

    cfg = json.loads(sys.argv[2])
    Campaign(cfg, Store(sys.argv[1]), DiesMidTune("quadratic"), warm_start=parse(sys.argv[3])).run()
""")


def _snapshot(store: Store):
    progs = [(r.id, r.source, r.fingerprint, r.parent, r.mutation, r.phase, r.fitness) for r in store.programs()]
    evs = sorted((e["program"], e["stage"], e["settings"], e["fitness"]) for e in store.evaluations())
    return progs, evs, {k: store.get_meta(k) for k in ("found", "funnel", "phase")}


def test_sigkill_mid_tune_stage_then_resume_ends_like_an_uninterrupted_run(tmp_path, uninterrupted):
    cfg = quadratic_config(**SETTINGS)
    whole = uninterrupted[0]

    path = tmp_path / "killed.db"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), json.dumps(cfg), WARM], timeout=300,
                          env=dict(os.environ))
    assert proc.returncode == -signal.SIGKILL
    with Store(path, create=False) as s:
        assert s.get_meta("phase") == "funnel"
        assert 4 <= len(s.evaluations(stage="tune")) < len(whole.store.evaluations(stage="tune"))
    store = Store(path, create=False)
    stored = config.validate(tomllib.loads(store.get_meta("config")))
    Campaign(stored, store, InProcessExecutor("quadratic")).run()
    assert _snapshot(store) == _snapshot(whole.store)


def test_hour_preset_has_the_tune_stage_before_two_seed_heldout_and_the_cli_accepts_it():
    from optdisco.cli import build_parser
    cfg = config.load(None, {"preset": "hour"})
    stages = cfg["funnel"]["stages"]
    names = [s["name"] for s in stages]
    assert stages[names.index("tune")]["kind"] == "es" and names.index("tune") < names.index("heldout")
    assert stages[-1] == {"name": "heldout", "suite": "heldout", "seeds": 2, "budget": 1.0}
    assert cfg["budget"] > config.load(None, {})["budget"]
    assert set(config.preset_names()) == {"quick", "standard", "large", "hour"}
    args = build_parser().parse_args(["search", "--preset", "hour"])
    assert args.preset == "hour"
