"""Mutations of update rules that always give a valid Program (or are redrawn).

Each mutation is a function ``(program, rng, space) -> Program`` that may raise
:class:`Redraw` when it does not apply (no constant to perturb, a size limit). The
public :func:`mutate` picks mutations at random, checks every child by printing and
parsing it again (``parse(child.source())``, the language's own validity check) and by
the search space's size limits, and redraws until a child differs from its parent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import numpy as np

from ..dsl import DSLError, parse
from ..dsl.builtins import BUILTINS
from ..dsl.generate import random_program as generate
from ..dsl.ir import READ_ONLY_NAMES, TENSOR_INPUTS, Assign, Call, Const, Expr, Name, Program


class Redraw(Exception):
    """This mutation does not apply to this program; draw another."""


@dataclass(frozen=True)
class Space:
    """The programs the search may build: size limits and the built-ins it uses."""

    max_statements: int = 6
    max_states: int = 2
    #: Probability that a mutation is a macro (optdisco.search.macro); 0 = the atomic-only space.
    macro_weight: float = 0.0
    #: ``(macro name, weight)`` pairs a macro is drawn by.
    macro_weights: tuple[tuple[str, float], ...] = ()
    #: Whether random programs may be matrix-state rules (half of them, in Shampoo's or SOAP's
    #: form: :func:`optdisco.dsl.generate.random_matrix_program`).
    allow_factor: bool = False
    #: Built-ins mutations may introduce, with the weight of each (operators included).
    ops: tuple[tuple[str, float], ...] = (
        ("add", 3.0), ("sub", 2.0), ("mul", 3.0), ("div", 2.0), ("neg", 0.5),
        ("sign", 2.0), ("abs", 1.0), ("sqrt", 1.5), ("rsqrt", 1.0), ("square", 1.5),
        ("tanh", 1.0), ("relu", 0.3), ("exp", 0.3), ("log", 0.3), ("clip", 1.0),
        ("maximum", 1.0), ("minimum", 0.5), ("interp", 3.0), ("gt", 0.3), ("where", 0.3),
        ("norm", 0.5), ("rms", 0.7), ("mean", 0.3), ("orthogonalize", 0.3), ("randn", 0.1),
    )
    #: Constants a "replace constant" draws from (the ones optimizer papers use).
    constants: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 0.9, 0.95, 0.99, 0.999, 0.1, 0.01,
                                    1e-3, 1e-8)

    @classmethod
    def from_config(cls, cfg: dict) -> "Space":
        """The space described by a campaign config's ``[space]`` table."""
        s = cfg["space"]
        return cls(max_statements=s["max_statements"], max_states=s["max_states"],
                   macro_weight=float(s.get("macro_weight", 0.0)),
                   macro_weights=tuple((k, float(v)) for k, v in s.get("macro_weights", {}).items()),
                   allow_factor=bool(s.get("allow_factor", False)))


STATE_NAMES = ("m", "v", "s", "r", "z", "h", "q", "p")


# -- expression sites -------------------------------------------------------------------------
# A site is (where, path): where is a statement index or -1 for the update; path indexes
# into Call.args from the root of that expression.

def _paths(e: Expr, prefix: tuple[int, ...] = ()) -> Iterator[tuple[tuple[int, ...], Expr]]:
    yield prefix, e
    if isinstance(e, Call):
        for i, a in enumerate(e.args):
            yield from _paths(a, prefix + (i,))


def _replace_at(e: Expr, path: tuple[int, ...], new: Expr) -> Expr:
    if not path:
        return new
    assert isinstance(e, Call)
    i = path[0]
    args = list(e.args)
    args[i] = _replace_at(args[i], path[1:], new)
    return Call(e.fn, tuple(args))


def _exprs(p: Program) -> list[tuple[int, Expr]]:
    return [(i, s.expr) for i, s in enumerate(p.body)] + [(-1, p.update)]


def _with_expr(p: Program, where: int, e: Expr) -> Program:
    if where == -1:
        return replace(p, update=e)
    body = list(p.body)
    body[where] = Assign(body[where].target, e)
    return replace(p, body=tuple(body))


def _sites(p: Program, keep: Callable[[Expr], bool]) -> list[tuple[int, tuple[int, ...], Expr]]:
    return [(w, path, node) for w, e in _exprs(p) for path, node in _paths(e) if keep(node)]


def _pick(rng: np.random.Generator, items: list):
    if not items:
        raise Redraw
    return items[int(rng.integers(len(items)))]


# -- names and random expressions ---------------------------------------------------------------

def available(p: Program, position: int) -> list[str]:
    """Names readable before statement ``position`` (``len(body)`` = at the return)."""
    names = list(TENSOR_INPUTS) + list(p.state_names) + list(p.hyperparameter_names) + list(READ_ONLY_NAMES)
    for stmt in p.body[:position]:
        if stmt.target not in names:
            names.append(stmt.target)
    return names


def _leaf(rng: np.random.Generator, names: list[str], space: Space) -> Expr:
    if rng.random() < 0.2:
        return Const(float(_pick(rng, list(space.constants))))
    # gradient, states and temporaries are what rules are made of; step and lr rarely
    weights = np.array([0.15 if n in READ_ONLY_NAMES else 0.6 if n == "w" else 1.0 for n in names])
    return Name(names[int(rng.choice(len(names), p=weights / weights.sum()))])


def random_expr(rng: np.random.Generator, names: list[str], space: Space, depth: int = 2) -> Expr:
    """A random expression over ``names`` using the space's built-ins, at most ``depth`` calls deep."""
    if depth <= 0 or rng.random() < 0.25:
        return _leaf(rng, names, space)
    fns = [f for f, _ in space.ops]
    w = np.array([wt for _, wt in space.ops])
    fn = fns[int(rng.choice(len(fns), p=w / w.sum()))]
    arity = BUILTINS[fn].arity
    args = [random_expr(rng, names, space, depth - 1) for _ in range(arity)]
    if fn == "interp":  # a decay rate in [0, 1], as in every momentum
        args[2] = Const(float(_pick(rng, [0.9, 0.95, 0.99, 0.999, 0.5])))
    if fn == "clip":
        args[1] = Const(float(_pick(rng, [0.1, 0.5, 1.0, 2.0])))
    if arity >= 1 and all(isinstance(a, Const) for a in args):
        args[0] = Name(_pick(rng, [n for n in names if n not in READ_ONLY_NAMES]))
    return Call(fn, tuple(args))


def _fresh(p: Program, stem: str = "t") -> str:
    taken = set(p.input_names) | {s.target for s in p.body} | set(BUILTINS)
    k = 1
    while f"{stem}{k}" in taken:
        k += 1
    return f"{stem}{k}"


def _use_somewhere(p: Program, name: str, after: int, rng: np.random.Generator) -> Program:
    """Make a later expression read ``name``: replace one name leaf after statement ``after``."""
    sites = [(w, path, node) for w, path, node in _sites(p, lambda n: isinstance(n, Name))
             if (w == -1 or w > after) and node.id != name]
    if not sites or rng.random() < 0.15:
        # wrap the update instead: u = op(u, name)
        fn = _pick(rng, ["add", "mul", "interp", "maximum"])
        args = (p.update, Name(name)) if fn != "interp" else (p.update, Name(name), Const(0.5))
        return replace(p, update=Call(fn, args))
    w, path, _ = _pick(rng, sites)
    e = p.update if w == -1 else p.body[w].expr
    return _with_expr(p, w, _replace_at(e, path, Name(name)))


# -- the mutations ------------------------------------------------------------------------------

def insert_statement(p: Program, rng: np.random.Generator, space: Space) -> Program:
    """Insert ``t = expr`` at a random position and make a later expression read ``t``."""
    if len(p.body) >= space.max_statements:
        raise Redraw
    pos = int(rng.integers(len(p.body) + 1))
    target = _fresh(p)
    expr = random_expr(rng, available(p, pos), space, depth=int(rng.integers(1, 3)))
    if isinstance(expr, (Name, Const)):
        raise Redraw
    body = list(p.body)
    body.insert(pos, Assign(target, expr))
    return _use_somewhere(replace(p, body=tuple(body)), target, pos, rng)


def delete_statement(p: Program, rng: np.random.Generator, space: Space) -> Program:
    """Delete a statement; later reads of a name it introduced read one of its arguments instead."""
    if not p.body:
        raise Redraw
    pos = int(rng.integers(len(p.body)))
    stmt = p.body[pos]
    body = list(p.body[:pos]) + list(p.body[pos + 1:])
    q = replace(p, body=tuple(body))
    if stmt.target not in available(q, pos):
        leaves = [n.id for n in stmt.expr.walk() if isinstance(n, Name) and n.id in available(q, pos)]
        substitute = Name(leaves[0] if leaves else "g")
        q = replace_reads(q, stmt.target, substitute, start=pos)
    return q


def replace_reads(p: Program, old: str, new: Expr, start: int = 0) -> Program:
    """``p`` with every read of ``old`` replaced by ``new`` in the statements from index ``start``
    on and in the update; a statement that assigns ``old`` again ends the replacement."""

    def sub(e: Expr) -> Expr:
        if isinstance(e, Name):
            return new if e.id == old else e
        if isinstance(e, Call):
            return Call(e.fn, tuple(sub(a) for a in e.args))
        return e

    body = list(p.body)
    for i in range(start, len(body)):
        body[i] = Assign(body[i].target, sub(body[i].expr))
        if body[i].target == old:  # rebinding: later reads see the new value
            return replace(p, body=tuple(body))
    return replace(p, body=tuple(body), update=sub(p.update))


def change_op(p: Program, rng: np.random.Generator, space: Space) -> Program:
    """Replace one call's function by another of the same arity (``sign`` -> ``tanh``, ``+`` -> ``*``)."""
    allowed = {f for f, _ in space.ops}
    sites = _sites(p, lambda n: isinstance(n, Call) and BUILTINS[n.fn].arity > 0)
    w, path, node = _pick(rng, sites)
    options = [f for f in sorted(allowed) if BUILTINS[f].arity == BUILTINS[node.fn].arity and f != node.fn]
    fn = _pick(rng, options)
    e = p.update if w == -1 else p.body[w].expr
    return _with_expr(p, w, _replace_at(e, path, Call(fn, node.args)))


def change_argument(p: Program, rng: np.random.Generator, space: Space) -> Program:
    """Replace one argument of a call by a random leaf or a small random expression."""
    sites = [(w, path, node) for w, path, node in _sites(p, lambda n: True) if path]
    if not sites:  # a bare name as the only expression: replace the whole of it
        sites = _sites(p, lambda n: True)
    w, path, _ = _pick(rng, sites)
    names = available(p, len(p.body) if w == -1 else w)
    new = random_expr(rng, names, space, depth=int(rng.integers(0, 2)))
    e = p.update if w == -1 else p.body[w].expr
    return _with_expr(p, w, _replace_at(e, path, new))


def _perturbed(rng: np.random.Generator, v: float) -> float:
    if 0.0 < v < 1.0 and v >= 0.5:  # a decay rate: perturb 1 - beta on a log scale
        out = 1.0 - (1.0 - v) * math.exp(rng.normal(0.0, 0.7))
        return float(min(max(out, 0.0), 0.9999))
    if v == 0.0:
        return float(rng.choice([0.1, -0.1, 0.5]))
    return float(v * math.exp(rng.normal(0.0, 0.7)))


def _round(v: float) -> float:
    return float(f"{v:.4g}")


def perturb_constant(p: Program, rng: np.random.Generator, space: Space) -> Program:
    """Multiply a literal or a hyperparameter default by a random factor (decay rates in 1-beta)."""
    sites = _sites(p, lambda n: isinstance(n, Const))
    choice = int(rng.integers(len(sites) + len(p.hyperparameters))) if sites or p.hyperparameters else None
    if choice is None:
        raise Redraw
    if choice < len(sites):
        w, path, node = sites[choice]
        e = p.update if w == -1 else p.body[w].expr
        return _with_expr(p, w, _replace_at(e, path, Const(_round(_perturbed(rng, node.value)))))
    name, value = p.hyperparameters[choice - len(sites)]
    return p.with_hyperparameters({name: _round(_perturbed(rng, value))})


def replace_constant(p: Program, rng: np.random.Generator, space: Space) -> Program:
    """Replace a literal or a hyperparameter default by one of the space's usual constants."""
    sites = _sites(p, lambda n: isinstance(n, Const))
    n = len(sites) + len(p.hyperparameters)
    if n == 0:
        raise Redraw
    choice = int(rng.integers(n))
    value = float(_pick(rng, list(space.constants)))
    if choice < len(sites):
        w, path, _ = sites[choice]
        e = p.update if w == -1 else p.body[w].expr
        return _with_expr(p, w, _replace_at(e, path, Const(value)))
    name, _ = p.hyperparameters[choice - len(sites)]
    return p.with_hyperparameters({name: value})


def add_state(p: Program, rng: np.random.Generator, space: Space) -> Program:
    """Add a state ``s = interp(x, s, beta)`` (a moving average of some value) and read it later."""
    if len(p.state_names) >= space.max_states or len(p.body) >= space.max_statements:
        raise Redraw
    taken = set(p.input_names) | {s.target for s in p.body}
    name = next((n for n in STATE_NAMES if n not in taken), None)
    if name is None:
        raise Redraw
    pos = int(rng.integers(len(p.body) + 1))
    names = [n for n in available(p, pos) if n not in READ_ONLY_NAMES and n != "w"]
    source = Name(_pick(rng, names))
    if rng.random() < 0.3:
        source = Call("square", (source,))
    beta = Const(float(_pick(rng, [0.9, 0.95, 0.99, 0.999])))
    body = list(p.body)
    body.insert(pos, Assign(name, Call("interp", (source, Name(name), beta))))
    q = replace(p, state_names=p.state_names + (name,), body=tuple(body))
    return _use_somewhere(q, name, pos, rng)


def remove_state(p: Program, rng: np.random.Generator, space: Space) -> Program:
    """Remove a state: drop its assignments; its reads become the value it was averaging."""
    if not p.state_names:
        raise Redraw
    name = _pick(rng, list(p.state_names))
    assigned = [s.expr for s in p.body if s.target == name]
    leaves = [n.id for e in assigned for n in e.walk() if isinstance(n, Name) and n.id != name]
    body = [s for s in p.body if s.target != name]
    q = replace(p, state_names=tuple(s for s in p.state_names if s != name), body=tuple(body))
    substitute = next((n for n in leaves if n in available(q, 0)), "g")
    return replace_reads(q, name, Name(substitute))


MUTATIONS: dict[str, Callable[[Program, np.random.Generator, Space], Program]] = {
    "insert_statement": insert_statement,
    "delete_statement": delete_statement,
    "change_op": change_op,
    "change_argument": change_argument,
    "perturb_constant": perturb_constant,
    "replace_constant": replace_constant,
    "add_state": add_state,
    "remove_state": remove_state,
}
WEIGHTS = {"insert_statement": 2.0, "delete_statement": 1.5, "change_op": 2.0, "change_argument": 2.0,
           "perturb_constant": 1.5, "replace_constant": 0.7, "add_state": 1.0, "remove_state": 0.5}


def checked(p: Program, space: Space) -> Program:
    """``p`` re-parsed from its source, or :class:`Redraw` if it is invalid or too large."""
    if len(p.body) > space.max_statements or len(p.state_names) > space.max_states:
        raise Redraw
    try:
        q = parse(p.source())
    except DSLError:
        raise Redraw from None
    return q


def apply(name: str, p: Program, rng: np.random.Generator, space: Space, tries: int = 50) -> Program:
    """Mutation ``name`` applied to ``p``: a valid Program different from ``p`` (redrawn up to ``tries``)."""
    for _ in range(tries):
        try:
            child = checked(MUTATIONS[name](p, rng, space), space)
        except Redraw:
            continue
        if child != p:
            return child
    raise Redraw


def mutate(p: Program, rng: np.random.Generator, space: Space, n: int = 1) -> tuple[Program, list[str]]:
    """``p`` after ``n`` random mutations (each valid and effective); returns the child and their names."""
    names = list(WEIGHTS)
    weights = np.array([WEIGHTS[k] for k in names])
    done: list[str] = []
    child = p
    attempts = 0
    while len(done) < n:
        attempts += 1
        if attempts > 200:
            raise RuntimeError(f"no mutation applies to rule '{p.name}'")
        name = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        try:
            child = apply(name, child, rng, space, tries=5)
        except Redraw:
            continue
        done.append(name)
    return replace(child, name=p.name, docstring=None), done


SEED_RULE = "def rule(w, g):\n    return g\n"


def random_program(rng: np.random.Generator, space: Space, name: str = "rule") -> Program:
    """A random valid program of the space: plain SGD grown by random insertions and states.

    Draws with ``optdisco.dsl.generate.random_program`` (with ``space.allow_factor``, half the
    draws are matrix-state rules); after 20 draws outside the space, grows plain SGD instead.
    """
    for _ in range(20):
        try:
            q = checked(generate(rng, max_statements=space.max_statements,
                                 max_states=space.max_states, allow_factor=space.allow_factor), space)
            return replace(q, name=name, docstring=None)
        except (Redraw, TypeError):
            continue
    p = replace(parse(SEED_RULE), name=name)
    growth = ["insert_statement"] * int(rng.integers(1, max(2, space.max_statements // 2 + 1)))
    growth += ["add_state"] * int(rng.integers(0, space.max_states + 1))
    for k in rng.permutation(len(growth)):
        try:
            p = apply(growth[k], p, rng, space, tries=10)
        except Redraw:
            pass
    return p
