"""optdisco.Optimizer's flat step: an elementwise rule's group as one call on flat buffers."""

from __future__ import annotations

import pytest
import torch

import optdisco
from optdisco.kernels.flat import FlatBuffer, is_elementwise

ELEMENTWISE_RULE = """
def found_tanh(w, g, m, *, beta=0.9, c=0.5):
    m = interp(g, m, beta)
    u = tanh(m / (abs(g) + c)) + where(g, 0.01 * w, -0.02 * w)
    return u, m
"""


def make_model(dtype=torch.float64, seed=0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).to(dtype)


def batch(dtype=torch.float64):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(16, 5, generator=gen, dtype=dtype), torch.randn(16, 3, generator=gen, dtype=dtype)


def train(model, opt, steps, set_to_none=True):
    x, y = batch(next(model.parameters()).dtype)
    for _ in range(steps):
        opt.zero_grad(set_to_none=set_to_none)
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def one_buffer(params) -> bool:
    return len({p.untyped_storage().data_ptr() for p in params}) == 1


@pytest.mark.parametrize("rule", ["adamw", "lion", "adan", ELEMENTWISE_RULE])
@pytest.mark.parametrize("set_to_none", [True, False])
def test_flat_step_matches_the_interpreter_tensor_by_tensor(rule, set_to_none):
    flat_model, ref_model = make_model(), make_model()
    params = list(flat_model.parameters())
    flat = optdisco.Optimizer(params, rule, lr=1e-2, backend="foreach")
    ref = optdisco.Optimizer(ref_model.parameters(), rule, lr=1e-2, backend="eager")
    for a, b in zip(train(flat_model, flat, 12, set_to_none), train(ref_model, ref, 12, set_to_none)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert flat._flat_groups[0] is not None and ref._flat_groups == {}
    # the same Parameter objects, now views of one buffer; the states too
    assert all(p is q for p, q in zip(params, flat_model.parameters())) and one_buffer(params)
    for name in flat.program.state_names:
        assert one_buffer([flat.state[p][name] for p in params])
    assert all(float(flat.state[p]["step"]) == 12.0 for p in params)


def test_rules_with_reductions_or_noise_do_not_run_flat():
    assert is_elementwise(optdisco.catalog.get("adamw"))
    for name in ("lamb", "gradient_noise"):
        assert not is_elementwise(optdisco.catalog.get(name))
        model = make_model()
        opt = optdisco.Optimizer(model.parameters(), name, lr=1e-2, backend="foreach")
        train(model, opt, 2)
        assert opt._flat_groups == {} and not one_buffer(list(model.parameters()))


def test_a_parameter_without_gradient_sends_the_group_tensor_by_tensor():
    flat_model, ref_model = make_model(), make_model()
    flat = optdisco.Optimizer(flat_model.parameters(), "adamw", lr=1e-2, backend="foreach")
    ref = optdisco.Optimizer(ref_model.parameters(), "adamw", lr=1e-2, backend="eager")
    for model in (flat_model, ref_model):
        model[2].bias.requires_grad_(False)  # never gets a gradient
    for a, b in zip(train(flat_model, flat, 5), train(ref_model, ref, 5)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert flat._flat_groups[0] is None
    assert float(flat.state[flat_model[0].weight]["step"]) == 5.0
    assert flat_model[2].bias not in flat.state


def test_rebinding_a_parameter_or_loading_states_rebuilds_the_buffers(tmp_path):
    model, ref_model = make_model(), make_model()
    opt = optdisco.Optimizer(model.parameters(), "adamw", lr=1e-2, backend="foreach")
    ref = optdisco.Optimizer(ref_model.parameters(), "adamw", lr=1e-2, backend="eager")
    train(model, opt, 3)
    train(ref_model, ref, 3)
    with torch.no_grad():  # a user moves one weight to storage of its own
        for m in (model, ref_model):
            m[0].weight.data = m[0].weight.detach().clone() * 0.5
    first = opt._flat_groups[0]
    train(model, opt, 3)
    train(ref_model, ref, 3)
    assert opt._flat_groups[0] is not first and one_buffer(list(model.parameters()))
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    opt.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=False))
    for a, b in zip(train(model, opt, 4), train(ref_model, ref, 4)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert float(opt.state[model[0].weight]["step"]) == 10.0


def test_state_dict_round_trip_of_a_flat_optimizer_continues_bit_for_bit(tmp_path):
    model = make_model()
    opt = optdisco.Optimizer(model.parameters(), "adan", lr=1e-2, backend="foreach")
    uninterrupted = train(model, opt, 10)
    model = make_model()
    opt = optdisco.Optimizer(model.parameters(), "adan", lr=1e-2, backend="foreach")
    train(model, opt, 5)
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "ckpt.pt")
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    model2 = make_model(seed=5)
    model2.load_state_dict(ckpt["model"])
    opt2 = optdisco.Optimizer(model2.parameters(), "adan", lr=1e-2, backend="foreach")
    opt2.load_state_dict(ckpt["opt"])
    for a, b in zip(uninterrupted, train(model2, opt2, 5)):
        assert torch.equal(a, b)


def test_bf16_parameters_run_flat_with_float32_states():
    flat_model, ref_model = make_model(torch.bfloat16), make_model(torch.bfloat16)
    flat = optdisco.Optimizer(flat_model.parameters(), "adamw", lr=1e-2, backend="foreach")
    ref = optdisco.Optimizer(ref_model.parameters(), "adamw", lr=1e-2, backend="eager")
    for a, b in zip(train(flat_model, flat, 6), train(ref_model, ref, 6)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert flat._flat_groups[0] is not None
    assert flat.state[flat_model[0].weight]["m"].dtype == torch.float32


def test_flat_buffer_views_are_shaped_like_the_tensors_in_order():
    tensors = [torch.arange(6.0).view(2, 3), torch.tensor([7.0]), torch.arange(4.0).view(2, 1, 2)]
    flat = FlatBuffer(tensors)
    assert flat.buffer.tolist() == [0, 1, 2, 3, 4, 5, 7, 0, 1, 2, 3]
    assert [v.shape for v in flat.views] == [t.shape for t in tensors]
    flat.gather([t + 1 for t in tensors])
    assert flat.buffer.tolist() == [1, 2, 3, 4, 5, 6, 8, 1, 2, 3, 4]
