import pytest
import torch

import optdisco
from optdisco.kernels import BACKENDS, BackendUnavailable, get_backend

from .rules import ADAMW, RULES, SWAP


def test_unknown_backend_lists_choices():
    with pytest.raises(ValueError, match="eager, foreach, compile, triton"):
        get_backend(optdisco.parse(ADAMW), "cuda-magic")
    assert "auto" in BACKENDS and issubclass(BackendUnavailable, RuntimeError)


def test_backends_are_cached():
    p = optdisco.parse(ADAMW)
    assert get_backend(p, "eager") is get_backend(optdisco.parse(ADAMW), "eager")


def test_eager_matches_torch_adamw_float64():
    torch.manual_seed(0)
    shapes = [(5, 3), (7,)]
    params = [torch.randn(s, dtype=torch.float64) for s in shapes]
    ref = [p.clone().requires_grad_() for p in params]
    opt = torch.optim.AdamW(ref, lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    backend = get_backend(optdisco.parse(ADAMW), "eager")
    states = [[torch.zeros_like(p), torch.zeros_like(p)] for p in params]
    for t in range(1, 6):
        grads = [torch.randn(s, dtype=torch.float64) for s in shapes]
        for r, g in zip(ref, grads):
            r.grad = g.clone()
        opt.step()
        backend.step(params, grads, states, steps=[float(t)] * 2, lr=0.01,
                     hyperparameters={"wd": 0.01})
        for p, r in zip(params, ref):
            torch.testing.assert_close(p, r.detach(), rtol=1e-12, atol=1e-14)


def test_eager_state_swap_reads_old_values():
    p = optdisco.parse(SWAP)
    w, g = torch.tensor([1.0]), torch.tensor([2.0])
    a, b = torch.tensor([3.0]), torch.tensor([4.0])
    get_backend(p, "eager").step([w], [g], [[a, b]], steps=[1.0], lr=0.0, hyperparameters={})
    assert a.item() == 6.0 and b.item() == 3.0 * 0.5 + 1.0


def test_eager_bf16_param_float32_state_rounds_once():
    p = optdisco.parse(RULES["lion"])
    w = torch.tensor([1.0, -1.0], dtype=torch.bfloat16)
    m = torch.zeros(2)
    g = torch.tensor([0.5, -0.5], dtype=torch.bfloat16)
    get_backend(p, "eager").step([w], [g], [[m]], steps=[1.0], lr=1e-3, hyperparameters={})
    want = (torch.tensor([1.0, -1.0]) - 1e-3 * torch.tensor([1.0, -1.0])).to(torch.bfloat16)
    assert w.dtype == torch.bfloat16 and m.dtype == torch.float32
    assert torch.equal(w, want)
    torch.testing.assert_close(m, torch.tensor([0.005, -0.005]))
