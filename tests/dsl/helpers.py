"""Program transformations and instrumentation shared by the dsl property tests."""

from __future__ import annotations

import contextlib
import random
from dataclasses import replace

import numpy as np
import torch

from optdisco.dsl import interpreter
from optdisco.dsl.generate import random_expression
from optdisco.dsl.ir import READ_ONLY_NAMES, Assign, Call, Const, Expr, Name, Program

COMMUTATIVE = ("add", "mul", "maximum", "minimum")


def has_noise(e: Expr) -> bool:
    return any(isinstance(n, Call) and n.fn == "randn" for n in e.walk())


def map_expr(e: Expr, f) -> Expr:
    """Rebuild ``e`` bottom-up, applying ``f`` to every rebuilt node."""
    if isinstance(e, Call):
        e = Call(e.fn, tuple(map_expr(a, f) for a in e.args))
    return f(e)


def map_program(p: Program, f) -> Program:
    body = tuple(Assign(s.target, map_expr(s.expr, f)) for s in p.body)
    return replace(p, body=body, update=map_expr(p.update, f))


def commute(p: Program, rng: random.Random) -> Program:
    """Swap the operands of commutative calls at random (never reordering noise draws)."""
    def f(e):
        if (isinstance(e, Call) and e.fn in COMMUTATIVE and rng.random() < 0.5
                and not any(has_noise(a) for a in e.args)):
            return Call(e.fn, tuple(reversed(e.args)))
        return e
    return map_program(p, f)


def rename(p: Program, suffix: str = "_r") -> Program:
    """Every state, temporary and hyperparameter renamed (and the rule too)."""
    fixed = {"w", "g", *READ_ONLY_NAMES}
    new = {}
    for name in [*p.state_names, *p.hyperparameter_names, *(s.target for s in p.body)]:
        if name not in fixed:
            new[name] = name + suffix

    def f(e):
        return Name(new.get(e.id, e.id)) if isinstance(e, Name) else e
    q = map_program(p, f)
    return replace(q, name=p.name + suffix, state_names=tuple(new[s] for s in p.state_names),
                   hyperparameters=tuple((new[n], v) for n, v in p.hyperparameters),
                   body=tuple(Assign(new[s.target], s.expr) for s in q.body))


def insert_dead(p: Program, rng: random.Random, count: int = 2) -> Program:
    """``count`` statements assigning fresh names that nothing reads, at random places."""
    body = list(p.body)
    for k in range(count):
        at = rng.randint(0, len(body))
        names = ["w", "g", *p.state_names, *p.hyperparameter_names, *READ_ONLY_NAMES,
                 *(s.target for s in body[:at])]
        body.insert(at, Assign(f"dead{k}", random_expression(rng, names, 2, allow_noise=True)))
    return replace(p, body=tuple(body))


def reorder_states(p: Program) -> Program:
    """The states declared in reverse order (the update is unchanged)."""
    return replace(p, state_names=tuple(reversed(p.state_names)))


def constants(p: Program) -> list[float]:
    return [n.value for e in [*(s.expr for s in p.body), p.update] for n in e.walk() if isinstance(n, Const)]


def perturb_constant(p: Program, rng: random.Random) -> Program | None:
    """One literal or hyperparameter default changed by about 1e-3 relative (None if there is none)."""
    sites = len(constants(p)) + len(p.hyperparameters)
    if sites == 0:
        return None
    k = rng.randrange(sites)

    def bump(v: float) -> float:
        return v + max(abs(v), 1.0) * 1e-3

    if k >= len(constants(p)):
        i = k - len(constants(p))
        hp = list(p.hyperparameters)
        hp[i] = (hp[i][0], bump(hp[i][1]))
        return replace(p, hyperparameters=tuple(hp))
    seen = [-1]

    def f(e):
        if isinstance(e, Const):
            seen[0] += 1
            if seen[0] == k:
                return Const(bump(e.value))
        return e
    # map_expr visits constants in the same order as Expr.walk (children left to right)
    return map_program(p, f)


# -- instrumentation: did an evaluation pass near a discontinuity or singularity? ----------

#: Relative and absolute distance to a discontinuity within which float rounding may decide.
NEAR_REL = 1e-9
NEAR_ABS = 1e-9


def _near_zero(x: torch.Tensor, scale: torch.Tensor | None = None) -> bool:
    x = torch.as_tensor(x)
    bound = NEAR_ABS if scale is None else NEAR_REL * scale + 1e-300
    return bool(((x.abs() <= bound) & torch.isfinite(x)).any())


@contextlib.contextmanager
def watch_singularities():
    """Record whether the interpreter evaluated gt/where/sign at a near-tie, or
    sqrt/rsqrt/log/div/pow near their singular point 0 (there float rounding legitimately
    decides the result, so two correct evaluation paths may disagree), or made a nan."""
    flags = {"near": False}
    impl = interpreter.TORCH_IMPL
    saved = dict(impl)

    def wrap(name, check):
        def f(ctx, *args):
            if not flags["near"] and check(*args):
                flags["near"] = True
            return saved[name](ctx, *args)
        impl[name] = f

    wrap("gt", lambda a, b: _near_zero(a - b, a.abs() + b.abs()))
    wrap("where", lambda c, a, b: _near_zero(c))
    wrap("sign", lambda x: _near_zero(x))
    wrap("sqrt", lambda x: _near_zero(x))
    wrap("rsqrt", lambda x: _near_zero(x))
    wrap("log", lambda x: _near_zero(x))
    wrap("div", lambda a, b: _near_zero(b))
    wrap("pow", lambda a, b: _near_zero(a))
    wrap("clip", lambda x, c: _near_zero(c))
    # and whether some operation made nan from non-nan inputs (a domain error such as
    # sqrt(-1)): sympy's algebra is valid where values are defined, so once gt/where/sign
    # mask such a nan the two paths may legitimately differ
    for name in list(impl):
        if name in ("randn",):
            continue
        inner = impl[name]

        def nan_watch(ctx, *args, _inner=inner):
            out = _inner(ctx, *args)
            if not flags["near"] and bool(torch.isnan(out).any()) and not any(
                    bool(torch.isnan(torch.as_tensor(a)).any()) for a in args):
                flags["near"] = True
            return out
        impl[name] = nan_watch
    try:
        yield flags
    finally:
        impl.clear()
        impl.update(saved)


def agree(a: np.ndarray, b: np.ndarray, rtol: float, atol: float = 1e-12) -> np.ndarray:
    """Elementwise: equal within tolerance, or the same nan/inf."""
    both_nan = np.isnan(a) & np.isnan(b)
    same_inf = np.isinf(a) & (a == b)
    return both_nan | same_inf | np.isclose(a, b, rtol=rtol, atol=atol)
