"""``backend="compile"``: generated per-tensor torch code fused by ``torch.compile``.

One generated function (see :mod:`optdisco.kernels.torchgen`) is compiled with dynamic
shapes and called per tensor on its matrix view, so a model's many shapes share a few
compiled graphs (sizes 0 and 1 are specialized by dynamo). Inductor turns the rule into
one fused loop per pass (one for elementwise rules, one more per reduction level), in
place. The one-off compile time is measured and kept in ``compile_seconds``.
"""

from __future__ import annotations

import math
import time

import torch

from ..dsl import Program
from .codecache import load_source
from .errors import BackendUnavailable
from .plan import make_plan
from .quant8 import reject_quantized
from .precision import compute_dtype
from .torchgen import generate


def matrix_view(t: torch.Tensor) -> torch.Tensor:
    """``t`` as the interpreter's matrix view: rows = first dim (1 for vectors and 0-d)."""
    rows = t.shape[0] if t.dim() >= 2 else 1
    cols = math.prod(t.shape) // rows if rows else 0
    return t.view(rows, cols)


def draw_noise(n_draws: int, shape: torch.Size, dtype: torch.dtype, device: torch.device,
               generator: torch.Generator | None) -> list[torch.Tensor]:
    """The ``n_draws`` standard normal tensors the interpreter would draw for one parameter."""
    out = []
    for _ in range(n_draws):
        if generator is not None and generator.device != device:
            out.append(torch.randn(shape, generator=generator, device=generator.device).to(dtype=dtype, device=device))
        else:
            out.append(torch.randn(shape, generator=generator, dtype=dtype, device=device))
    return out


def specialization(w: torch.Tensor, g: torch.Tensor) -> tuple:
    """What makes dynamo compile a separate graph for a tensor (sizes stay symbolic): a
    1-row matrix view of a matrix, a single element, and the dtypes."""
    return (w.dim() >= 2 and w.shape[0] == 1, w.numel() == 1, w.dtype, g.dtype, compute_dtype(w))


class CompiledBackend:
    """Per-tensor calls of a ``torch.compile``-d generated step (see the module docstring)."""

    name = "compile"

    def __init__(self, program: Program, device: torch.device | str = "cpu", *,
                 compile: bool = True) -> None:
        self.program = program
        self.plan = make_plan(program)
        self.source = generate(self.plan)
        module = load_source("torch", self.source)
        self.eager_fn = module.rule_step
        self.scalars_fn = module.rule_scalars
        self.scalars_float_fn = module.rule_scalars_float
        self.compile = compile
        self.compile_seconds = 0.0
        self._fn = None
        self._seen: set[tuple] = set()

    def _compiled(self):
        if self._fn is None:
            if not self.compile:
                self._fn = self.eager_fn
            else:
                try:
                    self._fn = torch.compile(self.eager_fn, dynamic=True, fullgraph=True)
                except Exception as e:  # pragma: no cover - depends on the toolchain
                    raise BackendUnavailable(
                        f"torch.compile is unavailable here ({e}); use backend='foreach'") from e
        return self._fn

    def step(self, params, grads, states, *, steps, lr, hyperparameters, generator=None) -> None:
        """In place, per tensor: the rule's update of states and parameter (fused by inductor)."""
        fn = self._compiled()
        reject_quantized(states, self.name)
        hyper = self.program.hyperparameter_defaults
        hyper.update(hyperparameters)
        n_draws = self.plan.n_draws
        if len(params) == 1 and not n_draws and specialization(params[0], grads[0]) in self._seen:
            w, g, s = params[0], grads[0], states[0]
            if w.is_contiguous() and g.is_contiguous() and all(x.is_contiguous() for x in s):
                # One tensor (a flat buffer): its scalars as floats and one tensor call, not a
                # dozen torch calls on 1-element vectors; on a small flat group those were
                # most of the step.
                floats = self.scalars_float_fn(float(steps[0]), float(lr), float(w.numel()),
                                               {h: float(v) for h, v in hyper.items()})
                scal = torch.tensor(floats, dtype=compute_dtype(w), device=w.device)
                fn(matrix_view(w), matrix_view(g), *[matrix_view(x) for x in s], scal)
                return
        scal_rows: dict[torch.dtype, torch.Tensor] = {}
        for i, (w, g, s, _step) in enumerate(zip(params, grads, states, steps)):
            dt = compute_dtype(w)
            if dt not in scal_rows:  # the step/hyperparameter arithmetic, for all tensors at once
                n = len(params)
                scal_rows[dt] = self.scalars_fn(
                    torch.tensor([float(x) for x in steps], dtype=dt), torch.full((n,), float(lr), dtype=dt),
                    torch.tensor([float(p.numel()) for p in params], dtype=dt),
                    {h: torch.full((n,), float(v), dtype=dt) for h, v in hyper.items()}).to(w.device)
            scal = scal_rows[dt][i]
            noise = [matrix_view(n) for n in draw_noise(n_draws, w.shape, dt, w.device, generator)] \
                if n_draws else []
            contiguous = w.is_contiguous() and g.is_contiguous() and all(x.is_contiguous() for x in s)
            ws, ss = (w, s) if contiguous else (w.contiguous(), [x.contiguous() for x in s])
            args = [matrix_view(ws), matrix_view(g.contiguous()), *[matrix_view(x) for x in ss], scal, *noise]
            key = specialization(w, g)
            if key not in self._seen:  # first call of a new specialization: time its compile
                start = time.perf_counter()
                try:
                    fn(*args)
                except Exception as e:  # compiling happens before anything is written
                    if not self.compile:
                        raise
                    raise BackendUnavailable(
                        f"torch.compile failed for rule '{self.program.name}' ({type(e).__name__}: "
                        f"{str(e)[:300]}); use backend='foreach'") from e
                self.compile_seconds += time.perf_counter() - start
                self._seen.add(key)
            else:
                fn(*args)
            if not contiguous:
                w.copy_(ws)
                for dst, src in zip(s, ss):
                    dst.copy_(src)

