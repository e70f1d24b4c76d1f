"""``backend="foreach"``: generated ``torch._foreach_*`` code over the whole parameter list."""

from __future__ import annotations

import torch

from ..dsl import Program
from .codecache import load_source
from .compiled import draw_noise
from .foreachgen import generate
from .plan import make_plan
from .quant8 import reject_quantized
from .precision import compute_dtype


class ForeachBackend:
    """One generated foreach call per op for each group of same-dtype, same-device tensors."""

    name = "foreach"

    def __init__(self, program: Program) -> None:
        self.program = program
        self.plan = make_plan(program)
        self.source = generate(self.plan)
        self.fn = load_source("foreach", self.source).rule_step

    def step(self, params, grads, states, *, steps, lr, hyperparameters, generator=None) -> None:
        """In place: the rule applied to every tensor, one foreach call per op per group."""
        reject_quantized(states, self.name)
        hyper = self.program.hyperparameter_defaults
        hyper.update(hyperparameters)
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
