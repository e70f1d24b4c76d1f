"""ES over a rule's constants: the parametrization, resume, a catalog-ready result."""

from __future__ import annotations

import math

import numpy as np
import pytest

import optdisco
from optdisco.discovered.catalog import load_text
from optdisco.dsl import parse
from optdisco.search.fitness import evaluate_batch
from optdisco.search.learned.constants import (ConstantLearner, LearnConfig, from_z, kind_of,
                                               parameters_of, rule_text, to_z, with_parameters)

RULE = parse("""def r(w, g, m, *, beta=0.9, wd=0.0):
    m = interp(g, m, beta)
    return 0.3 * m + 1e-3 * sign(g) + wd * w - 1.0 * g * 0.0, m
""")


def test_parameters_are_hyperparameters_and_non_structural_literals():
    params = parameters_of(RULE)
    assert [v for _, v in params] == [0.9, 0.0, 0.3, 1e-3]
    q = with_parameters(RULE, [0.5, 0.1, 2.5, 0.02])
    assert [v for _, v in parameters_of(q)] == [0.5, 0.1, 2.5, 0.02]
    assert parse(q.source()) == q and "2.5 * m" in q.source()
    with pytest.raises(ValueError):
        with_parameters(RULE, [0.5])


@pytest.mark.parametrize("x", [0.9, 0.999, 1e-8, 3.0, -0.25, -4.0, 0.0])
def test_search_coordinates_invert(x):
    assert from_z(to_z(x), kind_of(x)) == pytest.approx(x, rel=1e-9, abs=1e-12)
    assert 0 < from_z(40.0, "unit") <= 1 and from_z(-40.0, "unit") > 0  # betas stay in (0, 1)


def quadratic(sources, settings):
    return evaluate_batch(sources, {"budget": 0.1, "seeds": 1}, "quadratic")


def test_es_improves_a_badly_set_rule_and_resumes_exactly(tmp_path):
    start = parse("def slow(w, g, m, *, beta=0.02):\n    m = interp(g, m, beta)\n    return sign(m) * 0.001, m\n")
    cfg = LearnConfig(pairs=3, sigma=0.5, meta_lr=0.5, iterations=6)
    full = ConstantLearner(start, cfg, tmp_path / "a.npz", evaluate=quadratic)
    full.train(progress=False)
    fits = [h["mean_fitness"] for h in full.history]
    assert max(fits[-2:]) > fits[0] + 0.05, fits
    part = ConstantLearner(start, LearnConfig(pairs=3, sigma=0.5, meta_lr=0.5, iterations=3), tmp_path / "b.npz",
                           evaluate=quadratic)
    part.train(progress=False)
    resumed = ConstantLearner(start, cfg, tmp_path / "b.npz", evaluate=quadratic)
    assert resumed.iteration == 3
    np.testing.assert_array_equal(resumed.train(progress=False), full.z)


def test_learned_adamw_is_a_catalog_ready_found_rule(tmp_path):
    cfg = LearnConfig(pairs=1, iterations=1, tasks=("quadratic",), budget=0.1, heldout_tasks=("ho_quadratic",),
                      heldout_budget=0.02, cache_dir=str(tmp_path / "base"))
    learner = ConstantLearner(optdisco.catalog.get("adamw"), cfg)
    learner.train(progress=False)
    res = learner.result()
    assert res.program.name == "adamw_learned" and len(res.after) == 4
    assert all(math.isfinite(f) for f in res.proxy_fitness + res.heldout_fitness)
    assert abs(res.proxy_fitness[0]) < 1e-3  # the paper defaults are the baseline itself
    text = rule_text(res)
    prog = load_text("adamw_learned", text, "found", "found/adamw_learned.rule")
    assert prog.meta["Origin"] == "found" and "optdisco learn adamw" in prog.meta["Campaign"]
    assert prog.hyperparameters == res.program.hyperparameters
