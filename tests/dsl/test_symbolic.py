"""The sympy bridge: every built-in's mapping, LaTeX, simplification and numeric evaluation."""

from __future__ import annotations

import time

import numpy as np
import pytest
import sympy
import torch

import optdisco
from optdisco.dsl import BUILTINS, parse, run
from optdisco.dsl.shapes import storage_shape
from optdisco.dsl.symbolic import (OPAQUE, SYMPY_IMPL, SymbolicRule, evaluate_sympy, simplified,
                                   simplify_bounded, to_latex, to_sympy)

x, y, z = (sympy.Symbol(n, real=True) for n in ("x", "y", "z"))
g, w, m = (sympy.Symbol(n, real=True) for n in ("g", "w", "m"))


def update_of(expr_text: str, params: str = "w, g, *, x=1.0, y=2.0, z=3.0"):
    return to_sympy(parse(f"def r({params}):\n    return {expr_text}\n")).update


EXPECTED = {
    "abs(x)": sympy.Abs(x), "sign(x)": sympy.sign(x), "sqrt(x)": sympy.sqrt(x),
    "rsqrt(x)": 1 / sympy.sqrt(x), "exp(x)": sympy.exp(x), "log(x)": sympy.log(x),
    "square(x)": x ** 2, "tanh(x)": sympy.tanh(x), "relu(x)": sympy.Max(x, 0),
    "clip(x, y)": sympy.Min(sympy.Max(x, -y), y), "maximum(x, y)": sympy.Max(x, y),
    "minimum(x, y)": sympy.Min(x, y), "interp(x, y, z)": (1 - z) * x + z * y,
    "gt(x, y)": sympy.Piecewise((1, x > y), (0, True)),
    "where(x, y, z)": sympy.Piecewise((y, x > 0), (z, True)),
    "x + y": x + y, "x - y": x - y, "x * y": x * y, "x / y": x / y, "x ** y": x ** y, "-x": -x,
    "0.9 * x": sympy.Rational(9, 10) * x,
}


@pytest.mark.parametrize("text", sorted(EXPECTED))
def test_elementwise_mapping(text):
    assert update_of(text) == EXPECTED[text]


@pytest.mark.parametrize("fn", sorted(n for n in OPAQUE if BUILTINS[n].kind != "factor"))  # factors: test_matrix_states
def test_reductions_and_matrix_builtins_are_opaque_functions_named_like_the_builtin(fn):
    u = update_of(f"{fn}(x * g)")
    assert isinstance(u, sympy.Function) and type(u).__name__ == fn
    if fn == "numel":
        assert u.args == (w,)  # numel ignores its argument's values: it is numel(w)
    else:
        assert u.args == (x * g,)


def test_every_builtin_is_mapped():
    assert set(SYMPY_IMPL) | {"randn", "numel", "every"} == set(BUILTINS)
    calls = {"randn": "randn()"}
    for name, b in BUILTINS.items():
        if b.kind in ("operator", "factor"):  # factor built-ins need factor states: test_matrix_states
            continue
        text = calls.get(name, f"{name}({', '.join(['g'] * b.arity)})")
        assert isinstance(update_of(text), sympy.Expr)


def test_randn_is_a_fresh_symbol_per_call_site_in_draw_order():
    p = parse("def r(w, g, m):\n    a = randn()\n    m = m + randn() * randn()\n    return a - randn(), m\n")
    rule = to_sympy(p)
    assert [s.name for s in rule.noise] == ["xi_1", "xi_2", "xi_3", "xi_4"]
    xi1, xi2, xi3, xi4 = rule.noise
    assert rule.update == xi1 - xi4 and rule.states["m"] == m + xi2 * xi3


def test_noise_symbols_avoid_user_names():
    p = parse("def r(w, g, xi_1):\n    xi_1 = randn()\n    return xi_1, xi_1\n")
    rule = to_sympy(p)
    assert rule.noise[0].name != "xi_1" and rule.update == rule.noise[0]


def test_states_read_before_reassignment_are_previous_values():
    p = parse("def r(w, g, m, v):\n    u = m * v\n    m = m + g\n    v = v * m\n    return u + m, m, v\n")
    rule = to_sympy(p)
    v = sympy.Symbol("v", real=True)
    assert isinstance(rule, SymbolicRule)
    assert rule.update == m * v + m + g
    assert rule.states == {"m": m + g, "v": v * (m + g)}
    assert set(rule.symbols) >= {"w", "g", "m", "v", "step", "lr"}


def test_float64_semantics_where_sympy_would_go_complex():
    # 1/0 is inf, sqrt(-1) and log(-1) are nan: the interpreter's values, not zoo or I
    assert update_of("g * 0.0 + 1.0 / 0.0") == sympy.oo
    assert update_of("g * 0.0 + sqrt(-1.0)") is sympy.nan
    p = parse("def r(w, g, m):\n    m = g\n    return g / gt(0.0, 1.0), m\n")
    u, _ = evaluate_sympy(p, np.array([1.0, -2.0, 0.0]), np.array([1.0, -2.0, 0.0]), [np.zeros(3)], 1.0, 0.1)
    ui, _ = run(p, torch.tensor([1.0, -2.0, 0.0], dtype=torch.float64),
                torch.tensor([1.0, -2.0, 0.0], dtype=torch.float64), [torch.zeros(3, dtype=torch.float64)],
                step=1.0, lr=0.1)
    np.testing.assert_array_equal(u, ui.numpy())  # inf, -inf, nan


LION = '''
def lion(w, g, m, *, beta1=0.9, beta2=0.99, wd=0.0):
    c = interp(g, m, beta1)
    u = sign(c) + wd * w
    m = interp(g, m, beta2)
    return u, m
'''


def test_latex_lion():
    tex = to_latex(parse(LION))
    lines = tex.splitlines()
    assert lines[0] == r"\begin{aligned}" and lines[-1] == r"\end{aligned}"
    assert len(lines) == 2 + 3 + 1  # one line per statement, then the weight update
    assert lines[1].startswith("c_{t} &=") and r"\beta_{1}" in lines[1] and "m_{t-1}" in lines[1]
    assert lines[2].startswith("u_{t} &=") and r"\operatorname{sign}" in lines[2] and "c_{t}" in lines[2]
    assert lines[3].startswith("m_{t} &=") and "m_{t-1}" in lines[3] and r"\beta_{2}" in lines[3]
    assert lines[4] == r"w_{t} &= w_{t-1} - \eta u_{t}"


def test_latex_names_time_step_lr_reductions_and_a_returned_expression():
    p = parse("def r(w, g, m, *, eps=1e-8):\n    m = m + g\n    return m / (norm(m) + eps) * lr * step, m\n")
    tex = to_latex(p)
    assert r"\left\lVert m_{t} \right\rVert" in tex and r"\epsilon" in tex and r"\eta" in tex
    assert " t" in tex or "t " in tex
    assert "u_{t} &=" in tex and tex.splitlines()[-2].endswith(r"w_{t} &= w_{t-1} - \eta u_{t}")


def test_simplified_reduces_algebra_and_is_bounded():
    p = parse("def r(w, g, m):\n    a = g + g - 2.0 * g\n    m = interp(g, m, 0.5) * 2.0 - m\n    return sqrt(square(g)) + a, m\n")
    s = simplified(p)
    assert s.update == sympy.Abs(g) and s.states["m"] == g
    big = parse("def r(w, g):\n    return " + " + ".join(f"tanh(g * {i}.0) / (g + {i}.0)" for i in range(1, 40)) + "\n")
    t0 = time.perf_counter()
    e = simplify_bounded(to_sympy(big).update, seconds=0.5)
    assert time.perf_counter() - t0 < 5.0 and isinstance(e, sympy.Expr)


def test_simplify_never_returns_a_longer_form():
    e = to_sympy(parse(LION)).update
    assert sympy.count_ops(simplify_bounded(e)) <= sympy.count_ops(e)


SHAPES = [(4, 3), (6,), (2, 3, 2)]


@pytest.mark.parametrize("name", optdisco.catalog.names())
def test_catalog_rules_interpreter_equals_sympy_evaluation(name):
    p = optdisco.catalog.get(name)
    rule = to_sympy(p)
    assert r"\eta" in to_latex(p)
    for k, shape in enumerate(SHAPES):
        gen = np.random.default_rng(k)
        w_, g_ = gen.standard_normal(shape), gen.standard_normal(shape)
        # second moments >= 0; matrix states at their storage shapes, factors symmetric
        states = [np.abs(gen.standard_normal(storage_shape(p.state_shape(n), shape))) for n in p.state_names]
        states = [s + s.T if p.state_shape(n) in ("left_factor", "right_factor") else s
                  for n, s in zip(p.state_names, states)]
        noise = [gen.standard_normal(shape) for _ in rule.noise]
        draws = iter(noise)
        u, new = run(p, torch.tensor(w_), torch.tensor(g_), [torch.tensor(s) for s in states],
                     step=float(k + 2), lr=0.01, noise=lambda s, draws=draws: torch.tensor(next(draws)))
        su, snew = evaluate_sympy(p, w_, g_, states, float(k + 2), 0.01, noise=noise)
        for a, b in zip([u, *new], [su, *snew]):
            np.testing.assert_allclose(np.broadcast_to(a.numpy(), b.shape), b, rtol=1e-9, atol=1e-12)


def test_evaluate_sympy_uses_hyperparameter_overrides():
    p = parse(LION)
    w_ = np.ones(3)
    u1, _ = evaluate_sympy(p, w_, np.ones(3), [np.zeros(3)], 1.0, 0.1)
    u2, _ = evaluate_sympy(p, w_, np.ones(3), [np.zeros(3)], 1.0, 0.1, hyper={"wd": 0.5})
    np.testing.assert_allclose(u2 - u1, 0.5 * w_)
