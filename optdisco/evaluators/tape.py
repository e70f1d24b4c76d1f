"""A program flattened once into a tape, for the many small updates of batched training.

The reference interpreter walks the expression trees on every call and converts every
literal and hyperparameter to a tensor each time; over thousands of steps x dozens of
rules that Python overhead dominates training. A :class:`Tape` resolves the program into
its expression DAG (:meth:`Program.outputs`), orders the distinct nodes once, keeps
literals and hyperparameters as ready tensors, and then runs the same torch
implementations (:data:`optdisco.dsl.interpreter.TORCH_IMPL`) with the same context, so it
computes exactly what :func:`optdisco.dsl.run` computes (tests compare them bit for bit).
Rules that call ``randn()`` are not taped (merging equal subexpressions would merge
distinct draws): :func:`make_step` returns the reference interpreter for them.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from ..dsl import Program, run as reference_run
from ..dsl.interpreter import TORCH_IMPL, _Context
from ..dsl.ir import Call, Const, Expr, Name


class Tape:
    """The distinct nodes of a program's DAG in evaluation order, with input and constant slots."""

    def __init__(self, program: Program) -> None:
        self.program = program
        update, states = program.outputs()
        self.inputs = ["w", "g", *program.state_names, *program.hyperparameter_names, "step", "lr"]
        slot: dict[Expr, int] = {Name(n): i for i, n in enumerate(self.inputs)}
        self.consts: list[float] = []
        self.const_base = len(self.inputs)
        const_slots: dict[float, int] = {}
        self.ops: list[tuple[int, Callable, tuple[int, ...]]] = []
        n_slots = [self.const_base]

        def visit(e: Expr) -> int:
            if e in slot:
                return slot[e]
            if isinstance(e, Name):
                raise KeyError(f"name '{e.id}' is not defined in rule '{program.name}'")
            if isinstance(e, Const):
                if e.value not in const_slots:
                    const_slots[e.value] = len(self.consts)
                    self.consts.append(e.value)
                slot[e] = -1 - const_slots[e.value]
                return slot[e]
            assert isinstance(e, Call)
            args = tuple(visit(a) for a in e.args)
            out = n_slots[0]
            n_slots[0] += 1
            self.ops.append((out, TORCH_IMPL[e.fn], args))
            slot[e] = out
            return out

        self.update_slot = visit(update)
        self.state_slots = [visit(s) for s in states]
        self.n_slots = n_slots[0]
        self._ready: dict[tuple, list[torch.Tensor]] = {}

    def _constants(self, dtype: torch.dtype, device: torch.device, hyper: Mapping[str, object]) -> list[torch.Tensor]:
        key = (dtype, device, tuple(sorted((k, float(v)) for k, v in hyper.items() if not torch.is_tensor(v))))
        if key not in self._ready:
            self._ready[key] = [torch.as_tensor(v, dtype=dtype, device=device) for v in self.consts]
        return self._ready[key]

    def __call__(self, w: torch.Tensor, g: torch.Tensor, states: Sequence[torch.Tensor], *, step, lr,
                 hyperparameters: Mapping[str, object] | None = None, batch_dims: int = 0,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Same contract and numbers as :func:`optdisco.dsl.run` (without ``noise``)."""
        hyper = self.program.hyperparameter_defaults
        if hyperparameters:
            hyper.update(hyperparameters)
        dtype, device = w.dtype, w.device
        ctx = _Context(w.shape, batch_dims, dtype, device, generator, None)
        vals: list = [None] * self.n_slots
        vals[0], vals[1] = w, g.to(dtype)
        i = 2
        for s in states:
            vals[i] = s.to(dtype)
            i += 1
        for n in self.program.hyperparameter_names:
            vals[i] = torch.as_tensor(hyper[n], dtype=dtype, device=device)
            i += 1
        vals[i] = torch.as_tensor(step, dtype=dtype, device=device)
        vals[i + 1] = torch.as_tensor(lr, dtype=dtype, device=device)
        consts = self._constants(dtype, device, hyper)
        for out, fn, args in self.ops:
            vals[out] = fn(ctx, *[vals[a] if a >= 0 else consts[-1 - a] for a in args])

        def get(a: int) -> torch.Tensor:
            return ctx.full(vals[a] if a >= 0 else consts[-1 - a])
        return get(self.update_slot), [get(a) for a in self.state_slots]


def make_step(program: Program) -> Callable:
    """A function with :func:`optdisco.dsl.run`'s contract: a :class:`Tape`, or the interpreter
    itself for rules that draw noise or that cannot be taped (their error surfaces when run)."""
    if program.uses("randn"):
        return lambda w, g, states, **kw: reference_run(program, w, g, states, **kw)
    try:
        return Tape(program)
    except Exception:
        return lambda w, g, states, **kw: reference_run(program, w, g, states, **kw)
