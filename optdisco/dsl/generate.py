"""Random valid programs (for the search and for property tests) and random text edits (for fuzzing).

:func:`random_program` builds the IR directly, then prints and re-parses it, so every
program it returns is exactly what ``parse`` gives for its own source: valid by
construction and checked. Over many draws it calls every built-in of the language
(randn and the matrix built-ins only when allowed; the factor built-ins, which need
declared matrix states, only through :func:`random_matrix_program` or ``allow_factor``; the
group built-ins only with ``allow_group``).
"""

from __future__ import annotations

import random
import string
from typing import Sequence

from .builtins import BUILTINS
from .ir import READ_ONLY_NAMES, Assign, Call, Const, Expr, Name, Program, neg
from .parser import parse
from .printer import to_source

STATE_NAMES = ("m", "v", "s", "d", "n", "mom", "acc", "prev")
TEMP_NAMES = ("c", "r", "h", "q", "z", "x", "y", "k", "p", "upd")
#: Hyperparameter names with plausible defaults.
HYPERPARAMETERS = {
    "beta1": (0.9, 0.95, 0.8),
    "beta2": (0.99, 0.999, 0.98),
    "eps": (1e-8, 1e-6, 1e-3),
    "wd": (0.0, 0.01, 0.1),
    "kappa": (0.5, 1.0, 2.0),
    "tau": (0.1, 0.3, 1.0),
}
CONSTANTS = (0.5, 1.0, 2.0, 0.1, 0.9, 0.99, 0.999, 1e-8, 3.0, 0.001, 1.5)
EXPONENTS = (2.0, 0.5, 3.0, -0.5, 1.5, -1.0)

#: Relative frequency of each built-in in expressions (operators are commoner, as in rules).
_WEIGHTS = {"add": 4, "sub": 3, "mul": 4, "div": 2, "pow": 1, "neg": 1}


def _as_random(rng) -> random.Random:
    """Accept ``random.Random`` or a numpy ``Generator`` (the search uses numpy)."""
    if isinstance(rng, random.Random):
        return rng
    if hasattr(rng, "integers"):
        return random.Random(int(rng.integers(0, 2**63 - 1)))
    raise TypeError(f"expected random.Random or numpy.random.Generator, got {type(rng).__name__}")


class _Builder:
    def __init__(self, rng: random.Random, allow_noise: bool, allow_matrix: bool,
                 allow_group: bool = False) -> None:
        self.rng = rng
        self.functions = [
            b.name for b in BUILTINS.values()
            if (allow_noise or b.kind != "noise") and (allow_matrix or b.kind != "matrix")
            and (allow_group or b.kind != "group")
            and b.kind != "factor"]  # factor built-ins need declared factor states: see _FactorBuilder
        self.weights = [_WEIGHTS.get(f, 1) for f in self.functions]

    def constant(self) -> Expr:
        r = self.rng.random()
        if r < 0.7:
            value = self.rng.choice(CONSTANTS)
        else:
            value = round(self.rng.uniform(-3.0, 3.0), self.rng.randint(1, 4))
        return Const(value)

    def terminal(self, names: Sequence[str]) -> Expr:
        if self.rng.random() < 0.25:
            return self.constant()
        return Name(self.rng.choice(names))

    def expr(self, names: Sequence[str], depth: int) -> Expr:
        """A random expression over ``names``, at most ``depth`` calls deep."""
        if depth <= 0 or self.rng.random() < 0.3:
            return self.terminal(names)
        fn = self.rng.choices(self.functions, self.weights)[0]
        if fn == "neg":
            return neg(self.expr(names, depth - 1))
        if fn == "pow":  # mostly a literal exponent, so that most programs stay finite
            exponent = (Const(self.rng.choice(EXPONENTS)) if self.rng.random() < 0.8
                        else self.expr(names, depth - 1))
            return Call("pow", (self.expr(names, depth - 1), exponent))
        if fn == "interp":
            beta = self.terminal(names) if self.rng.random() < 0.5 else Const(self.rng.choice((0.9, 0.99, 0.5)))
            return Call(fn, (self.expr(names, depth - 1), self.expr(names, depth - 1), beta))
        return Call(fn, tuple(self.expr(names, depth - 1) for _ in range(BUILTINS[fn].arity)))


def random_expression(rng: random.Random, names: Sequence[str], depth: int = 3, *,
                      allow_noise: bool = False, allow_matrix: bool = True) -> Expr:
    """A random expression over ``names`` (and literals), at most ``depth`` calls deep."""
    return _Builder(_as_random(rng), allow_noise, allow_matrix).expr(list(names), depth)


def random_program(rng: random.Random, *, max_statements: int = 6, max_states: int = 2,
                   max_hyper: int = 2, allow_noise: bool = False, allow_matrix: bool = True,
                   max_depth: int = 3, name: str = "rule", allow_factor: bool = False,
                   allow_group: bool = False) -> Program:
    """A random valid Program: ``0..max_states`` states (each updated at least once),
    ``0..max_hyper`` hyperparameters, ``1..max_statements`` assignments (at least one per
    state) of expressions at most ``max_depth`` calls deep, and a random update.
    With ``allow_factor`` (off by default), half the programs are
    :func:`random_matrix_program`'s: matrix states and a preconditioned update. With
    ``allow_group`` (off by default) the group built-ins (``group_sum``, ``group_max``) may
    be called like the per-tensor reductions.

    ``rng`` is a ``random.Random`` (or a numpy ``Generator``); the same seed gives the
    same program. The result equals ``parse(result.source())``.
    """
    rng = _as_random(rng)
    if allow_factor and rng.random() < 0.5:
        return random_matrix_program(rng, max_statements=max_statements, max_states=max_states,
                                     max_hyper=max_hyper, allow_noise=allow_noise,
                                     allow_matrix=allow_matrix, max_depth=max_depth, name=name)
    b = _Builder(rng, allow_noise, allow_matrix, allow_group)
    n_states = rng.randint(0, max(0, max_states))
    states = rng.sample(STATE_NAMES, min(n_states, len(STATE_NAMES)))
    hyper_names = rng.sample(sorted(HYPERPARAMETERS), rng.randint(0, min(max_hyper, len(HYPERPARAMETERS))))
    hyper = tuple((h, float(rng.choice(HYPERPARAMETERS[h]))) for h in hyper_names)
    n_statements = max(len(states), rng.randint(1, max(1, max_statements)))

    # every state once, temporaries (new or reassigned) and occasional second state updates
    targets = list(states)
    temps: list[str] = []
    free_temps = [t for t in TEMP_NAMES]
    rng.shuffle(free_temps)
    while len(targets) < n_statements:
        if states and rng.random() < 0.15:
            targets.append(rng.choice(states))
        elif free_temps and (not temps or rng.random() < 0.8):
            temps.append(free_temps.pop())
            targets.append(temps[-1])
        elif temps:
            targets.append(rng.choice(temps))
        else:
            targets.append(rng.choice(states))
    rng.shuffle(targets)

    readable = ["w", "g", *states, *hyper_names, *READ_ONLY_NAMES]
    body = []
    for target in targets:
        # lean towards the gradient and the states, as real rules do
        names = readable + ["g"] * 2 + list(states)
        body.append(Assign(target, b.expr(names, rng.randint(1, max_depth))))
        if target not in readable:
            readable.append(target)
    update = b.expr(readable + [t for t in temps if t in readable] * 2, rng.randint(0, max_depth))
    program = Program(name, tuple(states), hyper, tuple(body), update, None)
    checked = parse(to_source(program))
    if checked != program:  # pragma: no cover - a generator bug, never a user error
        raise AssertionError(f"generated program does not round-trip:\n{to_source(program)}")
    return checked


# -- matrix states (issue 13) ----------------------------------------------------------------

FACTOR_STATE_NAMES = ("L", "R", "QL", "QR", "PL", "PR")
ROW_STATE_NAMES = ("vr", "vc")


def random_matrix_program(rng: random.Random, *, max_statements: int = 6, max_states: int = 2,
                          max_hyper: int = 2, allow_noise: bool = False, allow_matrix: bool = True,
                          max_depth: int = 3, name: str = "rule") -> Program:
    """A random valid Program with matrix states: a :func:`random_program` whose update
    ``d`` is then preconditioned by factors of Gram matrices of a random w-shaped expression
    ``x``, in one of the forms Shampoo and SOAP take:

    * ``L = interp(gram_left(x), L, b)`` (or ``L + gram_left(x)``) and/or the right factor,
      then ``lmul(inv_root(L, p, eps), d)`` and/or ``rmul(d, inv_root(R, p, eps))``, the root
      possibly refreshed every k steps into its own factor state;
    * both factors, eigenbases ``QL = every(k, eigenbasis(L), QL)`` (and QR), and
      ``unrotate(QL, rotate(QL, d, QR) / (sqrt(v) + eps), QR)`` with ``v`` a w-shaped,
      per-row or per-column second moment of the rotated ``x``.
    """
    rng = _as_random(rng)
    base = random_program(rng, max_statements=max_statements, max_states=max_states,
                          max_hyper=max_hyper, allow_noise=allow_noise, allow_matrix=allow_matrix,
                          max_depth=max_depth, name=name)
    b = _Builder(rng, False, False)
    readable = ["w", "g", *base.state_names, *base.hyperparameter_names, *READ_ONLY_NAMES]
    x = b.expr(readable + ["g"] * 3, rng.randint(0, 2))
    d = base.update
    states = list(base.state_names)
    declared: list[tuple[str, str]] = []
    body = list(base.body)

    def factor_update(state: str, gram: str) -> Expr:
        if rng.random() < 0.5:
            return Call("interp", (Call(gram, (x,)), Name(state), Const(rng.choice((0.9, 0.95, 0.99)))))
        return Call("add", (Name(state), Call(gram, (x,))))

    def add_state(state: str, shape: str, expr: Expr) -> None:
        states.append(state)
        declared.append((state, shape))
        body.append(Assign(state, expr))

    sides = rng.choice((("left",), ("right",), ("left", "right")))
    if rng.random() < 0.5:  # Shampoo's form
        eps = Const(rng.choice((1e-6, 1e-4, 1e-2)))
        p = Const(rng.choice((2.0, 4.0)))
        k = Const(float(rng.choice((1, 2, 3))))
        for side in sides:
            fs, ps = ("L", "PL") if side == "left" else ("R", "PR")
            shape = f"{side}_factor"
            add_state(fs, shape, factor_update(fs, f"gram_{side}"))
            root: Expr = Call("inv_root", (Name(fs), p, eps))
            if rng.random() < 0.4:
                add_state(ps, shape, Call("every", (k, root, Name(ps))))
                root = Name(ps)
            d = Call("lmul", (root, d)) if side == "left" else Call("rmul", (d, root))
    else:  # SOAP's form
        eps = Const(rng.choice((1e-8, 1e-6, 1e-3)))
        k = Const(float(rng.choice((1, 2, 5))))
        add_state("L", "left_factor", factor_update("L", "gram_left"))
        add_state("R", "right_factor", factor_update("R", "gram_right"))
        add_state("QL", "left_factor", Call("every", (k, Call("eigenbasis", (Name("L"),)), Name("QL"))))
        add_state("QR", "right_factor", Call("every", (k, Call("eigenbasis", (Name("R"),)), Name("QR"))))
        rotated = Call("square", (Call("rotate", (Name("QL"), x, Name("QR"))),))
        v_shape = rng.choice(("param", "per_row", "per_col"))
        moment = {"param": rotated, "per_row": Call("row_mean", (rotated,)),
                  "per_col": Call("col_mean", (rotated,))}[v_shape]
        v = rng.choice(ROW_STATE_NAMES)
        add_state(v, v_shape, Call("interp", (moment, Name(v), Const(rng.choice((0.9, 0.99))))))
        scaled = Call("div", (Call("rotate", (Name("QL"), d, Name("QR"))),
                              Call("add", (Call("sqrt", (Name(v),)), eps))))
        d = Call("unrotate", (Name("QL"), scaled, Name("QR")))
    program = Program(name, tuple(states), base.hyperparameters, tuple(body), d, None,
                      state_shapes=tuple(declared))
    checked = parse(to_source(program))
    if checked != program:  # pragma: no cover - a generator bug, never a user error
        raise AssertionError(f"generated program does not round-trip:\n{to_source(program)}")
    return checked


# -- text mutations for fuzzing the parser ------------------------------------------------

#: Fragments that exercise the parser's error paths when spliced into rule text.
FRAGMENTS = (
    "for i in range(3):", "if g > 0:", "while True:", "lambda x: x", ":=", "import os",
    "from os import path", "w.data", "g[0]", "'text'", "f'{g}'", "b'x'", "**", "//", "%", "@",
    "(", ")", ",", ":", "=", "+=", "return", "def", "*", "**kwargs", "*args", "yield g",
    "await g", "not g", "g < w", "g and w", "[g]", "{g}", "{1: g}", "1j", "True", "None",
    "1e999", "0x10", "sgn(g)", "sqrt(g, g)", "randn(g)", "norm()", "\t", "\n", "    ", "\\",
    "#", "\"\"\"", "...", "global x", "del g", "try:", "async def", "@decorator", "class C:",
    "print(g)", "exec('1')", "__import__('os')", "step", "lr", "w", "g", "1.0", "-",
)


def mutate_text(text: str, rng: random.Random, edits: int = 1) -> str:
    """``text`` with ``edits`` random edits: delete, duplicate or insert characters, splice a
    fragment from FRAGMENTS, delete or duplicate a line, or swap two lines."""
    rng = _as_random(rng)
    for _ in range(edits):
        kind = rng.randrange(7)
        n = len(text)
        i = rng.randint(0, n)
        if kind == 0 and n:
            j = min(n, i + rng.randint(1, 4))
            text = text[:i] + text[j:]
        elif kind == 1:
            text = text[:i] + rng.choice(string.printable + "αβ∑éß\u200b\x00") + text[i:]
        elif kind == 2:
            text = text[:i] + rng.choice(FRAGMENTS) + text[i:]
        elif kind == 3 and n:
            j = min(n, i + rng.randint(1, 8))
            text = text[:i] + text[i:j] + text[i:]
        else:
            lines = text.split("\n")
            k = rng.randrange(len(lines))
            if kind == 4:
                del lines[k]
            elif kind == 5:
                lines.insert(k, lines[k])
            else:
                m = rng.randrange(len(lines))
                lines[k], lines[m] = lines[m], lines[k]
            text = "\n".join(lines)
    return text
