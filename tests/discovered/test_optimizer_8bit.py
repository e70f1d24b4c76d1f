"""optdisco.Optimizer(..., state_bits=8): 8-bit blockwise states, their memory and checkpoints."""

from __future__ import annotations

import io

import pytest
import torch

import optdisco
from optdisco.discovered.optimizer import MIN_8BIT_NUMEL
from optdisco.kernels.quant8 import QuantizedState


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Tanh(), torch.nn.Linear(128, 4))


def _train(model, opt, steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 64, generator=gen)
    y = torch.randint(0, 4, (256,), generator=gen)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_large_tensors_get_8bit_states_small_ones_float32():
    model = _model()
    opt = optdisco.Optimizer(model.parameters(), "adamw", lr=1e-2, state_bits=8)
    _train(model, opt, 1)
    for p in model.parameters():
        m = opt.state[p]["m"]
        if p.numel() >= MIN_8BIT_NUMEL:
            assert isinstance(m, QuantizedState) and m.codes.dtype == torch.uint8
        else:
            assert isinstance(m, torch.Tensor) and m.dtype == torch.float32


def test_8bit_states_train_like_float32_with_a_quarter_of_the_memory():
    model8, model32 = _model(), _model()
    opt8 = optdisco.Optimizer(model8.parameters(), "adamw", lr=1e-2, state_bits=8)
    opt32 = optdisco.Optimizer(model32.parameters(), "adamw", lr=1e-2)
    l8, l32 = _train(model8, opt8, 60), _train(model32, opt32, 60)
    assert l8[-1] < 0.5 * l8[0]
    assert abs(l8[-1] - l32[-1]) < 0.1 * l32[-1] + 0.02
    big = sum(p.numel() for p in model8.parameters() if p.numel() >= MIN_8BIT_NUMEL)
    saved = opt32.state_nbytes() - opt8.state_nbytes()
    assert saved > 0.7 * (2 * 4 * big)  # two float32 states per element of the large tensors


def test_8bit_checkpoint_holds_only_tensors_and_resumes_identically():
    model = _model()
    opt = optdisco.Optimizer(model.parameters(), "adamw", lr=1e-2, state_bits=8)
    _train(model, opt, 5)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    assert ck["opt"]["optdisco"]["state_bits"] == 8
    rest = _train(model, opt, 5, seed=1)

    model2 = _model(seed=3)
    model2.load_state_dict(ck["model"])
    opt2 = optdisco.Optimizer(model2.parameters(), "adamw", lr=1e-2, state_bits=8)
    opt2.load_state_dict(ck["opt"])
    assert isinstance(opt2.state[model2[0].weight]["v"], QuantizedState)
    assert _train(model2, opt2, 5, seed=1) == rest


def test_checkpoints_convert_between_state_formats():
    model = _model()
    opt32 = optdisco.Optimizer(model.parameters(), "adamw", lr=1e-2)
    _train(model, opt32, 3)
    opt8 = optdisco.Optimizer(model.parameters(), "adamw", lr=1e-2, state_bits=8)
    opt8.load_state_dict(opt32.state_dict())
    q = opt8.state[model[0].weight]["m"]
    assert isinstance(q, QuantizedState)
    full = opt32.state[model[0].weight]["m"]
    assert torch.allclose(q.dequantize(), full, rtol=0.1, atol=1e-3 * float(full.abs().max()))
    back = optdisco.Optimizer(model.parameters(), "adamw", lr=1e-2)
    back.load_state_dict(opt8.state_dict())
    assert back.state[model[0].weight]["m"].dtype == torch.float32


def test_8bit_with_a_backend_that_cannot_read_it_is_a_clear_error():
    model = _model()
    opt = optdisco.Optimizer(model.parameters(), "adamw", lr=1e-2, state_bits=8, backend="foreach")
    with pytest.raises(TypeError, match="8-bit"):
        _train(model, opt, 1)
    with pytest.raises(ValueError, match="state_bits"):
        optdisco.Optimizer(model.parameters(), "adamw", state_bits=4)
