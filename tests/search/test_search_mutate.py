"""Every mutation gives a valid Program (parse(source) round trip) that differs from its parent."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from optdisco.dsl import parse
from optdisco.search.mutate import MUTATIONS, SEED_RULE, Redraw, Space, apply, mutate, random_program

ADAM = """def adam(w, g, m, v, *, b1=0.9, b2=0.999, eps=1e-8):
    m = interp(g, m, b1)
    v = interp(g * g, v, b2)
    u = m / (sqrt(v) + eps)
    return u, m, v
"""
LION = """def lion(w, g, m, *, beta1=0.9, beta2=0.99):
    c = interp(g, m, beta1)
    m = interp(g, m, beta2)
    return sign(c), m
"""
STARTS = {"sgd": SEED_RULE, "adam": ADAM, "lion": LION}
SPACE = Space(max_statements=8, max_states=3)


@pytest.mark.parametrize("name", sorted(MUTATIONS))
@pytest.mark.parametrize("start", sorted(STARTS))
def test_each_mutation_is_valid_and_effective(name, start):
    p = parse(STARTS[start])
    rng = np.random.default_rng(zlib.crc32(f"{name}:{start}".encode()))
    made = 0
    for _ in range(30):
        try:
            child = apply(name, p, rng, SPACE)
        except Redraw:  # does not apply here (e.g. no state to remove from sgd)
            continue
        made += 1
        assert parse(child.source()) == child
        assert child != p
        assert len(child.body) <= SPACE.max_statements and len(child.state_names) <= SPACE.max_states
    inapplicable = {("sgd", "remove_state"), ("sgd", "delete_statement"), ("sgd", "perturb_constant"),
                    ("sgd", "replace_constant"), ("sgd", "change_op")}
    if (start, name) not in inapplicable:
        assert made > 0, f"{name} never applied to {start}"


def test_add_state_adds_a_state_and_remove_state_removes_one():
    rng = np.random.default_rng(0)
    p = parse(SEED_RULE)
    grown = apply("add_state", p, rng, SPACE)
    assert len(grown.state_names) == 1
    adam = parse(ADAM)
    shrunk = apply("remove_state", adam, rng, SPACE)
    assert len(shrunk.state_names) == 1


def test_change_op_keeps_arity_and_changes_one_function():
    rng = np.random.default_rng(1)
    p = parse(LION)
    for _ in range(20):
        child = apply("change_op", p, rng, SPACE)
        assert len(child.body) == len(p.body)
        assert child.source() != p.source()


def test_mutate_many_times_always_valid():
    rng = np.random.default_rng(7)
    p = parse(ADAM)
    for _ in range(150):
        child, names = mutate(p, rng, SPACE, n=int(rng.integers(1, 4)))
        assert parse(child.source()) == child
        assert names and all(n in MUTATIONS for n in names)
        p = child if rng.random() < 0.5 else p


def test_random_programs_are_valid_and_varied():
    progs = [random_program(np.random.default_rng(i), SPACE) for i in range(40)]
    for p in progs:
        assert parse(p.source()) == p
    assert len({p.source() for p in progs}) > 20


def test_size_limits_are_respected():
    tiny = Space(max_statements=1, max_states=0)
    rng = np.random.default_rng(3)
    p = parse(SEED_RULE)
    for _ in range(50):
        p2, _ = mutate(p, rng, tiny)
        assert len(p2.body) <= 1 and not p2.state_names
