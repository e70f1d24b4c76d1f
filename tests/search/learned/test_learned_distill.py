"""Distillation: recording, explained variance, the EV search."""

from __future__ import annotations

import pytest

import optdisco
from optdisco.dsl import parse
from optdisco.search.learned.distill import Recording, distill, explained_variance, record
from optdisco.search.learned.mlp_optimizer import MLPOptimizer, init_theta


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    mlp = MLPOptimizer()
    r = record(mlp, init_theta(mlp.cfg), ["quadratic", "logreg"], budget=0.1)
    path = tmp_path_factory.mktemp("rec") / "rec.npz"
    r.save(path)
    return path


def test_recording_round_trips(rec):
    r = Recording.load(rec)
    labels = [t[0] for t in r.trajectories]
    assert labels == ["quadratic/w", "logreg/w0", "logreg/b0"]
    _, W, G, U, L = r.trajectories[1]
    assert W.shape == G.shape == U.shape == (10, 10, 64) and L.shape == (10,)


def test_explained_variance_scores_the_imitation(rec):
    r = Recording.load(rec)
    adam = optdisco.catalog.get("adam")
    ev_adam = explained_variance(adam, r)
    assert ev_adam > 0.99  # the untrained learned optimizer starts as Adam (skip connection)
    scaled = parse(adam.source().replace("return u, m, v", "return 3.0 * u, m, v"))
    assert explained_variance(scaled, r) == pytest.approx(ev_adam, abs=1e-9)  # the scale is free
    assert explained_variance(optdisco.catalog.get("sgd"), r) < ev_adam - 0.1
    assert explained_variance(parse("def bad(w, g):\n    return log(g - 100.0)\n"), r) == -10.0


def test_distill_search_keeps_the_best_imitation(rec, tmp_path):
    sgd = optdisco.catalog.get("sgd")
    res = distill(rec, tmp_path / "d.db", budget=10, warm_start=sgd, top_k=2, tasks=("quadratic",),
                  fitness_budget=0.1, cache_dir=str(tmp_path / "base"))
    assert res.explained_variance >= explained_variance(sgd, Recording.load(rec)) - 1e-12
    assert len(res.candidates) == 2 and res.program.meta["Origin"] == "found"
    assert res.program.name == "distilled"
