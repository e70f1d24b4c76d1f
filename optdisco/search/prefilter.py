"""Free pre-filters: reasons to reject a candidate before it costs any training.

Each check runs the reference interpreter (float64) on a few fixed probe inputs, so a
verdict depends on the program alone and a resumed campaign reaches the same verdicts.
:func:`screen` returns the first reason that applies, or None for a program worth training:

- ``update is non-finite on probe inputs``: a nan or inf in the first ``PROBE_STEPS`` updates;
- ``update is identically zero``: every probe update is exactly 0;
- ``update does not depend on g``: the updates are the same for two different gradient
  sequences (same w, same noise);
- ``blows up on a probe quadratic``: ``QUADRATIC_STEPS`` steps ``w <- w - lr * u`` at
  ``lr = QUADRATIC_LR`` on f(w) = 1/2 * sum(h * w^2) end with f non-finite or above
  ``BLOWUP_FACTOR`` times its start.

Junk like ``u = g + lr`` or ``u = relu(g)`` passes: it depends on g, is finite and
descends. Such rules are judged by training, as they must be.
"""

from __future__ import annotations

import math

import torch

from ..dsl import DSLError
from ..dsl.interpreter import run, zero_states
from ..dsl.ir import Program

PROBE_STEPS = 4
PROBE_LR = 0.01
QUADRATIC_STEPS = 25
QUADRATIC_LR = 0.01
BLOWUP_FACTOR = 1e3

NON_FINITE = "update is non-finite on probe inputs"
ZERO = "update is identically zero"
NO_GRADIENT = "update does not depend on g"
BLOWS_UP = "blows up on a probe quadratic"
REASONS = (NON_FINITE, ZERO, NO_GRADIENT, BLOWS_UP)


def _probe_gradients(seed: int, shape: tuple[int, ...]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    # per-element scales from 1e-3 to 10, as gradients of real layers have; never exactly 0
    scale = 10.0 ** (torch.rand(shape, generator=gen, dtype=torch.float64) * 4.0 - 3.0)
    return [scale * torch.randn(shape, generator=gen, dtype=torch.float64) + 1e-6 for _ in range(PROBE_STEPS)]


def _probe_updates(p: Program, grads: list[torch.Tensor], w0: torch.Tensor) -> list[torch.Tensor]:
    """Updates along a probe trajectory driven by the fixed gradient sequence ``grads``."""
    noise = torch.Generator().manual_seed(1234)  # the same randn() draws for every gradient sequence
    w = w0
    states = zero_states(p, w0)
    out = []
    for t, g in enumerate(grads, start=1):
        u, states = run(p, w, g, states, step=float(t), lr=PROBE_LR, generator=noise)
        out.append(u)
        w = w - PROBE_LR * u
    return out


def _blows_up(p: Program) -> bool:
    gen = torch.Generator().manual_seed(7)
    h = 0.5 + 1.5 * torch.rand(6, 5, generator=gen, dtype=torch.float64)
    w = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    noise = torch.Generator().manual_seed(1234)
    f0 = float(0.5 * (h * w * w).sum())
    states = zero_states(p, w)
    for t in range(1, QUADRATIC_STEPS + 1):
        u, states = run(p, w, h * w, states, step=float(t), lr=QUADRATIC_LR, generator=noise)
        w = w - QUADRATIC_LR * u
    f = float(0.5 * (h * w * w).sum())
    return not (math.isfinite(f) and f <= BLOWUP_FACTOR * f0)


def screen(p: Program) -> str | None:
    """The reason to reject ``p`` untrained (one of :data:`REASONS`), or None if it passes every check.

    Checks in order: non-finite probe updates, identically zero updates, no dependence on
    g, blow-up on the probe quadratic (see the module docstring for each)."""
    try:
        with torch.no_grad():
            return _screen(p)
    except (DSLError, RuntimeError) as e:  # a shape the interpreter refuses counts as unusable
        return f"{NON_FINITE} ({type(e).__name__}: {str(e).splitlines()[0][:80]})"


def _screen(p: Program) -> str | None:
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    first = _probe_updates(p, _probe_gradients(1, (4, 3)), w0)
    if not all(bool(torch.isfinite(u).all()) for u in first):
        return NON_FINITE
    if all(bool((u == 0).all()) for u in first):
        return ZERO
    second = _probe_updates(p, _probe_gradients(2, (4, 3)), w0)
    if not all(bool(torch.isfinite(u).all()) for u in second):
        return NON_FINITE
    if all(torch.equal(a, b) for a, b in zip(first, second)):
        return NO_GRADIENT
    if _blows_up(p):
        return BLOWS_UP
    return None
