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

import threading
import warnings

import torch

from ..dsl import Program
from .errors import BackendUnavailable

#: Groups with at least this many elements use torch.compile on CPU ...
COMPILE_MIN_NUMEL = 500_000
#: ... for their tensors of at least this many elements (measured break-even: ~12K).
SMALL_NUMEL = 1 << 14


def compile_sample(t: torch.Tensor) -> torch.Tensor:
    """A small contiguous copy of ``t`` with the same compiled specialization: a 2-D
    ``(1 or 2, 1 or 17)`` matrix for tensors of 2 or more dims (rows and cols of the matrix
    view), else 1-D of 1 or 17 elements. 17 differs from 2, so dynamo's equal-size guards
    (duck sizing) never tie the rows to the cols."""
    flat = t.detach().reshape(-1)
    if t.dim() >= 2:
        rows = t.shape[0]
        cols = flat.numel() // rows
        shape: tuple[int, ...] = (1 if rows == 1 else 2, 1 if cols == 1 else 17)
    else:
        shape = (1 if flat.numel() == 1 else 17,)
    n = shape[0] * (shape[1] if len(shape) == 2 else 1)
    return flat[:n].repeat(-(-n // flat.numel()))[:n].reshape(shape).clone()


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
    """Foreach for small groups, torch.compile for groups of COMPILE_MIN_NUMEL elements or more.

    The compile never stalls a step: the first step that wants compiled code starts
    compiling it in a background thread, on copies of one tensor per compiled
    specialization, and every step runs the foreach path until that thread is done; the
    steps after it use the compiled code. Both paths match the interpreter to the tested
    tolerance, so the switch changes no result beyond that tolerance.
    """

    name = "auto"

    def __init__(self, program: Program, device: torch.device) -> None:
        from .foreach import ForeachBackend
        self.program = program
        self.device = device
        self.foreach = ForeachBackend(program)
        self._compiled = None
        self._compile_failed = False
        self._compile_error: Exception | None = None
        self._compile_thread: threading.Thread | None = None
        self._compile_done = threading.Event()
        self._warmed: set[tuple] = set()
        #: (foreach indices, compiled indices) of the last step, for tests and benchmarks.
        self.last_split: tuple[list[int], list[int]] = ([], [])

    def _compiled_backend(self):
        if self._compiled is None:
            from .compiled import CompiledBackend
            self._compiled = CompiledBackend(self.program, self.device)
        return self._compiled

    @property
    def compiled_ready(self) -> bool:
        """Whether the background compile has finished (successfully or not)."""
        return self._compile_done.is_set()

    def wait_compiled(self, timeout: float | None = None) -> bool:
        """Block until the background compile (if one was started) is done; True when done."""
        thread = self._compile_thread
        if thread is None:
            return self._compile_done.is_set()
        return self._compile_done.wait(timeout)

    def split(self, params: list[torch.Tensor]) -> tuple[list[int], list[int]]:
        """Indices of the tensors for (foreach, compile)."""
        if self._compile_failed or sum(p.numel() for p in params) < COMPILE_MIN_NUMEL:
            return list(range(len(params))), []
        small = [i for i, p in enumerate(params) if p.numel() < SMALL_NUMEL]
        big = [i for i, p in enumerate(params) if p.numel() >= SMALL_NUMEL]
        return small, big

    def _start_compile(self, params, grads, states, steps, lr, hyperparameters, big) -> None:
        """Compile in a background thread, on copies of one tensor per specialization."""
        from .compiled import specialization
        compiled = self._compiled_backend()
        samples = {}
        for i in big:
            key = specialization(params[i], grads[i])
            if key not in samples:
                samples[key] = i
        # Small copies, taken here, so the thread never reads tensors the main thread updates
        # and a 10M-element group costs the first step no full-size copies.
        work = [(compile_sample(params[i]), compile_sample(grads[i]),
                 [compile_sample(x) for x in states[i]], steps[i]) for i in samples.values()]
        self._warmed = set(samples)
        hyper = dict(hyperparameters)
        grad_enabled = torch.is_grad_enabled()  # thread-local, and dynamo guards on it

        def compile_all() -> None:
            # A private generator: warming up must not consume the user's random stream.
            gen = torch.Generator(device=self.device)
            try:
                with torch.set_grad_enabled(grad_enabled):
                    for w, g, s, t in work:
                        compiled.step([w], [g], [s], steps=[t], lr=lr, hyperparameters=hyper,
                                      generator=gen)
            except Exception as e:  # noqa: BLE001 - any failure is reported by the next step, on the caller's thread
                self._compile_error = e
            finally:
                self._compile_done.set()

        self._compile_done.clear()
        self._compile_thread = threading.Thread(target=compile_all, name="optdisco-compile", daemon=True)
        self._compile_thread.start()

    def _compiled_usable(self, params, grads, states, steps, lr, hyperparameters, big) -> bool:
        """Whether this step may run ``big`` compiled; starts or finishes the background compile."""
        if self._compile_thread is None:
            self._start_compile(params, grads, states, steps, lr, hyperparameters, big)
            return False
        if not self._compile_done.is_set():
            return False
        if self._compile_error is not None:
            e = self._compile_error
            self._compile_error = None
            self._compile_failed = True
            warnings.warn(f"optdisco: torch.compile failed ({e}); using the foreach backend", stacklevel=2)
            return False
        from .compiled import specialization
        new = {specialization(params[i], grads[i]) for i in big} - self._warmed
        if new:  # a specialization not seen before (a new dtype, a 1-row matrix): compile it too
            self._compile_thread = None
            self._start_compile(params, grads, states, steps, lr, hyperparameters, big)
            return False
        return True

    def step(self, params, grads, states, *, steps, lr, hyperparameters, generator=None) -> None:
        """In place: the rule's step, small tensors through foreach, large ones compiled
        once the background compile is done (foreach until then)."""
        from .quant8 import QuantizedState
        if any(isinstance(x, QuantizedState) for s in states for x in s):
            from .eager import EagerBackend  # the CPU fast paths do not read 8-bit states
            EagerBackend(self.program).step(params, grads, states, steps=steps, lr=lr,
                                            hyperparameters=hyperparameters, generator=generator)
            return
        small, big = self.split(params)
        if big and not self._compiled_usable(params, grads, states, steps, lr, hyperparameters, big):
            small, big = list(range(len(params))), []
        self.last_split = (small, big)

        def run(backend, idx):
            if len(idx) == len(params):
                backend.step(params, grads, states, steps=steps, lr=lr,
                             hyperparameters=hyperparameters, generator=generator)
                return
            backend.step([params[i] for i in idx], [grads[i] for i in idx], [states[i] for i in idx],
                         steps=[steps[i] for i in idx], lr=lr, hyperparameters=hyperparameters,
                         generator=generator)
        if big:
            try:
                run(self._compiled_backend(), big)
            except BackendUnavailable as e:
                warnings.warn(f"optdisco: torch.compile failed ({e}); using the foreach backend", stacklevel=2)
                self._compile_failed = True
                small = small + big
        if small:
            run(self.foreach, small)
