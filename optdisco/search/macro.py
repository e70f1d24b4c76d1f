"""Macro mutations: one step of the kind an optimizer designer takes, as one valid Program.

The atomic mutations of :mod:`optdisco.search.mutate` change one node at a time, so a
second-moment normalization is several unrewarded steps away from SGD. Each macro here
makes a whole design move at once (a moving average, an RMS normalization, a bias
correction, ...). Every macro is a function ``(program, rng, space, **choices) -> Program``
that raises :class:`~optdisco.search.mutate.Redraw` when it does not apply; the keyword
choices (a site, the states to correct, the squashing function) are drawn from ``rng``
when not given, so tests can take a path on purpose. New hyperparameters get fresh
names (``beta1``, ``beta2``, ``eps``, ``wd``, ... with a number when taken) and the
usual defaults.

A *site* is ``(where, path)``: ``where`` is a statement index or -1 for the update, and
``path`` indexes into ``Call.args`` from the root of that expression (as in mutate.py).

:data:`MACROS` is the search space as plain data: name -> (function, default weight,
what it does), like :mod:`optdisco.dsl.builtins` is for the language.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from ..dsl.builtins import BUILTINS
from ..dsl.ir import READ_ONLY_NAMES, Assign, Call, Const, Expr, Name, Program
from .mutate import (
    STATE_NAMES,
    WEIGHTS,
    Redraw,
    Space,
    _exprs,
    _paths,
    _pick,
    _replace_at,
    _with_expr,
    apply,
    checked,
    mutate,
    replace_reads,
)

Site = tuple[int, tuple[int, ...]]

BETA1 = 0.9
BETA2 = 0.999
EPS = 1e-8
WEIGHT_DECAY = 0.01
CLIP_AT = 1.0


# -- names -------------------------------------------------------------------------------------

def _taken(p: Program) -> set[str]:
    return set(p.input_names) | {s.target for s in p.body} | set(BUILTINS)


def _fresh_name(p: Program, stem: str) -> str:
    """``stem`` if the program does not use it yet, else ``stem_2``, ``stem_3``, ..."""
    taken = _taken(p)
    if stem not in taken:
        return stem
    k = 2
    while f"{stem}_{k}" in taken:
        k += 1
    return f"{stem}_{k}"


def _fresh_state(p: Program, preferred: str) -> str:
    taken = _taken(p)
    for n in (preferred,) + STATE_NAMES:
        if n not in taken:
            return n
    return _fresh_name(p, preferred)


def _with_hyper(p: Program, name: str, value: float) -> Program:
    return replace(p, hyperparameters=p.hyperparameters + ((name, float(value)),))


def _fresh_hyper(p: Program, stem: str, value: float) -> tuple[Program, Name]:
    name = _fresh_name(p, stem)
    return _with_hyper(p, name, value), Name(name)


# -- sites -------------------------------------------------------------------------------------

def _node_at(p: Program, site: Site) -> Expr:
    where, path = site
    e = p.update if where == -1 else p.body[where].expr
    for i in path:
        assert isinstance(e, Call)
        e = e.args[i]
    return e


def _value_sites(p: Program) -> list[Site]:
    """Sites of tensor-valued subexpressions worth transforming: not literals, not step/lr,
    not hyperparameters, and not a state's own read inside its moving average."""
    hyper = set(p.hyperparameter_names)
    out: list[Site] = []
    for where, e in _exprs(p):
        for path, node in _paths(e):
            if isinstance(node, Const) or (isinstance(node, Name) and (node.id in READ_ONLY_NAMES
                                                                       or node.id in hyper)):
                continue
            if isinstance(node, Call) and BUILTINS[node.fn].kind == "reduction":
                continue
            if where >= 0 and p.body[where].target in p.state_names and node == Name(p.body[where].target):
                continue
            out.append((where, path))
    return out


def value_sites(p: Program) -> list[Site]:
    """Every site a site-taking macro (ema, rms_normalize, squash, orthogonalize,
    interp_gradient) may draw in ``p``, in program order (for callers that enumerate the
    moves instead of drawing one, such as :mod:`optdisco.search.composition`)."""
    return _value_sites(p)


def _site(p: Program, rng: np.random.Generator, site: Site | None) -> Site:
    return site if site is not None else _pick(rng, _value_sites(p))


def _insert(p: Program, pos: int, stmt: Assign) -> Program:
    body = list(p.body)
    body.insert(pos, stmt)
    return replace(p, body=tuple(body))


def _position(p: Program, where: int) -> int:
    """Where a statement computing a value for statement ``where`` goes (just before it)."""
    return len(p.body) if where == -1 else where


def _shift(site: Site, pos: int) -> Site:
    where, path = site
    return (where + 1 if where >= pos else where, path)


def _replace_site(p: Program, site: Site, new: Expr) -> Program:
    where, path = site
    e = p.update if where == -1 else p.body[where].expr
    return _with_expr(p, where, _replace_at(e, path, new))


def _bound_update(p: Program) -> tuple[Program, Name]:
    """The program with its update bound to a name (a temporary added when it is an expression)."""
    if isinstance(p.update, Name):
        return p, p.update
    t = _fresh_name(p, "u")
    p = _insert(p, len(p.body), Assign(t, p.update))
    return replace(p, update=Name(t)), Name(t)


def _needs_room(p: Program, space: Space, statements: int = 0, states: int = 0) -> None:
    if len(p.body) + statements > space.max_statements or len(p.state_names) + states > space.max_states:
        raise Redraw


# -- the macros ----------------------------------------------------------------------------------

def ema(p: Program, rng: np.random.Generator, space: Space, *, site: Site | None = None,
        beta: float = BETA1) -> Program:
    """A moving average of the subexpression x at ``site``: ``m = interp(x, m, beta1)``, read in its place.

    m_t = beta1 * m_{t-1} + (1 - beta1) * x_t (momentum when x is the gradient)."""
    _needs_room(p, space, 1, 1)
    site = _site(p, rng, site)
    x = _node_at(p, site)
    m = _fresh_state(p, "m")
    q, b = _fresh_hyper(p, "beta1", beta)
    pos = _position(q, site[0])
    q = _insert(replace(q, state_names=q.state_names + (m,)), pos, Assign(m, Call("interp", (x, Name(m), b))))
    return _replace_site(q, _shift(site, pos), Name(m))


def rms_normalize(p: Program, rng: np.random.Generator, space: Space, *, site: Site | None = None,
                  beta: float = BETA2, eps: float = EPS) -> Program:
    """The subexpression x divided by the root of a moving average of its square (RMSprop's step).

    v_t = beta2 * v_{t-1} + (1 - beta2) * x_t^2;  x -> x / (sqrt(v_t) + eps)."""
    _needs_room(p, space, 1, 1)
    site = _site(p, rng, site)
    x = _node_at(p, site)
    v = _fresh_state(p, "v")
    q, b = _fresh_hyper(p, "beta2", beta)
    q, e = _fresh_hyper(q, "eps", eps)
    pos = _position(q, site[0])
    q = _insert(replace(q, state_names=q.state_names + (v,)), pos,
                Assign(v, Call("interp", (Call("square", (x,)), Name(v), b))))
    normalized = Call("div", (x, Call("add", (Call("sqrt", (Name(v),)), e))))
    return _replace_site(q, _shift(site, pos), normalized)


def _moving_averages(p: Program) -> dict[str, tuple[int, Expr, Expr]]:
    """state -> (index of its last assignment, averaged value x, decay beta) for states whose last
    assignment is ``s = interp(x, s, beta)``."""
    out = {}
    for s in p.state_names:
        last = max(i for i, a in enumerate(p.body) if a.target == s)
        e = p.body[last].expr
        if isinstance(e, Call) and e.fn == "interp" and e.args[1] == Name(s):
            out[s] = (last, e.args[0], e.args[2])
    return out


def _reads_after(p: Program, name: str, start: int) -> bool:
    exprs = [a.expr for a in p.body[start + 1:]] + [p.update]
    return any(isinstance(n, Name) and n.id == name for e in exprs for n in e.walk())


def bias_correct(p: Program, rng: np.random.Generator, space: Space, *,
                 states: tuple[str, ...] | None = None) -> Program:
    """Adam's bias correction of moving-average states: each read of s after its update becomes
    s / (1 - beta ** step), with beta the state's own decay.

    Corrects one state drawn at random, or every such state with probability 1/2 (the
    correction of all moments is one design decision); ``states`` chooses them."""
    averages = {s: v for s, v in _moving_averages(p).items() if _reads_after(p, s, v[0])}
    if not averages:
        raise Redraw
    if states is None:
        names = sorted(averages)
        states = tuple(names) if rng.random() < 0.5 else (_pick(rng, names),)
    q = p
    for s in states:
        if s not in averages:
            raise Redraw
        last, _, beta = averages[s]
        corrected = Call("div", (Name(s), Call("sub", (Const(1.0), Call("pow", (beta, Name("step")))))))
        q = replace_reads(q, s, corrected, last + 1)
    return q


def nesterov(p: Program, rng: np.random.Generator, space: Space, *, state: str | None = None) -> Program:
    """A Nesterov look-ahead: reads of a moving average m after its update become one more step of it,
    interp(x, m, beta) = beta * m_t + (1 - beta) * x_t (NAdam's form)."""
    averages = {s: v for s, v in _moving_averages(p).items() if _reads_after(p, s, v[0])}
    if not averages:
        raise Redraw
    state = state if state is not None else _pick(rng, sorted(averages))
    last, x, beta = averages[state]
    return replace_reads(p, state, Call("interp", (x, Name(state), beta)), last + 1)


def decoupled_weight_decay(p: Program, rng: np.random.Generator, space: Space, *,
                           wd: float = WEIGHT_DECAY) -> Program:
    """Decoupled weight decay (AdamW): u -> u + wd * w, so the step shrinks w by lr * wd * w."""
    q, d = _fresh_hyper(p, "wd", wd)
    return replace(q, update=Call("add", (q.update, Call("mul", (d, Name("w"))))))


SQUASHES = ("sign", "tanh", "clip")


def squash(p: Program, rng: np.random.Generator, space: Space, *, site: Site | None = None,
           fn: str | None = None, clip_at: float = CLIP_AT) -> Program:
    """sign(x), tanh(x) or clip(x, c) of the subexpression x at ``site`` (c a new hyperparameter)."""
    site = _site(p, rng, site)
    x = _node_at(p, site)
    fn = fn if fn is not None else _pick(rng, list(SQUASHES))
    if isinstance(x, Call) and x.fn == fn:
        raise Redraw
    if fn == "clip":
        p, c = _fresh_hyper(p, "clip_at", clip_at)
        return _replace_site(p, site, Call("clip", (x, c)))
    return _replace_site(p, site, Call(fn, (x,)))


def trust_ratio(p: Program, rng: np.random.Generator, space: Space, *, eps: float = EPS) -> Program:
    """LAMB's layer-wise trust ratio: u -> u * norm(w) / (norm(u) + eps)."""
    _needs_room(p, space, 0 if isinstance(p.update, Name) else 1)
    q, u = _bound_update(p)
    q, e = _fresh_hyper(q, "eps", eps)
    ratio = Call("div", (Call("norm", (Name("w"),)), Call("add", (Call("norm", (u,)), e))))
    return replace(q, update=Call("mul", (u, ratio)))


def cautious(p: Program, rng: np.random.Generator, space: Space, *, eps: float = EPS) -> Program:
    """The cautious mask (Liang et al., 2024): keep the coordinates where the update and the
    gradient agree in sign, rescaled by the share kept: c = gt(u * g, 0); u -> u * c / (mean(c) + eps)."""
    _needs_room(p, space, 1 + (0 if isinstance(p.update, Name) else 1))
    q, u = _bound_update(p)
    c = _fresh_name(q, "mask")
    q = _insert(q, len(q.body), Assign(c, Call("gt", (Call("mul", (u, Name("g"))), Const(0.0)))))
    q, e = _fresh_hyper(q, "eps", eps)
    scaled = Call("div", (Call("mul", (u, Name(c))), Call("add", (Call("mean", (Name(c),)), e))))
    return replace(q, update=scaled)


def orthogonalize(p: Program, rng: np.random.Generator, space: Space, *, site: Site | None = None) -> Program:
    """Muon's step: the matrix expression x at ``site`` replaced by orthogonalize(x)."""
    site = _site(p, rng, site)
    x = _node_at(p, site)
    if isinstance(x, Call) and x.fn == "orthogonalize":
        raise Redraw
    return _replace_site(p, site, Call("orthogonalize", (x,)))


def interp_gradient(p: Program, rng: np.random.Generator, space: Space, *, site: Site | None = None,
                    beta: float = BETA1) -> Program:
    """The subexpression x blended with the gradient (Lion's update direction):
    x -> interp(g, x, beta) = beta * x + (1 - beta) * g."""
    site = _site(p, rng, site)
    x = _node_at(p, site)
    if x == Name("g"):
        raise Redraw
    q, b = _fresh_hyper(p, "beta", beta)
    return _replace_site(q, site, Call("interp", (Name("g"), x, b)))


# -- matrix preconditioners (issue 13); off unless [space] macro_weights names them ----------

SHAMPOO_EPS = 1e-6
BASIS_EVERY = 10.0


def _substitute(e: Expr, names: dict[str, str]) -> Expr:
    if isinstance(e, Name):
        return Name(names.get(e.id, e.id))
    if isinstance(e, Call):
        return Call(e.fn, tuple(_substitute(a, names) for a in e.args))
    return e


def _factor_states(q: Program, x: Expr, sides: tuple[str, ...]) -> tuple[Program, dict[str, str]]:
    """Factor states (moving averages of Gram matrices of ``x``) for ``sides``, updated at the end."""
    q, b = _fresh_hyper(q, "shampoo_beta", BETA2)
    made = {}
    for side in sides:
        f = _fresh_name(q, "L" if side == "left" else "R")
        q = replace(q, state_names=q.state_names + (f,), state_shapes=q.state_shapes + ((f, f"{side}_factor"),))
        q = _insert(q, len(q.body), Assign(f, Call("interp", (Call(f"gram_{side}", (x,)), Name(f), b))))
        made[side] = f
    return q, made


def shampoo_precondition(p: Program, rng: np.random.Generator, space: Space, *, site: Site | None = None,
                         sides: tuple[str, ...] | None = None, eps: float = SHAMPOO_EPS) -> Program:
    """Shampoo's step: the w-shaped value x at ``site`` preconditioned by inverse fourth roots of
    moving averages of the gradient's Gram matrices: x -> lmul(inv_root(L, 4, eps), rmul(x,
    inv_root(R, 4, eps))), with L = interp(gram_left(g), L, shampoo_beta) (and R) updated first."""
    site = _site(p, rng, site)
    sides = sides if sides is not None else _pick(rng, [("left", "right"), ("left",), ("right",)])
    x = _node_at(p, site)
    q, made = _factor_states(p, Name("g"), sides)
    factor_updates = q.body[len(p.body):]
    q = replace(q, body=tuple(factor_updates) + q.body[:len(p.body)])  # the factors include this step's g
    site = (site[0] + len(factor_updates), site[1]) if site[0] >= 0 else site
    q, e = _fresh_hyper(q, "eps", eps)
    out: Expr = x
    if "left" in made:
        out = Call("lmul", (Call("inv_root", (Name(made["left"]), Const(4.0), e)), out))
    if "right" in made:
        out = Call("rmul", (out, Call("inv_root", (Name(made["right"]), Const(4.0), e))))
    return _replace_site(q, site, out)


def eigenbasis(p: Program, rng: np.random.Generator, space: Space, *, every: float = BASIS_EVERY) -> Program:
    """SOAP's step: the whole rule run in the eigenbasis of Shampoo's factors. Every read of g
    and w becomes rotate(QL, g, QR) and rotate(QL, w, QR), the update unrotate(QL, u, QR); the
    factors L, R (moving averages of Gram matrices of g) and their bases QL = every(k,
    eigenbasis(L), QL), QR are updated after the update, so a step uses the basis of the step
    before (zero, so no update, at step 1)."""
    if p.has_matrix_states:
        raise Redraw
    q, made = _factor_states(p, Name("g"), ("left", "right"))
    q, k = _fresh_hyper(q, "basis_every", every)
    bases = {}
    for side, f in made.items():
        qn = _fresh_name(q, "QL" if side == "left" else "QR")
        shape = f"{side}_factor"
        q = replace(q, state_names=q.state_names + (qn,), state_shapes=q.state_shapes + ((qn, shape),))
        q = _insert(q, len(q.body), Assign(qn, Call("every", (k, Call("eigenbasis", (Name(f),)), Name(qn)))))
        bases[side] = Name(qn)
    gr, wr, out = _fresh_name(q, "g_rot"), _fresh_name(q, "w_rot"), _fresh_name(q, "u_out")
    names = {"g": gr, "w": wr}
    original = [Assign(a.target, _substitute(a.expr, names), a.line) for a in q.body[:len(p.body)]]
    rotations = [Assign(gr, Call("rotate", (bases["left"], Name("g"), bases["right"]))),
                 Assign(wr, Call("rotate", (bases["left"], Name("w"), bases["right"])))]
    # rotated back in the basis it was computed in, before the bases are refreshed
    back = Assign(out, Call("unrotate", (bases["left"], _substitute(p.update, names), bases["right"])))
    body = tuple(rotations + original + [back]) + q.body[len(p.body):]
    return replace(q, body=body, update=Name(out))


class Macro(NamedTuple):
    """One macro mutation: its function, its default weight in the space, what it does."""

    fn: Callable[..., Program]
    weight: float
    doc: str


#: The macro search space: name -> (function, default weight, description).
MACROS: dict[str, Macro] = {
    "ema": Macro(ema, 2.0, "moving average m = interp(x, m, beta1) of a subexpression"),
    "rms_normalize": Macro(rms_normalize, 2.0, "x / (sqrt(interp(x^2, v, beta2)) + eps)"),
    "bias_correct": Macro(bias_correct, 1.0, "s / (1 - beta^step) for moving-average states"),
    "nesterov": Macro(nesterov, 1.0, "look-ahead interp(x, m, beta) in place of m"),
    "decoupled_weight_decay": Macro(decoupled_weight_decay, 0.5, "u + wd * w"),
    "squash": Macro(squash, 1.0, "sign(x), tanh(x) or clip(x, c)"),
    "trust_ratio": Macro(trust_ratio, 0.5, "u * norm(w) / (norm(u) + eps)"),
    "cautious": Macro(cautious, 0.5, "u * c / (mean(c) + eps), c = gt(u * g, 0)"),
    "orthogonalize": Macro(orthogonalize, 0.5, "orthogonalize(x) of a matrix expression"),
    "interp_gradient": Macro(interp_gradient, 1.0, "interp(g, x, beta): x blended with the gradient"),
    # matrix preconditioners: not in defaults.toml's macro_weights, so off unless a [space] names them
    "shampoo_precondition": Macro(shampoo_precondition, 0.3,
                                  "lmul(inv_root(L, 4, eps), rmul(x, inv_root(R, 4, eps))) with Gram factors"),
    "eigenbasis": Macro(eigenbasis, 0.3, "the rule run in the eigenbasis of Gram factors (SOAP)"),
}


def apply_macro(name: str, p: Program, rng: np.random.Generator, space: Space, tries: int = 20,
                **choices) -> Program:
    """Macro ``name`` applied to ``p``: a valid Program (``parse(source)`` round trip, within the
    space's limits) that differs from ``p``; redrawn up to ``tries`` times, else :class:`Redraw`."""
    for _ in range(tries):
        try:
            child = checked(MACROS[name].fn(p, rng, space, **choices), space)
        except Redraw:
            continue
        if child != p:
            return child
    raise Redraw


def mutate_in_space(p: Program, rng: np.random.Generator, space: Space, n: int = 1) -> tuple[Program, list[str]]:
    """``p`` after ``n`` mutations, each a macro with probability ``space.macro_weight`` (drawn by
    ``space.macro_weights``), else an atomic one; returns the child and the mutations' names
    (macros as ``macro:<name>``). With ``macro_weight`` 0 this is exactly :func:`mutate.mutate`
    (the same draws), the atomic-only space."""
    weights = {k: w for k, w in space.macro_weights if w > 0}
    if space.macro_weight <= 0 or not weights:
        return mutate(p, rng, space, n)
    macro_names = list(weights)
    macro_p = np.array([weights[k] for k in macro_names])
    macro_p = macro_p / macro_p.sum()
    atomic_names = list(WEIGHTS)
    atomic_p = np.array([WEIGHTS[k] for k in atomic_names])
    atomic_p = atomic_p / atomic_p.sum()
    done: list[str] = []
    child = p
    attempts = 0
    while len(done) < n:
        attempts += 1
        if attempts > 200:
            raise RuntimeError(f"no mutation applies to rule '{p.name}'")
        try:
            if rng.random() < space.macro_weight:
                name = macro_names[int(rng.choice(len(macro_names), p=macro_p))]
                child = apply_macro(name, child, rng, space, tries=5)
                done.append(f"macro:{name}")
            else:
                name = atomic_names[int(rng.choice(len(atomic_names), p=atomic_p))]
                child = apply(name, child, rng, space, tries=5)
                done.append(name)
        except Redraw:
            continue
    return replace(child, name=p.name, docstring=None), done
