"""A rule as three-address code: the form every code generator in this package consumes.

:func:`make_plan` walks the rule's statements in the interpreter's evaluation order
(statements in order, arguments left to right, the update last), so the ``k``-th
``randn()`` draw here is the ``k``-th draw of :func:`optdisco.dsl.interpreter.run`.
Equal pure subexpressions become one op (common subexpressions are shared); every
``randn()`` call is its own op.

Each op records what code generators need to place it:

* ``scalar``: one value per parameter tensor (built from literals, hyperparameters,
  ``lr``, ``step`` and reductions), as opposed to a value per element;
* ``uniform``: one value for the whole group (no ``step`` and no reduction inside);
* ``level``: how many whole-tensor passes must finish before the op can be computed.
  Reductions and matrix built-ins need all of their argument, so they sit one level above
  it; a fused kernel computes level ``L`` ops in pass ``L``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..dsl import Program
from ..dsl.builtins import BUILTINS
from ..dsl.ir import Call, Const, Expr, Name

#: Inputs that are tensors shaped like the parameter.
TENSOR_INPUT_NAMES = ("w", "g")


@dataclass(frozen=True)
class Op:
    """One value: an input, a literal, or a built-in applied to earlier ops."""

    id: int
    kind: str                    # "input", "const", or a built-in kind (operator, elementwise, ...)
    fn: str                      # the input's name, "const", or the built-in's name
    args: tuple[int, ...] = ()
    value: float | None = None   # a literal's value
    scalar: bool = False
    uniform: bool = False
    level: int = 0
    draw: int | None = None      # randn(): the index of this draw among the rule's draws


@dataclass
class Plan:
    """The ops of a program in a valid evaluation order, and which ops are its results."""

    program: Program
    ops: list[Op]
    update: int
    states: tuple[int, ...]
    n_draws: int
    live: set[int] = field(default_factory=set)

    @property
    def levels(self) -> int:
        """The number of passes before the final one (0 for purely elementwise rules)."""
        return max([op.level for op in self.ops if op.id in self.live] + [0])

    def live_ops(self) -> list[Op]:
        return [op for op in self.ops if op.id in self.live]

    def uses(self, kind: str) -> bool:
        return any(op.kind == kind for op in self.live_ops())

    def barriers(self, level: int) -> list[Op]:
        """The live reductions and matrix built-ins whose result becomes available at ``level``."""
        return [op for op in self.live_ops() if op.kind in ("reduction", "matrix")
                and op.fn != "numel" and op.level == level]


def make_plan(program: Program) -> Plan:
    """The three-address code of ``program`` (see the module docstring)."""
    ops: list[Op] = []
    memo: dict[tuple, int] = {}
    env: dict[str, int] = {}
    draws = 0

    def add(kind: str, fn: str, args: tuple[int, ...] = (), value: float | None = None) -> int:
        nonlocal draws
        key = (kind, fn, args, value)
        if fn != "randn" and key in memo:
            return memo[key]
        a = [ops[i] for i in args]
        if kind == "input":
            scalar = fn not in TENSOR_INPUT_NAMES and fn not in program.state_names
            uniform = scalar and fn != "step"
            level = 0
        elif kind == "const":
            scalar = uniform = True
            level = 0
        elif fn == "numel":
            scalar, uniform, level = True, False, 0
        elif kind == "reduction":
            scalar, uniform = True, False
            level = max(x.level for x in a) + 1
        elif kind == "matrix":
            scalar = uniform = False
            level = max(x.level for x in a) + 1
        elif kind == "noise":
            scalar = uniform = False
            level = 0
        else:
            scalar = all(x.scalar for x in a)
            uniform = all(x.uniform for x in a)
            level = max([x.level for x in a] + [0])
        draw = None
        if fn == "randn":
            draw, draws = draws, draws + 1
        op = Op(len(ops), kind, fn, args, value, scalar, uniform, level, draw)
        ops.append(op)
        memo[key] = op.id
        return op.id

    def name(n: str) -> int:
        if n in env:
            return env[n]
        return add("input", n)

    def ev(e: Expr) -> int:
        if isinstance(e, Name):
            return name(e.id)
        if isinstance(e, Const):
            return add("const", "const", value=e.value)
        assert isinstance(e, Call)
        args = tuple(ev(x) for x in e.args)
        return add(BUILTINS[e.fn].kind, e.fn, args)

    for stmt in program.body:
        env[stmt.target] = ev(stmt.expr)
    update = ev(program.update)
    states = tuple(name(s) for s in program.state_names)
    plan = Plan(program, ops, update, states, draws)
    plan.live = _live(ops, (update,) + states)
    return plan


def _live(ops: list[Op], roots: tuple[int, ...]) -> set[int]:
    live: set[int] = set()
    stack = list(roots)
    while stack:
        i = stack.pop()
        if i in live:
            continue
        live.add(i)
        if ops[i].fn != "numel":  # numel reads only the parameter's size
            stack.extend(ops[i].args)
    return live
