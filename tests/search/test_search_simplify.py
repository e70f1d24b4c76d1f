"""Simplification: behaviour-preserving tidying, then removals checked by a real fitness."""

from __future__ import annotations

import torch

from optdisco.dsl import Name, parse, trajectory
from optdisco.search.fitness import quadratic_fitness
from optdisco.search.simplify import fold_constants, remove_dead_code, removals, shrink, tidy

MESSY = """def messy(w, g, m, v):
    junk = exp(g) * 3.0
    m = interp(g, m, 0.9)
    v = interp(square(g), v, 0.99)
    a = m * (2.0 - 1.0)
    b = a + 0.0 * 1.0
    return b, m, v
"""


def same_updates(p, q, steps=20):
    torch.manual_seed(0)
    w = torch.randn(7, dtype=torch.float64)
    grads = [torch.randn(7, dtype=torch.float64) for _ in range(steps)]
    a = trajectory(p, w, grads, steps=steps, lr=0.1)
    b = trajectory(q, w, grads, steps=steps, lr=0.1)
    return all(torch.allclose(x, y, rtol=1e-12, atol=0) for x, y in zip(a, b))


def test_dead_code_and_dead_states_go():
    p = parse(MESSY)
    q = remove_dead_code(p)
    assert q.state_names == ("m",)  # v is never read by the update
    assert [s.target for s in q.body] == ["m", "a", "b"]
    assert same_updates(p, q)


def test_constants_fold_and_unit_operations_vanish():
    q = fold_constants(parse(MESSY))
    assert q.body[3].expr == Name("m")  # a = m * (2.0 - 1.0) -> a = m
    assert q.body[4].expr == Name("a")  # b = a + 0.0 * 1.0 -> b = a
    assert same_updates(parse(MESSY), q)


def test_tidy_keeps_behaviour_and_shrinks():
    p = parse(MESSY)
    q = tidy(p)
    assert len(q.body) < len(p.body) and same_updates(p, q)
    assert parse(q.source()) == q


def test_removals_are_valid_and_one_shorter():
    p = remove_dead_code(parse(MESSY))
    options = removals(p)
    assert options
    for _label, q in options:
        assert parse(q.source()) == q
        assert len(q.body) < len(p.body) or len(q.state_names) < len(p.state_names)


def test_shrink_removes_what_fitness_does_not_need():
    # maximum(m, m) is m: removing it keeps the fitness; removing the momentum (plain SGD) does not
    p = parse("""def r(w, g, m):
    m = interp(g, m, 0.9)
    c = maximum(m, m)
    return c, m
""")
    settings = {"seeds": 1, "budget": 1.0}

    def fitness(programs):
        return [r.fitness for r in quadratic_fitness(programs, settings)]

    (ref,) = fitness([p])
    small, steps = shrink(p, fitness, tolerance=0.01, reference=ref)
    assert len(small.body) == 1 and steps and small.body[0].target == "m"
    assert fitness([small])[0] >= ref - 0.01


def test_sympy_rewrites_only_when_equal_and_smaller():
    from optdisco.search.cache import fingerprint
    from optdisco.search.simplify import sympy_simplified
    lion = parse("""def lion(w, g, m):
    c = interp(g, m, 0.9)
    m = interp(g, m, 0.99)
    return sign(c) + gt(g, m) * 0.0, m
""")
    q = sympy_simplified(lion)
    assert q is not None and fingerprint(q) == fingerprint(lion)
    assert "gt" not in q.source() and same_updates(lion, q)
    twice = parse("def r(w, g, m, *, b=0.9):\n    t = g * 2.0\n    m = interp(t / 2.0, m, b)\n"
                  "    c = m + m - m\n    return c, m\n")
    q = sympy_simplified(twice)
    assert q is not None and len(q.body) == 1 and same_updates(twice, q)
    # Adam is already as short as sympy makes it: nothing to gain, the original stays
    adam = parse("def r(w, g, m, v):\n    m = interp(g, m, 0.9)\n    v = interp(g*g, v, 0.999)\n"
                 "    return m / (sqrt(v) + 1e-8), m, v\n")
    assert sympy_simplified(adam) is None


def test_sympy_keeps_floor_and_cosine():
    from optdisco.search.simplify import sympy_simplified
    periodic = parse("def r(w, g, m, *, k=5.0):\n    a = step - k * floor(step / k)\n"
                     "    m = interp(g, m, 0.9) * cosine(a + 0.0)\n    c = m + m - m\n    return c, m\n")
    q = sympy_simplified(periodic)
    assert q is not None and "cosine(" in q.source() and "floor(" in q.source()
    assert same_updates(periodic, q)
