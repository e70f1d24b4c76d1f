"""The reference backend: the interpreter applied to one tensor at a time, or, for rules with
matrix states under ``backend="auto"``, to each stack of same-shaped tensors at once."""

from __future__ import annotations

import torch

from ..dsl import Program
from ..dsl.interpreter import run, run_group
from ..dsl.ir import Call
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


#: The most elements of one stacked parameter batch: the stacks copy w, g and the states, so
#: this bounds the extra memory a batched step holds (64 MiB per float32 stack).
MAX_BATCH_NUMEL = 1 << 24


def uses_noise(program: Program) -> bool:
    """Whether the rule calls ``randn()`` (its draws are made tensor by tensor)."""
    return any(isinstance(n, Call) and n.fn == "randn"
               for e in [a.expr for a in program.body] + [program.update] for n in e.walk())


class EagerBackend:
    """Runs :func:`optdisco.dsl.interpreter.run` per parameter (the semantics every path matches).

    With ``batched=True`` (what ``backend="auto"`` builds for matrix-state rules), parameters of
    one shape, dtype and step are stacked and run as one batched call (``batch_dims=1``), so that
    the interpreter's per-call Python cost is paid once per shape, and the Gram products, eigh and
    Newton-Schulz products run as batched matrix products. Every matrix built-in acts on each
    batch entry alone, so the numbers are those of the per-tensor run up to rounding: products of
    tiny matrices may round differently stacked (tests/kernels/test_eager_batched.py), which shows
    only where the rule itself is decided by rounding, as SOAP's eigenbasis of a rank-deficient
    factor is in its null space. Rules with ``randn()`` and 8-bit states run tensor by tensor.
    """

    name = "eager"

    def __init__(self, program: Program, batched: bool = False) -> None:
        self.program = program
        self.batched = batched and not uses_noise(program)

    def step(self, params, grads, states, *, steps, lr, hyperparameters, generator=None) -> None:
        """In place: ``(u, new) = rule(w, g, s)``; ``s <- new``; ``w <- w - lr * u`` per tensor.

        Computed in the states' dtype (float32 for 16-bit parameters); the parameter is
        rounded once, to nearest even, when written.
        """
        if self.program.has_group_reductions:
            self._group_step(params, grads, states, steps=steps, lr=lr,
                             hyperparameters=hyperparameters, generator=generator)
            return
        singles = list(range(len(params)))
        if self.batched:
            batches, singles = _batches(params, grads, states, steps)
            for batch in batches:
                self._step_batch([params[i] for i in batch], [grads[i] for i in batch],
                                 [states[i] for i in batch], steps[batch[0]], lr, hyperparameters)
        for i in singles:
            w, g, s, t = params[i], grads[i], states[i], steps[i]
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

    def _step_batch(self, params, grads, states, step, lr, hyperparameters) -> None:
        """One interpreter call on the stacks of same-shaped ``params``, ``grads`` and ``states``
        (fresh copies, so no new state aliases an input), written back tensor by tensor."""
        dtype = compute_dtype(params[0])
        w_c = torch.stack([w.to(dtype) for w in params])
        g_c = torch.stack(list(grads))
        s_c = [torch.stack([s[k] for s in states]) for k in range(len(self.program.state_names))]
        u, new = run(self.program, w_c, g_c, s_c, step=float(step), lr=lr,
                     hyperparameters=hyperparameters, batch_dims=1)
        w_new = w_c - lr * u
        for i, (w, s) in enumerate(zip(params, states)):
            for dst, src in zip(s, new):
                dst.copy_(src[i])
            w.copy_(w_new[i])


def _batches(params, grads, states, steps) -> tuple[list[list[int]], list[int]]:
    """Indices of the parameters that can run stacked, grouped by what a stack needs alike
    (shape, device, dtypes, step and each state's shape and dtype) and split so that no stack
    exceeds :data:`MAX_BATCH_NUMEL`; and the indices of the others (alone in their group, with
    an 8-bit state, or larger than the limit)."""
    groups: dict[tuple, list[int]] = {}
    singles = []
    for i, (w, g, s, t) in enumerate(zip(params, grads, states, steps)):
        if any(isinstance(x, QuantizedState) for x in s) or w.numel() * 2 > MAX_BATCH_NUMEL:
            singles.append(i)
            continue
        key = (tuple(w.shape), w.device, w.dtype, g.dtype, float(t),
               tuple((tuple(x.shape), x.dtype) for x in s))
        groups.setdefault(key, []).append(i)
    batches = []
    for members in groups.values():
        per = max(1, MAX_BATCH_NUMEL // max(1, params[members[0]].numel()))
        for start in range(0, len(members), per):
            chunk = members[start:start + per]
            if len(chunk) > 1:
                batches.append(chunk)
            else:
                singles.extend(chunk)
    return batches, sorted(singles)
