"""``backend="auto"``: the fastest backend available for a device.

On CUDA with triton installed: the fused Triton kernels. On CPU: measured with
``benchmarks/bench_kernels.py`` (see BENCHMARKS.md), ``torch.compile`` wins by fusing the
rule into one loop per tensor, but each call of a compiled function costs ~0.1 ms of
Python, so tensors under SMALL_NUMEL elements go through the generated foreach code (one
call per op for all of them) instead; groups under COMPILE_MIN_NUMEL elements in all never
pay for a compile. Rules with randn() then draw their noise in a different order than the
interpreter (same generator, same distribution).
"""

from __future__ import annotations

import warnings

import torch

from ..dsl import Program
from .errors import BackendUnavailable

#: Groups with at least this many elements use torch.compile on CPU ...
COMPILE_MIN_NUMEL = 500_000
#: ... for their tensors of at least this many elements (measured break-even: ~12K).
SMALL_NUMEL = 1 << 14


def auto_backend(program: Program, device: torch.device):
    """Triton on CUDA when triton imports; on CPU the foreach/compile pair below."""
    device = torch.device(device)
    if device.type == "cuda":
        from .triton_backend import TritonBackend, check_available
        try:
            check_available(device)
            return TritonBackend(program, device)
        except BackendUnavailable:
            pass
    return AutoCPUBackend(program, device)


class AutoCPUBackend:
    """Foreach for small groups, torch.compile for groups of COMPILE_MIN_NUMEL elements or more."""

    name = "auto"

    def __init__(self, program: Program, device: torch.device) -> None:
        from .foreach import ForeachBackend
        self.program = program
        self.device = device
        self.foreach = ForeachBackend(program)
        self._compiled = None
        self._compile_failed = False

    def _compiled_backend(self):
        if self._compiled is None:
            from .compiled import CompiledBackend
            self._compiled = CompiledBackend(self.program, self.device)
        return self._compiled

    def split(self, params: list[torch.Tensor]) -> tuple[list[int], list[int]]:
        """Indices of the tensors for (foreach, compile)."""
        if self._compile_failed or sum(p.numel() for p in params) < COMPILE_MIN_NUMEL:
            return list(range(len(params))), []
        small = [i for i, p in enumerate(params) if p.numel() < SMALL_NUMEL]
        big = [i for i, p in enumerate(params) if p.numel() >= SMALL_NUMEL]
        return small, big

    def step(self, params, grads, states, *, steps, lr, hyperparameters, generator=None) -> None:
        """In place: the rule's step, small tensors through foreach, large ones compiled."""
        from .quant8 import QuantizedState
        if any(isinstance(x, QuantizedState) for s in states for x in s):
            from .eager import EagerBackend  # the CPU fast paths do not read 8-bit states
            EagerBackend(self.program).step(params, grads, states, steps=steps, lr=lr,
                                            hyperparameters=hyperparameters, generator=generator)
            return
        small, big = self.split(params)

        def run(backend, idx):
            backend.step([params[i] for i in idx], [grads[i] for i in idx], [states[i] for i in idx],
                         steps=[steps[i] for i in idx], lr=lr, hyperparameters=hyperparameters,
                         generator=generator)
        if big:
            try:
                run(self._compiled_backend(), big)
            except BackendUnavailable as e:
                warnings.warn(f"optdisco: torch.compile failed ({e}); using the foreach backend")
                self._compile_failed = True
                small = small + big
        if small:
            run(self.foreach, small)
