"""Do two rules compute the same updates? Symbolically where sympy can decide, numerically otherwise.

Two programs are equivalent when, at their hyperparameter defaults, they produce the same
update for every sequence of gradients, parameters, steps and learning rates (states
start at zero and are internal: their names, order and scaling do not matter).

The decision, cheapest first:

1. symbolic, cheap: dead statements removed, states that cannot reach the update
   dropped, the rest matched by position (or any permutation, up to 3 states), noise
   draws matched by order, hyperparameters replaced by their defaults; then the update
   and every new state compared by ``expand(a - b) == 0``. An update difference that is
   a nonzero number: proven different.
2. numeric: both programs run on the same random trajectories (the fingerprint's
   problems and ``trials`` more); an update that differs beyond ``rtol`` is a
   counterexample: proven different, even when step 1 found a proof, since sympy's
   algebra is exact and float64's is not (``sqrt(g)**2`` is ``g`` to sympy, nan for g < 0).
   Otherwise a proof from step 1 stands: proven equal.
3. symbolic, bounded: ``simplify(a - b) == 0`` (and a case analysis of max/min/abs)
   within a time budget: proven equal.
4. otherwise equal on every trial but not proven.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import sympy
import torch

from .fingerprint import STEP_VALUES, STEPS, eliminate_dead_code, single_threaded
from .fingerprint import updates as fingerprint_updates
from .interpreter import run, zero_states
from .ir import Program
from .symbolic import Timeout, _exact, simplify_bounded, time_limit, to_sympy


@dataclass(frozen=True)
class Equivalence:
    """The verdict of :func:`equivalent`; truthy exactly when ``equal``.

    ``method`` is ``"symbolic"`` or ``"numeric"`` (what decided), ``proven`` says whether
    the verdict is a proof (a sympy identity, or a concrete counterexample) or only agreement
    on random trials, and ``detail`` says what was found.
    """

    equal: bool
    method: str
    proven: bool
    detail: str

    def __bool__(self) -> bool:
        return self.equal


# -- symbolic ---------------------------------------------------------------------------

@dataclass
class _Canonical:
    update: sympy.Expr
    states: list[sympy.Expr]        # new values of the relevant states
    old: list[sympy.Symbol]         # their previous-value symbols
    n_noise: int


_STATE = [sympy.Symbol(f"_state{i}", real=True) for i in range(64)]
_NOISE = [sympy.Symbol(f"_noise{i}", real=True) for i in range(512)]


def _canonical(p: Program) -> _Canonical:
    """The sympy form with defaults substituted, noise renamed by draw order, and only the
    states the update depends on (directly or through other states)."""
    rule = to_sympy(p)
    subs = {rule.symbols[h]: _exact(v) for h, v in p.hyperparameters}
    subs.update({xi: _NOISE[k] for k, xi in enumerate(rule.noise)})
    update = rule.update.xreplace(subs)
    new = {s: e.xreplace(subs) for s, e in rule.states.items()}
    old = {s: rule.symbols[s] for s in p.state_names}
    relevant: set[str] = set()
    frontier = [update]
    while frontier:
        free = frontier.pop().free_symbols
        for s, sym in old.items():
            if sym in free and s not in relevant:
                relevant.add(s)
                frontier.append(new[s])
    kept = [s for s in p.state_names if s in relevant]
    return _Canonical(update, [new[s] for s in kept], [old[s] for s in kept], len(rule.noise))


def _zero(d: sympy.Expr, seconds: float, full: bool) -> bool | None:
    """True if ``d`` is identically 0, False if it is a nonzero number, None if unknown.

    Each sympy step runs under its own ``seconds`` budget."""
    if d == 0:
        return True
    try:
        with time_limit(seconds):
            e = sympy.expand(sympy.piecewise_fold(d))
        if e == 0:
            return True
        if full:
            e = simplify_bounded(e, seconds)
            if e == 0:
                return True
            if e.has(sympy.Max, sympy.Min, sympy.Abs, sympy.sign):
                # case analysis decides max/min/abs identities that simplify leaves alone
                with time_limit(seconds):
                    cases = sympy.simplify(sympy.piecewise_fold(e.rewrite(sympy.Piecewise)), ratio=1.0)
                if cases == 0:
                    return True
    except Timeout:
        return None
    except Exception:  # noqa: BLE001 - sympy cannot decide this one; let numbers decide
        return None
    if e.is_number and e.is_zero is False and e.is_finite:
        return False
    return None


def _symbolic(a: _Canonical, b: _Canonical, seconds: float, full: bool) -> tuple[bool | None, str]:
    if len(a.states) != len(b.states) or a.n_noise != b.n_noise:
        return None, "different numbers of relevant states or noise draws: no symbolic matching"
    n = len(a.states)
    perms = itertools.permutations(range(n)) if n <= 3 else [tuple(range(n))]
    for perm in perms:
        # b's state perm[i] plays a's state i
        sub_a = {s: _STATE[i] for i, s in enumerate(a.old)}
        sub_b = {b.old[perm[i]]: _STATE[i] for i in range(n)}
        verdict = _zero(a.update.xreplace(sub_a) - b.update.xreplace(sub_b), seconds, full)
        if verdict is False:  # a constant difference for every input: they differ at step 1
            return False, "sympy shows the updates differ by a nonzero constant"
        if verdict is None:
            continue
        if all(_zero(a.states[i].xreplace(sub_a) - b.states[perm[i]].xreplace(sub_b), seconds, full)
               for i in range(n)):
            order = "" if perm == tuple(range(n)) else f" (states matched in order {list(perm)})"
            return True, f"sympy proves the update and every relevant new state equal{order}"
    return None, "sympy could not decide"


# -- numeric ------------------------------------------------------------------------------

def _trial(seed: int):
    gen = np.random.default_rng(seed)
    shape = [(4, 3), (7,), (3, 5), (2, 2, 3)][seed % 4]
    scale = 10.0 ** gen.uniform(-3, 1, shape)
    w0 = torch.from_numpy(gen.standard_normal(shape) * 10.0 ** gen.uniform(-2, 1, shape))
    grads = [torch.from_numpy(gen.standard_normal(shape) * scale) for _ in range(8)]
    curvature = torch.from_numpy(gen.uniform(0.1, 2.0, shape) * (seed % 2 == 0))
    lr = float(10.0 ** gen.uniform(-3, 0))
    return w0, grads, curvature, lr


def _updates(p: Program, seed: int, steps: int) -> list[torch.Tensor]:
    w, grads, curvature, lr = _trial(seed)
    gen = torch.Generator().manual_seed(seed)
    states = zero_states(p, w)
    out = []
    for t in range(1, steps + 1):
        g = grads[(t - 1) % len(grads)] + curvature * w
        u, states = run(p, w, g, states, step=float(t), lr=lr, generator=gen)
        out.append(u)
        w = w - lr * u
    return out


def _mismatch(u: torch.Tensor, v: torch.Tensor, rtol: float) -> str | None:
    a, b = u.numpy(), v.numpy()
    with np.errstate(invalid="ignore"):
        return _first_bad(a, b, rtol)


def _first_bad(a: np.ndarray, b: np.ndarray, rtol: float) -> str | None:
    same_special = (np.isnan(a) & np.isnan(b)) | (np.isinf(a) & (a == b))
    finite = np.isfinite(a) & np.isfinite(b)
    # relative to each value, with slack relative to the tensor's scale: trajectories make
    # small values by cancellation, where float noise is relative to the terms, not the result
    scale = max(float(np.max(np.abs(a[finite]), initial=0.0)), float(np.max(np.abs(b[finite]), initial=0.0)))
    close = finite & (np.abs(a - b) <= rtol * (np.maximum(np.abs(a), np.abs(b)) + scale) + 1e-300)
    bad = ~(same_special | close)
    if not bad.any():
        return None
    i = np.unravel_index(np.argmax(bad), a.shape)
    return f"at index {tuple(int(k) for k in i)}: {float(a[i])!r} vs {float(b[i])!r}"


def counterexample(a: Program, b: Program, *, trials: int = 8, steps: int = 6,
                   rtol: float = 1e-9) -> str | None:
    """A description of the first update where ``a`` and ``b`` differ beyond ``rtol`` on
    ``trials`` random trajectories of ``steps`` steps (float64, shared noise), else None.

    First the fingerprint's batched problems (see :mod:`optdisco.dsl.fingerprint`), then
    trial k: a parameter of shape (4, 3), (7,), (3, 5) or (2, 2, 3), gradients
    ``g_t = G_t + K * w_t`` (K = 0 for odd k) with per-element scales 1e-3..10, a learning
    rate in 1e-3..1.
    """
    for t, (u_fp, v_fp) in enumerate(zip(fingerprint_updates(a), fingerprint_updates(b))):
        where = _mismatch(torch.from_numpy(u_fp), torch.from_numpy(v_fp), rtol)
        if where is not None:
            return (f"counterexample: fingerprint problem {t // STEPS} (shape {u_fp.shape[1:]}, batch "
                    f"entry first), step {STEP_VALUES[t % STEPS]}, update {where}")
    for seed in range(trials):
        with single_threaded():
            pairs = list(zip(_updates(a, seed, steps), _updates(b, seed, steps)))
        for t, (u, v) in enumerate(pairs, start=1):
            where = _mismatch(u, v, rtol)
            if where is not None:
                return (f"counterexample: trial {seed} (shape {tuple(u.shape)}), step {t}, "
                        f"update {where}")
    return None


def equivalent(a: Program, b: Program, *, seconds: float = 2.0, trials: int = 8, steps: int = 6,
               rtol: float = 1e-9) -> Equivalence:
    """Whether ``a`` and ``b`` compute the same updates at their default hyperparameters.

    Symbolic where sympy can decide (proof of equality, or of a constant difference),
    numeric otherwise: ``trials`` random trajectories of ``steps`` steps in float64 with the
    same noise; a difference beyond ``rtol`` is a counterexample (proven different).
    ``seconds`` bounds each sympy simplification.
    """
    a, b = eliminate_dead_code(a), eliminate_dead_code(b)
    verdict, why = None, "sympy could not decide"
    ca: _Canonical | None
    cb: _Canonical | None
    try:
        ca, cb = _canonical(a), _canonical(b)
    except Exception as e:  # noqa: BLE001 - a sympy failure must not stop a numeric verdict
        ca = cb = None
        why = f"no sympy form ({type(e).__name__})"
    if ca is not None and cb is not None:  # both or neither
        verdict, why = _symbolic(ca, cb, seconds, full=False)
        if verdict is False:
            return Equivalence(False, "symbolic", True, why)
    # numbers run even after a symbolic proof: sympy's algebra holds in exact (complex)
    # arithmetic, so sqrt(g)**2 "is" g, while float64 gives nan for g < 0
    cex = counterexample(a, b, trials=trials, steps=steps, rtol=rtol)
    if cex is not None:
        if verdict:
            cex += ("; sympy proves them equal in exact arithmetic, so the difference is "
                    "floating point (a domain error, overflow or rounding)")
        return Equivalence(False, "numeric", True, cex)
    if verdict:
        return Equivalence(True, "symbolic", True, why)
    if ca is not None and cb is not None:
        verdict, why = _symbolic(ca, cb, seconds, full=True)
        if verdict:
            return Equivalence(True, "symbolic", True, why)
    return Equivalence(True, "numeric", False,
                       f"updates agree to rtol={rtol:g} on {trials} random trajectories of {steps} "
                       f"steps; not proven ({why})")
