"""Classes of found rules against the real catalog, and the catalog envelope comparison."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from optdisco import catalog, parse
from optdisco.evaluators.fitness import bootstrap_ci
from optdisco.search.classify import (SAME, canonical_form, classify, correlation, envelope_comparison,
                                      is_discovery,
                                      probe_updates, probe_updates_batch, skeleton)


def with_defaults(name: str, **values: float):
    p = catalog.get(name)
    return replace(p, name=f"{name}_changed",
                   hyperparameters=tuple((n, values.get(n, v)) for n, v in p.hyperparameters))


def test_adamw_without_decay_is_rediscovered_adam():
    c = classify(with_defaults("adamw", wd=0.0))
    assert c.kind == "rediscovered" and c.nearest == "adam", c.line()
    assert c.label == "rediscovered adam"


def test_found_adamw_nobc_is_a_variant_of_adam_family():
    c = classify(catalog.get("found_adamw_nobc"))
    assert c.kind == "variant" and c.nearest in {"adamw", "adam"}, c.line()
    assert "beta1 = 0.7081" in c.diff


def test_found_ema_momentum_is_a_variant_of_momentum():
    c = classify(catalog.get("found_ema_momentum_b05"))
    assert c.kind == "variant" and c.nearest == "momentum", c.line()
    assert "momentum = 0.5" in c.diff


def test_lion_with_other_beta2_is_a_variant_of_lion():
    c = classify(with_defaults("lion", beta2=0.95))
    assert c.kind == "variant" and c.nearest == "lion", c.line()
    assert c.corr >= SAME and "beta2 = 0.95" in c.diff


def test_a_different_program_is_new_structure():
    p = parse("def r(w, g, m, *, beta=0.9):\n    m = interp(abs(g), m, beta)\n"
              "    u = g * tanh(m) + 0.3 * square(g) * w\n    return u, m\n")
    c = classify(p)
    assert c.kind == "new structure" and c.label == "new structure", c.line()
    assert c.corr < SAME


def test_correlation_is_one_for_a_rescaled_rule_and_a_cosine_otherwise():
    adam = catalog.get("adam")
    scaled = parse("def s(w, g, m, v, *, beta1=0.9, beta2=0.999, eps=1e-8):\n"
                   "    m = interp(g, m, beta1)\n    v = interp(square(g), v, beta2)\n"
                   "    u = 3.0 * m / (1.0 - beta1 ** step) / (sqrt(v) / sqrt(1.0 - beta2 ** step) + eps)\n"
                   "    return u, m, v\n")
    assert correlation(probe_updates(adam), probe_updates(scaled)) == pytest.approx(1.0, abs=1e-12)
    sgd, sign = probe_updates(parse("def a(w, g):\n    return g\n")), probe_updates(parse("def b(w, g):\n    return sign(g)\n"))
    cos = [float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(sgd, sign)]
    assert correlation(sgd, sign) == pytest.approx(float(np.mean(cos)))
    # sign descent ignores the tensors' gradient scales, which the concatenated update weighs
    assert 0.2 < correlation(sgd, sign) < 0.95


def test_batched_probe_runs_match_one_setting_at_a_time():
    lion = catalog.get("lion")
    settings = [{"beta2": 0.95}, {"beta1": 0.5, "wd": 0.1}, {}]
    for s, batched in zip(settings, probe_updates_batch(lion, settings)):
        for a, b in zip(probe_updates(lion, s), batched):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)


def test_skeleton_ignores_constants_not_operations():
    lion = catalog.get("lion")
    assert skeleton(with_defaults("lion", beta2=0.5)) == skeleton(lion)
    assert skeleton(catalog.get("adam")) != skeleton(lion)


@pytest.mark.parametrize("kind, fit, low, expected", [
    ("new structure", 0.05, 0.01, True), ("new structure", 0.05, -0.01, False),
    ("new structure", 0.05, None, False), ("variant", 0.5, 0.3, False), ("rediscovered", 0.5, 0.3, False),
])
def test_only_new_structure_above_zero_with_interval_is_a_discovery(kind, fit, low, expected):
    assert is_discovery(kind, fit, low) is expected


def test_envelope_takes_the_best_catalog_rule_per_task():
    cand = {"a": [1.0, 1.2], "b": [0.5, 0.5]}
    cat = {"adamw": {"a": [2.0, 2.0], "b": [0.4, 0.6]},
           "rmsprop": {"a": [1.5, 1.5], "b": [1.0, 1.0]}}
    e = envelope_comparison(cand, cat, n_boot=500)
    assert e.best_rule == {"a": "rmsprop", "b": "adamw"}
    ra = [math.log(1.5 / 1.0), math.log(1.5 / 1.2)]
    rb = [math.log(0.4 / 0.5), math.log(0.6 / 0.5)]
    assert e.per_task["a"] == pytest.approx(np.mean(ra)) and e.per_task["b"] == pytest.approx(np.mean(rb))
    assert e.fitness == pytest.approx((np.mean(ra) + np.mean(rb)) / 2)
    assert (e.ci_low, e.ci_high) == pytest.approx(bootstrap_ci({"a": ra, "b": rb}, n_boot=500))
    assert e.ci_low <= e.fitness <= e.ci_high
    # a failed run is the worst log-ratio, not a crash
    bad = envelope_comparison({"a": [math.nan]}, cat, n_boot=100)
    assert bad.fitness == -10.0


def test_a_long_memory_ema_is_not_rediscovered_adagrad():
    # on 20 steps an EMA of g^2 with beta2 = 0.999 is a plain sum scaled by 0.001 (corr 1
    # with AdaGrad); the long probe, with gradient scales that change, tells them apart
    p = parse("def f(w, g, v, *, beta1=0.9, beta2=0.999, eps=1e-08, wd=0.01):\n"
              "    v = interp(square(g), v, beta2)\n"
              "    u = g / beta1 / (sqrt(v) / sqrt(beta2) + eps) + wd * w\n    return u, v\n")
    c = classify(p)
    adagrad = next(m for m in c.matches if m.name == "adagrad")
    assert adagrad.corr_default >= SAME and not adagrad.confirmed
    assert c.kind == "variant" and c.nearest != "adagrad", c.line()


def test_canonical_form_folds_the_step_scale_of_found_adamw_nobc():
    p = catalog.get("found_adamw_nobc")
    c = canonical_form(p)
    wd0, beta1 = dict(p.hyperparameters)["wd"], dict(p.hyperparameters)["beta1"]
    assert c.scale == pytest.approx(1.0 / wd0)
    # the hyperparameter called wd is now the decoupled decay, beta1 * wd of the searched rule
    assert dict(c.program.hyperparameters)["wd"] == pytest.approx(beta1 * wd0)
    body = replace(c.program, docstring=None).source()
    assert "wd * w" in body and "/ wd" not in body
    for u, v in zip(probe_updates(p), probe_updates(c.program)):  # u = scale * u' at every step
        np.testing.assert_allclose(u, c.scale * v, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("text", [
    "def r(w, g, m, *, beta=0.9):\n    m = interp(g, m, beta)\n    return 3.0 * m, m\n",
    "def r(w, g, *, k=0.5, wd=0.1):\n    u = g / k - wd * w\n    return u\n",
])
def test_canonical_form_keeps_the_updates_up_to_the_scale(text):
    p = parse(text)
    c = canonical_form(p)
    assert c.scale != 1.0 and c.notes
    for u, v in zip(probe_updates(p), probe_updates(c.program)):
        np.testing.assert_allclose(u, c.scale * v, rtol=1e-12, atol=1e-300)


def test_canonical_form_leaves_rules_without_a_common_scale():
    for name in ("adam", "lion", "momentum"):
        assert canonical_form(catalog.get(name)).scale == 1.0
