"""The immutable intermediate representation of an update rule.

A :class:`Program` is a straight-line list of assignments whose right-hand sides are
expression trees over three node kinds: :class:`Const`, :class:`Name` and :class:`Call`
(operators are calls too: ``a + b`` is ``Call("add", (a, b))``). Statement order and the
names the author chose are kept so that printing gives back readable text;
:meth:`Program.outputs` resolves the names into an expression DAG over the inputs alone,
which is what the sympy bridge, the fingerprint and the code generators consume.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Iterator, Mapping

from .builtins import BUILTINS
from .errors import DSLError

#: Names every rule may read besides its own parameters.
READ_ONLY_NAMES = ("step", "lr")
#: The two leading positional parameters, in order.
TENSOR_INPUTS = ("w", "g")


class Expr:
    """Base of the expression nodes. Nodes are immutable, hashable and compare by structure."""

    __slots__ = ("_hash",)
    _hash: int  # set once in each subclass's __init__ (the nodes are frozen)

    def children(self) -> tuple["Expr", ...]:
        return ()

    def walk(self) -> Iterator["Expr"]:
        """Every node of the tree, parents before children (shared nodes repeat)."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children()))

    def __hash__(self) -> int:
        return self._hash

    def __setattr__(self, key, value):
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, key):
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self):
        return (type(self), self._args())

    def _args(self) -> tuple:  # pragma: no cover - overridden
        raise NotImplementedError


class Const(Expr):
    """A float literal."""

    __slots__ = ("value",)
    value: float  # declared for the type checker: set once through object.__setattr__ (frozen)

    def __init__(self, value: float) -> None:
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise DSLError(f"constant {value!r} is not a finite number")
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "_hash", hash(("Const", value)))

    def _args(self):
        return (self.value,)

    def __eq__(self, other) -> bool:
        return isinstance(other, Const) and other.value == self.value

    __hash__ = Expr.__hash__

    def __repr__(self) -> str:
        return f"Const({self.value!r})"


class Name(Expr):
    """A reference to an input (w, g, a state, a hyperparameter, step, lr) or a temporary."""

    __slots__ = ("id",)
    id: str

    def __init__(self, id: str) -> None:
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "_hash", hash(("Name", id)))

    def _args(self):
        return (self.id,)

    def __eq__(self, other) -> bool:
        return isinstance(other, Name) and other.id == self.id

    __hash__ = Expr.__hash__

    def __repr__(self) -> str:
        return f"Name({self.id!r})"


class Call(Expr):
    """An operator or built-in applied to arguments (see :mod:`optdisco.dsl.builtins`)."""

    __slots__ = ("fn", "args")
    fn: str
    args: tuple[Expr, ...]

    def __init__(self, fn: str, args: tuple[Expr, ...]) -> None:
        args = tuple(args)
        object.__setattr__(self, "fn", fn)
        object.__setattr__(self, "args", args)
        object.__setattr__(self, "_hash", hash(("Call", fn, args)))

    def _args(self):
        return (self.fn, self.args)

    def children(self) -> tuple[Expr, ...]:
        return self.args

    def __eq__(self, other) -> bool:
        if self is other:
            return True
        return (isinstance(other, Call) and other._hash == self._hash and other.fn == self.fn
                and other.args == self.args)

    __hash__ = Expr.__hash__

    def __repr__(self) -> str:
        return f"Call({self.fn!r}, {self.args!r})"


def neg(x: Expr) -> Expr:
    """``-x``, folded into the literal when ``x`` is one (so ``-2.0`` is ``Const(-2.0)``)."""
    if isinstance(x, Const):
        return Const(-x.value)
    return Call("neg", (x,))


@dataclass(frozen=True)
class Assign:
    """One statement ``target = expr``."""

    target: str
    expr: Expr
    line: int | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Program:
    """An update rule: ``u, *new_states = f(w, g, *states; hyperparameters, step, lr)``.

    Fields mirror the rule text: ``name`` (the function name), ``state_names`` (the
    positional parameters after ``w, g``), ``hyperparameters`` (``(name, default)``
    pairs in order), ``docstring``, ``body`` (the assignments) and ``update`` (the first
    returned expression). The states' new values are the last values assigned to their
    names. Equality is structural; use :meth:`fingerprint` or
    :func:`optdisco.dsl.equivalent` for equality of behaviour.
    """

    name: str
    state_names: tuple[str, ...]
    hyperparameters: tuple[tuple[str, float], ...]
    body: tuple[Assign, ...]
    update: Expr
    docstring: str | None = None
    #: Catalog facts (paper, year, origin, provenance, ...); not part of equality.
    metadata: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)
    #: ``(state, declared shape)`` for the states not shaped like w (see
    #: :data:`optdisco.dsl.builtins.STATE_SHAPES`), in state order; others are "param".
    state_shapes: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        # keep only declared states that exist, in state order, so that programs edited with
        # dataclasses.replace (a state added or removed) stay consistent and compare equal
        declared = dict(self.state_shapes)
        kept = tuple((s, declared[s]) for s in self.state_names
                     if s in declared and declared[s] != "param")
        if kept != self.state_shapes:
            object.__setattr__(self, "state_shapes", kept)

    # -- views ---------------------------------------------------------------
    @property
    def meta(self) -> dict[str, str]:
        """Catalog metadata as a dict (empty for programs not from the catalog)."""
        return dict(self.metadata)

    def with_metadata(self, **facts: str) -> "Program":
        """A copy with metadata entries added or replaced."""
        merged = {**self.meta, **facts}
        return replace(self, metadata=tuple(merged.items()))

    def state_shape(self, name: str) -> str:
        """The declared shape of state ``name``: "param" unless annotated (e.g. "left_factor")."""
        return dict(self.state_shapes).get(name, "param")

    @cached_property
    def has_matrix_states(self) -> bool:
        """Whether the rule declares a state not shaped like w or calls a matrix-state or group
        built-in: such rules run on the shaped interpreter path, never on a fused backend."""
        return bool(self.state_shapes) or any(
            isinstance(n, Call) and n.fn in BUILTINS and BUILTINS[n.fn].kind in ("factor", "group")
            for e in [a.expr for a in self.body] + [self.update] for n in e.walk())

    @cached_property
    def has_group_reductions(self) -> bool:
        """Whether the rule declares a ``per_group`` state or calls a group built-in
        (``group_sum``, ``group_max``): it runs in lockstep over a whole param group."""
        return any(d == "per_group" for _, d in self.state_shapes) or any(
            isinstance(n, Call) and n.fn in BUILTINS and BUILTINS[n.fn].kind == "group"
            for e in [a.expr for a in self.body] + [self.update] for n in e.walk())

    @property
    def hyperparameter_defaults(self) -> dict[str, float]:
        """``{name: default}`` in declaration order."""
        return dict(self.hyperparameters)

    @property
    def hyperparameter_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.hyperparameters)

    @property
    def input_names(self) -> tuple[str, ...]:
        """Every name a rule may read before assigning: w, g, states, hyperparameters, step, lr."""
        return TENSOR_INPUTS + self.state_names + self.hyperparameter_names + READ_ONLY_NAMES

    @property
    def returns(self) -> tuple[Expr, ...]:
        """The returned expressions: the update, then each state's name."""
        return (self.update,) + tuple(Name(s) for s in self.state_names)

    def uses(self, fn: str) -> bool:
        """Whether any statement or the update calls ``fn``."""
        return any(isinstance(n, Call) and n.fn == fn
                   for e in [a.expr for a in self.body] + [self.update] for n in e.walk())

    def outputs(self) -> tuple[Expr, tuple[Expr, ...]]:
        """The update and new states as expressions over the inputs alone (an expression DAG).

        Temporaries are substituted away; identical subexpressions are shared objects, so
        walking the result with a memo visits each distinct node once.
        """
        env: dict[str, Expr] = {}
        memo: dict[Expr, Expr] = {}

        def resolve(e: Expr) -> Expr:
            hit = memo.get(e)
            if hit is not None:
                return hit
            if isinstance(e, Name):
                out = env.get(e.id, e)
            elif isinstance(e, Call):
                out = Call(e.fn, tuple(resolve(a) for a in e.args))
            else:
                out = e
            memo[e] = out
            return out

        for stmt in self.body:
            value = resolve(stmt.expr)
            env[stmt.target] = value
            memo = {}  # names may have been rebound
        update = resolve(self.update)
        states = tuple(env.get(s, Name(s)) for s in self.state_names)
        return update, states

    # -- conveniences implemented in sibling modules (imported lazily to keep ir small) --
    def source(self) -> str:
        """The rule as text; ``parse(p.source()) == p``."""
        from .printer import to_source
        return to_source(self)

    def sympy(self):
        """The update and the new states as sympy expressions (see :mod:`optdisco.dsl.symbolic`)."""
        from .symbolic import to_sympy
        return to_sympy(self)

    def latex(self) -> str:
        """The rule as aligned LaTeX equations, one per statement, ending with the weight update."""
        from .symbolic import to_latex
        return to_latex(self)

    def fingerprint(self) -> str:
        """A functional hash: equal for programs that compute the same updates."""
        from .fingerprint import fingerprint
        return fingerprint(self)

    def with_hyperparameters(self, values: Mapping[str, float]) -> "Program":
        """A copy with some hyperparameter defaults replaced; unknown names are a DSLError."""
        unknown = set(values) - set(self.hyperparameter_names)
        if unknown:
            raise DSLError(f"unknown hyperparameter(s) {sorted(unknown)} for rule '{self.name}'",
                           hint=f"it takes {', '.join(self.hyperparameter_names) or 'none'}")
        hp = tuple((n, float(values.get(n, d))) for n, d in self.hyperparameters)
        return replace(self, hyperparameters=hp)

    def __str__(self) -> str:
        return self.source()
