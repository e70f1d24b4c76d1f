"""Making a found rule as short as it can be.

Three steps that keep the behaviour (:func:`tidy`): dead code and dead states removed,
constant subexpressions folded, sympy's simplification when the language offers it.
Then one that is checked by evaluation (:func:`shrink`): remove one statement or one
state at a time (its readers read one of its arguments instead) and keep the removal
while the fitness stays within ``tolerance`` of the original's.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Callable, Sequence

import torch

from ..dsl import DSLError, parse
from ..dsl.builtins import BUILTINS
from ..dsl.interpreter import TORCH_IMPL
from ..dsl.ir import Assign, Call, Const, Expr, Name, Program
from .mutate import Redraw, Space, available, checked, replace_reads


def _reads(e: Expr) -> set[str]:
    return {n.id for n in e.walk() if isinstance(n, Name)}


def remove_dead_code(p: Program) -> Program:
    """``p`` without statements whose value never reaches the update, without dead states, and
    without hyperparameters nothing reads.

    A state is live when its previous value is read, directly or through other names, by
    something that reaches the update; the others and their assignments are removed.
    """
    live_states: set[str] = set()
    while True:
        needed = _reads(p.update) | live_states
        keep = []
        for stmt in reversed(p.body):
            if stmt.target in needed:
                keep.append(stmt)
                needed.discard(stmt.target)
                needed |= _reads(stmt.expr)
        grown = live_states | {s for s in p.state_names if s in needed}
        if grown == live_states:
            break
        live_states = grown
    states = tuple(s for s in p.state_names if s in live_states)
    body = tuple(reversed(keep))
    read = _reads(p.update).union(*(_reads(s.expr) for s in body))
    hyper = tuple((n, v) for n, v in p.hyperparameters if n in read)
    return replace(p, state_names=states, hyperparameters=hyper, body=body)


_FOLDABLE = {name for name, b in BUILTINS.items() if b.kind in ("operator", "elementwise")}


def fold_constants(p: Program) -> Program:
    """``p`` with calls on literals computed (``1.0 - 0.9`` -> ``0.1``) and unit operations dropped
    (``x * 1``, ``x + 0``, ``x / 1``, ``x - 0``, ``x ** 1``, ``--x``)."""

    def fold(e: Expr) -> Expr:
        if not isinstance(e, Call):
            return e
        args = tuple(fold(a) for a in e.args)
        if e.fn in _FOLDABLE and args and all(isinstance(a, Const) for a in args):
            vals = [torch.tensor(a.value, dtype=torch.float64) for a in args]
            out = float(TORCH_IMPL[e.fn](None, *vals))
            if out == out and abs(out) != float("inf"):
                return Const(out)
        a0 = args[0] if args else None
        a1 = args[1] if len(args) > 1 else None
        if e.fn == "mul" and a1 == Const(1.0) or e.fn in ("add", "sub") and a1 == Const(0.0):
            return a0
        if e.fn in ("div", "pow") and a1 == Const(1.0):
            return a0
        if e.fn in ("mul", "add") and a0 == (Const(1.0) if e.fn == "mul" else Const(0.0)):
            return a1
        if e.fn == "neg" and isinstance(a0, Call) and a0.fn == "neg":
            return a0.args[0]
        return Call(e.fn, args)

    body = tuple(Assign(s.target, fold(s.expr)) for s in p.body)
    return replace(p, body=body, update=fold(p.update))


class _NotExpressible(Exception):
    pass


def _from_sympy(e, inputs: set[str]) -> Expr:
    """A sympy expression (as :mod:`optdisco.dsl.symbolic` builds them) back in the IR."""
    # slow to import; only this step needs it
    import sympy
    if isinstance(e, sympy.Symbol):
        if e.name not in inputs:
            raise _NotExpressible(e.name)
        return Name(e.name)
    if e.is_Number:
        if not e.is_finite:
            raise _NotExpressible(str(e))
        return Const(float(e))
    if isinstance(e, sympy.Add):
        terms = list(e.args)
        terms.sort(key=lambda t: t.could_extract_minus_sign())  # positive terms first
        acc = None
        for t in terms:
            neg = t.could_extract_minus_sign()
            x = _from_sympy(-t if neg else t, inputs)
            acc = (Call("neg", (x,)) if neg else x) if acc is None else Call("sub" if neg else "add", (acc, x))
        return acc
    if isinstance(e, sympy.Mul):
        coeff, rest = e.as_coeff_Mul()
        if coeff < 0:
            return Call("neg", (_from_sympy(-e, inputs),))
        num, den = [], []
        for f in sympy.Mul.make_args(e):
            if isinstance(f, sympy.Pow) and f.exp.is_Number and f.exp < 0:
                den.append(f.base ** (-f.exp))
            elif isinstance(f, sympy.Rational) and not f.is_Integer and f.p == 1:
                den.append(sympy.Integer(f.q))
            else:
                num.append(f)
        out = None
        for f in num:
            x = _from_sympy(f, inputs)
            out = x if out is None else Call("mul", (out, x))
        out = out if out is not None else Const(1.0)
        for f in den:
            out = Call("div", (out, _from_sympy(f, inputs)))
        return out
    if isinstance(e, sympy.Pow):
        base, ex = _from_sympy(e.base, inputs), e.exp
        if ex == sympy.Rational(1, 2):
            return Call("sqrt", (base,))
        if ex == sympy.Rational(-1, 2):
            return Call("rsqrt", (base,))
        if ex == 2:
            return Call("square", (base,))
        if ex == -1:
            return Call("div", (Const(1.0), base))
        return Call("pow", (base, _from_sympy(ex, inputs)))
    unary = {sympy.Abs: "abs", sympy.sign: "sign", sympy.exp: "exp", sympy.log: "log", sympy.tanh: "tanh",
             sympy.cos: "cosine"}
    for cls, fn in unary.items():
        if isinstance(e, cls):
            return Call(fn, (_from_sympy(e.args[0], inputs),))
    if isinstance(e, (sympy.Max, sympy.Min)):
        fn = "maximum" if isinstance(e, sympy.Max) else "minimum"
        args = [_from_sympy(a, inputs) for a in e.args]
        out = args[0]
        for a in args[1:]:
            out = Call(fn, (out, a))
        return out
    if isinstance(e, sympy.Piecewise) and len(e.args) == 2 and e.args[1].cond == sympy.true:
        (a, cond), (b, _) = e.args
        if isinstance(cond, sympy.StrictGreaterThan):
            x, y = cond.lhs, cond.rhs
        elif isinstance(cond, sympy.StrictLessThan):
            x, y = cond.rhs, cond.lhs
        else:
            raise _NotExpressible(str(cond))
        if a == 1 and b == 0:
            return Call("gt", (_from_sympy(x, inputs), _from_sympy(y, inputs)))
        c = _from_sympy(x if y == 0 else x - y, inputs)
        return Call("where", (c, _from_sympy(a, inputs), _from_sympy(b, inputs)))
    name = type(e).__name__
    if isinstance(e, sympy.Function) and name in BUILTINS and BUILTINS[name].arity == len(e.args):
        return Call(name, tuple(_from_sympy(a, inputs) for a in e.args))
    raise _NotExpressible(name)


def program_from_symbolic(p: Program, rule) -> Program | None:
    """A Program computing ``rule`` (a :class:`~optdisco.dsl.symbolic.SymbolicRule` of ``p``):
    the update first (or the state it equals), then each state's new value, ordered so that
    no state is overwritten before it is read; None when that is not expressible."""
    if rule.noise:
        return None
    inputs = set(p.input_names)
    try:
        update = _from_sympy(rule.update, inputs)
        new = {s: _from_sympy(rule.states[s], inputs) for s in p.state_names}
    except (_NotExpressible, TypeError, ValueError):
        return None
    body: list[Assign] = []
    same = [s for s in p.state_names if rule.states[s] == rule.update]
    final_update: Expr
    if same:
        final_update = Name(same[0])
    else:
        tmp = "u"
        while tmp in inputs:
            tmp += "_"
        body.append(Assign(tmp, update))
        final_update = Name(tmp)
    pending = [s for s in p.state_names if new[s] != Name(s)]
    while pending:
        for s in pending:  # a state may be written once no other pending state reads its old value
            if not any(s in _reads(new[o]) for o in pending if o != s):
                body.append(Assign(s, new[s]))
                pending.remove(s)
                break
        else:
            return None  # states read each other's old values: keep the original form
    q = replace(p, body=tuple(body), update=final_update)
    try:
        return parse(q.source())
    except DSLError:
        return None


def _size(p: Program) -> int:
    update, states = p.outputs()
    return len({id(n) for e in (update, *states) for n in e.walk()}) + len(p.body)


SYMPY_MAX_NODES = 40
SYMPY_SECONDS = 30.0


def sympy_simplified(p: Program) -> Program | None:
    """``p`` rewritten from sympy's simplification of it, when the result computes the same
    updates (equal fingerprints) and is smaller; else None."""
    from ..dsl.symbolic import simplified  # sympy is slow to import; only this step needs it
    # sympy's time limit is a safety net only: a result that depended on the machine's load
    # would make campaigns irreproducible, so large rules are skipped by size instead
    if _size(p) > SYMPY_MAX_NODES:
        return None
    try:
        q = program_from_symbolic(p, simplified(p, seconds=SYMPY_SECONDS))
    except Exception:  # noqa: BLE001 - sympy may give up on a rule; the rule stays as it is
        return None
    if q is None or _size(q) >= _size(p):
        return None
    from .cache import fingerprint
    return q if fingerprint(q) == fingerprint(p) else None


def tidy(p: Program) -> Program:
    """Dead code removed and constants folded (behaviour unchanged), then sympy's form if shorter."""
    q = parse(remove_dead_code(fold_constants(remove_dead_code(p))).source())
    s = sympy_simplified(q)
    return q if s is None else remove_dead_code(s)


def removals(p: Program, space: Space | None = None) -> list[tuple[str, Program]]:
    """Every program one removal shorter than ``p``: each statement bypassed, each state dropped.

    A bypassed ``t = f(a, ...)`` makes later reads of ``t`` read ``a`` (its first tensor
    argument); a dropped state's readers read the value it was averaging.
    """
    space = space or Space(max_statements=10**6, max_states=10**6)
    out: list[tuple[str, Program]] = []
    seen = {p}
    for i, stmt in enumerate(p.body):
        body = p.body[:i] + p.body[i + 1:]
        q = replace(p, body=body)
        if stmt.target not in available(q, i):  # a new name: its readers need a replacement
            names = [n for n in _reads(stmt.expr) if n in available(q, i)]
            ordered = [n.id for n in stmt.expr.walk() if isinstance(n, Name) and n.id in names]
            q = replace_reads(q, stmt.target, Name(ordered[0] if ordered else "g"), start=i)
        if stmt.target in p.state_names and all(s.target != stmt.target for s in body):
            q = replace(q, state_names=tuple(s for s in q.state_names if s != stmt.target))
            q = replace_reads(q, stmt.target, Name("g"))
        try:
            q = remove_dead_code(checked(q, space))
        except (Redraw, DSLError):
            continue
        if q not in seen:
            seen.add(q)
            out.append((f"remove '{stmt.target} = ...' (line {i + 1})", q))
    return out


def shrink(p: Program, fitness: Callable[[Sequence[Program]], list[float]], tolerance: float,
           reference: float | None = None, max_rounds: int = 20) -> tuple[Program, list[str]]:
    """Greedy removal while fitness holds: each round evaluates every one-removal of the
    current rule together and keeps the best that scores >= reference - tolerance
    (reference = the original's fitness). Returns the shortest rule kept and the steps taken."""
    if reference is None:
        (reference,) = fitness([p])
    steps: list[str] = []
    for _ in range(max_rounds):
        options = removals(p)
        if not options:
            break
        scores = fitness([q for _, q in options])
        ok = [(s, -len(q.body), k) for k, ((_, q), s) in enumerate(zip(options, scores))
              if s >= reference - tolerance]
        if not ok:
            break
        _, _, k = max(ok)
        steps.append(options[k][0])
        p = options[k][1]
    return p, steps


def simplify_winners(campaign) -> list[int]:
    """Simplify the campaign's best ``simplify.top_k`` rules; stores each simplified rule
    (arm 'simplify', parent = the winner) and returns their ids."""
    cfg = campaign.cfg["simplify"]
    if not cfg["enabled"] or cfg["top_k"] == 0:
        return []
    settings = campaign.settings
    out = []
    for row in campaign.top(cfg["top_k"]):
        original = campaign.parse_row(row)
        tidied = tidy(original)

        def fitness(programs: Sequence[Program], parent=row.id) -> list[float]:
            res = campaign.evaluate(programs, "simplify", settings, parents=[parent] * len(programs),
                                    mutation="simplify", arm="simplify")
            return [f for _, f, _ in res]

        small, steps = shrink(tidied, fitness, cfg["tolerance"], reference=row.fitness)
        small = replace(small, name=f"found_{row.id}", docstring=None)
        (res,) = campaign.evaluate([small], "simplify", settings, parents=[row.id],
                                   mutation="simplified: " + ("; ".join(["tidy", *steps])), arm="simplify")
        out.append(res[0])
        with campaign.store.transaction():
            campaign.store.set_meta(f"simplified:{row.id}", json.dumps(
                {"id": res[0], "source": small.source(), "fitness": res[1], "steps": ["tidy", *steps]}))
    return out
