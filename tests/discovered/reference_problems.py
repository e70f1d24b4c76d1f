"""Small float64 problems whose gradients depend on the current parameters, for reference tests."""

from __future__ import annotations

from typing import Callable

import torch

from optdisco.dsl import Program, trajectory

Grad = Callable[[torch.Tensor, int], torch.Tensor]


def quadratic(n: int = 7, seed: int = 0) -> tuple[torch.Tensor, Grad]:
    """A random convex quadratic 0.5 w'Aw - b'w on a vector: (w0, grad)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    a = q @ torch.diag(torch.linspace(0.5, 3.0, n, dtype=torch.float64)) @ q.T
    b = torch.randn(n, generator=gen, dtype=torch.float64)
    w0 = torch.randn(n, generator=gen, dtype=torch.float64)
    return w0, lambda w, t: a @ w - b


def least_squares(rows: int = 4, cols: int = 6, seed: int = 1) -> tuple[torch.Tensor, Grad]:
    """0.5 ||W X - Y||^2 / k on a rows x cols matrix W: (W0, grad)."""
    gen = torch.Generator().manual_seed(seed)
    k = 10
    x = torch.randn(cols, k, generator=gen, dtype=torch.float64)
    y = torch.randn(rows, k, generator=gen, dtype=torch.float64)
    w0 = torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    return w0, lambda w, t: (w @ x - y) @ x.T / k


def scale_invariant(rows: int = 4, cols: int = 6, seed: int = 2) -> tuple[torch.Tensor, Grad]:
    """0.5 ||(W / ||W||) X - Y||^2: the gradient is orthogonal to W (as behind a normalization layer)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(cols, 8, generator=gen, dtype=torch.float64)
    y = torch.randn(rows, 8, generator=gen, dtype=torch.float64)
    w0 = torch.randn(rows, cols, generator=gen, dtype=torch.float64)

    def grad(w: torch.Tensor, t: int) -> torch.Tensor:
        w = w.detach().requires_grad_(True)
        loss = 0.5 * ((w / w.norm()) @ x - y).square().sum()
        (g,) = torch.autograd.grad(loss, w)
        return g

    return w0, grad


PROBLEMS = {"quadratic": quadratic, "least_squares": least_squares}


def rule_path(program: Program, w0: torch.Tensor, grad: Grad, steps: int, lr: float,
              hyper: dict | None = None, **kw) -> list[torch.Tensor]:
    """The interpreter's iterates w_1..w_steps in float64."""
    return trajectory(program, w0.clone(), grad, steps=steps, lr=lr, hyperparameters=hyper, **kw)


def assert_paths_close(got: list[torch.Tensor], want: list[torch.Tensor], rtol: float = 1e-10) -> None:
    """Every iterate agrees to ``rtol`` relative to the largest entry of the reference iterate."""
    assert len(got) == len(want)
    for t, (a, b) in enumerate(zip(got, want), start=1):
        assert torch.isfinite(b).all(), f"reference diverged at step {t}"
        err = (a - b).abs().max().item()
        scale = max(b.abs().max().item(), 1e-300)
        assert err <= rtol * scale, f"step {t}: max |diff| = {err:.3e}, relative {err / scale:.3e}"


def assert_rule_matches_reference(program: Program, hyper: dict | None, reference: Callable[[torch.Tensor, Grad], list],
                                  problem: str, steps: int, lr: float, *, rtol: float,
                                  stable_rtol: float) -> None:
    """The rule's float64 iterates on ``PROBLEMS[problem]`` agree with ``reference(w0, grad)`` to
    ``rtol``, where the comparison means something: the reference from a start perturbed by
    1e-15 stays within ``stable_rtol`` of itself (sign rules near a zero coordinate would not),
    and the reference moves the weights by more than 1e-3 (else any rule that barely moves
    would pass)."""
    w0, grad = PROBLEMS[problem]()
    want = reference(w0, grad)
    assert_paths_close(reference(w0 * (1 + 1e-15), grad), want, stable_rtol)
    got = rule_path(program, w0, grad, steps, lr, hyper)
    assert_paths_close(got, want, rtol)
    assert (want[-1] - w0).abs().max() > 1e-3, "the reference barely moved: a weak test"
