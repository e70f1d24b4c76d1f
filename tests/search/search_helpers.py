"""Helpers shared by the search tests (a uniquely named module: every test folder has a conftest)."""

from __future__ import annotations


def quadratic_config(**overrides):
    """A small campaign config on the built-in noisy quadratic (a real, fast fitness)."""
    from optdisco.search import config
    base = {"fitness.evaluator": "quadratic", "fitness.budget": 0.25, "fitness.tasks": [],
            "evolution.population": 8, "evolution.tournament": 3, "distributed.batch_size": 2,
            "report": False}
    base.update(overrides)
    return config.load(None, base)
