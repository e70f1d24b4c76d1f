"""The rule language's built-ins on Python floats, with the interpreter's IEEE semantics.

Generated foreach code computes the numbers shared by a whole group (``1 - beta1 ** step``,
hyperparameters, ``lr``) with these when every tensor of the call has the same step: one
Python float operation each instead of a torch call on a vector of per-tensor values.
Each function gives what the float64 interpreter gives on 0-d tensors (x/0 is +-inf,
sqrt(-1) is nan, overflow is inf); the cases Python's math raises on or rounds
differently from torch are computed by torch in float64.
"""

from __future__ import annotations

import math

import torch

from ..dsl import BUILTINS


def _torch(fn, *args: float) -> float:
    """``fn`` applied by torch to float64 0-d tensors: the interpreter's own edge cases."""
    return float(fn(*[torch.tensor(a, dtype=torch.float64) for a in args]))


def div(a: float, b: float) -> float:
    """a / b (IEEE: x/0 is +-inf, 0/0 is nan)."""
    return a / b if b != 0.0 else _torch(torch.div, a, b)


def pow(a: float, b: float) -> float:  # noqa: A001 - the built-in's name in the rule language
    """a ** b (nan for a negative base and a non-integer exponent, inf on overflow)."""
    try:
        return math.pow(a, b)
    except (ValueError, OverflowError):
        return _torch(torch.pow, a, b)


def sqrt(x: float) -> float:
    """sqrt(x) (nan for x < 0)."""
    return math.sqrt(x) if x >= 0.0 else math.nan


def rsqrt(x: float) -> float:
    """1 / sqrt(x) (inf at 0, nan for x < 0)."""
    return 1.0 / math.sqrt(x) if x > 0.0 else _torch(torch.rsqrt, x)


def exp(x: float) -> float:
    """e^x (inf on overflow)."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def log(x: float) -> float:
    """Natural logarithm (nan for x < 0, -inf at 0)."""
    return math.log(x) if x > 0.0 else _torch(torch.log, x)


def sign(x: float) -> float:
    """-1, 0 or 1 by the sign of x (nan stays nan)."""
    return _torch(torch.sign, x) if x != x else float((x > 0.0) - (x < 0.0))


def nan_aware(fn):
    """``fn`` on numbers, nan when any argument is nan (torch's max/min/clamp propagate nan)."""
    def wrapped(*args: float) -> float:
        return math.nan if any(a != a for a in args) else fn(*args)
    return wrapped


maximum = nan_aware(max)
minimum = nan_aware(min)
relu = nan_aware(lambda x: max(x, 0.0))
clip = nan_aware(lambda x, c: min(max(x, -c), c))


def gt(a: float, b: float) -> float:
    """1.0 where a > b, else 0.0."""
    return 1.0 if a > b else 0.0


def where(c: float, a: float, b: float) -> float:
    """a where c > 0, else b."""
    return a if c > 0.0 else b


def floor(x: float) -> float:
    """The largest integer <= x, as a float (inf and nan stay as they are, as in torch)."""
    return float(math.floor(x)) if math.isfinite(x) else x


def cosine(x: float) -> float:
    """cos(x), x in radians (nan for +-inf and nan, as in torch)."""
    return math.cos(x) if math.isfinite(x) else math.nan


#: How each built-in is written on floats; {0}, {1}, {2} are the argument expressions.
SCALAR_EXPR = {
    "add": "({0} + {1})", "sub": "({0} - {1})", "mul": "({0} * {1})", "div": "S.div({0}, {1})",
    "pow": "S.pow({0}, {1})", "neg": "(-{0})", "abs": "abs({0})", "sign": "S.sign({0})",
    "sqrt": "S.sqrt({0})", "rsqrt": "S.rsqrt({0})", "exp": "S.exp({0})", "log": "S.log({0})",
    "square": "({0} * {0})", "tanh": "math.tanh({0})", "relu": "S.relu({0})",
    "clip": "S.clip({0}, {1})", "maximum": "S.maximum({0}, {1})", "minimum": "S.minimum({0}, {1})",
    "interp": "((1.0 - {2}) * {0} + {2} * {1})", "gt": "S.gt({0}, {1})",
    "where": "S.where({0}, {1}, {2})", "floor": "S.floor({0})", "cosine": "S.cosine({0})",
}
assert set(SCALAR_EXPR) == {b.name for b in BUILTINS.values() if b.kind in ("operator", "elementwise")}, \
    "every elementwise built-in needs a float form"
