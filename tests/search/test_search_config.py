"""Campaign configs: defaults, presets, files and flags; every mistake is a clear error first."""

from __future__ import annotations

import tomllib

import pytest

from optdisco.search import config
from optdisco.search.config import ConfigError


def test_defaults_validate_and_round_trip_through_toml():
    cfg = config.load()
    assert cfg["budget"] >= 1 and cfg["strategy"] == "evolution"
    assert config.validate(tomllib.loads(config.dumps(cfg))) == cfg


@pytest.mark.parametrize("preset", sorted(config.PRESETS))
def test_presets_are_valid(preset):
    cfg = config.load(None, {"preset": preset})
    assert cfg["budget"] >= 1


def test_flags_override_file_which_overrides_defaults(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("budget = 7\nseed = 3\n[evolution]\npopulation = 5\ntournament = 2\n")
    cfg = config.load(f, {"seed": 11, "address": "auto"})
    assert (cfg["budget"], cfg["seed"], cfg["evolution"]["population"]) == (7, 11, 5)
    assert cfg["distributed"]["address"] == "auto"


@pytest.mark.parametrize("text, message", [
    ("budgett = 3", "unknown setting 'budgett' (did you mean 'budget'?)"),
    ("[evolution]\npopulaton = 3", "unknown setting 'evolution.populaton'"),
    ("[nonsense]\nx = 1", "unknown setting 'nonsense'"),
    ("budget = 0", "setting 'budget' is 0; it must be at least 1"),
    ("budget = 'many'", "setting 'budget' must be int, not str"),
    ("strategy = 'genetic'", "choose one of 'evolution', 'random'"),
    ("report = 1", "setting 'report' must be bool"),
    ("[evolution]\ntournament = 50", "cannot exceed evolution.population"),
    ("[funnel]\nstages = [{ name = 'x', sedes = 2 }]", "unknown setting 'funnel.stages[0].sedes'"),
    ("[fitness]\ntasks = [1]", "must list task names"),
    ("budget = ", "not valid TOML"),
])
def test_bad_files_are_clear_errors(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        config.load(f)
    assert message in str(e.value)


def test_bad_flags_and_missing_file_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="at least 0"):
        config.load(None, {"workers": -1})
    with pytest.raises(ConfigError, match="unknown preset"):
        config.load(None, {"preset": "huge"})
    with pytest.raises(ConfigError, match="cannot read config file"):
        config.load(tmp_path / "missing.toml")


def test_the_aggregate_enters_cache_keys_only_when_it_is_not_the_plain_mean():
    from optdisco.search.campaign import search_settings
    assert config.load(None, {})["fitness"]["aggregate"] == "standardized"  # the default
    plain = config.load(None, {"fitness.aggregate": "mean"})
    assert "aggregate" not in search_settings(plain)  # caches from before the setting existed stay valid
    z = config.load(None, {"fitness.aggregate": "standardized"})
    assert search_settings(z)["aggregate"] == "standardized"
    with pytest.raises(config.ConfigError, match="aggregate"):
        config.load(None, {"fitness.aggregate": "median"})


def test_fitness_gradients_setting_is_checked_and_keys_the_cache_only_when_not_backprop():
    from optdisco.search.config import ConfigError, load, search_settings
    assert "gradients" not in search_settings(load())
    cfg = load(overrides={"fitness.gradients": "rge: queries=4"})
    assert search_settings(cfg)["gradients"] == "rge:mu=0.001,queries=4"
    with pytest.raises(ConfigError, match="fitness.gradients"):
        load(overrides={"fitness.gradients": "finite"})
