"""The sympy bridge: a Program as mathematics (sympy expressions, LaTeX, numeric evaluation).

Every tensor of a rule is a real symbol and every operation acts elementwise, so the
elementwise algebra of sympy is valid for rules. Built-ins map as follows:

=====================  ==================================================
``sign, abs, sqrt``    ``sign, Abs, sqrt``; ``rsqrt(x) = x**(-1/2)``
``exp, log, tanh``     ``exp, log, tanh``; ``square(x) = x**2``
``floor, cosine``      ``floor, cos``
``relu(x)``            ``Max(x, 0)``
``clip(x, c)``         ``Min(Max(x, -c), c)``
``maximum, minimum``   ``Max, Min``
``interp(a, b, beta)`` ``(1 - beta)*a + beta*b``
``gt(a, b)``           ``Piecewise((1, a > b), (0, True))``
``where(c, a, b)``     ``Piecewise((a, c > 0), (b, True))``
reductions, matrix     opaque functions named like the built-in (``norm(x)``, ...);
                       ``numel(x)`` is ``numel(w)`` whatever ``x`` is (it ignores values)
factor built-ins       opaque functions too (``lmul(F, x)``, ``inv_root(F, p, eps)``, ...);
                       ``every(k, x, prev)`` is ``every(k, step, x, prev)``: it reads the step
group built-ins        opaque too (``group_sum(x)``): the other parameters are not symbols
``randn()``            a fresh real symbol per call site, ``xi_1, xi_2, ...`` in the order
                       the interpreter draws them (statements in order, arguments left
                       to right)
=====================  ==================================================

Literals become exact rationals of their decimal text (``0.9 -> 9/10``) so that algebra
on them is exact. Symbols are real; ``step`` is positive (it starts at 1).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import sympy
from sympy.printing.latex import LatexPrinter
from sympy.printing.numpy import NumPyPrinter

from . import shapes
from .builtins import (BUILTINS, EIGENBASIS_JITTER, NEWTON_SCHULZ_COEFFS, NEWTON_SCHULZ_EPS,
                       NEWTON_SCHULZ_STEPS)
from .ir import Call, Const, Expr, Name, Program

#: Built-ins that stay opaque sympy functions, with the assumptions their values satisfy.
OPAQUE = {
    "norm": {"nonnegative": True},
    "rms": {"nonnegative": True},
    "mean": {"real": True},
    "sum": {"real": True},
    "numel": {"positive": True},
    "orthogonalize": {"real": True},
    "row_mean": {"real": True},
    "col_mean": {"real": True},
    # matrix states (issue 13): products, Gram matrices, roots and bases stay opaque
    "lmul": {"real": True},
    "rmul": {"real": True},
    "gram_left": {"real": True},
    "gram_right": {"real": True},
    "inv_root": {"real": True},
    "eigenbasis": {"real": True},
    "rotate": {"real": True},
    "unrotate": {"real": True},
    "every": {"real": True},
    # group-wide reductions: over every parameter of the group, which sympy does not see
    "group_sum": {"real": True},
    "group_max": {"real": True},
}
FUNCTIONS: dict[str, sympy.FunctionClass] = {n: sympy.Function(n, **a) for n, a in OPAQUE.items()}


@dataclass
class SymbolicRule:
    """A rule as sympy expressions over the inputs.

    ``update`` is u; ``states`` maps each state name to its new value; ``symbols`` maps
    every input name (w, g, states, hyperparameters, step, lr) and every noise symbol to
    its sympy Symbol; ``noise`` lists the noise symbols in draw order. A state's symbol
    stands for its previous value.
    """

    update: sympy.Expr
    states: dict[str, sympy.Expr]
    symbols: dict[str, sympy.Symbol]
    noise: tuple[sympy.Symbol, ...] = field(default=())

    def outputs(self) -> list[sympy.Expr]:
        """``[update, *new_states]`` in declaration order."""
        return [self.update, *self.states.values()]


def _symbol(name: str) -> sympy.Symbol:
    if name == "step":
        return sympy.Symbol(name, positive=True)
    return sympy.Symbol(name, real=True)


def _exact(value: float) -> sympy.Rational:
    """The literal as the exact rational its shortest decimal text denotes."""
    return sympy.Rational(repr(value)) if value != int(value) or abs(value) > 2**53 else sympy.Integer(int(value))


def _readable(value: float) -> sympy.Expr:
    """The literal as sympy prints it most legibly: an integer, else a float."""
    return sympy.Integer(int(value)) if value == int(value) and abs(value) < 2**53 else sympy.Float(value)


def _gt(a, b):
    return sympy.Piecewise((sympy.Integer(1), sympy.StrictGreaterThan(a, b)), (sympy.Integer(0), True))


def _where(c, a, b):
    return sympy.Piecewise((a, sympy.StrictGreaterThan(c, 0)), (b, True))


#: name -> f(*sympy args) for every built-in except randn and numel (handled in the converter).
SYMPY_IMPL: dict[str, Callable[..., sympy.Expr]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a ** b,
    "neg": lambda a: -a,
    "abs": sympy.Abs,
    "sign": sympy.sign,
    "sqrt": sympy.sqrt,
    "rsqrt": lambda x: x ** sympy.Rational(-1, 2),
    "exp": sympy.exp,
    "log": sympy.log,
    "square": lambda x: x ** 2,
    "tanh": sympy.tanh,
    "relu": lambda x: sympy.Max(x, 0),
    "clip": lambda x, c: sympy.Min(sympy.Max(x, -c), c),
    "maximum": sympy.Max,
    "minimum": sympy.Min,
    "interp": lambda a, b, beta: (1 - beta) * a + beta * b,
    "gt": _gt,
    "where": _where,
    "floor": sympy.floor,
    "cosine": sympy.cos,
    **{n: f for n, f in FUNCTIONS.items() if n not in ("numel", "every")},
}
assert set(SYMPY_IMPL) | {"randn", "numel", "every"} == set(BUILTINS), "every built-in needs a sympy mapping"


class _Converter:
    """Walks statements in interpreter order, keeping the current sympy value of every name."""

    def __init__(self, p: Program, constant: Callable[[float], sympy.Expr],
                 symbol: Callable[[str], sympy.Symbol] = _symbol) -> None:
        self.p = p
        self.constant = constant
        self.symbols = {n: symbol(n) for n in p.input_names}
        self.env: dict[str, sympy.Expr] = dict(self.symbols)
        taken = set(p.input_names) | {a.target for a in p.body}
        self.noise_prefix = "xi"
        while any(t.startswith(self.noise_prefix + "_") for t in taken):
            self.noise_prefix += "i"
        self.noise: list[sympy.Symbol] = []

    def expr(self, e: Expr) -> sympy.Expr:
        if isinstance(e, Const):
            return self.constant(e.value)
        if isinstance(e, Name):
            return self.env[e.id]
        assert isinstance(e, Call)
        if e.fn == "randn":
            xi = sympy.Symbol(f"{self.noise_prefix}_{len(self.noise) + 1}", real=True)
            self.noise.append(xi)
            self.symbols[xi.name] = xi
            return xi
        args = [self.expr(a) for a in e.args]  # left to right, as the interpreter draws noise
        if e.fn == "numel":
            return FUNCTIONS["numel"](self.symbols["w"])
        if e.fn == "every":  # its value depends on the step, which is not among its arguments
            return FUNCTIONS["every"](args[0], self.symbols["step"], args[1], args[2])
        return apply(e.fn, args)


#: Opaque stand-ins for built-ins whose sympy form sympy itself cannot always build.
FALLBACK = {n: sympy.Function(n, real=True) for n in ("gt", "where", "maximum", "minimum", "clip", "relu")}


def _ieee(fn: str, args: Sequence[sympy.Expr]) -> sympy.Expr:
    """``fn`` of numbers in float64 as the interpreter computes it (1/0 = oo, sqrt(-1) = nan)."""
    # the float64 check only; torch is slow to import
    import torch

    from .interpreter import TORCH_IMPL  # the interpreter defines the language's numbers

    xs = [torch.tensor(float(a), dtype=torch.float64) for a in args]
    ctx = SimpleNamespace(dtype=torch.float64)  # the only context elementwise built-ins read
    value = float(TORCH_IMPL[fn](ctx, *xs))
    if value != value:
        return sympy.nan
    if math.isinf(value):
        return sympy.oo if value > 0 else -sympy.oo
    return sympy.Float(value)


def _when_sympy_fails(fn: str, args: Sequence[sympy.Expr], numbers: bool, error: Exception) -> sympy.Expr:
    if numbers:
        return _ieee(fn, args)  # compute it as the interpreter does
    if any(a is sympy.nan for a in args):  # sympy refuses comparisons with nan
        if fn == "gt":
            return sympy.Integer(0)  # nan > x and x > nan are false
        if fn == "where":
            return args[2] if args[0] is sympy.nan else sympy.nan
        return sympy.nan  # maximum, minimum, clip, relu propagate nan
    if fn in FALLBACK:
        # sympy cannot always build conditions over opaque functions (an internal KeyError
        # in Piecewise): keep the built-in as an opaque function, evaluated numerically
        return FALLBACK[fn](*args)
    raise error


def apply(fn: str, args: Sequence[sympy.Expr]) -> sympy.Expr:
    """The sympy value of built-in ``fn`` on ``args``, with float64 semantics where sympy's differ.

    Sympy turns some operations on numbers into complex or unsigned infinities (``1/0``,
    ``sqrt(-1)``, ``log(0)``) and refuses comparisons with nan; such cases are computed as
    the interpreter computes them (giving nan or a signed infinity). A symbolic value divided
    by an exact zero is ``oo * sign(a)``.
    """
    elementwise = BUILTINS[fn].kind in ("operator", "elementwise")
    numeric = all(a.is_number for a in args)
    if fn == "div" and not numeric and args[1].is_number and args[1].is_zero:
        return sympy.oo * sympy.sign(args[0])
    try:
        out = SYMPY_IMPL[fn](*args)
    except Exception as error:  # noqa: BLE001 - sympy's own failures, each handled below
        return _when_sympy_fails(fn, args, numeric and elementwise, error)
    if numeric and elementwise and not (out.is_real and out.is_finite):
        return _ieee(fn, args)
    if elementwise and out.has(sympy.zoo, sympy.I):
        # sympy pushed the operation into a Piecewise argument (1/gt(a, b) has a 1/0 piece):
        # redo it piece by piece so that each piece gets float64 semantics
        for i, a in enumerate(args):
            folded = sympy.piecewise_fold(a) if a.has(sympy.Piecewise) else a
            if isinstance(folded, sympy.Piecewise):
                return sympy.Piecewise(*[(apply(fn, [*args[:i], piece, *args[i + 1:]]), cond)
                                         for piece, cond in folded.args])
        # not a Piecewise artefact: an unsigned infinity we cannot place; nan is the honest value
        return out.xreplace({sympy.zoo: sympy.nan})
    return out


def to_sympy(p: Program) -> SymbolicRule:
    """The update and new states of ``p`` as sympy expressions over its inputs.

    u = update(w, g, s_prev, hyper, step, lr, xi); s_new = ...; temporaries are substituted.
    """
    conv = _Converter(p, _exact)
    for stmt in p.body:
        conv.env[stmt.target] = conv.expr(stmt.expr)
    update = conv.expr(p.update)
    states = {s: conv.env[s] for s in p.state_names}
    return SymbolicRule(update, states, conv.symbols, tuple(conv.noise))


# -- simplification ---------------------------------------------------------------------

class Timeout(Exception):
    """A bounded sympy computation ran out of time."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`Timeout` inside the block after ``seconds`` (main thread on Unix only;
    elsewhere the block runs unbounded, so callers also bound expression size).

    An interval timer already running (pytest-timeout's, say) is put back afterwards with
    the time it had left, and keeps priority when it is due first."""
    usable = (seconds > 0 and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return
    outer_delay, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    if outer_delay and outer_delay <= seconds:
        yield  # the outer deadline comes first: let it fire as its owner expects
        return

    def handler(signum, frame):
        raise Timeout()

    start = time.monotonic()
    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if outer_delay:
            left = max(outer_delay - (time.monotonic() - start), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left, outer_interval)


#: Expressions with more operations than this skip full simplification.
MAX_SIMPLIFY_OPS = 120


def simplify_bounded(e: sympy.Expr, seconds: float = 2.0) -> sympy.Expr:
    """The shortest (by ``sympy.count_ops``) of ``e``, ``sympy.simplify(e)`` and
    ``sympy.factor_terms(e)``, each tried within ``seconds``; full simplification is skipped
    for expressions of more than MAX_SIMPLIFY_OPS operations (it can take minutes)."""
    candidates = [e]
    size = sympy.count_ops(e)
    attempts = [lambda: sympy.factor_terms(e)]
    if size <= MAX_SIMPLIFY_OPS:
        attempts.insert(0, lambda: sympy.simplify(e, ratio=1.0))
    for attempt in attempts:
        try:
            with time_limit(seconds):
                candidates.append(attempt())
        except Timeout:
            pass
        except Exception:  # noqa: BLE001 - sympy gives up on some Piecewise/opaque mixes; keep e
            pass
    return min(candidates, key=sympy.count_ops)  # stable: e wins ties


def simplified(p: Program, seconds: float = 2.0) -> SymbolicRule:
    """:func:`to_sympy` with every output simplified (each bounded by ``seconds``)."""
    rule = to_sympy(p)
    return SymbolicRule(simplify_bounded(rule.update, seconds),
                        {s: simplify_bounded(e, seconds) for s, e in rule.states.items()},
                        rule.symbols, rule.noise)


# -- LaTeX ----------------------------------------------------------------------------------

class _LatexPrinter(LatexPrinter):
    """sympy's LaTeX with the opaque built-ins written as mathematicians do."""

    def _print_Function(self, expr, exp=None):
        name = type(expr).__name__
        if name in OPAQUE:
            arg = ", ".join(self._print(a) for a in expr.args)
            if name == "norm":
                out = rf"\left\lVert {arg} \right\rVert"
            elif name == "numel":
                out = r"\operatorname{numel}(w)"
            else:
                escaped = name.replace("_", r"\_")
                out = rf"\operatorname{{{escaped}}}\left({arg}\right)"
            return rf"{out}^{{{exp}}}" if exp else out
        return super()._print_Function(expr, exp)


def _latex_name(name: str) -> str:
    if name.startswith("eps") and (name[3:] == "" or name[3:].isdigit()):  # the usual abbreviation of epsilon
        name = "epsilon" + name[3:]
    return sympy.latex(sympy.Symbol(name))


def _with_time(base: str, t: str) -> str:
    return f"{base}_{{{t}}}" if "_" not in base else f"{{{base}}}_{{{t}}}"


def to_latex(p: Program) -> str:
    r"""The rule as aligned equations, one per statement, ending with ``w_t = w_{t-1} - \eta u_t``.

    Tensors carry a time index (``g_t``, ``m_{t-1}`` for a state's old value, ``m_t`` once
    reassigned, temporaries ``c_t``); ``step`` is ``t``, ``lr`` is ``\eta``; hyperparameters
    keep their names with greek letters typeset (``beta1 -> \beta_{1}``). Returns a bare
    ``aligned`` environment: wrap it in ``\[ ... \]`` or ``$$ ... $$``.
    """
    names: dict[str, str] = {}  # display name of every sympy symbol we create

    def sym(key: str, display: str) -> sympy.Symbol:
        s = sympy.Symbol(key, real=True)
        names[key] = display
        return s

    def current(name: str) -> sympy.Symbol:
        return sym(f"{name}__t", _with_time(_latex_name(name), "t"))

    conv = _Converter(p, _readable, symbol=lambda n: sym(n, _latex_name(n)))
    conv.env["w"] = sym("w__prev", _with_time("w", "t-1"))
    conv.env["g"] = current("g")
    conv.env["step"] = sym("step", "t")
    conv.env["lr"] = sym("lr", r"\eta")
    for s in p.state_names:
        conv.env[s] = sym(f"{s}__prev", _with_time(_latex_name(s), "t-1"))
    conv.symbols["w"] = conv.env["w"]  # numel(x) prints as numel(w) anyway

    printer = _LatexPrinter({"symbol_names": {}})

    def tex(e: sympy.Expr) -> str:
        printer._settings["symbol_names"] = {s: names[s.name] for s in e.free_symbols if s.name in names}
        return printer.doprint(e)

    lines = []
    for stmt in p.body:
        value = conv.expr(stmt.expr)
        lhs = current(stmt.target)
        lines.append(f"{names[lhs.name]} &= {tex(value)}")
        conv.env[stmt.target] = lhs
    update = conv.expr(p.update)
    if isinstance(update, sympy.Symbol) and update.name.endswith("__t"):
        u_tex = names[update.name]
    else:
        assigned = {a.target for a in p.body}
        u_name = next(n for n in ("u", "u'", "u''", "u_{\\mathrm{out}}") if n not in assigned)
        u_tex = _with_time(u_name, "t")
        lines.append(f"{u_tex} &= {tex(update)}")
    lines.append(rf"w_{{t}} &= w_{{t-1}} - \eta {u_tex}")
    return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"


# -- numeric evaluation of the sympy form ------------------------------------------------

class _NumPyPrinter(NumPyPrinter):
    """sympy's numpy printer with logic that broadcasts (its ``logical_and.reduce((a, b))``
    fails when one side is a tensor condition and the other a scalar one)."""

    def _logic(self, fn: str, args) -> str:
        out = self._print(args[-1])
        for a in reversed(args[:-1]):
            out = f"{self._module_format('numpy.' + fn)}({self._print(a)}, {out})"
        return out

    def _print_And(self, expr):
        return self._logic("logical_and", expr.args)

    def _print_Or(self, expr):
        return self._logic("logical_or", expr.args)

    def _print_ITE(self, expr):
        c, a, b = (self._print(x) for x in expr.args)
        return f"{self._module_format('numpy.where')}({c}, {a}, {b})"

    def _print_Piecewise(self, expr):
        # sympy's version runs simplify_logic on each condition, which can crash on
        # conditions over opaque functions; print them as they are
        conds = ", ".join(self._print(arg.cond) for arg in expr.args)
        values = ", ".join(self._print(arg.expr) for arg in expr.args)
        return (f"{self._module_format('numpy.select')}([{conds}], [{values}], "
                f"default={self._module_format('numpy.nan')})")


def _numpy_builtins(shape: tuple[int, ...]) -> dict[str, Callable]:
    """numpy implementations of the opaque built-ins for a parameter of ``shape``,
    matching the interpreter's semantics (reductions over the whole tensor, the matrix view)."""

    def full(x):
        x = np.asarray(x, dtype=np.float64)
        try:
            return np.broadcast_to(x, shape)
        except ValueError:  # a factor (rows x rows or cols x cols): reduced as it is
            return x

    def as_matrix(x):
        x = full(x)
        rows = shape[0] if len(shape) >= 2 else 1
        cols = math.prod(shape) // rows if rows else 0
        return x.reshape(rows, cols)

    def newton_schulz(x):
        a, b, c = NEWTON_SCHULZ_COEFFS
        rows, cols = x.shape
        X = x / (np.linalg.norm(x) + NEWTON_SCHULZ_EPS)
        tall = rows > cols
        if tall:
            X = X.T
        for _ in range(NEWTON_SCHULZ_STEPS):
            A = X @ X.T
            X = a * X + (b * A + c * (A @ A)) @ X
        if tall:
            X = X.T
        return X * math.sqrt(max(1.0, rows / cols))

    return {
        # torch.sign(nan) is 0, and the interpreter defines the language
        "sign": lambda x: np.where(np.isnan(x), 0.0, np.sign(x)),
        # opaque stand-ins (see FALLBACK)
        "gt": lambda a, b: np.greater(a, b).astype(np.float64),
        "where": lambda c, a, b: np.where(np.greater(c, 0), a, b),
        "maximum": np.maximum, "minimum": np.minimum,
        "clip": lambda x, c: np.minimum(np.maximum(x, -c), c),
        "relu": lambda x: np.maximum(x, 0.0),
        "norm": lambda x: np.sqrt(np.sum(full(x) ** 2)),
        "rms": lambda x: np.sqrt(np.mean(full(x) ** 2)),
        "mean": lambda x: np.mean(full(x)),
        "sum": lambda x: np.sum(full(x)),
        "numel": lambda x: float(math.prod(shape)),
        # a group of this one tensor, as run() on one tensor
        "group_sum": lambda x: np.sum(full(x)),
        "group_max": lambda x: np.max(full(x)),
        "orthogonalize": lambda x: newton_schulz(as_matrix(x)).reshape(shape),
        "row_mean": lambda x: np.broadcast_to(as_matrix(x).mean(axis=1, keepdims=True),
                                              as_matrix(x).shape).reshape(shape),
        "col_mean": lambda x: np.broadcast_to(as_matrix(x).mean(axis=0, keepdims=True),
                                              as_matrix(x).shape).reshape(shape),
        **_numpy_factor_builtins(shape, as_matrix),
    }


def _numpy_factor_builtins(shape: tuple[int, ...], as_matrix: Callable) -> dict[str, Callable]:
    """numpy implementations of the matrix-state built-ins (independent of the interpreter's)."""

    def sym_eigh(F):
        F = np.asarray(F, dtype=np.float64)
        if not np.all(np.isfinite(F)):
            return None
        lower = np.tril(F) + np.tril(F, -1).T  # eigh reads the lower triangle
        return np.linalg.eigh(lower)

    def inv_root(F, p, eps):
        got = sym_eigh(F)
        if got is None:
            return np.full(np.shape(F), np.nan)
        lam, V = got
        return (V * (np.maximum(lam, 0.0) + eps) ** (-1.0 / p)) @ V.T

    def eigenbasis(F):
        F = np.asarray(F, dtype=np.float64)
        got = sym_eigh(F + EIGENBASIS_JITTER * np.eye(F.shape[-1]))
        return np.full(F.shape, np.nan) if got is None else got[1][:, ::-1]

    def every(k, step, x, prev):
        due = np.remainder(step - 1.0, max(np.round(k), 1.0)) == 0
        return x if due else prev

    return {
        "lmul": lambda F, x: (np.asarray(F) @ as_matrix(x)).reshape(shape),
        "rmul": lambda x, F: (as_matrix(x) @ np.asarray(F)).reshape(shape),
        "gram_left": lambda x: as_matrix(x) @ as_matrix(x).T,
        "gram_right": lambda x: as_matrix(x).T @ as_matrix(x),
        "inv_root": inv_root,
        "eigenbasis": eigenbasis,
        "rotate": lambda QL, x, QR: (np.asarray(QL).T @ as_matrix(x) @ np.asarray(QR)).reshape(shape),
        "unrotate": lambda QL, x, QR: (np.asarray(QL) @ as_matrix(x) @ np.asarray(QR).T).reshape(shape),
        "every": every,
    }


def _float_range(e: sympy.Expr) -> sympy.Expr:
    """Exact numbers beyond float64's range become signed infinities, as float64 has them."""
    big = {r: sympy.oo * sympy.sign(r) for r in e.atoms(sympy.Rational) if abs(r) > sympy.Float(1.7e308)}
    return e.xreplace(big) if big else e


def _real(o) -> np.ndarray:
    """A float64 array; complex entries (sympy's principal branches) are nan, as in float64."""
    o = np.asarray(o)
    if np.iscomplexobj(o):
        o = np.where(o.imag == 0, o.real, np.nan)
    return o.astype(np.float64)


def evaluate_sympy(p: Program, w, g, states: Sequence, step: float, lr: float,
                   hyper: Mapping[str, float] | None = None,
                   noise: Sequence | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Evaluate the sympy form of ``p`` numerically in float64 numpy: ``(u, new_states)``.

    ``hyper`` overrides defaults; ``noise[k]`` is the value of the k-th ``randn()`` draw (in
    interpreter draw order). Opaque built-ins use numpy implementations of the interpreter's
    semantics, so this is an independent check of the sympy mapping, not of the interpreter.
    """
    rule = to_sympy(p)
    w = np.asarray(w, dtype=np.float64)
    shape = w.shape
    # numpy scalars, not Python floats: 1/0 must be inf (IEEE), not a ZeroDivisionError
    values = {"w": w, "g": np.asarray(g, dtype=np.float64), "step": np.float64(step), "lr": np.float64(lr)}
    values.update({n: np.asarray(s, dtype=np.float64) for n, s in zip(p.state_names, states)})
    values.update({k: np.float64(v) for k, v in p.hyperparameter_defaults.items()})
    if hyper:
        values.update({k: np.float64(v) for k, v in hyper.items()})
    noise = list(noise or [])
    if len(noise) < len(rule.noise):
        raise ValueError(f"rule '{p.name}' draws {len(rule.noise)} noise tensors, got {len(noise)}")
    for xi, value in zip(rule.noise, noise):
        values[xi.name] = np.asarray(value, dtype=np.float64)
    args = list(rule.symbols.values())
    outputs = [_float_range(e) for e in rule.outputs()]
    fn = sympy.lambdify(args, outputs, modules=[_numpy_builtins(shape), "numpy"],
                        printer=_NumPyPrinter({"fully_qualified_modules": False, "inline": True,
                                               "allow_unknown_functions": True}))
    # factor states come back at their factor shape; every other output shaped like w
    rows, cols = shapes.matrix_dims(shape)
    factor = {"left_factor": (rows, rows), "right_factor": (cols, cols)}
    out_shapes = [shape] + [factor.get(p.state_shape(n), shape) for n in p.state_names]
    with np.errstate(all="ignore"):
        out = fn(*[values[s.name] for s in args])
        out = [np.array(np.broadcast_to(_real(o), sh)) for o, sh in zip(out, out_shapes)]
    return out[0], out[1:]
