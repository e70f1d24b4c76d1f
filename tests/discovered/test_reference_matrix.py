"""The matrix-state rules (shampoo, soap, adam_mini) against independent implementations:
pytorch_optimizer (test-only peer) and the papers' algorithms written out in plain PyTorch,
over 40-step float64 trajectories; and how optdisco.Optimizer runs them."""

from __future__ import annotations

import math

import pytest
import torch

import optdisco
from optdisco.dsl import trajectory
from optdisco.kernels import BackendUnavailable

pytorch_optimizer = pytest.importorskip("pytorch_optimizer")

STEPS = 40
#: the catalog rules this file tests against a peer or the written-out algorithm
MATRIX_TESTED = {"shampoo", "soap", "adam_mini"}
A = torch.randn(6, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
CURVATURE = A @ A.T / 6 + torch.eye(6, dtype=torch.float64)


def grad(w: torch.Tensor, t: int) -> torch.Tensor:
    """A quadratic with a full-matrix Hessian along the rows, plus a step-dependent drift."""
    rows = w.shape[0]
    drift = torch.sin(t * torch.arange(w.numel(), dtype=torch.float64).reshape(w.shape))
    return CURVATURE[:rows, :rows] @ w + 0.1 * drift


def peer_trajectory(make, w0: torch.Tensor) -> list[torch.Tensor]:
    p = torch.nn.Parameter(w0.clone())
    opt = make([p])
    out = []
    for t in range(1, STEPS + 1):
        p.grad = grad(p.detach(), t).clone()
        opt.step()
        out.append(p.detach().clone())
    return out


def max_relative_error(ours, theirs) -> float:
    return max(float((a - b).norm() / b.norm()) for a, b in zip(ours, theirs))


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4)])
def test_shampoo_matches_pytorch_optimizer(shape):
    """Shampoo(momentum=0, weight_decay=0, preconditioning_compute_steps=1, matrix_eps=eps)."""
    w0 = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = trajectory(optdisco.catalog.get("shampoo"), w0.clone(), grad, steps=STEPS, lr=0.05)
    theirs = peer_trajectory(lambda ps: pytorch_optimizer.Shampoo(ps, lr=0.05, matrix_eps=1e-6), w0)
    assert max_relative_error(ours, theirs) < 1e-8


@pytest.mark.parametrize("shape", [(5, 3), (3, 5)])
def test_soap_matches_pytorch_optimizer_while_the_basis_is_not_refreshed(shape):
    """SOAP(precondition_frequency=50): the basis of step 1 for all 40 steps, as freq=50."""
    w0 = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ours = trajectory(optdisco.catalog.get("soap"), w0.clone(), grad, steps=STEPS, lr=0.01,
                      hyperparameters={"freq": 50.0})
    theirs = peer_trajectory(lambda ps: pytorch_optimizer.SOAP(ps, lr=0.01, precondition_frequency=50), w0)
    assert max_relative_error(ours, theirs) < 1e-8


def test_soap_refresh_differs_from_the_peers_power_iteration_as_documented():
    """With refreshes inside the trajectory the peer's one QR power step is not our eigh."""
    w0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ours = trajectory(optdisco.catalog.get("soap"), w0.clone(), grad, steps=STEPS, lr=0.01)
    theirs = peer_trajectory(lambda ps: pytorch_optimizer.SOAP(ps, lr=0.01, precondition_frequency=10), w0)
    assert 1e-5 < max_relative_error(ours, theirs) < 3e-2


def soap_written_out(w0: torch.Tensor, lr: float, freq: int, b1=0.95, b2=0.95, sb=0.95, eps=1e-8, wd=0.01):
    """The SOAP paper's algorithm with eigh refreshes on steps 1, 1 + freq, ... (plain PyTorch)."""
    w = w0.clone()
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    L, R = torch.zeros(w.shape[0], w.shape[0], dtype=w.dtype), torch.zeros(w.shape[1], w.shape[1], dtype=w.dtype)
    QL = QR = None
    out = []
    for t in range(1, STEPS + 1):
        g = grad(w, t)
        if t > 1:
            s = t - 1
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * (QL.T @ g @ QR) ** 2
            n = QL @ ((QL.T @ m @ QR) / (v.sqrt() + eps)) @ QR.T
            w = w - lr * math.sqrt(1 - b2 ** s) / (1 - b1 ** s) * n
            w = w * (1 - lr * wd)
        out.append(w.clone())
        L = (1 - sb) * (g @ g.T) + sb * L  # as interp rounds: the first basis is of a rank-1 L
        R = (1 - sb) * (g.T @ g) + sb * R
        if (t - 1) % freq == 0:
            QL = torch.linalg.eigh(L + 1e-30 * torch.eye(L.shape[0], dtype=L.dtype))[1].flip(-1)
            QR = torch.linalg.eigh(R + 1e-30 * torch.eye(R.shape[0], dtype=R.dtype))[1].flip(-1)
    return out


def test_soap_with_refreshes_matches_the_algorithm_written_out():
    w0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ours = trajectory(optdisco.catalog.get("soap"), w0.clone(), grad, steps=STEPS, lr=0.01,
                      hyperparameters={"freq": 7.0})
    assert max_relative_error(ours, soap_written_out(w0, 0.01, 7)) < 1e-8


def adam_mini_written_out(w0: torch.Tensor, lr: float, b1=0.9, b2=0.999, eps=1e-8, wd=0.1):
    """Adam-mini with one second moment per row (output neuron), in plain PyTorch."""
    w = w0.clone()
    rows = w.shape[0] if w.dim() >= 2 else 1
    m, v = torch.zeros_like(w), torch.zeros(rows, 1, dtype=w.dtype)
    out = []
    for t in range(1, STEPS + 1):
        g = grad(w, t)
        w = w * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * (g.reshape(rows, -1) ** 2).mean(dim=1, keepdim=True)
        h = v.sqrt() / math.sqrt(1 - b2 ** t) + eps
        w = w - lr * (m.reshape(rows, -1) / ((1 - b1 ** t) * h)).reshape(w.shape)
        out.append(w.clone())
    return out


@pytest.mark.parametrize("shape", [(4, 4), (5, 3), (6,)])
def test_adam_mini_matches_the_algorithm_written_out(shape):
    w0 = torch.randn(shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ours = trajectory(optdisco.catalog.get("adam_mini"), w0.clone(), grad, steps=STEPS, lr=0.01)
    assert max_relative_error(ours, adam_mini_written_out(w0, 0.01)) < 1e-8


def test_adam_mini_matches_pytorch_optimizer_on_a_per_head_projection_and_its_bias():
    """AdamMini on q_proj (num_heads = rows: a head per row) and its bias (one block); the peer
    computes its statistics in float32, hence 1e-6."""
    class Attention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q_proj = torch.nn.Linear(4, 4)

    torch.manual_seed(0)
    model = Attention().double()
    ours = {n: p.detach().clone() for n, p in model.named_parameters()}
    peer = pytorch_optimizer.AdamMini(model, lr=0.01, num_embeds=4, num_heads=4, weight_decay=0.1)
    program = optdisco.catalog.get("adam_mini")
    states = {n: optdisco.dsl.zero_states(program, w) for n, w in ours.items()}
    for t in range(1, STEPS + 1):
        for p in model.parameters():
            p.grad = grad(p.detach(), t)
        grads = {n: grad(w, t) for n, w in ours.items()}
        peer.step()
        for n in ours:
            u, states[n] = optdisco.dsl.run(program, ours[n], grads[n], states[n], step=float(t), lr=0.01)
            ours[n] = ours[n] - 0.01 * u
    for n, p in model.named_parameters():
        assert float((p.detach() - ours[n]).norm() / ours[n].norm()) < 1e-6, n


# -- optdisco.Optimizer -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["shampoo", "soap", "adam_mini"])
def test_optimizer_keeps_matrix_states_small_and_runs_them_eagerly(name):
    lin = torch.nn.Linear(8, 3).double()
    opt = optdisco.Optimizer(lin.parameters(), name, lr=1e-3)
    assert opt._backend_for(torch.device("cpu")).name == "eager"  # "auto" falls back to the interpreter
    x = torch.randn(5, 8, dtype=torch.float64)
    for _ in range(3):
        opt.zero_grad()
        lin(x).square().sum().backward()
        opt.step()
    shapes = {k: tuple(v.shape) for k, v in opt.state[lin.weight].items() if k != "step"}
    expected = {"shampoo": {"L": (3, 3), "R": (8, 8)},
                "soap": {"m": (3, 8), "v": (3, 8), "L": (3, 3), "R": (8, 8), "QL": (3, 3), "QR": (8, 8)},
                "adam_mini": {"m": (3, 8), "v": (3, 1)}}[name]
    assert shapes == expected
    weight_floats = sum(math.prod(s) for s in expected.values())
    bias_floats = {"shampoo": 1 + 9, "soap": 3 + 3 + 1 + 9 + 1 + 9, "adam_mini": 3 + 1}[name]
    assert opt.state_nbytes() == 8 * (weight_floats + bias_floats)
    loaded = optdisco.Optimizer(lin.parameters(), name, lr=1e-3)
    loaded.load_state_dict(opt.state_dict())
    assert all(torch.equal(loaded.state[lin.weight][k], opt.state[lin.weight][k]) for k in expected)


def test_fused_backends_and_8bit_states_refuse_matrix_states():
    params = [torch.nn.Parameter(torch.zeros(4, 4))]
    for backend in ("foreach", "compile", "triton"):
        with pytest.raises(BackendUnavailable, match="matrix states"):
            optdisco.Optimizer(params, "shampoo", backend=backend)
    with pytest.raises(ValueError, match="state_bits=8 does not cover matrix or group states.*L: left_factor"):
        optdisco.Optimizer(params, "shampoo", state_bits=8)
