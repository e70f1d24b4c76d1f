"""The functions a rule may call: names, arities, kinds and their documented semantics.

This table is the single list of what the language offers. Each execution path (the
interpreter, the sympy bridge, the code generators) maps every name here to its own
implementation, and tests check that none is missing.

Shapes. Every tensor in a rule is shaped like the parameter ``w``; scalars (literals,
hyperparameters, ``step``, ``lr`` and reductions) broadcast against it.

Matrix view. Matrix built-ins see a parameter of shape ``(d0, d1, ..., dk)`` as the
``d0 x (d1*...*dk)`` matrix (a conv kernel becomes out_channels x fan_in). A vector of
length ``n`` (and a 0-d tensor, as ``n = 1``) is seen as the ``1 x n`` matrix; the
per-built-in entries below say what that gives.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The Newton-Schulz quintic coefficients of Muon (Jordan et al., 2024).
NEWTON_SCHULZ_COEFFS = (3.4445, -4.7750, 2.0315)
NEWTON_SCHULZ_STEPS = 5
NEWTON_SCHULZ_EPS = 1e-7


@dataclass(frozen=True)
class Builtin:
    """One function of the language: ``kind`` is operator, elementwise, reduction, matrix or noise."""

    name: str
    arity: int
    kind: str
    doc: str


_TABLE = [
    # operators (written infix in rule text)
    Builtin("add", 2, "operator", "a + b"),
    Builtin("sub", 2, "operator", "a - b"),
    Builtin("mul", 2, "operator", "a * b"),
    Builtin("div", 2, "operator", "a / b (IEEE: x/0 is +-inf, 0/0 is nan)"),
    Builtin("pow", 2, "operator", "a ** b (nan for a negative base and a non-integer exponent)"),
    Builtin("neg", 1, "operator", "-a"),
    # elementwise
    Builtin("abs", 1, "elementwise", "|x|"),
    Builtin("sign", 1, "elementwise", "-1, 0 or 1 by the sign of x (sign(0) = 0)"),
    Builtin("sqrt", 1, "elementwise", "sqrt(x) (nan for x < 0)"),
    Builtin("rsqrt", 1, "elementwise", "1 / sqrt(x)"),
    Builtin("exp", 1, "elementwise", "e^x"),
    Builtin("log", 1, "elementwise", "natural logarithm (nan for x < 0, -inf at 0)"),
    Builtin("square", 1, "elementwise", "x^2"),
    Builtin("tanh", 1, "elementwise", "tanh(x)"),
    Builtin("relu", 1, "elementwise", "max(x, 0)"),
    Builtin("clip", 2, "elementwise", "clip(x, c) = min(max(x, -c), c): x clamped to [-c, c]"),
    Builtin("maximum", 2, "elementwise", "elementwise max(a, b)"),
    Builtin("minimum", 2, "elementwise", "elementwise min(a, b)"),
    Builtin("interp", 3, "elementwise", "interp(a, b, beta) = (1 - beta) * a + beta * b"),
    Builtin("gt", 2, "elementwise", "gt(a, b) = 1.0 where a > b, else 0.0"),
    Builtin("where", 3, "elementwise",
            "where(c, a, b) = a where c > 0, else b; the branch not taken never leaks nan/inf"),
    # -- step schedules (SPAM's periodic reset and cosine ramp) --
    Builtin("floor", 1, "elementwise",
            "the largest integer <= x (floor(-0.5) = -1); step - k * floor(step / k) is step mod k"),
    Builtin("cosine", 1, "elementwise", "cos(x), x in radians"),
    # reductions: a scalar per parameter tensor
    Builtin("norm", 1, "reduction", "L2 norm over the whole tensor: sqrt(sum(x^2))"),
    Builtin("rms", 1, "reduction", "root mean square over the whole tensor: sqrt(mean(x^2))"),
    Builtin("mean", 1, "reduction", "mean over the whole tensor"),
    Builtin("sum", 1, "reduction", "sum over the whole tensor"),
    Builtin("numel", 1, "reduction", "number of elements of the parameter (x's values are ignored)"),
    # matrix built-ins
    Builtin("orthogonalize", 1, "matrix",
            "Muon's orthogonalization: X = x/(||x||_F + 1e-7), transposed when rows > cols, then 5 "
            "Newton-Schulz steps X <- aX + (bA + cA^2)X with A = XX^T and (a, b, c) = "
            "(3.4445, -4.7750, 2.0315), transposed back and scaled by sqrt(max(1, rows/cols)). "
            "A vector is the 1 x n matrix: the result is x/||x|| times the quintic iterated from 1"),
    Builtin("row_mean", 1, "matrix",
            "mean of each row of the matrix view, broadcast along the row; for a vector: mean(x)"),
    Builtin("col_mean", 1, "matrix",
            "mean of each column of the matrix view, broadcast down the column; for a vector: x"),
    # noise
    Builtin("randn", 0, "noise", "fresh standard normal noise shaped like w, one draw per call"),
]

BUILTINS: dict[str, Builtin] = {b.name: b for b in _TABLE}

#: Operators and the Python syntax that writes them.
INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}

#: Names a user may call in rule text (operators are written infix, not called).
CALLABLE = {name: b for name, b in BUILTINS.items() if b.kind != "operator"}

#: Common names from other libraries, mapped to advice.
ALIASES = {
    "max": "maximum(a, b) for elementwise max",
    "min": "minimum(a, b) for elementwise min",
    "clamp": "clip(x, c)",
    "pow": "the ** operator",
    "lerp": "interp(a, b, beta)",
    "greater": "gt(a, b)",
    "fabs": "abs(x)",
    "normal": "randn()",
    "newton_schulz": "orthogonalize(x)",
    "zeropower_via_newtonschulz5": "orthogonalize(x)",
}


def kind_of(fn: str) -> str:
    """The kind of built-in ``fn`` (operator, elementwise, reduction, matrix or noise)."""
    return BUILTINS[fn].kind
