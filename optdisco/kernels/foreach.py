"""``backend="foreach"``: generated ``torch._foreach_*`` code over the whole parameter list."""

from __future__ import annotations

import torch

from ..dsl import Program
from .codecache import load_source
from . import torchgen
from .compiled import draw_noise, matrix_view
from .foreachgen import generate, has_uniform_form
from .plan import make_plan
from .quant8 import reject_quantized
from .precision import compute_dtype


class ForeachBackend:
    """One generated foreach call per op for each group of same-dtype, same-device tensors.

    When all tensors share one step and the rule has no reduction, the per-tensor numbers
    (``1 - beta ** step``, ...) are Python floats computed once (``uniform_fn``); otherwise
    they are vectors with one value per tensor (``fn``). A list of one contiguous tensor
    runs the generated per-tensor torch code on float scalars instead (``single_fn``, see
    :mod:`optdisco.kernels.torchgen`)."""

    name = "foreach"

    def __init__(self, program: Program) -> None:
        self.program = program
        self.plan = make_plan(program)
        self.source = generate(self.plan)
        self.fn = load_source("foreach", self.source).rule_step
        self.uniform_source = generate(self.plan, uniform=True) if has_uniform_form(self.plan) else None
        self.uniform_fn = load_source("foreach", self.uniform_source).rule_step if self.uniform_source else None
        self._defaults = program.hyperparameter_defaults
        single = load_source("torch", torchgen.generate(self.plan))
        self.single_fn, self.single_scalars_fn = single.rule_step_floats, single.rule_scalars_float
        # An elementwise rule sees no shapes: its one tensor needs no matrix view.
        self._single_view = any(op.kind in ("reduction", "matrix") for op in self.plan.live_ops())

    def step(self, params, grads, states, *, steps, lr, hyperparameters, generator=None) -> None:
        """In place: the rule applied to every tensor, one foreach call per op per group."""
        reject_quantized(states, self.name)
        hyper = {**self._defaults, **hyperparameters}
        if self.uniform_fn is not None and steps.count(steps[0]) == len(steps):
            self._step_uniform(params, grads, states, float(steps[0]), float(lr), hyper, generator)
            return
        # Noise is drawn tensor by tensor in the interpreter's order, so a step draws the
        # same numbers as backend="eager" from the same generator.
        n_draws = self.plan.n_draws
        noise_per_tensor = [draw_noise(n_draws, w.shape, compute_dtype(w), w.device, generator)
                            for w in params] if n_draws else None
        groups: dict[tuple, list[int]] = {}
        for i, w in enumerate(params):
            groups.setdefault((w.device, compute_dtype(w)), []).append(i)
        k = len(self.program.state_names)
        for (_device, dt), idx in groups.items():
            n = len(idx)
            whole = n == len(params)  # the common case: no per-group lists to build
            self.fn(params if whole else [params[i] for i in idx],
                    grads if whole else [grads[i] for i in idx],
                    [[states[i][j] for i in idx] for j in range(k)],
                    torch.tensor([float(steps[i]) for i in idx], dtype=dt),
                    float(lr), {h: torch.full((n,), float(v), dtype=dt) for h, v in hyper.items()},
                    [[noise_per_tensor[i][d] for i in idx] for d in range(n_draws)] if n_draws else [])

    def _step_uniform(self, params, grads, states, step: float, lr: float, hyper: dict[str, float],
                      generator: torch.Generator | None) -> None:
        """The step of tensors that share ``step``: per-tensor numbers as Python floats."""
        n_draws = self.plan.n_draws
        noise_per_tensor = [draw_noise(n_draws, w.shape, compute_dtype(w), w.device, generator)
                            for w in params] if n_draws else None
        floats = {h: float(v) for h, v in hyper.items()}
        k = len(self.program.state_names)
        first = params[0]
        dt = compute_dtype(first)
        if len(params) == 1 and all(x.dtype == dt and x.is_contiguous() for x in [first, grads[0], *states[0]]):
            # One tensor (an optimizer's flat buffer): plain torch calls, no foreach wrapper
            # and no per-op lists, about half the time of the foreach code on a small MLP.
            scal = self.single_scalars_fn(step, lr, float(first.numel()), floats)
            noise = noise_per_tensor[0] if noise_per_tensor else []
            if self._single_view:
                self.single_fn(matrix_view(first), matrix_view(grads[0]), *[matrix_view(x) for x in states[0]],
                               scal, dt, *[matrix_view(n) for n in noise])
            else:
                self.single_fn(first, grads[0], *states[0], scal, dt, *noise)
            return
        if all(w.device == first.device and compute_dtype(w) == dt for w in params):
            groups = {(first.device, dt): None}  # the common case: no per-group lists to build
        else:
            groups = {}
            for i, w in enumerate(params):
                groups.setdefault((w.device, compute_dtype(w)), []).append(i)
        for (_device, dt), idx in groups.items():
            if idx is None:
                self.uniform_fn(params, grads, [[s[j] for s in states] for j in range(k)], step, lr, floats,
                                [[n[d] for n in noise_per_tensor] for d in range(n_draws)] if n_draws else [], dt)
                continue
            self.uniform_fn([params[i] for i in idx], [grads[i] for i in idx],
                            [[states[i][j] for i in idx] for j in range(k)], step, lr, floats,
                            [[noise_per_tensor[i][d] for i in idx] for d in range(n_draws)] if n_draws else [],
                            dt)
