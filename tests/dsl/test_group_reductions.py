"""Group-wide reductions (issue 13): group_sum / group_max, per_group states and the lockstep
execution of run_group, against sums written out by hand over several tensors in float64."""

from __future__ import annotations

import pytest
import sympy
import torch

from optdisco.dsl import DSLError, parse, run, run_group, zero_states
from optdisco.dsl.shapes import storage_shape

SHAPES = [(4, 3), (5,), (2, 3, 2)]

NORMALIZED = '''
def normalized(w, g, m, d: per_group, *, beta=0.9):
    m = interp(g, m, beta)
    d = maximum(d, group_max(abs(m)))
    total = group_sum(square(m))
    u = m / (sqrt(total) + d)
    return u, m, d
'''


def tensors(seed: int, batch: tuple[int, ...] = ()) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch + s, generator=gen, dtype=torch.float64) for s in SHAPES]


def test_lockstep_sums_and_maxima_see_every_parameter():
    p = parse(NORMALIZED)
    ws, gs = tensors(0), tensors(1)
    states = [zero_states(p, w) for w in ws]
    us, new = run_group(p, ws, gs, states, step=1.0, lr=0.1)
    ms = [(1.0 - 0.9) * g for g in gs]  # interp(g, 0, 0.9), rounded as the interpreter does
    total = sum(float((m * m).sum()) for m in ms)
    biggest = max(float(m.abs().max()) for m in ms)
    for m, u, s, w in zip(ms, us, new, ws):
        torch.testing.assert_close(u, m / (total ** 0.5 + biggest), rtol=1e-14, atol=0)
        assert s[1].shape == storage_shape("per_group", w.shape) and float(s[1]) == biggest
        torch.testing.assert_close(s[0], m)


def test_a_statement_runs_for_every_parameter_before_the_next():
    # b reads group_sum(a) of the *new* a of every tensor: the order the brief's Prodigy needs
    p = parse("def r(w, g, a):\n    a = a + g\n    b = group_sum(a)\n    return a * b, a\n")
    ws, gs = tensors(2), tensors(3)
    a0 = tensors(4)
    us, _ = run_group(p, ws, gs, [[a] for a in a0], step=1.0, lr=1.0)
    b = sum(float((a + g).sum()) for a, g in zip(a0, gs))
    for a, g, u in zip(a0, gs, us):
        torch.testing.assert_close(u, (a + g) * b, rtol=1e-14, atol=1e-14)


def test_nested_group_calls_take_the_inner_value_first():
    p = parse("def r(w, g):\n    u = g * group_sum(g * group_max(g))\n    return u\n")
    ws, gs = tensors(5), tensors(6)
    us, _ = run_group(p, ws, gs, [[] for _ in ws], step=1.0, lr=1.0)
    mx = max(float(g.max()) for g in gs)
    s = sum(float((g * mx).sum()) for g in gs)
    for g, u in zip(gs, us):
        torch.testing.assert_close(u, g * s, rtol=1e-13, atol=0)


def test_run_on_one_tensor_is_a_group_of_one():
    p = parse(NORMALIZED)
    w, g = tensors(7)[0], tensors(8)[0]
    u, new = run(p, w, g, zero_states(p, w), step=1.0, lr=0.1)
    us, news = run_group(p, [w], [g], [zero_states(p, w)], step=1.0, lr=0.1)
    torch.testing.assert_close(u, us[0])
    m = (1.0 - 0.9) * g
    torch.testing.assert_close(u, m / (m.norm() + m.abs().max()), rtol=1e-14, atol=0)


def test_batched_groups_keep_their_problems_apart():
    p = parse(NORMALIZED)
    ws, gs = tensors(9, (3,)), tensors(10, (3,))
    states = [zero_states(p, w, batch_dims=1) for w in ws]
    lrs = [torch.full((3,) + (1,) * len(s), 0.1, dtype=torch.float64) for s in SHAPES]
    us, new = run_group(p, ws, gs, states, step=1.0, lr=lrs, batch_dims=1)
    for b in range(3):
        row_us, row_new = run_group(p, [w[b] for w in ws], [g[b] for g in gs],
                                    [zero_states(p, w[b]) for w in ws], step=1.0, lr=0.1)
        for u, ru in zip(us, row_us):
            torch.testing.assert_close(u[b], ru, rtol=1e-14, atol=0)
        assert new[0][1][b].shape == row_new[0][1].shape


def test_per_group_state_is_read_from_the_first_parameter():
    p = parse("def r(w, g, d: per_group):\n    d = d + 1.0\n    return g * d, d\n")
    ws, gs = tensors(11), tensors(12)
    states = [[torch.full(storage_shape("per_group", w.shape), float(i + 5), dtype=torch.float64)]
              for i, w in enumerate(ws)]
    us, new = run_group(p, ws, gs, states, step=1.0, lr=1.0)
    assert [float(s[0]) for s in new] == [6.0] * len(ws)
    assert [s[0].shape for s in new] == [storage_shape("per_group", w.shape) for w in ws]


def test_a_group_sum_of_a_factor_sums_its_entries():
    p = parse("def r(w, g, L: left_factor):\n    L = L + gram_left(g)\n    u = g / group_sum(L)\n"
              "    return u, L\n")
    ws, gs = tensors(13)[:2], tensors(14)[:2]
    us, _ = run_group(p, ws, gs, [zero_states(p, w) for w in ws], step=1.0, lr=1.0)
    total = 0.0
    for g in gs:
        m = g.reshape(g.shape[0], -1) if g.dim() >= 2 else g.reshape(1, -1)
        total += float((m @ m.T).sum())
    torch.testing.assert_close(us[0], gs[0] / total, rtol=1e-14, atol=0)


@pytest.mark.parametrize("body,where", [
    ("    d = norm(g)\n", (2, 5)),           # a per-tensor reduction differs between tensors
    ("    d = d + step\n", (2, 5)),          # step counts each parameter's own updates
    ("    x = 1.0\n    x = mean(g)\n    d = x\n", (4, 5)),  # x was uniform, then is not
])
def test_a_per_group_state_takes_only_group_uniform_values(body, where):
    text = f"def r(w, g, d: per_group):\n{body}    return g * d, d\n"
    with pytest.raises(DSLError) as err:
        parse(text)
    assert (err.value.line, err.value.col) == where
    assert "per_group" in str(err.value)


def test_group_uniform_values_pass():
    p = parse("def r(w, g, d: per_group, *, c=2.0):\n    x = norm(g)\n    x = c * lr\n"
              "    d = maximum(d, x + group_sum(abs(g)))\n    return g * d, d\n")
    assert p.state_shape("d") == "per_group" and p.has_group_reductions and p.has_matrix_states


def test_group_builtins_check_arity_and_never_crash_the_parser():
    with pytest.raises(DSLError) as err:
        parse("def r(w, g):\n    return group_sum(g, g)\n")
    assert err.value.line == 2 and "group_sum() takes 1 argument" in str(err.value)
    with pytest.raises(DSLError):
        parse("def r(w, g, d: per_groups):\n    d = 1.0\n    return g, d\n")


def test_printer_round_trip_and_symbolic_opaque_functions():
    p = parse(NORMALIZED)
    assert parse(p.source()) == p
    assert "d: per_group" in p.source()
    rule = p.sympy()
    names = {type(f).__name__ for f in rule.update.atoms(sympy.Function)}
    assert {"group_sum", "group_max"} <= names


def test_fingerprints_tell_group_rules_apart_and_match_equal_ones():
    a = parse("def r(w, g):\n    return g / group_sum(abs(g))\n")
    b = parse("def r(w, g):\n    x = abs(g)\n    return g / group_sum(x)\n")
    c = parse("def r(w, g):\n    return g / group_max(abs(g))\n")
    d = parse("def r(w, g):\n    return g / sum(abs(g))\n")
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    assert a.has_group_reductions and not d.has_group_reductions
