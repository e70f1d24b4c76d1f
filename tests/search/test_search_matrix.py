"""Matrix-preconditioner macros (issue 13): off by default, and a path from AdamW to SOAP."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from optdisco import catalog, parse
from optdisco.dsl import equivalent, trajectory
from optdisco.search.config import load
from optdisco.search.macro import apply_macro
from optdisco.search.mutate import Space, random_program

BIG = Space(max_statements=20, max_states=8)
SOAP_LIKE_ADAMW = """def adamw(w, g, m, v, L: left_factor, R: right_factor, QL: left_factor, QR: right_factor, *,
          beta1=0.9, beta2=0.999, eps=1e-08, wd=0.01, shampoo_beta=0.999, basis_every=10.0):
    g_rot = rotate(QL, g, QR)
    m = interp(g_rot, m, beta1)
    v = interp(square(g_rot), v, beta2)
    n = m / (1.0 - beta1 ** step) / (sqrt(v) / sqrt(1.0 - beta2 ** step) + eps)
    u = unrotate(QL, n, QR) + wd * unrotate(QL, rotate(QL, w, QR), QR)
    L = interp(gram_left(g), L, shampoo_beta)
    R = interp(gram_right(g), R, shampoo_beta)
    QL = every(basis_every, eigenbasis(L), QL)
    QR = every(basis_every, eigenbasis(R), QR)
    return u, m, v, L, R, QL, QR
"""


def test_matrix_macros_are_off_in_the_default_space():
    weights = load()["space"]["macro_weights"]
    assert "eigenbasis" not in weights and "shampoo_precondition" not in weights


def test_adamw_to_a_soap_like_rule_in_one_macro():
    """AdamW -> Adam in the eigenbasis of Gram factors: SOAP with its moments rotated."""
    child = apply_macro("eigenbasis", catalog.get("adamw"), np.random.default_rng(0), BIG)
    assert child.state_shapes == (("L", "left_factor"), ("R", "right_factor"),
                                  ("QL", "left_factor"), ("QR", "right_factor"))
    assert parse(child.source()) == child
    verdict = equivalent(child, parse(SOAP_LIKE_ADAMW))  # unrotate is linear
    # (the decay is rotated too: zero at step 1, while the bases are still zero)
    assert verdict, verdict.detail
    w0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    target = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    path = trajectory(child, w0, lambda w, t: w - target, steps=30, lr=0.05)
    assert float((path[-1] - target).norm()) < 0.5 * float((w0 - target).norm())  # it optimizes


def test_sgd_to_shampoo_in_one_macro():
    sgd = parse("def r(w, g):\n    return g\n")
    child = apply_macro("shampoo_precondition", sgd, np.random.default_rng(0), BIG, site=(-1, ()),
                        sides=("left", "right"))
    shampoo = catalog.get("shampoo")
    # a moving average (shampoo_beta) instead of a sum: the same rule once shampoo_beta -> 1
    # in the factor's scale, so compare with the sum written as an average
    as_average = parse(shampoo.source().replace("L = L + gram_left(g)", "L = interp(gram_left(g), L, 0.999)")
                       .replace("R = R + gram_right(g)", "R = interp(gram_right(g), R, 0.999)"))
    verdict = equivalent(child, as_average)
    assert verdict, verdict.detail


def test_random_programs_get_matrix_states_only_with_allow_factor(tmp_path):
    assert load()["space"]["allow_factor"] is False
    path = tmp_path / "matrix.toml"
    path.write_text("[space]\nallow_factor = true\nmax_states = 6\nmax_statements = 10\n")
    space = Space.from_config(load(path))
    assert space.allow_factor
    drawn = [random_program(np.random.default_rng(seed), space) for seed in range(40)]
    matrix = [p for p in drawn if p.has_matrix_states]
    assert 0 < len(matrix) < len(drawn)
    assert any("QL" in p.state_names for p in matrix) and any("inv_root" in p.source() for p in matrix)
    flat = replace(space, allow_factor=False)
    assert not any(random_program(np.random.default_rng(seed), flat).has_matrix_states for seed in range(40))
