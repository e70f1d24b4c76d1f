"""Shared checks: run a backend and the interpreter on the same fresh inputs and compare."""

from __future__ import annotations

import torch

from optdisco.dsl import Program
from optdisco.dsl.interpreter import run

SHAPES = [(7, 5), (13,), (), (3, 4, 2), (33, 9)]


def fresh_case(program: Program, shapes, dtype, seed: int, state_dtype=None):
    """Random params, grads and states (positive where a state feeds sqrt/log is not assumed)."""
    gen = torch.Generator().manual_seed(seed)
    sd = state_dtype or dtype
    params = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes]
    grads = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes]
    states = [[torch.rand(s, generator=gen, dtype=torch.float64).to(sd) for _ in program.state_names]
              for s in shapes]
    return params, grads, states


def reference_step(program, params, grads, states, *, steps, lr, hyper, noise=None):
    """The interpreter per tensor in the compute dtype; returns new (params, states) copies."""
    out_p, out_s = [], []
    for i, (w, g, s) in enumerate(zip(params, grads, states)):
        dt = torch.float32 if w.dtype in (torch.bfloat16, torch.float16) else w.dtype
        wc = w.to(dt)
        u, new = run(program, wc, g, [x.to(dt) for x in s], step=steps[i], lr=lr,
                     hyperparameters=hyper, noise=noise(i) if noise else None)
        out_p.append((wc - lr * u).to(w.dtype))
        out_s.append([n.to(x.dtype).clone() for n, x in zip(new, s)])
    return out_p, out_s


def assert_close_lists(got, want, rtol, atol, what=""):
    for i, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, equal_nan=True,
                                   msg=lambda m, i=i: f"{what} tensor {i}: {m}")


def queue(draws):
    """``noise(shape)`` returning ``draws`` one after another (the interpreter's draw order)."""
    it = iter(draws)
    return lambda shape: next(it).cpu().reshape(shape)


def generator_noise(program, seed):
    """noise_for() of backends that draw like the interpreter: tensor by tensor, draw by draw."""
    def noise_for(k, params):
        gen = torch.Generator().manual_seed(seed + k)
        per = [[torch.randn(w.shape, generator=gen, dtype=torch.float32 if w.dtype in
                            (torch.bfloat16, torch.float16) else w.dtype)
                for _ in range(program_draws(program))] for w in params]
        return lambda i: queue(per[i])
    return noise_for


def program_draws(program):
    from optdisco.kernels.plan import make_plan
    return make_plan(program).n_draws


def check_backend(backend, program: Program, *, shapes=SHAPES, dtype=torch.float64, n_steps=3,
                  lr=0.01, rtol=1e-9, atol=1e-11, seed=0, noise_for=None, state_dtype=None,
                  device="cpu", same_step=False):
    """``n_steps`` steps on fresh inputs; the backend must match the interpreter each time.

    ``noise_for(step_index, params) -> noise(i)`` gives the noise the backend drew for tensor
    i (called after the backend's step), for rules with randn(); by default the backend is
    assumed to draw like the interpreter from ``torch.Generator().manual_seed(1234 + k)``.
    ``same_step`` gives every tensor the same step (else steps alternate between tensors).
    """
    if noise_for is None:
        noise_for = generator_noise(program, 1234)
    hyper = {n: v * 1.1 for n, v in program.hyperparameters}  # not the defaults: runtime args
    for k in range(n_steps):
        params, grads, states = fresh_case(program, shapes, dtype, seed * 100 + k, state_dtype)
        params, grads = [p.to(device) for p in params], [g.to(device) for g in grads]
        states = [[x.to(device) for x in s] for s in states]
        steps = [float(k + 1 + (0 if same_step else i % 2)) for i in range(len(shapes))]
        p0 = [p.cpu().clone() for p in params]
        s0 = [[x.cpu().clone() for x in s] for s in states]
        g0 = [g.cpu().clone() for g in grads]
        backend.step(params, grads, states, steps=steps, lr=lr, hyperparameters=hyper,
                     generator=torch.Generator().manual_seed(1234 + k))
        want_p, want_s = reference_step(program, p0, g0, s0, steps=steps, lr=lr, hyper=hyper,
                                        noise=noise_for(k, params))
        params, grads = [p.cpu() for p in params], [g.cpu() for g in grads]
        states = [[x.cpu() for x in s] for s in states]
        assert_close_lists(params, want_p, rtol, atol, f"{program.name} step {k} param")
        for j in range(len(program.state_names)):
            assert_close_lists([s[j] for s in states], [s[j] for s in want_s], rtol, atol,
                               f"{program.name} step {k} state {program.state_names[j]}")
        assert all(torch.equal(a, b) for a, b in zip(grads, g0)), "gradients were modified"
