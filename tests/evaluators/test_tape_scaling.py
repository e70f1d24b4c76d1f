import math

import pytest
import torch

from optdisco import catalog
from optdisco.dsl import run
from optdisco.evaluators.scaling import PowerLaw, data_equivalent_speedup, fit_power_law
from optdisco.evaluators.tape import Tape, make_step


@pytest.mark.parametrize("name", catalog.names())
def test_tape_is_bit_identical_to_interpreter(name):
    p = catalog.get(name)
    step = make_step(p)
    gen = torch.Generator().manual_seed(0)
    for shape in [(3, 7), (3, 4, 5), (2, 6)]:
        w, g = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
        st = [torch.randn(shape, generator=gen).abs() for _ in p.state_names]
        lr = torch.rand(shape[0], *[1] * (len(shape) - 1), generator=gen)
        a = run(p, w, g, st, step=3.0, lr=lr, batch_dims=1, generator=torch.Generator().manual_seed(1))
        b = step(w, g, st, step=3.0, lr=lr, batch_dims=1, generator=torch.Generator().manual_seed(1))
        assert torch.equal(a[0], b[0]) and all(torch.equal(x, y) for x, y in zip(a[1], b[1]))


def test_tape_rejects_undefined_names():
    from optdisco.dsl import Program
    from optdisco.dsl.ir import Assign, Name
    broken = Program(name="b", state_names=(), hyperparameters=(), body=(Assign("u", Name("zz")),),
                     update=Name("u"))
    with pytest.raises(KeyError, match="zz"):
        Tape(broken)


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
