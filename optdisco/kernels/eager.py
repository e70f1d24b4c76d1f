"""The reference backend: the interpreter applied to one tensor at a time."""

from __future__ import annotations

import torch

from ..dsl import Program
from ..dsl.interpreter import run, run_group
from .precision import compute_dtype
from .quant8 import QuantizedState


def _noise_source(generator: torch.Generator | None, device: torch.device):
    """``noise(shape)`` drawing from ``generator`` even when it lives on another device."""
    if generator is None or generator.device == device:
        return None, generator
    return (lambda shape: torch.randn(shape, generator=generator, device=generator.device)), None


def shares_memory(t: torch.Tensor, others: list[torch.Tensor]) -> bool:
    """Whether ``t`` views the storage of any tensor in ``others``."""
    ptr = t.untyped_storage().data_ptr()
    return any(o.untyped_storage().data_ptr() == ptr for o in others)


class EagerBackend:
    """Runs :func:`optdisco.dsl.interpreter.run` per parameter (the semantics every path matches)."""

    name = "eager"

    def __init__(self, program: Program) -> None:
        self.program = program

    def step(self, params, grads, states, *, steps, lr, hyperparameters, generator=None) -> None:
        """In place: ``(u, new) = rule(w, g, s)``; ``s <- new``; ``w <- w - lr * u`` per tensor.

        Computed in the states' dtype (float32 for 16-bit parameters); the parameter is
        rounded once, to nearest even, when written.
        """
        if self.program.has_group_reductions:
            self._group_step(params, grads, states, steps=steps, lr=lr,
                             hyperparameters=hyperparameters, generator=generator)
            return
        for w, g, s, t in zip(params, grads, states, steps):
            dtype = compute_dtype(w)
            w_c = w.to(dtype)
            noise, gen = _noise_source(generator, w.device)
            s_val = [x.dequantize() if isinstance(x, QuantizedState) else x for x in s]
            u, new = run(self.program, w_c, g, s_val, step=float(t), lr=lr,
                         hyperparameters=hyperparameters, generator=gen, noise=noise)
            w_new = w_c - lr * u
            inputs = [w, g, *s_val]
            new = [n.clone() if shares_memory(n, inputs) else n for n in new]
            for dst, src in zip(s, new):
                if isinstance(dst, QuantizedState):
                    dst.assign(src)  # 8-bit states: re-quantized with the new block maxima
                else:
                    dst.copy_(src)
            w.copy_(w_new)

    def _group_step(self, params, grads, states, *, steps, lr, hyperparameters, generator) -> None:
        """The step of a rule with group built-ins: every parameter of ``params`` (one param
        group) in lockstep through :func:`optdisco.dsl.interpreter.run_group`."""
        if any(isinstance(x, QuantizedState) for s in states for x in s):
            raise ValueError(f"rule '{self.program.name}' reduces over the param group; "
                             "8-bit states do not cover it")
        dtypes = {compute_dtype(w) for w in params}
        if len(dtypes) > 1:
            raise ValueError(f"rule '{self.program.name}' reduces over the param group, whose "
                             f"parameters compute in {sorted(map(str, dtypes))}; use one dtype per group")
        w_c = [w.to(compute_dtype(w)) for w in params]
        noise, gen = _noise_source(generator, params[0].device)
        us, news = run_group(self.program, w_c, list(grads), [list(s) for s in states],
                             step=[float(t) for t in steps], lr=lr,
                             hyperparameters=hyperparameters, generator=gen, noise=noise)
        for w, wc, g, s, u, new in zip(params, w_c, grads, states, us, news):
            inputs = [w, g, *s]
            for dst, src in zip(s, new):
                dst.copy_(src.clone() if shares_memory(src, inputs) else src)
            w.copy_(wc - lr * u)
