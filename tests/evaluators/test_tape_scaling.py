import math

import pytest
import torch

from optdisco import catalog
from optdisco.dsl import run
from optdisco.evaluators.scaling import PowerLaw, data_equivalent_speedup, fit_power_law
from optdisco.evaluators.tape import FlatTape, flat_layout, make_step


LAYOUT = flat_layout([(3, 4), (4,), (), (2, 3, 2), (5, 1)])


def _per_tensor_reference(p, w, g, st, lr, dtype):
    """dsl.run on each tensor's shaped view (batch_dims=1), results flattened side by side."""
    rows = w.shape[0]
    us, states = [], [[] for _ in st]
    for o, n, shape in LAYOUT:
        view = lambda x, o=o, n=n, shape=shape: x[:, o:o + n].reshape(rows, *shape)  # noqa: E731
        u, ns = run(p, view(w), view(g), [view(s) for s in st], step=3.0,
                    lr=lr.view(rows, *[1] * len(shape)), batch_dims=1,
                    generator=torch.Generator().manual_seed(1))
        us.append(u.reshape(rows, n))
        for j, s in enumerate(ns):
            states[j].append(s.reshape(rows, n))
    return torch.cat(us, 1), [torch.cat(parts, 1) for parts in states]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", [n for n in catalog.names() if not catalog.get(n).has_matrix_states])  # not taped
def test_flat_tape_is_bit_identical_to_the_interpreter_tensor_by_tensor(name, dtype):
    p = catalog.get(name)
    step = make_step(p, LAYOUT)
    assert isinstance(step, FlatTape) != p.uses("randn")
    gen = torch.Generator().manual_seed(0)
    N = sum(n for _, n, _ in LAYOUT)
    w, g = torch.randn(3, N, generator=gen, dtype=dtype), torch.randn(3, N, generator=gen, dtype=dtype)
    st = [torch.randn(3, N, generator=gen, dtype=dtype).abs() for _ in p.state_names]
    lr = torch.rand(3, 1, generator=gen, dtype=dtype)
    ref_u, ref_states = _per_tensor_reference(p, w, g, st, lr, dtype)
    for _ in range(2):  # the second call uses the folded constants cached by the first
        u, states = step(w, g, st, step=3, lr=lr, generator=torch.Generator().manual_seed(1))
        if p.uses("randn"):  # one flat draw instead of one per tensor: same law, other numbers
            assert u.shape == ref_u.shape and torch.isfinite(u).all()
            continue
        assert torch.equal(u, ref_u), (u - ref_u).abs().max()
        assert all(torch.equal(a, b) for a, b in zip(states, ref_states))


def test_flat_tape_widens_per_tensor_values_only_where_they_meet_full_width_ones():
    from optdisco.dsl import parse
    p = parse("""
def r(w, g, *, c=2.0):
    s = norm(w) / numel(w) + c
    return s * g + rms(c)
""")
    tape = FlatTape(p, LAYOUT)
    assert tape.source.count("S.widen(") == 2  # s * g and + rms(c); not norm(w) / numel(w) + c
    N = sum(n for _, n, _ in LAYOUT)
    w, g = torch.randn(2, N, dtype=torch.float64), torch.randn(2, N, dtype=torch.float64)
    u, _ = tape(w, g, [], step=1, lr=torch.ones(2, 1, dtype=torch.float64))
    ref, _ = _per_tensor_reference(p, w, g, [], torch.ones(2, 1, dtype=torch.float64), torch.float64)
    assert torch.equal(u, ref)


def test_tape_rejects_undefined_names():
    from optdisco.dsl import Program
    from optdisco.dsl.ir import Assign, Name
    broken = Program(name="b", state_names=(), hyperparameters=(), body=(Assign("u", Name("zz")),),
                     update=Name("u"))
    with pytest.raises(KeyError, match="zz"):
        FlatTape(broken, LAYOUT)


def test_power_law_fit_recovers_known_curve():
    law = PowerLaw(a=50.0, b=0.7, c=0.3)
    D = [100.0, 200.0, 400.0, 800.0, 1600.0]
    fit = fit_power_law(D, [law(d) for d in D])
    assert fit.b == pytest.approx(0.7, rel=0.02) and fit.c == pytest.approx(0.3, abs=0.01)
    assert fit.data_for(law(300.0)) == pytest.approx(300.0, rel=0.03)
    assert fit.data_for(0.1) == math.inf
    assert math.isnan(fit_power_law(D, [1.0, 1.1, 1.2, 1.3, 1.4]).data_for(1.0))  # no decrease: no fit


def test_adamw_speedup_over_itself_is_about_one(tmp_path):
    from optdisco.evaluators import ADAMW
    sp = data_equivalent_speedup(ADAMW, "logreg", budgets=(0.25, 0.5, 1.0), candidate_budget=0.5,
                                 cache_dir=tmp_path)
    assert sp.adamw_losses[0] > sp.adamw_losses[-1]
    assert sp.candidate_loss == pytest.approx(sp.adamw_losses[1], rel=1e-5)
    assert 0.7 < sp.speedup < 1.4


@pytest.mark.parametrize("seed", range(60))
def test_flat_tape_agrees_with_the_interpreter_on_random_programs(seed):
    import random
    from optdisco.dsl.generate import random_program
    p = random_program(random.Random(seed), allow_noise=False)
    gen = torch.Generator().manual_seed(seed)
    N = sum(n for _, n, _ in LAYOUT)
    w, g = torch.randn(2, N, generator=gen, dtype=torch.float64), torch.randn(2, N, generator=gen, dtype=torch.float64)
    st = [torch.randn(2, N, generator=gen, dtype=torch.float64) for _ in p.state_names]
    lr = torch.rand(2, 1, generator=gen, dtype=torch.float64)
    ref_u, ref_states = _per_tensor_reference(p, w, g, st, lr, torch.float64)
    u, states = FlatTape(p, LAYOUT)(w, g, st, step=3, lr=lr)
    # to the last bits, not bit for bit: torch's vectorized and scalar kernels (taken for
    # contiguous and strided operands) may round pow, exp or log differently
    for a, b in zip([u, *states], [ref_u, *ref_states]):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-300, equal_nan=True), p.source()
