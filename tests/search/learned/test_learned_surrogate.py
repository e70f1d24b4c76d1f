"""The fitness predictor: features, ranking quality on real fitness, the campaign hook."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

import optdisco
from optdisco.dsl import parse
from optdisco.search.campaign import Campaign
from optdisco.search.evolution import Evolution
from optdisco.search.executors import InProcessExecutor
from optdisco.search.fitness import quadratic_fitness
from optdisco.search.learned.surrogate import (FEATURE_NAMES, FitnessPredictor, SurrogateEvolution,
                                               program_features)
from optdisco.search.mutate import Space, mutate
from optdisco.search.store import Store



def quadratic_config(**overrides):
    from optdisco.search import config
    base = {"fitness.evaluator": "quadratic", "fitness.budget": 0.25, "fitness.tasks": [],
            "evolution.population": 8, "evolution.tournament": 3, "distributed.batch_size": 2,
            "report": False}
    return config.load(None, {**base, **overrides})


def test_features_see_structure_and_behaviour():
    sgd, signum = optdisco.catalog.get("sgd"), optdisco.catalog.get("signum")
    fs, fg = program_features(sgd), program_features(signum)
    assert fs.shape == (len(FEATURE_NAMES),) and np.isfinite(fs).all()
    col = FEATURE_NAMES.index
    assert fg[col("op:sign")] == 1 and fs[col("op:sign")] == 0 and fg[col("states")] == 1
    assert fs[col("probe_cos_u_g")] == pytest.approx(1.0)  # sgd's update is the gradient
    bad = parse("def bad(w, g):\n    return -g * 1e6\n")
    assert program_features(bad)[col("probe_log_ratio")] > fs[col("probe_log_ratio")]


def test_predictor_ranks_unseen_programs_by_their_real_fitness():
    rng = np.random.default_rng(0)
    space = Space()
    progs, seen = [], set()
    parents = [optdisco.catalog.get(n) for n in ("sgd", "momentum", "adam", "signum", "rmsprop")]
    while len(progs) < 90:
        child, _ = mutate(parents[len(progs) % len(parents)], rng, space, 1)
        if child.source() not in seen:
            seen.add(child.source())
            progs.append(child)
    settings = {"budget": 0.1, "seeds": 1}
    fit = [r.fitness for r in quadratic_fitness(progs, settings)]
    pred = FitnessPredictor()
    assert pred.rank(progs[:3]) == [0, 1, 2]  # too few observations: order kept
    for p, f in zip(progs[:60], fit[:60]):
        pred.observe(p, f)
    rho = spearmanr(pred.predict(progs[60:]), fit[60:]).statistic
    assert rho > 0.3, rho
    order = pred.rank(progs[60:])
    top, bottom = np.mean([fit[60 + i] for i in order[:10]]), np.mean([fit[60 + i] for i in order[-10:]])
    assert top > bottom


def test_surrogate_campaign_is_deterministic_and_hooked_by_config(tmp_path):
    cfg = quadratic_config(**{"budget": 24, "surrogate": True, "evolution.random_fraction": 0.0,
                              "simplify.enabled": False, "funnel.top_k": 0})
    assert isinstance(Evolution.from_config(cfg, None), SurrogateEvolution)
    sources = []
    for name in ("a.db", "b.db"):
        camp = Campaign(cfg, Store(tmp_path / name), InProcessExecutor("quadratic"),
                        warm_start=optdisco.catalog.get("sgd"))
        camp.strategy.min_observations = 6
        camp.search()
        sources.append([r.source for r in camp.store.programs("phase = 'search'")])
    assert sources[0] == sources[1] and len(sources[0]) == 24


def test_the_surrogate_is_an_experiment_off_by_default():
    """It needed 1.24x more evaluations (BENCHMARKS.md), so campaigns run without it unless asked."""
    from optdisco.search import config
    from optdisco.search.learned import surrogate
    assert config.load()["surrogate"] is False
    assert "An experiment, off by default" in (surrogate.__doc__ or "")
