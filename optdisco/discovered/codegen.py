"""Printing a rule's expressions into generated files (the torch and optax exporters): the
calls of a program, and its expressions with built-in calls and literals routed through an
``_Ops`` object of the generated file.
"""

from __future__ import annotations

from ..dsl import BUILTINS, Program, shapes
from ..dsl.ir import Call, Const, Expr, Name
from ..dsl.printer import expr_source

#: Built-ins written infix (or as unary minus) in generated code, not as ``_Ops`` methods.
OPERATORS = {"add", "sub", "mul", "div", "pow", "neg"}


def calls(program: Program) -> set[str]:
    """The names of the built-ins the program calls."""
    exprs: list[Expr] = [a.expr for a in program.body] + [program.update]
    return {n.fn for e in exprs for n in e.walk() if isinstance(n, Call)}


def ops_expr(e: Expr, ops: str, env_shapes: dict[str, str] | None = None) -> str:
    """Rule-text printing with built-in calls and literals routed through the ops object.

    Literals become 0-d tensors of the parameter's dtype, as in the interpreter, so that
    scalar-only subexpressions (bias corrections) round the same way. With ``env_shapes``
    (the static shape of each name, for rules with matrix states) reductions of factors
    reduce the factor itself and ``every(k, x, prev)`` computes only the branch it takes.
    """
    memo: dict[Expr, Expr] = {}

    def shape(x: Expr) -> str:
        assert env_shapes is not None
        if isinstance(x, Const):
            return shapes.SCALAR
        if isinstance(x, Name):
            return env_shapes[x.id]
        assert isinstance(x, Call)
        return shapes.result_shape(x.fn, [shape(a) for a in x.args])

    def route(x: Expr) -> Expr:
        if x not in memo:
            if isinstance(x, Const):
                memo[x] = Name(f"{ops}.scalar({x.value!r})")
            elif isinstance(x, Call) and x.fn == "every" and env_shapes is not None:
                k, value, prev = (expr_source(route(a)) for a in x.args)
                memo[x] = Name(f"({value} if {ops}.due(step, {k}) else {prev})")
            elif (isinstance(x, Call) and env_shapes is not None and BUILTINS[x.fn].kind == "reduction"
                  and x.fn != "numel" and shape(x.args[0]) in shapes.FACTORS):
                memo[x] = Name(f"{ops}.factor_reduce({x.fn!r}, {expr_source(route(x.args[0]))})")
            elif isinstance(x, Call):
                fn = x.fn if x.fn in OPERATORS else f"{ops}.{x.fn}"
                memo[x] = Call(fn, tuple(route(a) for a in x.args))
            else:
                memo[x] = x
        return memo[x]

    return expr_source(route(e))
