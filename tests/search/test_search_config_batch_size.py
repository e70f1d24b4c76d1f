"""``[fitness] batch_size``: checked with the rest of the config, and a campaign's fitness trains
under the norm-test controller exactly as evaluate() does."""

from __future__ import annotations

import pytest

import optdisco
from optdisco.evaluators import evaluate
from optdisco.search.config import ConfigError, load, search_settings
from optdisco.search.fitness import proxy_fitness

GROWING = "norm_test:eta=1,start=0.25,growth=8"


def _write(tmp_path, fitness: str) -> str:
    path = tmp_path / "campaign.toml"
    tasks = "" if "tasks" in fitness else 'tasks = ["logreg"]\n'
    # the default funnel's held-out stage has a task without examples (ho_quadratic)
    path.write_text(f"[funnel]\ntop_k = 0\n\n[fitness]\n{tasks}budget = 0.05\naggregate = \"mean\"\n{fitness}\n")
    return str(path)


def test_the_campaign_fitness_trains_under_the_controller_as_evaluate_does(tmp_path):
    cfg = load(_write(tmp_path, f'batch_size = "{GROWING}"'))
    settings = {**search_settings(cfg), "cache_dir": str(tmp_path / "cache")}
    assert settings["batch_size"] == "norm_test:eta=1,variant=norm,start=0.25,growth=8,every=1"
    assert "batch_size" not in search_settings(load()), "stores made before the key keep their cache keys"
    rule = optdisco.catalog.get("sgd")
    (campaign,) = proxy_fitness([rule], settings)
    (direct,) = evaluate([rule], tasks=["logreg"], budget=0.05, aggregate=cfg["fitness"]["aggregate"],
                         cache_dir=tmp_path / "cache", batch_size=GROWING)
    assert campaign.fitness == direct.fitness and campaign.per_task == direct.per_task
    (base,) = (tmp_path / "cache" / "baselines").iterdir()
    assert "norm_test" in base.name, "the setting must reach the trainer"


@pytest.mark.parametrize("fitness, message", [
    ('batch_size = "norm_test:eta=-1"', "fitness.batch_size.*out of range"),
    ('batch_size = "adaptive"', "fitness.batch_size.*unknown batch-size control"),
    ('batch_size = 64', "fitness.batch_size' must be str"),
    ('batch_size = "norm_test"\ngradients = "rge:queries=4"', "needs per-example gradients"),
    ('batch_size = "norm_test"\ntasks = ["quadratic", "logreg"]', r"have none: quadratic \(fitness.tasks\)"),
    ('batch_size = "norm_test"\ntasks = ["logreg", "nope"]', "unknown task 'nope'"),
])
def test_a_bad_batch_size_setting_is_a_config_error(tmp_path, fitness, message):
    with pytest.raises(ConfigError, match=message):
        load(_write(tmp_path, fitness))


def test_a_funnel_stage_without_examples_is_named():
    with pytest.raises(ConfigError, match=r"ho_quadratic \(funnel stage 'heldout'\)"):
        load(overrides={"fitness.batch_size": GROWING, "fitness.tasks": ["logreg"]})
