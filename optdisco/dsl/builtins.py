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
    """One function of the language: ``kind`` is operator, elementwise, reduction, matrix,
    noise, factor (the matrix-state built-ins) or group (reductions over the param group)."""

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

# -- matrix states and preconditioners (issue 13) -------------------------------------------
# These built-ins read or make values shaped by the parameter's matrix view (rows x cols):
# a left factor is rows x rows, a right factor cols x cols (see STATE_SHAPES and
# optdisco.dsl.shapes for the shape rules the parser checks). A vector of length n is the
# 1 x n matrix (its left factor is 1 x 1, its right factor n x n); a 0-d tensor is 1 x 1; a
# tensor of rank > 2 is d0 x (d1*...*dk). Their kind is "factor": the fused code
# generators do not take rules that use them (those rules run on the eager torch backend).

#: Eigenvalue floor used by eigenbasis(), as in the SOAP reference (eigh of F + 1e-30 I).
EIGENBASIS_JITTER = 1e-30

_FACTOR_TABLE = [
    Builtin("lmul", 2, "factor",
            "lmul(F, x) = F X: the left factor F (rows x rows) times x's matrix view X, "
            "shaped like w"),
    Builtin("rmul", 2, "factor",
            "rmul(x, F) = X F: x's matrix view X times the right factor F (cols x cols), "
            "shaped like w"),
    Builtin("gram_left", 1, "factor",
            "gram_left(x) = X X^T (rows x rows, a left factor) of x's matrix view X"),
    Builtin("gram_right", 1, "factor",
            "gram_right(x) = X^T X (cols x cols, a right factor) of x's matrix view X"),
    Builtin("inv_root", 3, "factor",
            "inv_root(F, p, eps) = V diag((max(l, 0) + eps)^(-1/p)) V^T with F = V diag(l) V^T "
            "(eigh of the symmetric F, from its lower triangle, in float64): (F + eps I)^(-1/p) "
            "for a positive semidefinite F; a factor of F's shape. nan where F is not finite"),
    Builtin("eigenbasis", 1, "factor",
            "eigenbasis(F) = Q, the orthonormal eigenvectors of the symmetric F (eigh of "
            "F + 1e-30 I, lower triangle, in float64) as columns, by descending eigenvalue; "
            "a factor of F's shape. nan where F is not finite"),
    Builtin("rotate", 3, "factor",
            "rotate(QL, x, QR) = QL^T X QR: x's matrix view into the bases of a left and a "
            "right factor, shaped like w"),
    Builtin("unrotate", 3, "factor",
            "unrotate(QL, x, QR) = QL X QR^T: the inverse of rotate for orthonormal QL, QR"),
    Builtin("every", 3, "factor",
            "every(k, x, prev) = x on steps 1, 1 + k, 1 + 2k, ... (k rounded to an integer >= 1), "
            "else prev; only the branch taken is computed. x and prev have one shape"),
]
_TABLE.extend(_FACTOR_TABLE)

# -- group-wide reductions (issue 13: Prodigy, D-Adaptation) ---------------------------------
# A group built-in reduces over every entry of every parameter of the param group at once.
# Rules that call one run in lockstep: statement i runs for every parameter of the group
# before statement i + 1 (optdisco.dsl.interpreter.run_group), so the reduction sees every
# parameter's value of its argument. Their kind is "group"; the fused code generators do not
# take them (those rules run on the eager torch backend, like rules with matrix states).
_GROUP_TABLE = [
    Builtin("group_sum", 1, "group",
            "group_sum(x) = the sum of x over every entry of every parameter in the param group "
            "(a factor's entries for a factor); a scalar shared by the group"),
    Builtin("group_max", 1, "group",
            "group_max(x) = the largest entry of x over every parameter in the param group "
            "(nan if any entry is nan); a scalar shared by the group"),
]
_TABLE.extend(_GROUP_TABLE)

#: The state shapes a rule may declare, as annotations on its state parameters
#: (``def shampoo(w, g, L: left_factor, R: right_factor, *, ...)``); no annotation is "param".
STATE_SHAPES = {
    "param": "shaped like w (the default)",
    "left_factor": "rows x rows of w's matrix view (a left preconditioner or eigenbasis)",
    "right_factor": "cols x cols of w's matrix view",
    "per_row": "one value per row of w's matrix view (stored as d0 x 1 x ... x 1)",
    "per_col": "one value per column of w's matrix view (stored as 1 x d1 x ... x dk)",
    "per_tensor": "one value for the whole tensor (a block of one tensor, as in Adam-mini)",
    "per_group": "one value shared by every parameter of the param group (Prodigy's d); "
                 "assigned only values that are the same for the whole group",
}

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
    """The kind of built-in ``fn`` (operator, elementwise, reduction, matrix, noise, factor
    or group)."""
    return BUILTINS[fn].kind
