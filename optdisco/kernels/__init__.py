"""Execution backends for update rules: the interpreter, CPU fast paths and Triton kernels.

Every backend applies a rule to a list of parameters in place::

    (u, s_1', ..., s_k') = rule(w, g, s_1, ..., s_k; step, lr, hyperparameters)
    s_j <- s_j'          w <- w - lr * u

``get_backend(program, name, device)`` returns one; the names are

* ``"eager"``: the reference interpreter, one tensor at a time (always available);
* ``"foreach"``: generated ``torch._foreach_*`` code over the whole list;
* ``"compile"``: generated per-tensor torch code fused by ``torch.compile`` (inductor);
* ``"triton"``: one generated fused Triton kernel per program, one launch per group
  (CUDA, or CPU tensors when ``TRITON_INTERPRET=1`` is set);
* ``"auto"``: the eager interpreter for rules with matrix states (:mod:`optdisco.dsl.shapes`;
  the other backends refuse them; same-shaped parameters run stacked, as one batched call),
  else ``"triton"`` on a CUDA device when triton is installed, else the CPU fast path
  (``"compile"`` for large groups, ``"foreach"`` for small ones; see :mod:`optdisco.kernels.auto`).

Triton and the compilers are imported only when a backend that needs them is built.

Beyond ``get_backend``'s defaults, :class:`optdisco.kernels.triton_backend.TritonBackend`
takes ``stochastic_rounding=True`` (bf16 parameter writes) and reads 8-bit blockwise states
(:func:`optdisco.kernels.quant8.zeros_like` makes one, ~3.9x smaller than float32) given in
place of float32 state tensors; the eager backend reads them too. Generated sources are
written to ``$OPTDISCO_CACHE_DIR`` (default ``~/.cache/optdisco/kernels``).
"""

from __future__ import annotations

import hashlib
import threading
from typing import Protocol

import torch

from ..dsl import Program
from .errors import BackendUnavailable

BACKENDS = ("auto", "eager", "foreach", "compile", "triton")

_CACHE: dict[tuple[str, str, str], "Backend"] = {}
_LOCK = threading.Lock()


class Backend(Protocol):
    """What :class:`optdisco.Optimizer` calls: one in-place step over a list of parameters."""

    name: str

    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor],
             states: list[list[torch.Tensor]], *, steps: list[float], lr: float,
             hyperparameters: dict[str, float], generator: torch.Generator | None = None) -> None:
        """In place, for each i: ``(u, new) = rule(params[i], grads[i], states[i]; steps[i], lr,
        hyper)``; ``states[i][k] <- new[k]``; ``params[i] <- params[i] - lr * u``.

        ``states[i]`` is in ``program.state_names`` order. 16-bit parameters have float32
        states: the rule is computed in float32 and the parameter rounded once when written.
        """
        ...


def program_key(program: Program) -> str:
    """A cache key for generated code: the SHA-256 of the rule's source text.

    The source (not the functional fingerprint) is used because generated code depends on
    the hyperparameter and state names, which functionally equal programs may not share.
    """
    return hashlib.sha256(program.source().encode()).hexdigest()[:16]


def get_backend(program: Program, backend: str = "auto",
                device: torch.device | str = "cpu") -> Backend:
    """The backend ``backend`` (one of :data:`BACKENDS`) for running ``program`` on ``device``.

    Raises ValueError for an unknown name and :class:`BackendUnavailable` (with the reason
    and what to use instead) when the backend cannot run there. Backends are cached by
    (program source hash, backend, device).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    device = torch.device(device)
    key = (program_key(program), backend, str(device))
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            return hit
        made = _build(program, backend, device)
        _CACHE[key] = made
        return made


def _build(program: Program, backend: str, device: torch.device) -> Backend:
    if program.has_matrix_states:
        # Rules with matrix states (factors, per-row or per-column states, every()) or group
        # built-ins run on the interpreter: the code generators fuse w-shaped states only.
        if backend not in ("eager", "auto"):
            raise BackendUnavailable(
                f"backend '{backend}' does not run rules with matrix states, factor or group built-ins "
                f"(rule '{program.name}'); use backend='eager' or 'auto' (which runs them eagerly)")
        from .eager import EagerBackend
        return EagerBackend(program, batched=backend == "auto")
    if backend == "eager":
        from .eager import EagerBackend
        return EagerBackend(program)
    if backend == "foreach":
        from .foreach import ForeachBackend
        return ForeachBackend(program)
    if backend == "compile":
        from .compiled import CompiledBackend
        return CompiledBackend(program, device)
    if backend == "triton":
        from .triton_backend import TritonBackend, check_available
        check_available(device)
        return TritonBackend(program, device)
    from .auto import auto_backend
    return auto_backend(program, device)


__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "get_backend", "program_key"]
