"""Campaign configuration: the embedded defaults, presets, a TOML file and flags, validated.

Layers, later wins: ``defaults.toml`` -> preset -> the user's TOML file -> command-line
overrides. Validation runs on the merged result before anything else happens: an unknown
key, a value of the wrong type or out of range is a :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from ..errors import UserError
from ..evaluators.tasks import get_task, suite_tasks
from ..training import BatchSizeSpec, GradientSpec
from .macro import MACROS



class ConfigError(ValueError, UserError):
    """A campaign setting that does not exist or has a bad value."""


@dataclass(frozen=True)
class _Key:
    kind: type | tuple[type, ...]
    lo: float | None = None
    hi: float | None = None
    choices: tuple | None = None


# The schema: section -> key -> rule. Keys of the top level live under "".
SCHEMA: dict[str, dict[str, _Key]] = {
    "": {
        "seed": _Key(int, 0),
        "budget": _Key(int, 1),
        "strategy": _Key(str, choices=("evolution", "random")),
        "warm_start": _Key(str),
        "workers": _Key(int, 0),
        "db": _Key(str),
        "report": _Key(bool),
        "surrogate": _Key(bool),
    },
    "evolution": {
        "population": _Key(int, 2),
        "tournament": _Key(int, 1),
        "max_mutations": _Key(int, 1, 10),
        "restart_after": _Key(int, 0),
        "random_fraction": _Key(float, 0.0, 1.0),
    },
    "space": {
        "max_statements": _Key(int, 1, 64),
        "max_states": _Key(int, 0, 8),
        "macro_weight": _Key(float, 0.0, 1.0),
        "macro_weights": _Key(dict),
        "prefilter": _Key(bool),
        "allow_factor": _Key(bool),
    },
    "fitness": {
        "evaluator": _Key(str, choices=("proxy", "quadratic")),
        "suite": _Key(str),
        "tasks": _Key(list),
        "seeds": _Key(int, 1, 64),
        "budget": _Key(float, 0.0),
        "time_limit": _Key(float, 0.0),
        "aggregate": _Key(str, choices=("mean", "standardized")),
        "gradients": _Key(str),
        "batch_size": _Key(str),
    },
    "distributed": {
        "address": _Key(str),
        "batch_size": _Key(int, 1, 256),
        "queue": _Key(int, 1, 64),
        "max_retries": _Key(int, 0, 10),
    },
    "hurdle": {
        "enabled": _Key(bool),
        "tasks": _Key(list),
        "budget": _Key(float, 0.0),
        "quantile": _Key(float, 0.0, 1.0),
        "warmup": _Key(int, 0),
    },
    "simplify": {
        "enabled": _Key(bool),
        "top_k": _Key(int, 0),
        "tolerance": _Key(float, 0.0),
    },
    "funnel": {
        "top_k": _Key(int, 0),
        "threshold": _Key(float),
        "stages": _Key(list),
    },
}

# Settings added after stores were made, with the value that replays those stores' campaigns:
# a stored config without them resumes as it ran.
ADDED_LATER: dict[str, dict[str, Any]] = {
    "space": {"macro_weight": 0.0, "macro_weights": {}, "prefilter": False, "allow_factor": False},
    "hurdle": {"enabled": False, "tasks": [], "budget": 0.1, "quantile": 0.5, "warmup": 8},
    "fitness": {"gradients": "backprop", "batch_size": "fixed"},
}

STAGE_KEYS: dict[str, _Key] = {
    "name": _Key(str),
    "suite": _Key(str),
    "tasks": _Key(list),
    "seeds": _Key(int, 1, 64),
    "budget": _Key(float, 0.0),
    # kind "es": tune the survivors' constants by the ES of `optdisco learn` (funnel.run_funnel)
    "kind": _Key(str, choices=("evaluate", "es")),
    "pairs": _Key(int, 1, 64),
    "iterations": _Key(int, 0, 1000),
    "sigma": _Key(float, 0.0),
    "meta_lr": _Key(float, 0.0),
}

#: What an ES stage uses where it does not say (the defaults of `optdisco learn`, fewer iterations).
ES_STAGE_DEFAULTS: dict[str, Any] = {"pairs": 2, "iterations": 4, "sigma": 0.3, "meta_lr": 0.1}

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"budget": 24, "evolution": {"population": 8, "tournament": 3},
              "fitness": {"budget": 0.25}, "simplify": {"top_k": 1},
              "funnel": {"top_k": 2, "stages": [{"name": "seeds", "seeds": 2, "budget": 0.25},
                                                {"name": "heldout", "suite": "heldout", "seeds": 1,
                                                 "budget": 0.25}]}},
    "standard": {},
    "large": {"budget": 2000, "evolution": {"population": 64, "tournament": 8, "restart_after": 400},
              "fitness": {"tasks": [], "seeds": 2, "budget": 1.0},
              "distributed": {"batch_size": 4},
              "simplify": {"top_k": 5}, "funnel": {"top_k": 10}},
}

#: Presets shipped as TOML files beside defaults.toml (a file, because each is a whole campaign
#: with its own funnel and reasons worth a comment).
PRESET_FILES: dict[str, str] = {"hour": "hour.toml"}


def preset_names() -> list[str]:
    """Every preset ``--preset`` accepts."""
    return [*PRESETS, *PRESET_FILES]


def preset(name: str) -> dict[str, Any]:
    """The settings preset ``name`` layers over the defaults; ConfigError if there is none."""
    if name in PRESETS:
        return copy.deepcopy(PRESETS[name])
    if name in PRESET_FILES:
        text = resources.files("optdisco.search").joinpath(PRESET_FILES[name]).read_text(encoding="utf-8")
        return tomllib.loads(text)
    raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(preset_names())}")


# Flags of `optdisco search` that set a key in a section rather than at the top level.
FLAG_KEYS = {"address": ("distributed", "address")}


def defaults_text() -> str:
    """The embedded default campaign, as TOML text."""
    return resources.files("optdisco.search").joinpath("defaults.toml").read_text(encoding="utf-8")


def _merge(base: dict, top: Mapping) -> dict:
    out = copy.deepcopy(base)
    for k, v in top.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _check(where: str, key: str, value: Any, rule: _Key) -> Any:
    name = f"{where}.{key}" if where else key
    kinds = rule.kind if isinstance(rule.kind, tuple) else (rule.kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        want = " or ".join(k.__name__ for k in kinds)
        raise ConfigError(f"setting '{name}' must be {want}, not {type(value).__name__} ({value!r})")
    if rule.choices is not None and value not in rule.choices:
        raise ConfigError(f"setting '{name}' is {value!r}; choose one of {', '.join(map(repr, rule.choices))}")
    if rule.lo is not None and value < rule.lo:
        raise ConfigError(f"setting '{name}' is {value!r}; it must be at least {rule.lo}")
    if rule.hi is not None and value > rule.hi:
        raise ConfigError(f"setting '{name}' is {value!r}; it must be at most {rule.hi}")
    return value


def _unknown(name: str, known) -> ConfigError:
    import difflib
    close = difflib.get_close_matches(name.rpartition(".")[2], list(known), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"unknown setting '{name}'{hint}")


def validate(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config with every key checked against the schema; raises :class:`ConfigError`."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        if key in SCHEMA and key != "":
            if not isinstance(value, Mapping):
                raise ConfigError(f"'{key}' must be a table ([{key}]), not {type(value).__name__}")
            section = {}
            for k, v in value.items():
                if k not in SCHEMA[key]:
                    raise _unknown(f"{key}.{k}", SCHEMA[key])
                section[k] = _check(key, k, v, SCHEMA[key][k])
            out[key] = section
        elif key in SCHEMA[""]:
            out[key] = _check("", key, value, SCHEMA[""][key])
        else:
            raise _unknown(key, list(SCHEMA[""]) + [s for s in SCHEMA if s])
    for section, added in ADDED_LATER.items():
        for k, v in added.items():
            out.setdefault(section, {}).setdefault(k, copy.deepcopy(v))
    for section, keys in SCHEMA.items():
        have = out if section == "" else out.get(section, {})
        missing = [k for k in keys if k not in have]
        if missing:
            where = f"[{section}] " if section else ""
            raise ConfigError(f"missing setting(s) {where}{', '.join(missing)}")
    for section in ("fitness", "hurdle"):
        for i, task in enumerate(out[section]["tasks"]):
            if not isinstance(task, str):
                raise ConfigError(f"setting '{section}.tasks' must list task names; item {i} is {task!r}")
    stages = []
    for i, stage in enumerate(out["funnel"]["stages"]):
        if not isinstance(stage, Mapping):
            raise ConfigError(f"funnel.stages[{i}] must be a table like {{ name = \"seeds\", seeds = 3 }}")
        checked = {}
        for k, v in stage.items():
            if k not in STAGE_KEYS:
                raise _unknown(f"funnel.stages[{i}].{k}", STAGE_KEYS)
            checked[k] = _check(f"funnel.stages[{i}]", k, v, STAGE_KEYS[k])
        checked.setdefault("name", f"stage{i + 1}")
        es_only = sorted(k for k in ES_STAGE_DEFAULTS if k in checked)
        if checked.get("kind", "evaluate") != "es" and es_only:
            raise ConfigError(f"funnel.stages[{i}] sets {', '.join(es_only)}, which only a stage with "
                              f"kind = \"es\" uses")
        stages.append(checked)
    out["funnel"]["stages"] = stages
    out["space"]["macro_weights"] = _check_macro_weights(out["space"]["macro_weights"])
    try:
        out["fitness"]["gradients"] = GradientSpec.parse(out["fitness"]["gradients"]).text()
    except ValueError as e:
        raise ConfigError(f"setting 'fitness.gradients': {e}") from None
    _check_batch_size(out)
    ev = out["evolution"]
    if ev["tournament"] > ev["population"]:
        raise ConfigError(f"evolution.tournament ({ev['tournament']}) cannot exceed "
                          f"evolution.population ({ev['population']})")
    return out


def _check_batch_size(cfg: dict[str, Any]) -> None:
    """``fitness.batch_size`` in canonical text; a norm test that cannot run is a ConfigError:
    on zeroth-order gradients, or on a task (search, hurdle or funnel stage) with no examples."""
    f = cfg["fitness"]
    try:
        f["batch_size"] = BatchSizeSpec.parse(f["batch_size"]).text()
    except ValueError as e:
        raise ConfigError(f"setting 'fitness.batch_size': {e}") from None
    if f["batch_size"] == "fixed" or f["evaluator"] != "proxy":
        return
    if f["gradients"] != "backprop":
        raise ConfigError("setting 'fitness.batch_size' is the norm test, which needs per-example gradients; "
                          f"'fitness.gradients' is {f['gradients']!r}, not \"backprop\"")
    where = {n: "fitness.tasks" for n in f["tasks"] or suite_tasks(f["suite"])}
    if cfg["hurdle"]["enabled"]:
        where.update({n: "hurdle.tasks" for n in cfg["hurdle"]["tasks"] if n not in where})
    for stage in cfg["funnel"]["stages"] if cfg["funnel"]["top_k"] else []:
        if stage.get("kind", "evaluate") == "evaluate":
            names = stage.get("tasks") or (suite_tasks(stage["suite"]) if "suite" in stage else [])
            where.update({n: f"funnel stage '{stage['name']}'" for n in names if n not in where})
    try:
        no_examples = sorted((n, w) for n, w in where.items() if not get_task(n).example_batches)
    except KeyError as e:
        raise ConfigError(str(e)) from None
    if no_examples:
        listed = ", ".join(f"{n} ({w})" for n, w in no_examples)
        raise ConfigError(f"setting 'fitness.batch_size' is the norm test, which grows minibatches of examples, "
                          f"and these tasks have none: {listed}")


def _check_macro_weights(weights: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for name, w in weights.items():
        if name not in MACROS:
            raise _unknown(f"space.macro_weights.{name}", MACROS)
        out[name] = _check("space.macro_weights", name, w, _Key(float, 0.0))
    return out


def overrides_to_tree(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Flat flag values (``budget``, ``address``, ``evolution.population``) as a nested table."""
    tree: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None or key == "preset":
            continue
        path = FLAG_KEYS.get(key) or tuple(key.split("."))
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return tree


def load(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The validated campaign config: defaults, then ``overrides['preset']``, the file, the flags."""
    overrides = dict(overrides or {})
    cfg = tomllib.loads(defaults_text())
    name = overrides.get("preset")
    if name is not None:
        cfg = _merge(cfg, preset(name))
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
        try:
            user = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        validate(_merge(cfg, user))  # report the user's mistake before the flags mix in
        cfg = _merge(cfg, user)
    return validate(_merge(cfg, overrides_to_tree(overrides)))


def dumps(cfg: Mapping[str, Any]) -> str:
    """A validated config as TOML text (what the store keeps, and what ``load`` reads back)."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, Mapping):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(type(v))

    for k, v in cfg.items():
        if not isinstance(v, Mapping):
            lines.append(f"{k} = {value(v)}")
    for k, v in cfg.items():
        if isinstance(v, Mapping):
            lines.append(f"\n[{k}]")
            lines.extend(f"{kk} = {value(vv)}" for kk, vv in v.items())
    return "\n".join(lines) + "\n"


def search_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluation settings of the search phase (what its cache key is made of)."""
    f = cfg["fitness"]
    out = {"evaluator": f["evaluator"], "suite": f["suite"], "tasks": list(f["tasks"]),
           "seeds": f["seeds"], "budget": f["budget"]}
    if f.get("aggregate", "mean") != "mean":  # only then: stores made before the key keep their cache keys
        out["aggregate"] = f["aggregate"]
    if f.get("gradients", "backprop") != "backprop":  # the same reason
        out["gradients"] = f["gradients"]
    if f.get("batch_size", "fixed") != "fixed":  # the same reason
        out["batch_size"] = f["batch_size"]
    return out


def stage_settings(cfg: Mapping[str, Any], stage: Mapping[str, Any]) -> dict[str, Any]:
    """A funnel stage's settings: the search settings with the stage's changes."""
    out = search_settings(cfg)
    for k in ("suite", "tasks", "seeds", "budget"):
        if k in stage:
            out[k] = list(stage[k]) if k == "tasks" else stage[k]
    if "suite" in stage and "tasks" not in stage:
        out["tasks"] = []  # another suite: its own tasks
    return out
