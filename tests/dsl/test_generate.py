"""The random program generator: always valid, covering the language, reproducible."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import torch

from optdisco.dsl import BUILTINS, DSLError, parse, run
from optdisco.dsl.generate import mutate_text, random_program
from optdisco.dsl.ir import Call


def calls(p) -> Counter:
    return Counter(n.fn for e in [*(s.expr for s in p.body), p.update] for n in e.walk()
                   if isinstance(n, Call))


def test_covers_every_builtin():
    seen = Counter()
    for seed in range(300):
        seen.update(calls(random_program(random.Random(seed), allow_noise=True, allow_factor=True,
                                         allow_group=True)))
    assert set(seen) == set(BUILTINS), set(BUILTINS) - set(seen)


def test_switches_noise_and_matrix_builtins():
    matrix = {n for n, b in BUILTINS.items() if b.kind == "matrix"}
    for seed in range(150):
        used = set(calls(random_program(random.Random(seed), allow_noise=False, allow_matrix=False)))
        assert "randn" not in used and not used & matrix


def test_group_builtins_only_when_allowed():
    group = {n for n, b in BUILTINS.items() if b.kind == "group"}
    off = set().union(*(calls(random_program(random.Random(seed))) for seed in range(100)))
    on = set().union(*(calls(random_program(random.Random(seed), allow_group=True)) for seed in range(100)))
    assert not off & group and on >= group


def test_limits_and_validity():
    for seed in range(150):
        p = random_program(random.Random(seed), max_statements=4, max_states=3, max_hyper=1)
        assert len(p.state_names) <= 3 and len(p.hyperparameters) <= 1
        assert len(p.body) <= max(4, len(p.state_names))
        assert parse(p.source()) == p
        assert all(any(s.target == st for s in p.body) for st in p.state_names)


def test_reproducible_and_accepts_numpy_generators():
    assert random_program(random.Random(7)) == random_program(random.Random(7))
    assert random_program(np.random.default_rng(3)) == random_program(np.random.default_rng(3))
    assert len({random_program(random.Random(s)).source() for s in range(30)}) > 25


def test_programs_run():
    for seed in range(60):
        p = random_program(random.Random(seed), allow_noise=True)
        w = torch.randn(4, 3, dtype=torch.float64)
        u, new = run(p, w, torch.randn(4, 3, dtype=torch.float64),
                     [torch.zeros_like(w) for _ in p.state_names], step=1.0, lr=0.1,
                     generator=torch.Generator().manual_seed(seed))
        assert u.shape == w.shape and all(s.shape == w.shape for s in new)


def test_mutate_text_edits():
    text = random_program(random.Random(1)).source()
    outs = [mutate_text(text, random.Random(s), edits=2) for s in range(50)]
    assert all(isinstance(o, str) for o in outs) and sum(o != text for o in outs) > 40
    errors = 0
    for o in outs:
        try:
            parse(o)
        except DSLError:
            errors += 1
    assert errors > 10  # the edits do reach the error paths
