"""optdisco.Optimizer: a real torch.optim.Optimizer for every rule."""

from __future__ import annotations


import pytest
import torch

import optdisco
from optdisco.dsl import parse, trajectory

RULES = optdisco.catalog.names()

ADAM_TEXT = """
def adam_like(w, g, m, v, *, beta1=0.9, beta2=0.999, eps=1e-8):
    m = interp(g, m, beta1)
    v = interp(square(g), v, beta2)
    u = (m / (1.0 - beta1 ** step)) / (sqrt(v) / sqrt(1.0 - beta2 ** step) + eps)
    return u, m, v
"""


def make_model(dtype=torch.float64, seed=0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).to(dtype)


def data(dtype=torch.float64, n=16):
    gen = torch.Generator().manual_seed(123)
    x = torch.randn(n, 5, generator=gen, dtype=dtype)
    y = torch.randn(n, 3, generator=gen, dtype=dtype)
    return x, y


def loss_of(model, x, y):
    return torch.nn.functional.mse_loss(model(x), y)


def train(model, opt, steps, x, y, sched=None):
    for _ in range(steps):
        opt.zero_grad()
        loss_of(model, x, y).backward()
        opt.step()
        if sched is not None:
            sched.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", RULES)
def test_every_catalog_rule_matches_the_interpreter(name):
    """Eager Optimizer == interpreter trajectory in float64, on a matrix and a vector param."""
    prog = optdisco.catalog.get(name)
    torch.manual_seed(0)
    for shape in [(4, 3), (6,)]:
        w0 = torch.randn(shape, dtype=torch.float64)
        target = torch.randn(shape, dtype=torch.float64)
        lr = 1e-3
        noise = torch.Generator().manual_seed(7)
        ref = trajectory(prog, w0.clone(), lambda w, t, target=target: w - target, steps=12, lr=lr, generator=noise)
        p = torch.nn.Parameter(w0.clone())
        opt = optdisco.Optimizer([p], prog, lr=lr, backend="eager")
        opt._generator.manual_seed(7)
        for t in range(12):
            p.grad = (p.detach() - target).clone()
            opt.step()
            torch.testing.assert_close(p.detach(), ref[t], rtol=1e-12, atol=1e-14, equal_nan=True)


def test_adamw_rule_matches_torch_adamw_end_to_end():
    model_a, model_b = make_model(), make_model()
    x, y = data()
    ours = optdisco.Optimizer(model_a.parameters(), "adamw", lr=1e-2, backend="eager")
    hp = ours.program.hyperparameter_defaults
    wd_name = next(n for n in hp if n in ("wd", "weight_decay"))
    ref = torch.optim.AdamW(model_b.parameters(), lr=1e-2, weight_decay=hp[wd_name],
                            betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"])
    for pa, pb in zip(train(model_a, ours, 30, x, y), train(model_b, ref, 30, x, y)):
        torch.testing.assert_close(pa, pb, rtol=1e-10, atol=1e-12)


def test_param_groups_take_per_group_hyperparameters():
    x, y = data()
    m1, m2 = make_model(), make_model()
    groups = [{"params": m1[0].parameters(), "beta1": 0.5, "lr": 3e-2}, {"params": m1[2].parameters()}]
    opt = optdisco.Optimizer(groups, ADAM_TEXT, lr=1e-2, backend="eager")
    assert opt.param_groups[0]["beta1"] == 0.5 and opt.param_groups[1]["beta1"] == 0.9
    # the same thing as two torch Adams, one per group
    ref = [torch.optim.Adam(m2[0].parameters(), lr=3e-2, betas=(0.5, 0.999)),
           torch.optim.Adam(m2[2].parameters(), lr=1e-2)]
    for _ in range(10):
        for o in [opt, *ref]:
            o.zero_grad()
        loss_of(m1, x, y).backward()
        loss_of(m2, x, y).backward()
        opt.step()
        for o in ref:
            o.step()
    for pa, pb in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rule", ["adam", "lion", "gradient_noise"])
def test_state_dict_round_trip_continues_bit_for_bit(rule, tmp_path):
    x, y = data()
    model = make_model()
    opt = optdisco.Optimizer(model.parameters(), rule, lr=1e-2, backend="eager", seed=3)
    uninterrupted = train(model, opt, 20, x, y)

    model = make_model()
    opt = optdisco.Optimizer(model.parameters(), rule, lr=1e-2, backend="eager", seed=3)
    train(model, opt, 10, x, y)
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "ckpt.pt")
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    model2 = make_model(seed=99)
    model2.load_state_dict(ckpt["model"])
    opt2 = optdisco.Optimizer(model2.parameters(), rule, lr=1e-2, backend="eager", seed=12345)
    opt2.load_state_dict(ckpt["opt"])
    resumed = train(model2, opt2, 10, x, y)
    for a, b in zip(uninterrupted, resumed):
        assert torch.equal(a, b)


def test_state_dict_carries_rule_source_and_version():
    model = make_model()
    opt = optdisco.Optimizer(model.parameters(), "lion", backend="eager")
    sd = opt.state_dict()
    assert sd["optdisco"]["format_version"] == 1
    assert parse(sd["optdisco"]["rule_source"]) == optdisco.catalog.get("lion")


def test_checkpoint_of_another_rule_is_a_clear_error():
    x, y = data()
    model = make_model()
    opt = optdisco.Optimizer(model.parameters(), "lion", backend="eager")
    train(model, opt, 2, x, y)
    other = optdisco.Optimizer(model.parameters(), "adam", backend="eager")
    with pytest.raises(ValueError, match="made by rule 'lion'.*runs rule 'adam'"):
        other.load_state_dict(opt.state_dict())
    with pytest.raises(ValueError, match="not made by optdisco"):
        other.load_state_dict(torch.optim.Adam(model.parameters()).state_dict())


def test_bf16_parameters_keep_fp32_states_across_load():
    x, y = data(torch.float32)
    model = make_model(torch.bfloat16)
    opt = optdisco.Optimizer(model.parameters(), "adam", lr=1e-2, backend="eager")
    for _ in range(3):
        opt.zero_grad()
        loss_of(model, x.bfloat16(), y.bfloat16()).float().backward()
        opt.step()
    for p in model.parameters():
        assert p.dtype == torch.bfloat16
        assert all(opt.state[p][n].dtype == torch.float32 for n in opt.program.state_names)
    sd = opt.state_dict()
    model2 = make_model(torch.bfloat16)
    opt2 = optdisco.Optimizer(model2.parameters(), "adam", lr=1e-2, backend="eager")
    opt2.load_state_dict(sd)
    for p, q in zip(model.parameters(), model2.parameters()):
        for n in opt.program.state_names:
            assert opt2.state[q][n].dtype == torch.float32
            assert torch.equal(opt2.state[q][n], opt.state[p][n])


def test_bf16_update_is_the_fp32_update_rounded_once():
    torch.manual_seed(0)
    w = torch.randn(64, dtype=torch.bfloat16)
    g = torch.randn(64, dtype=torch.bfloat16)
    p = torch.nn.Parameter(w.clone())
    p.grad = g.clone()
    opt = optdisco.Optimizer([p], "sgd", lr=0.1, backend="eager")
    opt.step()
    expected = (w.float() - 0.1 * g.float()).bfloat16()
    assert torch.equal(p.detach(), expected)


def test_closure_and_lr_scheduler():
    x, y = data()
    model = make_model()
    opt = optdisco.Optimizer(model.parameters(), "sgd", lr=0.1, backend="eager")
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)

    def closure():
        opt.zero_grad()
        loss = loss_of(model, x, y)
        loss.backward()
        return loss

    before = [p.detach().clone() for p in model.parameters()]
    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and loss.item() > 0
    grads = [p.grad.clone() for p in model.parameters()]
    for b, p, gr in zip(before, model.parameters(), grads):
        torch.testing.assert_close(p.detach(), b - 0.1 * gr)
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    before = [p.detach().clone() for p in model.parameters()]
    opt.step(closure)
    for b, p in zip(before, model.parameters()):
        torch.testing.assert_close(p.detach(), b - 0.05 * p.grad)


def test_parameters_without_gradients_are_skipped():
    a = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    b = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = optdisco.Optimizer([a, b], "adam", backend="eager")
    a.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    assert b not in opt.state and torch.equal(b.detach(), torch.ones(3, dtype=torch.float64))
    assert float(opt.state[a]["step"]) == 1.0


def test_sparse_gradients_are_refused_clearly():
    emb = torch.nn.Embedding(10, 4, sparse=True)
    opt = optdisco.Optimizer(emb.parameters(), "adam", backend="eager")
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


def test_unknown_hyperparameter_and_bad_lr():
    with pytest.raises(TypeError, match="beta3.*it takes lr"):
        optdisco.Optimizer([torch.nn.Parameter(torch.ones(2))], "lion", beta3=0.5)
    with pytest.raises(ValueError, match="learning rate"):
        optdisco.Optimizer([torch.nn.Parameter(torch.ones(2))], "lion", lr=-1.0)


def test_rule_from_text_file_and_program(tmp_path):
    path = tmp_path / "mine.rule"
    path.write_text(ADAM_TEXT)
    prog = parse(ADAM_TEXT)
    for rule in [ADAM_TEXT, str(path), prog]:
        opt = optdisco.Optimizer([torch.nn.Parameter(torch.ones(2))], rule, backend="eager")
        assert opt.program == prog


def test_default_lr_comes_from_the_catalog():
    opt = optdisco.Optimizer([torch.nn.Parameter(torch.ones(2))], "lion", backend="eager")
    from optdisco.discovered.optimizer import default_lr
    assert opt.param_groups[0]["lr"] == default_lr(optdisco.catalog.get("lion")) < 1e-3


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="backend"):
        optdisco.Optimizer([torch.nn.Parameter(torch.ones(2))], "sgd", backend="warp-drive")
