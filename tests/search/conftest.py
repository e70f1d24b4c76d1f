"""Shared fixtures: one real local Ray instance for the whole test session."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """Ray started once (2 CPUs, no dashboard) and shut down at the end of the session."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        started = True
    yield ray
    if started:
        ray.shutdown()


def quadratic_config(**overrides):
    """A small campaign config on the built-in noisy quadratic (a real, fast fitness)."""
    from optdisco.search import config
    base = {"fitness.evaluator": "quadratic", "fitness.budget": 0.25, "fitness.tasks": [],
            "evolution.population": 8, "evolution.tournament": 3, "distributed.batch_size": 2,
            "report": False}
    base.update(overrides)
    return config.load(None, base)


@pytest.fixture
def small_config():
    """A factory of small quadratic-fitness campaign configs (keyword = dotted setting)."""
    return quadratic_config
