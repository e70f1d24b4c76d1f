"""The batched eager path of matrix-state rules (backend="auto"): same-shaped parameters run
stacked, with the numbers of the per-tensor interpreter."""

from __future__ import annotations

import pytest
import torch

import optdisco
from optdisco.kernels import eager, get_backend

# repeated shapes (stacked), a lone matrix, a vector and a 3-D tensor (each alone)
SHAPES = [(6, 4), (6, 4), (6, 4), (4, 6), (4, 6), (5, 3), (7,), (3, 2, 2)]
# SOAP's stacks are square: the eigenbasis of a rank-deficient factor (a tall matrix's left
# factor after one step) is arbitrary in its null space, so there the last bit of rounding, in
# which stacked and single products of tiny matrices differ, picks the basis
SQUARE_SHAPES = [(6, 6), (6, 6), (6, 6), (4, 4), (4, 4), (5, 3), (7,), (3, 2, 2)]
NOISY_SHAMPOO_LIKE = """def noisy(w, g, m, L: left_factor, *, beta=0.9):
    m = interp(g + 0.01 * randn(), m, beta)
    L = interp(gram_left(g), L, 0.95)
    return lmul(inv_root(L, 4.0, 1e-6), m), m, L
"""


def _trajectory(rule: str, backend: str, dtype: torch.dtype, steps: int, **hyper: float) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    shapes = SQUARE_SHAPES if rule == "soap" else SHAPES
    params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]
    opt = optdisco.Optimizer(params, rule, lr=1e-2, backend=backend, **hyper)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=dtype)
        opt.step()
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rule, hyper", [("soap", {"freq": 3.0}), ("shampoo", {}), ("adam_mini", {})])
def test_stacked_steps_give_the_per_tensor_interpreters_numbers(rule, hyper, dtype):
    tol = {"rtol": 1e-12, "atol": 1e-14} if dtype == torch.float64 else {"rtol": 1e-6, "atol": 1e-7}
    stacked = _trajectory(rule, "auto", dtype, 8, **hyper)
    single = _trajectory(rule, "eager", dtype, 8, **hyper)
    for a, b in zip(stacked, single):
        torch.testing.assert_close(a, b, **tol)
        assert torch.isfinite(a).all()


def test_auto_stacks_matrix_rules_and_eager_does_not():
    soap = optdisco.catalog.get("soap")
    assert get_backend(soap, "auto").batched and not get_backend(soap, "eager").batched
    assert not get_backend(optdisco.parse(NOISY_SHAMPOO_LIKE), "auto").batched  # randn() draws per tensor


def test_batches_group_by_shape_and_step_and_respect_the_size_limit(monkeypatch):
    params = [torch.zeros(4, 4) for _ in range(5)] + [torch.zeros(3)] * 2 + [torch.zeros(2, 2)]
    grads = [torch.zeros_like(p) for p in params]
    states = [[torch.zeros_like(p)] for p in params]
    steps = [1.0, 1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0]
    batches, singles = eager._batches(params, grads, states, steps)
    assert batches == [[0, 1, 2, 3], [5, 6]] and singles == [4, 7]
    monkeypatch.setattr(eager, "MAX_BATCH_NUMEL", 48)  # three 4x4 matrices per stack
    batches, singles = eager._batches(params, grads, states, steps)
    assert batches == [[0, 1, 2], [5, 6]] and singles == [3, 4, 7]
    monkeypatch.setattr(eager, "MAX_BATCH_NUMEL", 16)  # a 4x4 matrix is over half the limit
    batches, singles = eager._batches(params, grads, states, steps)
    assert batches == [[5, 6]] and singles == [0, 1, 2, 3, 4, 7]


def test_parameters_at_different_steps_are_updated_as_alone():
    # a parameter that joins later (no gradient at first) runs alone at its own step
    gen = torch.Generator().manual_seed(1)
    params = [torch.nn.Parameter(torch.randn(5, 3, generator=gen, dtype=torch.float64)) for _ in range(3)]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    stacked = optdisco.Optimizer(params, "shampoo", lr=1e-2, backend="auto")
    single = optdisco.Optimizer(twins, "shampoo", lr=1e-2, backend="eager")
    for t in range(4):
        grads = [torch.randn(5, 3, generator=gen, dtype=torch.float64) for _ in params]
        for i, (p, q, g) in enumerate(zip(params, twins, grads)):
            p.grad = g.clone() if i or t >= 2 else None
            q.grad = g.clone() if i or t >= 2 else None
        stacked.step()
        single.step()
    assert stacked.state[params[0]]["step"] != stacked.state[params[1]]["step"]
    for p, q in zip(params, twins):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
