"""equivalent(a, b): symbolic where sympy decides, numeric otherwise, always saying which."""

from __future__ import annotations

import time

import pytest

import optdisco
from optdisco.dsl import Equivalence, equivalent, parse
from optdisco.dsl.equivalence import counterexample


def rule(body: str, params: str = "w, g") -> object:
    return parse(f"def r({params}):\n" + "".join(f"    {line}\n" for line in body.split(";")))


def test_exported_from_dsl_and_top_level():
    assert optdisco.equivalent is equivalent


@pytest.mark.parametrize("a,b", [
    ("return g + g", "return 2.0 * g"),
    ("return sqrt(square(g))", "return abs(g)"),
    ("return interp(g, w, 0.9)", "return 0.9 * w + 0.1 * g"),
    ("u = g * w;return u + u", "return 2.0 * w * g"),
    ("return relu(g) - relu(-g)", "return g"),
])
def test_symbolically_proven_equal(a, b):
    v = equivalent(rule(a), rule(b))
    assert v and v.equal and v.method == "symbolic" and v.proven, v


def test_renamed_states_and_hyperparameters_in_another_order():
    a = rule("m = m + g;v = v + 2.0 * g;return m - v * beta, m, v", "w, g, m, v, *, beta=0.5")
    b = rule("v = v + g;m = m + 2.0 * g;return v - k * m, v, m", "w, g, v, m, *, k=0.5")
    v = equivalent(a, b)
    assert v.equal and v.method == "symbolic" and v.proven, v


def test_states_that_cannot_reach_the_update_are_ignored():
    a = rule("s = s + exp(g);return 3.0 * g, s", "w, g, s")
    b = rule("return g * 3.0")
    v = equivalent(a, b)
    assert v.equal and v.method == "symbolic" and v.proven, v


def test_different_hyperparameter_defaults_are_different_programs():
    a = rule("return beta * g", "w, g, *, beta=0.9")
    b = rule("return beta * g", "w, g, *, beta=0.8")
    v = equivalent(a, b)
    assert not v and v.proven


def test_constant_difference_is_proven_symbolically():
    v = equivalent(rule("return g + 1.0"), rule("return g"))
    assert not v.equal and v.method == "symbolic" and v.proven


def test_float_semantics_beat_an_exact_proof():
    # sympy: sqrt(g)**2 == g; float64: nan for g < 0
    v = equivalent(rule("return sqrt(g) ** 2.0"), rule("return g"))
    assert not v.equal and v.method == "numeric" and v.proven and "exact arithmetic" in v.detail


def test_numeric_counterexample():
    v = equivalent(rule("return sign(g)"), rule("return tanh(g)"))
    assert not v.equal and v.method == "numeric" and v.proven and "counterexample" in v.detail


def test_rare_condition_found_numerically():
    # AdamP differs from Adam only when w and g are nearly orthogonal
    v = equivalent(optdisco.catalog.get("adam"), optdisco.catalog.get("adamp"))
    assert not v.equal and v.proven and v.method == "numeric", v


def test_equal_but_not_provable_is_numeric_and_unproven():
    # sympy treats norm as opaque, so norm(2g) = 2 norm(g) is beyond it; the numbers agree
    v = equivalent(rule("return g / norm(2.0 * g)"), rule("return 0.5 * g / norm(g)"))
    assert v.equal and v.method == "numeric" and not v.proven, v
    assert "not proven" in v.detail


def test_noise_matched_by_draw_order():
    a = rule("n = randn();return g + 0.1 * n")
    b = rule("dead = randn() * 5.0;return 0.1 * randn() + g")
    v = equivalent(a, b)
    assert v.equal and v.proven, v
    assert not equivalent(rule("return g + 0.1 * randn()"), rule("return g + 0.2 * randn()")).equal


def test_verdict_is_a_value():
    v = equivalent(rule("return g"), rule("return g"))
    assert isinstance(v, Equivalence) and bool(v) is True
    assert Equivalence(False, "numeric", True, "x").__bool__() is False


def test_catalog_rules_equal_themselves_and_differ_from_others():
    names = ["adam", "adamw", "nadam", "lion", "signum", "lamb", "muon", "adafactor"]
    for n in names:
        p = optdisco.catalog.get(n)
        q = parse(p.source().replace(f"def {n}(", "def renamed("))
        assert equivalent(p, q).equal
    for a, b in zip(names, names[1:]):
        assert not equivalent(optdisco.catalog.get(a), optdisco.catalog.get(b)).equal, (a, b)


def test_bounded_time():
    a, b = optdisco.catalog.get("nadam"), optdisco.catalog.get("nadamw")
    t0 = time.perf_counter()
    equivalent(a, b.with_hyperparameters({"wd": 0.0}), seconds=0.5)
    assert time.perf_counter() - t0 < 20.0


def test_counterexample_tolerance():
    a, b = rule("return g"), rule("return g * (1.0 + 1e-8)")
    assert counterexample(a, b, rtol=1e-9) is not None
    assert counterexample(a, b, rtol=1e-6) is None
