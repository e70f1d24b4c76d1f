"""Matrix states in the rule language (issue 13): declared state shapes, the factor built-ins,
their shape errors, printing, sympy, fingerprints, and the interpreter's batching."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optdisco.dsl import DSLError, equivalent, parse, run
from optdisco.dsl.fingerprint import fingerprint
from optdisco.dsl.generate import random_matrix_program, random_program
from optdisco.dsl.interpreter import zero_states
from optdisco.dsl.shapes import storage_shape
from optdisco.dsl.symbolic import evaluate_sympy, to_sympy

SETTINGS = dict(derandomize=True, deadline=None, database=None, max_examples=25,
                suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(min_value=0, max_value=2**32 - 1)

SHAMPOO = """def shampoo(w, g, L: left_factor, R: right_factor, *, eps=1e-06):
    L = L + gram_left(g)
    R = R + gram_right(g)
    u = lmul(inv_root(L, 4.0, eps), rmul(g, inv_root(R, 4.0, eps)))
    return u, L, R
"""

# shapes of matrix views that tell left from right: tall, wide, a vector, a 3-d tensor
SHAPES = [(4, 3), (2, 5), (6,), (2, 3, 2)]


def _problem(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=gen, dtype=torch.float64)
    grads = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(4)]
    return w, grads


# -- syntax and shape errors -------------------------------------------------------------

BAD = [
    ("factor plus w-shaped", "def r(w, g, L: left_factor):\n    L = L + g\n    return g, L\n",
     (2, 13), ["shape mismatch", "left factor", "w-shaped"]),
    ("left and right mixed", "def r(w, g, L: left_factor, R: right_factor):\n"
     "    L = gram_left(g)\n    R = gram_right(g) * L\n    return g, L, R\n", (3, 25), ["right factor", "left factor"]),
    ("unknown shape", "def r(w, g, L: left):\n    L = gram_left(g)\n    return g, L\n",
     (1, 16), ["unknown state shape 'left'", "left_factor"]),
    ("annotated hyperparameter", "def r(w, g, *, b: per_row = 0.9):\n    return g\n", (1, 19),
     ["type annotations are not allowed on 'b'"]),
    ("factor update", "def r(w, g, L: left_factor):\n    L = gram_left(g)\n    return L, L\n",
     (3, 5), ["update must be shaped like w"]),
    ("w-shaped into a factor state", "def r(w, g, L: left_factor):\n    L = g * 2.0\n    return g, L\n",
     (2, 5), ["declared left_factor", "w-shaped"]),
    ("w-shaped into a per-row state", "def r(w, g, v: per_row):\n    v = square(g)\n    return g, v\n",
     (2, 5), ["declared per_row"]),
    ("lmul wants a left factor", "def r(w, g, R: right_factor):\n    R = gram_right(g)\n"
     "    return lmul(R, g), R\n", (3, 17), ["argument 1 of lmul()", "left factor"]),
    ("rotate arguments", "def r(w, g, L: left_factor):\n    L = gram_left(g)\n"
     "    return rotate(L, g, L), L\n", (3, 25), ["argument 3 of rotate()"]),
    ("every mixes shapes", "def r(w, g, L: left_factor):\n    L = every(2.0, gram_left(g), g)\n"
     "    return g, L\n", (2, 34), ["every() needs one shape"]),
    ("inv_root of a w-shaped value", "def r(w, g):\n    return inv_root(g, 2.0, 0.1)\n",
     (2, 21), ["argument 1 of inv_root()"]),
]


@pytest.mark.parametrize("case,text,where,words", BAD, ids=[c[0] for c in BAD])
def test_shape_misuse_is_a_dsl_error_with_line_and_column(case, text, where, words):
    with pytest.raises(DSLError) as info:
        parse(text)
    assert (info.value.line, info.value.col) == where, str(info.value)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_declared_shapes_print_and_parse_back():
    p = parse(SHAMPOO)
    assert p.state_shapes == (("L", "left_factor"), ("R", "right_factor"))
    assert "L: left_factor, R: right_factor" in p.source()
    assert parse(p.source()) == p
    # an annotation is part of the rule: the same text without it is another rule
    assert parse(SHAMPOO.replace(": left_factor", "").replace(": right_factor", "").replace(
        "L = L + gram_left(g)", "L = g").replace("R = R + gram_right(g)", "R = g").replace(
        "u = lmul(inv_root(L, 4.0, eps), rmul(g, inv_root(R, 4.0, eps)))", "u = g")) != p


@settings(**SETTINGS)
@given(seeds)
def test_random_matrix_programs_round_trip_and_run(seed):
    p = random_matrix_program(random.Random(seed))
    assert p.has_matrix_states
    assert parse(p.source()) == p
    w, grads = _problem((3, 2), seed % 1000)
    states = zero_states(p, w)
    u, new = run(p, w, grads[0], states, step=1.0, lr=0.1)
    assert u.shape == w.shape
    assert [tuple(s.shape) for s in new] == [storage_shape(p.state_shape(n), (3, 2)) for n in p.state_names]


def test_random_programs_have_no_factor_built_ins_unless_allowed():
    plain = [random_program(random.Random(i)) for i in range(200)]
    assert not any(p.has_matrix_states for p in plain)
    allowed = [random_program(random.Random(i), allow_factor=True) for i in range(40)]
    assert any(p.has_matrix_states for p in allowed)


# -- semantics -------------------------------------------------------------------------------

def _ref_inv_root(F, p, eps):
    lam, V = np.linalg.eigh(F)
    return (V * (np.maximum(lam, 0.0) + eps) ** (-1.0 / p)) @ V.T


@pytest.mark.parametrize("shape", SHAPES)
def test_shampoo_step_is_the_kronecker_preconditioned_gradient(shape):
    """Against numpy: L = G G^T, R = G^T G of the d0 x rest matrix view, u = L^-1/4 G R^-1/4."""
    p = parse(SHAMPOO)
    w, grads = _problem(shape)
    states = zero_states(p, w)
    for t, g in enumerate(grads, 1):
        u, states = run(p, w, g, states, step=float(t), lr=0.1)
    G = [gr.numpy().reshape(shape[0] if len(shape) >= 2 else 1, -1) for gr in grads]
    L = sum(x @ x.T for x in G)
    R = sum(x.T @ x for x in G)
    expected = _ref_inv_root(L, 4.0, 1e-6) @ G[-1] @ _ref_inv_root(R, 4.0, 1e-6)
    np.testing.assert_allclose(u.numpy().reshape(expected.shape), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(states[0].numpy(), L, rtol=1e-12)


def test_eigenbasis_rotations_and_every():
    text = """def r(w, g, L: left_factor, R: right_factor, QL: left_factor, QR: right_factor, *, k=3.0):
    L = L + gram_left(g)
    R = R + gram_right(g)
    QL = every(k, eigenbasis(L), QL)
    QR = every(k, eigenbasis(R), QR)
    back = unrotate(QL, rotate(QL, g, QR), QR)
    return back, L, R, QL, QR
"""
    p = parse(text)
    w, grads = _problem((4, 3))
    states = zero_states(p, w)
    bases = []
    for t in range(1, 7):
        u, states = run(p, w, grads[t % 4], states, step=float(t), lr=0.1)
        bases.append(states[2].clone())
        torch.testing.assert_close(u, grads[t % 4], rtol=1e-10, atol=1e-12)  # orthonormal bases
        lam_order = torch.diag(states[2].T @ states[0] @ states[2])
        if t in (1, 4):  # refreshed on steps 1, 1 + k: the eigenvectors of L, by descending eigenvalue
            assert torch.all(lam_order[:-1] >= lam_order[1:] - 1e-9)
            torch.testing.assert_close(states[0] @ states[2], states[2] * lam_order, rtol=1e-8, atol=1e-10)
    assert torch.equal(bases[0], bases[2]) and not torch.equal(bases[2], bases[3])


def test_per_row_per_col_and_per_tensor_states_are_stored_small():
    text = """def r(w, g, vr: per_row, vc: per_col, s: per_tensor):
    vr = interp(row_mean(square(g)), vr, 0.9)
    vc = interp(col_mean(square(g)), vc, 0.9)
    s = s + mean(square(g))
    return g / sqrt(vr * vc + s), vr, vc, s
"""
    p = parse(text)
    w, grads = _problem((4, 3))
    states = zero_states(p, w)
    assert [tuple(x.shape) for x in states] == [(4, 1), (1, 3), (1, 1)]
    u, new = run(p, w, grads[0], states, step=1.0, lr=0.1)
    g2 = grads[0] ** 2
    torch.testing.assert_close(new[0], 0.1 * g2.mean(1, keepdim=True))
    torch.testing.assert_close(new[1], 0.1 * g2.mean(0, keepdim=True))
    torch.testing.assert_close(u, grads[0] / torch.sqrt(new[0] * new[1] + g2.mean()))


def test_factor_reductions_reduce_the_factor():
    text = """def r(w, g, L: left_factor):
    L = gram_left(g)
    return g * norm(L) + mean(L), L
"""
    p = parse(text)
    w, grads = _problem((4, 4, 4))  # a left factor (4 x 4) would broadcast against w by accident
    u, (L,) = run(p, w, grads[0], zero_states(p, w), step=1.0, lr=0.1)
    torch.testing.assert_close(u, grads[0] * torch.linalg.matrix_norm(L) + L.mean())


def test_non_finite_factor_gives_nan_not_an_error():
    text = "def r(w, g, L: left_factor):\n    L = gram_left(g / 0.0)\n    return lmul(inv_root(L, 2.0, 0.1), g), L\n"
    p = parse(text)
    w, grads = _problem((3, 2))
    u, _ = run(p, w, grads[0], zero_states(p, w), step=1.0, lr=0.1)
    assert torch.isnan(u).all()


@settings(**SETTINGS)
@given(seeds)
def test_batching_changes_nothing(seed):
    """B problems batched (batch_dims=1, hyperparameters and lr per problem) = B separate runs.

    An eigenbasis is unique only up to the basis of a repeated eigenvalue's eigenspace (the
    Gram matrix of one gradient has rank 1), and LAPACK picks it differently for a batch
    than for one matrix: for rules with eigenbasis() only the factor statistics are compared."""
    p = random_matrix_program(random.Random(seed))
    compared = [i for i, n in enumerate(p.state_names) if not p.uses("eigenbasis") or n in ("L", "R")]
    shape = SHAPES[seed % len(SHAPES)]
    gen = torch.Generator().manual_seed(seed % 1000)
    B = 3
    w = torch.randn((B, *shape), generator=gen, dtype=torch.float64)
    lr = torch.tensor([0.1, 0.01, 0.3], dtype=torch.float64).reshape(B, *([1] * len(shape)))
    batched = zero_states(p, w, batch_dims=1)
    single = [zero_states(p, w[b]) for b in range(B)]
    for t in range(1, 4):
        g = torch.randn((B, *shape), generator=gen, dtype=torch.float64)
        u, batched = run(p, w, g, batched, step=float(t), lr=lr, batch_dims=1)
        for b in range(B):
            ub, single[b] = run(p, w[b], g[b], single[b], step=float(t), lr=lr[b].reshape(()))
            if not p.uses("eigenbasis"):
                torch.testing.assert_close(u[b], ub, rtol=1e-9, atol=1e-12, equal_nan=True)
            for i in compared:
                torch.testing.assert_close(batched[i][b], single[b][i], rtol=1e-9, atol=1e-12, equal_nan=True)


@settings(**SETTINGS)
@given(seeds)
def test_sympy_form_evaluates_as_the_interpreter(seed):
    """The sympy mapping (opaque factor functions, evaluated by numpy) = the interpreter."""
    p = random_matrix_program(random.Random(seed))
    compared = ["u"] * (not p.uses("eigenbasis")) + [n for n in p.state_names
                                                     if not p.uses("eigenbasis") or n in ("L", "R")]
    w, grads = _problem((3, 2), seed % 1000)
    states = zero_states(p, w)
    for t in (1, 2):
        u, new = run(p, w, grads[t], states, step=float(t), lr=0.1)
        su, snew = evaluate_sympy(p, w.numpy(), grads[t].numpy(), [s.numpy() for s in states], float(t), 0.1)
        for name, a, b in zip(["u", *p.state_names], [su, *snew], [u, *new]):
            if name not in compared:  # numpy's and torch's eigh may pick different bases of an eigenspace
                continue
            full = np.broadcast_to(b.numpy(), a.shape)
            np.testing.assert_allclose(a, full, rtol=1e-7, atol=1e-9, err_msg=name)
        states = new


@pytest.mark.parametrize("text,args", [("lmul(L, g)", 2), ("rmul(g, R)", 2), ("gram_left(g)", 1),
                                       ("inv_root(L, 4.0, 0.1)", 3), ("eigenbasis(R)", 1),
                                       ("rotate(L, g, R)", 3), ("unrotate(L, g, R)", 3), ("every(2.0, L, L)", 4)])
def test_factor_built_ins_are_opaque_sympy_functions(text, args):
    from optdisco.dsl.symbolic import _Converter, _exact  # the converter's value of a temporary
    p = parse(f"def r(w, g, L: left_factor, R: right_factor):\n    L = gram_left(g)\n    R = gram_right(g)\n"
              f"    t = {text}\n    return g, L, R\n")
    conv = _Converter(p, _exact)
    for stmt in p.body:
        conv.env[stmt.target] = conv.expr(stmt.expr)
    value = conv.env["t"]
    fn = text.split("(")[0]
    assert type(value).__name__ == fn and len(value.args) == args, value
    if fn == "every":  # its value depends on the step, so the step is among its sympy arguments
        assert conv.symbols["step"] in value.args
    assert to_sympy(p).states["L"].func.__name__ == "gram_left"


def test_fingerprint_and_equivalence_see_through_rewrites_and_see_differences():
    p = parse(SHAMPOO)
    regrouped = parse(SHAMPOO.replace("u = lmul(inv_root(L, 4.0, eps), rmul(g, inv_root(R, 4.0, eps)))",
                                      "u = rmul(lmul(inv_root(L, 4.0, eps), g), inv_root(R, 4.0, eps))"))
    assert fingerprint(p) == fingerprint(regrouped)
    assert equivalent(p, regrouped)
    swapped = parse(SHAMPOO.replace("inv_root(L, 4.0, eps)", "inv_root(L, 2.0, eps)"))
    assert fingerprint(p) != fingerprint(swapped)
    assert not equivalent(p, swapped)
    refreshed = parse(SHAMPOO.replace("def shampoo(w, g, L: left_factor, R: right_factor,",
                                      "def shampoo(w, g, L: left_factor, R: right_factor, P: left_factor,")
                      .replace("u = lmul(inv_root(L, 4.0, eps),", "P = every(2.0, inv_root(L, 4.0, eps), P)\n"
                               "    u = lmul(P,").replace("return u, L, R", "return u, L, R, P"))
    assert fingerprint(refreshed) != fingerprint(p)  # the root refreshed every other step differs


def test_show_reports_matrix_state_memory(capsys, tmp_path):
    from optdisco.cli import main
    rule = tmp_path / "shampoo.rule"
    rule.write_text(SHAMPOO)
    assert main(["show", str(rule)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the console wraps lines
    # (1024^2 + 4096^2) * 4 bytes over 1024 * 4096 entries
    assert "2 states (L: left_factor, R: right_factor) = 17 bytes/param for a 1024 x 4096 matrix" in out
