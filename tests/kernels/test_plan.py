import optdisco
from optdisco.kernels.plan import make_plan

from .rules import RULES


def test_draws_follow_interpreter_order_and_are_never_shared():
    p = make_plan(optdisco.parse(
        "def r(w, g):\n    a = randn()\n    b = randn() - randn() + a\n    return b + a * randn()\n"))
    draws = sorted(op.draw for op in p.ops if op.fn == "randn")
    assert draws == [0, 1, 2, 3] and p.n_draws == 4


def test_common_subexpressions_are_shared():
    p = make_plan(optdisco.parse("def r(w, g):\n    a = sqrt(abs(g))\n    return sqrt(abs(g)) + a\n"))
    assert sum(op.fn == "sqrt" for op in p.ops) == 1


def test_levels_count_reduction_and_matrix_passes():
    assert make_plan(optdisco.parse(RULES["adamw"])).levels == 0
    assert make_plan(optdisco.parse(RULES["lamb"])).levels == 1
    centered = make_plan(optdisco.parse(RULES["centered"]))
    assert centered.levels == 3  # mean(m) -> row_mean(c) -> rms(c - row_mean(c))


def test_scalar_and_uniform_classification():
    p = make_plan(optdisco.parse(RULES["adamw"]))
    by = {op.fn: op for op in p.ops}
    assert by["beta1"].uniform and by["step"].scalar and not by["step"].uniform
    assert not by["g"].scalar and by["pow"].scalar and not by["pow"].uniform


def test_numel_does_not_keep_its_argument_alive():
    p = make_plan(optdisco.parse("def r(w, g):\n    t = exp(w)\n    return g * numel(t)\n"))
    assert not any(op.fn == "exp" for op in p.live_ops())


def test_bytes_moved_count_reads_writes_and_extra_passes():
    from optdisco.kernels.traffic import bytes_per_element
    adamw = make_plan(optdisco.parse(RULES["adamw"]))
    assert bytes_per_element(adamw, 4, 4, 4) == 28  # read w, g, m, v; write w, m, v
    assert bytes_per_element(adamw, 2, 2, 4) == 2 + 2 + 8 + 2 + 8  # bf16 w and g
    lion = make_plan(optdisco.parse(RULES["lion"]))
    assert bytes_per_element(lion, 4, 4, 4) == 20
    lamb = make_plan(optdisco.parse(RULES["lamb"]))
    assert bytes_per_element(lamb, 4, 4, 4) == 28 + 16  # the norm pass reads w, g, m, v again
