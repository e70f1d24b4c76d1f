"""Evolution strategies: the estimator, meta-training checkpoints and resume, Ray."""

from __future__ import annotations

import numpy as np
import pytest

from optdisco.search.learned.es import Adam, ESConfig, MetaTrainer, centered_ranks, es_gradient


def test_centered_ranks():
    np.testing.assert_allclose(centered_ranks([3.0, -1.0, 10.0]), [0.0, -0.5, 0.5])


@pytest.mark.parametrize("shaping", [False, True])
def test_antithetic_es_minimizes_a_quadratic(shaping):
    target = np.linspace(-1, 1, 10)
    theta = np.zeros(10)
    adam = Adam(0.05)
    rng = np.random.default_rng(0)
    for _ in range(300):
        eps = rng.standard_normal((8, 10))
        f = lambda th: ((th - target) ** 2).sum(axis=-1)  # noqa: E731
        g = es_gradient(f(theta + 0.1 * eps), f(theta - 0.1 * eps), eps, 0.1, shaping)
        theta = adam.step(theta, g)
    assert np.abs(theta - target).max() < 0.1


def test_es_gradient_is_unbiased_without_shaping():
    rng = np.random.default_rng(1)
    a = rng.standard_normal(5)
    eps = rng.standard_normal((200000, 5))
    f = lambda th: th @ a  # noqa: E731 - linear: the antithetic estimate is exact in expectation
    g = es_gradient(f(0.01 * eps), f(-0.01 * eps), eps, 0.01, shaping=False)
    np.testing.assert_allclose(g, a, atol=0.02)


CFG = dict(tasks=("quadratic", "logreg"), pairs=2, truncation=5, horizon=12, iterations=6, hidden=4)


def test_meta_training_resumes_exactly(tmp_path):
    full = MetaTrainer(ESConfig(**CFG), tmp_path / "a.npz")
    theta_full = full.train(progress=False).copy()
    assert [h["inner_step"] for h in full.history] == [5, 5, 10, 10, 12, 12]

    part = MetaTrainer(ESConfig(**dict(CFG, iterations=3)), tmp_path / "b.npz")
    part.train(progress=False)
    resumed = MetaTrainer(ESConfig(**CFG), tmp_path / "b.npz")  # a fresh process would do this
    assert resumed.iteration == 3
    np.testing.assert_array_equal(resumed.train(progress=False), theta_full)
    assert resumed.history == full.history

    with pytest.raises(ValueError, match="other settings"):
        MetaTrainer(ESConfig(**dict(CFG, sigma=0.5)), tmp_path / "b.npz")


def test_pes_accumulates_perturbations_and_resets_with_the_episode():
    mt = MetaTrainer(ESConfig(**dict(CFG, tasks=("quadratic",), horizon=10)))
    mt.step()
    xi1 = mt.inner["quadratic"].xi.copy()
    mt.step()
    eps2 = mt.inner["quadratic"].xi - xi1
    assert np.abs(xi1).sum() > 0 and np.abs(eps2).sum() > 0
    mt.step()  # the episode of 10 steps ended: a new one starts from zero accumulation
    inner = mt.inner["quadratic"]
    assert inner.episode == 1 and inner.t == 5
    np.testing.assert_allclose(np.abs(inner.xi).sum(axis=1), np.abs(
        np.random.default_rng([0, 2]).standard_normal(inner.xi.shape)).sum(axis=1))


def test_meta_training_on_ray_equals_in_process(ray_session):
    local = MetaTrainer(ESConfig(**dict(CFG, iterations=2)))
    local.train(progress=False)
    assert ray_session.is_initialized()
    remote = MetaTrainer(ESConfig(**dict(CFG, iterations=2)))
    remote.train(progress=False)
    np.testing.assert_allclose(remote.theta, local.theta, rtol=1e-6, atol=1e-9)


def test_constant_candidates_on_ray_score_as_in_process(ray_session, tmp_path):
    import optdisco
    from optdisco.search.fitness import evaluate_batch
    from optdisco.search.learned.constants import evaluate_sources
    sources = [optdisco.catalog.get(n).source() for n in ("sgd", "signum")]
    settings = {"tasks": ["quadratic"], "budget": 0.05, "seeds": 1, "cache_dir": str(tmp_path)}
    remote = evaluate_sources(sources, settings)  # one Ray task per rule
    local = [evaluate_batch([s], settings, "proxy")[0] for s in sources]
    # Equal to float32 rounding, not bit for bit: after some earlier tests in the same pytest
    # process (the catalog tests, then this file's others) the in-process score moves in the
    # 7th digit (1.3445906 vs 1.3445904), while a fresh process reproduces the worker's
    # number exactly; the cause in the test process's state was not pinned down.
    np.testing.assert_allclose([r["fitness"] for r in remote], [r["fitness"] for r in local], rtol=1e-5)
    assert remote[0]["worker"] != local[0]["worker"]  # really ran in a Ray worker process
